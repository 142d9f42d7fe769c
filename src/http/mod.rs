//! The HTTP API: every module's routes merged in one place, with the layers all share.

pub mod browser;
pub mod export;
pub mod json;
pub mod openapi;
pub mod problem;
pub mod query;

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, StatusCode};
use axum::{Extension, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa_axum::router::OpenApiRouter;

use crate::operations::metrics::{Exposure, Scrape};
use crate::startup::AppState;
use problem::{Problem, ProblemType};

/// The largest body the public API accepts; a donation is a few hundred bytes.
pub const API_BODY_LIMIT: usize = 16 * 1024;
/// No request may take longer than this; Stripe calls have their own, shorter timeout.
pub use crate::config::budget::REQUEST_TIMEOUT;

pub fn router(
    state: AppState,
    allowed_origins: Vec<axum::http::HeaderValue>,
    scrape: Scrape,
) -> Router {
    let simulated = state.simulator.is_some();
    let metrics = state.metrics.clone();
    let request_id = HeaderName::from_static(browser::REQUEST_ID);

    // Every route is registered with its documentation (see `openapi`): each group's router
    // and document are split apart, the routers layered as before, the documents merged into
    // the one served at /openapi.json.
    //
    // What the donation website calls from the browser, and the only routes with CORS. Their
    // 405 is set before the CORS layer so that it wraps it: a preflight (OPTIONS) reaches the
    // layer through it. CORS sits outside the limits, so a 413 or a timeout's 503 is readable
    // by the page too.
    let (public, public_doc) = OpenApiRouter::new()
        .merge(crate::campaigns::router())
        .merge(crate::donations::router())
        .split_for_parts();
    let public = limits(
        public.method_not_allowed_fallback(method_not_allowed),
        REQUEST_TIMEOUT,
    )
    .layer(browser::public_cors(allowed_origins));

    // Never called from a page: no CORS, so a browser refuses any cross-origin call.
    let mut private = OpenApiRouter::new()
        .merge(crate::operations::health::router())
        .merge(openapi::router())
        .merge(crate::finance::router())
        .merge(crate::operators::router())
        .merge(crate::gift_aid::routes::router())
        .merge(crate::webhooks::router())
        // Same-origin with the API it calls, so it needs no CORS; framed by ALLOWED_ORIGINS.
        .merge(crate::donate_page::router());
    // The simulator's controls exist only when payments are simulated.
    if simulated {
        private = private.merge(crate::simulator::routes::router());
    }
    // Unless METRICS_ADDR serves it apart.
    if scrape.exposure != Exposure::Elsewhere {
        private = private.merge(crate::operations::metrics::router(scrape));
    }
    let (private, private_doc) = private.split_for_parts();

    let mut document = openapi::base();
    document.merge(public_doc);
    document.merge(private_doc);
    let private = private.layer(Extension(openapi::Document::new(&document)));

    let routes = Router::new()
        .merge(public)
        .merge(limits(private, REQUEST_TIMEOUT))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    let routes = catch_panics(routes)
        // Inside the trace span, so that a request's metrics see the route it matched.
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::metrics::track,
        ));
    // Outside everything else, so that every answer carries them: problems, 404s, timeouts.
    browser::security_headers(routes)
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

/// `METRICS_ADDR`'s own listener: `/metrics` and nothing else.
pub fn metrics_router(scrape: Scrape) -> Router {
    // Its own listener serves no document.
    let (metrics, _) = crate::operations::metrics::router(scrape).split_for_parts();
    Router::new()
        .merge(metrics)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// A handler that panics answers a 500 problem, like any other failure of ours, instead of
/// dropping the connection; its transaction, if any, is rolled back as it is dropped.
fn catch_panics<S>(routes: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes.layer(CatchPanicLayer::custom(
        |_: Box<dyn std::any::Any + Send>| {
            // The panic's message is not logged here: it may quote what the request carried.
            tracing::error!("a request's handler panicked");
            axum::response::IntoResponse::into_response(Problem::internal())
        },
    ))
}

/// The body limit and the per-request timeout every route has.
fn limits<S>(routes: Router<S>, timeout: Duration) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
}

async fn not_found() -> Problem {
    Problem::not_found("There is nothing at this path.")
}

async fn method_not_allowed() -> Problem {
    Problem::new(
        ProblemType::MethodNotAllowed,
        "This path does not take that method.",
    )
}

#[cfg(test)]
#[expect(
    clippy::disallowed_methods,
    reason = "unit tests of layers, on routers of their own that the service never serves"
)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    /// The timeout cannot be waited out in an API test (60 s); the layers that carry it can.
    #[tokio::test]
    async fn a_request_over_the_timeout_is_a_503() {
        let app = limits(
            Router::new().route(
                "/slow",
                get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }),
            ),
            Duration::from_millis(50),
        );
        let started = std::time::Instant::now();
        let response = app
            .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    async fn panicking() -> &'static str {
        panic!("a bug in a handler")
    }

    #[tokio::test]
    async fn a_handler_that_panics_answers_a_500_problem() {
        let app = catch_panics(Router::new().route("/panics", get(panicking)));
        let response = app
            .oneshot(Request::get("/panics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(problem["type"], "/problems/internal");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_a_413() {
        let app = limits(
            Router::new().route("/echo", post(|body: String| async move { body })),
            REQUEST_TIMEOUT,
        );
        let send = |size: usize| {
            app.clone().oneshot(
                Request::post("/echo")
                    .body(Body::from("x".repeat(size)))
                    .unwrap(),
            )
        };
        assert_eq!(send(API_BODY_LIMIT).await.unwrap().status(), StatusCode::OK);
        assert_eq!(
            send(API_BODY_LIMIT + 1).await.unwrap().status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
