//! Stripe's signed webhooks: verified on the raw bytes, stored durably, answered, then applied
//! by the [`worker`].

pub mod admin;
pub mod apply;
pub mod log;
pub mod plan;
pub mod queue;
pub mod signature;
pub mod worker;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::http::problem::{ApiError, ApiResult, Problem};
use crate::metrics::Delivery;
use crate::startup::AppState;
use log::{Event, Source};

/// Stripe's events are a few KiB; anything past this is not one.
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/webhooks/stripe",
        post(receive).layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)),
    )
}

/// `POST /v1/webhooks/stripe`. A 2xx means the event is stored durably; a 503 asks Stripe to
/// deliver it again later.
async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<axum::Json<Value>> {
    let metrics = &state.metrics;
    let body = body.map_err(|rejection| {
        metrics.webhook(None, Delivery::Invalid);
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Body too large",
                "A Stripe event is never this large.",
            )
        } else {
            bad_event("The request body could not be read.")
        }
    })?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    state
        .webhooks
        .verify(
            headers.get("stripe-signature").map(|v| v.as_bytes()),
            &body,
            now,
        )
        .map_err(|error| {
            metrics.webhook(None, Delivery::BadSignature);
            tracing::warn!(reason = %error, "refused a webhook with a bad signature");
            Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-signature",
                "Invalid signature",
                format!("Refused: {error}."),
            )
        })?;

    let event = Event::parse(&body).ok_or_else(|| {
        metrics.webhook(None, Delivery::Invalid);
        bad_event("The body is not a Stripe event.")
    })?;
    let ignore = log::reason_to_ignore(&event, state.livemode);
    let new = log::record(&state.db, &event, ignore.as_deref(), Source::Webhook)
        .await
        .map_err(|error| {
            // Whatever went wrong, the event is not stored: Stripe must send it again.
            metrics.webhook(Some(&event.kind), Delivery::NotStored);
            tracing::error!(%error, event_id = %event.id, "could not store a webhook event");
            ApiError::Client(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service-unavailable",
                "Service unavailable",
                "The event could not be stored. Deliver it again later.",
            ))
        })?;
    if new && ignore.is_none() {
        state.wake_worker.notify_one();
    }
    let delivery = match (new, &ignore) {
        (false, _) => Delivery::Duplicate,
        (true, Some(_)) => Delivery::Ignored,
        (true, None) => Delivery::Stored,
    };
    metrics.webhook(Some(&event.kind), delivery);
    tracing::info!(event_id = %event.id, kind = %event.kind, new, ignored = ignore.is_some(), "webhook stored");
    Ok(axum::Json(json!({"received": true})))
}

fn bad_event(detail: &str) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-event",
        "Not a Stripe event",
        detail,
    )
}
