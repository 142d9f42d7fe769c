use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};

use super::Campaign;
use crate::http::problem::{ApiResult, Problem};
use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/campaigns/{slug}", get(show))
}

/// `GET /v1/campaigns/{slug}`: the campaign, its limits and its running total.
async fn show(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> ApiResult<Json<Campaign>> {
    let campaign = super::find(&state.db, &slug)
        .await?
        .ok_or_else(|| Problem::not_found(format!("There is no campaign {slug:?}.")))?;
    Ok(Json(campaign))
}
