//! The webhook intake, `POST /v1/webhooks/stripe`: the signature verified on the raw bytes, the
//! event stored with its group's commit, and only then the answer.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Notify;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ingest::Ingest;
use super::log::{self, Event};
use super::signature::Verifier;
use crate::http::problem::{ApiError, ApiResult, Problem, ProblemType};
use crate::metrics::{Delivery, Metrics};

/// What the webhook intake touches: the signatures' secrets, our key's mode, the group commit
/// that stores events, the worker it wakes, and the metrics of deliveries.
#[derive(Clone)]
pub struct IntakeState {
    pub verifier: Verifier,
    /// Whether our Stripe key is a live one; events of the other mode are stored, not applied.
    pub livemode: bool,
    pub ingest: Ingest,
    /// Wakes the event worker when a new event is stored.
    pub wake_worker: Arc<Notify>,
    pub metrics: Metrics,
}

/// Stripe's events are a few KiB; anything past this is not one.
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    IntakeState: FromRef<S>,
{
    // The layer reaches only the routes registered before it: this one.
    OpenApiRouter::new()
        .routes(routes!(receive))
        .layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT))
}

/// The answer to an event stored (or one stored before).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = WebhookReceived)]
struct Received {
    /// Always true.
    received: bool,
}

/// `POST /v1/webhooks/stripe`. A 2xx means the event is stored durably; a 503 asks Stripe to
/// deliver it again later.
#[utoipa::path(
    post,
    path = "/v1/webhooks/stripe",
    operation_id = "receiveStripeEvent",
    tag = "webhooks",
    summary = "Stripe's webhook endpoint",
    description = "Stripe delivers its events here, signed with the endpoint's secret. A 200 \
                   means the event is stored durably (or was already: delivering it again is \
                   harmless); it is applied afterwards by the worker. Any other answer asks \
                   Stripe to deliver it again.",
    params(("Stripe-Signature" = String, Header,
            description = "Stripe's signature of the raw body: `t=<unix time>,v1=<HMAC-SHA256>`; \
                           refused when it does not verify or is too old.")),
    request_body(content = Object, content_type = "application/json",
                 description = "A Stripe event object, as Stripe sends it (at most 1 MiB)."),
    responses(
        (status = 200, description = "The event is stored.", body = Received),
        (status = 400, description = "`/problems/invalid-signature` or `/problems/invalid-event` \
                                      (the body is not a Stripe event or could not be read).",
         body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`/problems/body-too-large`: over 1 MiB.", body = Problem,
         content_type = "application/problem+json"),
        (status = 503, description = "`/problems/service-unavailable`: the event could not be \
                                      stored; Stripe delivers it again.", body = Problem,
         content_type = "application/problem+json"),
    ),
)]
async fn receive(
    State(state): State<IntakeState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<axum::Json<Received>> {
    let metrics = &state.metrics;
    let body = body.map_err(|rejection| {
        metrics.webhook(None, Delivery::Invalid);
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                ProblemType::BodyTooLarge,
                format!(
                    "A Stripe event is never this large: at most {} MiB is taken.",
                    WEBHOOK_BODY_LIMIT / (1024 * 1024)
                ),
            )
        } else {
            bad_event("The request body could not be read.")
        }
    })?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    state
        .verifier
        .verify(
            headers.get("stripe-signature").map(|v| v.as_bytes()),
            &body,
            now,
        )
        .map_err(|error| {
            metrics.webhook(None, Delivery::BadSignature);
            tracing::warn!(reason = %error, "refused a webhook with a bad signature");
            Problem::new(ProblemType::InvalidSignature, format!("Refused: {error}."))
        })?;

    let event = Event::parse(&body).ok_or_else(|| {
        metrics.webhook(None, Delivery::Invalid);
        bad_event("The body is not a Stripe event.")
    })?;
    let ignore = log::reason_to_ignore(&event, state.livemode);
    let (id, kind) = (event.id.clone(), event.kind.clone());
    let new = state
        .ingest
        .store(event, ignore.clone())
        .await
        .map_err(|error| {
            // The event may not be stored (or its commit was not seen through): Stripe must
            // send it again, and a redelivery of a stored event only counts.
            metrics.webhook(Some(&kind), Delivery::NotStored);
            tracing::error!(%error, event_id = %id, "could not store a webhook event");
            ApiError::Client(Problem::new(
                ProblemType::ServiceUnavailable,
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
    metrics.webhook(Some(&kind), delivery);
    tracing::info!(event_id = %id, %kind, new, ignored = ignore.is_some(), "webhook stored");
    Ok(axum::Json(Received { received: true }))
}

fn bad_event(detail: &str) -> Problem {
    Problem::new(ProblemType::InvalidEvent, detail)
}
