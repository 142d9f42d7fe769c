//! quickdonate: the donation-processing backend behind a charity's campaign pages.
//!
//! The library builds the whole service ([`app::Application`]); `main.rs` only parses the
//! command line, so the tests start exactly what production starts.

pub mod app;
/// Inputs no one expected, shared with the API tests' properties.
#[cfg(test)]
#[path = "../tests/api/arbitrary.rs"]
mod arbitrary;
pub mod books;
pub mod campaigns;
pub mod cli;
pub mod config;
pub mod db;
pub mod donate_page;
pub mod donations;
pub mod finance;
pub mod gift_aid;
pub mod http;
pub mod idempotency;
pub mod metrics;
pub mod money;
pub mod operations;
pub mod operators;
pub mod payments;
pub mod privacy;
pub mod receipts;
pub mod simulator;
pub mod staff;
pub mod telemetry;
pub mod timestamps;
pub mod webhooks;
