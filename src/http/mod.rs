//! The HTTP API: every module's routes merged in one place, with the layers all share.

pub mod health;
pub mod json;
pub mod problem;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, Method, StatusCode, header};
use tower_http::cors::CorsLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::startup::AppState;
use problem::Problem;

/// The largest body the public API accepts; a donation is a few hundred bytes.
pub const API_BODY_LIMIT: usize = 16 * 1024;
/// No request may take longer than this; Stripe calls have their own, shorter timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub fn router(state: AppState, allowed_origins: Vec<axum::http::HeaderValue>) -> Router {
    let simulated = state.simulator.is_some();
    let request_id = HeaderName::from_static("x-request-id");
    let cors = CorsLayer::new()
        .allow_origin(allowed_origins)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            HeaderName::from_static("idempotency-key"),
        ])
        .expose_headers([header::LOCATION, request_id.clone()])
        .max_age(Duration::from_secs(3600));

    let mut routes = Router::new()
        .merge(health::router())
        .merge(crate::campaigns::router())
        .merge(crate::donations::router())
        .merge(crate::finance::router())
        .merge(crate::webhooks::router());
    // The simulator's controls exist only when payments are simulated.
    if simulated {
        routes = routes.merge(crate::payments::simulator_api::router());
    }
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT))
        .layer(cors)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        // The span names the route, never the full URI or the headers: they may carry data
        // that must stay out of logs.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map(MatchedPath::as_str)
                        .unwrap_or("unmatched");
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("request", method = %req.method(), route, request_id = id)
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .with_state(state)
}

async fn not_found() -> Problem {
    Problem::not_found("There is nothing at this path.")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "This path does not take that method.",
    )
}
