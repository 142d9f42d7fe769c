//! The event log's failures for finance admins, in the finance API (the staff console calls it
//! in-process): `GET /v1/finance/events` lists the latest events, or those set aside as failed
//! or being retried, as `quickdonate events list` does; `POST /v1/finance/events/{id}/replay`
//! queues one to be applied again now, as `quickdonate events replay ID` does. Admins only,
//! both audited; never an event's payload.

use axum::Json;
use axum::extract::{FromRef, Path, RawQuery, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::json;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::IntakeState;
use super::admin::{self, EventSummary};
use super::log;
use crate::db::Reads;
use crate::http::problem::{ApiError, ApiResult, FieldError, Problem, ProblemType};
use crate::http::query::{Params, bad_parameter};
use crate::operators::access::{Admin, Refusals};
use crate::operators::audit;

/// What the audit log says was read.
const LIST: &str = "GET /v1/finance/events";
/// What the audit log says was done.
const REPLAY: &str = "POST /v1/finance/events/{id}/replay";

pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    PgPool: FromRef<S>,
    Reads: FromRef<S>,
    IntakeState: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(replay))
}

/// The answer of `GET /v1/finance/events`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = EventsList)]
struct Listed {
    /// Newest first (by when the event was first received). Each: `id` (Stripe's), `type`,
    /// `state` (`pending`, `applied`, `ignored` or `failed`: set aside after its attempts),
    /// `attempts` (since it was last queued), `delivery_count` (Stripe's deliveries of it),
    /// `first_received_at` (RFC 3339) and `last_error` (the last attempt's error, or why an
    /// ignored event is not applied; null once applied).
    data: Vec<EventSummary>,
}

/// The answer of `POST /v1/finance/events/{id}/replay`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = EventReplayed)]
struct Replayed {
    /// The event's id.
    id: String,
    /// Always true: the event is queued to be applied now.
    replayed: bool,
}

/// `GET /v1/finance/events?failed=&limit=`: admins only.
#[utoipa::path(
    get,
    path = "/v1/finance/events",
    operation_id = "listStripeEvents",
    tag = "finance",
    summary = "The latest Stripe events, or those that failed",
    description = "The event log as `quickdonate events list` shows it, newest first: each \
                   event's id, type, state, attempts, deliveries, when it was first received \
                   and its last error; never its payload. With `failed=true`, only the events \
                   set aside as failed and those being retried after an error. Admin tokens \
                   only; audited. Read on the finance reads' pool, so it may lag a replay by \
                   as long as a read replica lags.",
    security(("bearerAuth" = [])),
    params(
        ("failed" = Option<bool>, Query,
         description = "`true`: only the events set aside as failed or being retried; \
                        `false` (the default): every event."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000,
         description = "How many events, 1 to 1000; default 100."),
    ),
    responses(
        (status = 200, description = "The events.", body = Listed),
        (status = 403, description = "`/problems/forbidden`: not an admin token.", body = Problem,
         content_type = "application/problem+json"),
        Refusals,
        crate::http::query::BadParameter,
    ),
)]
async fn list(
    State(db): State<PgPool>,
    State(reads): State<Reads>,
    Admin(caller): Admin,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Listed>> {
    let params = Params::parse(query.as_deref(), &["failed", "limit"])?;
    let failed = match params.text("failed") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad_parameter("failed", "must be true or false").into()),
    };
    let limit = params.limit()?;
    let data = admin::list(&reads.pool, failed, limit).await?;
    audit::record(&db, &caller, LIST, &params.filters(), data.len() as i64).await?;
    Ok(Json(Listed { data }))
}

/// `POST /v1/finance/events/{id}/replay`: admins only.
#[utoipa::path(
    post,
    path = "/v1/finance/events/{id}/replay",
    operation_id = "replayStripeEvent",
    tag = "finance",
    summary = "Apply a Stripe event again",
    description = "Queues the event to be applied again now, from a clean count of attempts, \
                   as `quickdonate events replay ID` does; the worker applies it within a \
                   second, so the answer is 202. Applying is idempotent: a replay of an \
                   applied event changes nothing, and one of a failed or failing event retries \
                   it at once. Admin tokens only; recorded in the audit log (with the event's \
                   id) once queued.",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The event's id (Stripe's, `evt_...`).")),
    responses(
        (status = 202, description = "The event is queued to be applied.", body = Replayed),
        (status = 403, description = "`/problems/forbidden`: not an admin token.", body = Problem,
         content_type = "application/problem+json"),
        (status = 404, description = "`/problems/not-found`: no event has this id.",
         body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`/problems/validation`: the event is never applied (of \
                                      the other mode, live or test, than our key, or of a type \
                                      we do not apply); nothing was queued.",
         body = Problem, content_type = "application/problem+json"),
        Refusals,
    ),
)]
async fn replay(
    State(db): State<PgPool>,
    State(intake): State<IntakeState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Replayed>)> {
    if log::states(&db, std::slice::from_ref(&id))
        .await?
        .is_empty()
    {
        return Err(Problem::unknown("id", "event", &id).into());
    }
    if let Err(error) = admin::replay(&db, &id, intake.livemode).await {
        return Err(match error.downcast::<sqlx::Error>() {
            Ok(error) => ApiError::Database(error),
            // What `replay` refuses: an event that is never applied.
            Err(refused) => Problem::new(ProblemType::Validation, format!("{refused}."))
                .with_errors(vec![FieldError::new(
                    "id",
                    "names an event that is never applied",
                )])
                .into(),
        });
    }
    intake.wake_worker.notify_one();
    // Once queued, so the log holds only what was done; should this fail, the caller is told
    // (and a replay again is harmless: applying is idempotent).
    audit::record(&db, &caller, REPLAY, &json!({"id": id}), 1).await?;
    tracing::info!(event_id = %id, by = %caller.name, "event queued to be applied again");
    Ok((StatusCode::ACCEPTED, Json(Replayed { id, replayed: true })))
}
