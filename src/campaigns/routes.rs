use axum::extract::{FromRef, Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Campaign, CampaignsState};
use crate::http::problem::{ApiResult, Problem};

pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    CampaignsState: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
}

/// The answer of `GET /v1/campaigns`.
#[derive(Serialize, utoipa::ToSchema)]
struct CampaignList {
    /// The active campaigns, in slug order.
    campaigns: Vec<Campaign>,
}

/// `GET /v1/campaigns`: the active campaigns, each as `GET /v1/campaigns/{slug}` shows it, in
/// slug order, so a website can build its pages from the catalogue.
#[utoipa::path(
    get,
    path = "/v1/campaigns",
    operation_id = "listCampaigns",
    tag = "campaigns",
    summary = "The active campaigns",
    description = "The active campaigns in slug order, each with exactly the fields of \
                   `GET /v1/campaigns/{slug}`, so a website can build its pages from the \
                   catalogue.",
    responses(
        (status = 200, description = "The active campaigns.", body = CampaignList),
        (status = 503, description = "`/problems/service-unavailable`: the database is out \
                                      of reach.", body = Problem,
         content_type = "application/problem+json"),
    ),
)]
async fn list(State(state): State<CampaignsState>) -> ApiResult<Response> {
    let campaigns = super::active(&state.db).await?;
    Ok(axum::Json(CampaignList { campaigns }).into_response())
}

/// `GET /v1/campaigns/{slug}`: the campaign, its limits and its running total (at most a
/// second old; see [`super::cache`]).
#[utoipa::path(
    get,
    path = "/v1/campaigns/{slug}",
    operation_id = "showCampaign",
    tag = "campaigns",
    summary = "A campaign",
    description = "The campaign, its limits and its running total (at most a second old).",
    params(("slug" = String, Path, description = "The campaign's slug.", example = "kashmir")),
    responses(
        (status = 200, description = "The campaign.", body = Campaign),
        (status = 404, description = "`/problems/not-found`: no such campaign.", body = Problem,
         content_type = "application/problem+json"),
        (status = 503, description = "`/problems/service-unavailable`: the database is out \
                                      of reach.", body = Problem,
         content_type = "application/problem+json"),
    ),
)]
async fn show(
    State(state): State<CampaignsState>,
    Path(slug): Path<String>,
) -> ApiResult<Response> {
    let campaign = state
        .cache
        .get(&state.db, &slug)
        .await?
        .ok_or_else(|| Problem::not_found(format!("There is no campaign {slug:?}.")))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], campaign).into_response())
}
