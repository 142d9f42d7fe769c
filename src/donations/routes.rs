use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use uuid::Uuid;

use super::DonationView;
use crate::http::json::JsonBody;
use crate::http::problem::{ApiResult, Problem};
use crate::idempotency::IdempotencyKey;
use crate::startup::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/campaigns/{slug}/donations", post(create))
        .route("/v1/donations/{id}", get(show))
}

/// `POST /v1/campaigns/{slug}/donations`: a pending donation and the PaymentIntent to pay it.
async fn create(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let key = IdempotencyKey::from_headers(&headers)?;
    let client = state.donation_limits.client_ip(peer, &headers);
    let captcha = headers
        .get("captcha-token")
        .and_then(|value| value.to_str().ok());
    super::create::create_donation(&state, &slug, key, client, captcha, &body).await
}

/// `GET /v1/donations/{id}`: where a donation is; no donor data.
async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<DonationView>> {
    let not_found = || Problem::not_found(format!("There is no donation {id:?}."));
    let uuid = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let donation = super::find(&state.db, uuid).await?.ok_or_else(not_found)?;
    Ok(Json(donation))
}
