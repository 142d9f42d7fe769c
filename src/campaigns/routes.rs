use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::http::problem::{ApiResult, Problem};
use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/campaigns/{slug}", get(show))
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
