//! The layers every route shares: the body limit and the request timeout, a panic answered as
//! a 500 problem, request ids, a log span per request naming its route, and the problems of a
//! path or method that does not exist.

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, StatusCode};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use super::API_BODY_LIMIT;
use super::browser::REQUEST_ID;
use super::problem::{Problem, ProblemType};

/// Every request gets an id (`X-Request-Id`, kept if the client sent one) that its answer
/// carries, and a log span that names its method, its route and that id: never the full URI or
/// the headers, which may carry data that must stay out of logs.
pub fn traced<S>(routes: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let request_id = HeaderName::from_static(REQUEST_ID);
    routes
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
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!("request", method = %req.method(), route, request_id = id)
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// A handler that panics answers a 500 problem, like any other failure of ours, instead of
/// dropping the connection; its transaction, if any, is rolled back as it is dropped.
pub fn catch_panics<S>(routes: Router<S>) -> Router<S>
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
pub fn limits<S>(routes: Router<S>, timeout: Duration) -> Router<S>
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

/// The answer to a path nothing is at.
pub async fn not_found() -> Problem {
    Problem::not_found("There is nothing at this path.")
}

/// The answer to a method the path does not take.
pub async fn method_not_allowed() -> Problem {
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
    use crate::http::REQUEST_TIMEOUT;
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
