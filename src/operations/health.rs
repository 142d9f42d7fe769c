//! Liveness and readiness, for load balancers and orchestrators.

use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::response::IntoResponse;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::problem::Problem;

pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    PgPool: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The process is up and answering.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    summary = "Liveness",
    description = "200 while the process is up.",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)),
)]
async fn healthz() -> &'static str {
    "ok"
}

/// The process can do its work: the database answers within a second.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    summary = "Readiness",
    description = "200 while the database answers within a second; 503 otherwise.",
    responses(
        (status = 200, description = "`ready`", content_type = "text/plain", body = String),
        (status = 503, description = "`/problems/service-unavailable`: the database does not \
                                      answer.", body = Problem,
         content_type = "application/problem+json"),
    ),
)]
async fn readyz(State(db): State<PgPool>) -> impl IntoResponse {
    let ping = sqlx::query("SELECT 1").execute(&db);
    match tokio::time::timeout(Duration::from_secs(1), ping).await {
        Ok(Ok(_)) => "ready".into_response(),
        outcome => {
            let cause = match outcome {
                Ok(Err(error)) => error.to_string(),
                _ => "timed out".to_owned(),
            };
            tracing::warn!(cause, "not ready: the database does not answer");
            Problem::unavailable("The service cannot reach its database.").into_response()
        }
    }
}
