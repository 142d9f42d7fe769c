//! `GET /metrics`: the service's metrics in Prometheus's text format, with the event log's
//! backlog read at each scrape; on the main listener, or on `METRICS_ADDR`'s own.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::problem::Problem;
use crate::metrics::Metrics;

/// `/metrics` alone, with what it needs bound to it.
pub fn router<S>(scrape: Scrape) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new()
        .routes(routes!(self::scrape))
        .with_state(scrape)
}

/// Where `/metrics` is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// On the main listener, to anyone who reaches it (development).
    Anyone,
    /// On the main listener, to loopback peers only, and never to a proxied request
    /// (production without `METRICS_ADDR`).
    LoopbackOnly,
    /// On its own listener (`METRICS_ADDR`), so not on the main one.
    Elsewhere,
}

/// What `/metrics` needs.
#[derive(Clone)]
pub struct Scrape {
    pub metrics: Metrics,
    pub db: PgPool,
    pub exposure: Exposure,
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "The service's metrics in Prometheus's text format. Served here only when \
                   `METRICS_ADDR` does not serve it on a listener of its own; in production \
                   (without `METRICS_ADDR`) only to loopback peers, never to a proxied request: \
                   anyone else gets the 404 of a path that does not exist.",
    responses(
        (status = 200, description = "The metrics.",
         content_type = "text/plain; version=0.0.4; charset=utf-8", body = String),
        (status = 404, description = "`/problems/not-found`: not served to this client.",
         body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`/problems/service-unavailable`: the database could not \
                                      be read.", body = Problem,
         content_type = "application/problem+json"),
    ),
)]
pub async fn scrape(
    State(scrape): State<Scrape>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    // A proxy on this machine makes every client a loopback peer: a request it forwarded is
    // not a local one.
    let proxied =
        headers.contains_key("x-forwarded-for") || headers.contains_key(header::FORWARDED);
    let allowed = match scrape.exposure {
        Exposure::Anyone => true,
        Exposure::Elsewhere => false,
        Exposure::LoopbackOnly => peer.ip().to_canonical().is_loopback() && !proxied,
    };
    if !allowed {
        return Problem::not_found("There is nothing at this path.").into_response();
    }
    let backlog = match crate::webhooks::log::backlog(&scrape.db).await {
        Ok(backlog) => backlog,
        Err(error) => {
            tracing::warn!(%error, "could not read the event backlog for /metrics");
            return Problem::unavailable("The database could not be read.").into_response();
        }
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        scrape.metrics.render(backlog),
    )
        .into_response()
}
