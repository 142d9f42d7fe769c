use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::http::problem::{ApiResult, Problem};
use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/campaigns", get(list))
        .route("/v1/campaigns/{slug}", get(show))
}

/// `GET /v1/campaigns`: the active campaigns, each as `GET /v1/campaigns/{slug}` shows it, in
/// slug order, so a website can build its pages from the catalogue.
async fn list(State(state): State<AppState>) -> ApiResult<Response> {
    let campaigns = super::active(&state.db).await?;
    Ok(axum::Json(serde_json::json!({ "campaigns": campaigns })).into_response())
}

/// `GET /v1/campaigns/{slug}`: the campaign, its limits and its running total (at most a
/// second old; see [`super::cache`]).
async fn show(State(state): State<AppState>, Path(slug): Path<String>) -> ApiResult<Response> {
    let campaign = state
        .campaigns
        .get(&state.db, &slug)
        .await?
        .ok_or_else(|| Problem::not_found(format!("There is no campaign {slug:?}.")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], campaign).into_response())
}
