//! The ground floor of the HTTP API: the tools every feature may use, and no feature itself.
//! The routes are merged above the features, in `app::routes`.
//!
//! - [`problem`]: the closed catalogue of problems, and the error type of every handler;
//! - [`json`]: a JSON body whose every refusal is a problem;
//! - [`query`]: strict query parameters, times, ranges, cursors and limits;
//! - [`export`]: content negotiation, CSV safe for spreadsheets, streamed bodies;
//! - [`client`]: who is asking (the client's address behind trusted proxies);
//! - [`browser`]: CORS for the public routes, and the security headers of every answer;
//! - [`middleware`]: the limits, request ids, panics and tracing every route shares;
//! - [`openapi`]: the OpenAPI document's base and `GET /openapi.json`.

pub mod browser;
pub mod client;
pub mod export;
pub mod json;
pub mod middleware;
pub mod openapi;
pub mod problem;
pub mod query;

/// The largest body the public API accepts; a donation is a few hundred bytes.
pub const API_BODY_LIMIT: usize = 16 * 1024;
/// No request may take longer than this; Stripe calls have their own, shorter timeout.
pub use crate::config::budget::REQUEST_TIMEOUT;
