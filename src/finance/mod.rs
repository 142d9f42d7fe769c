//! Finance: the ledger of every movement of money in our Stripe balance, payouts reconciled to
//! it, and what finance staff read (donations, summaries, payouts, the audit log) behind bearer
//! tokens, as JSON pages or streamed CSV, and the same exports from the command line. Every
//! read is audited.
//!
//! - [`ledger`]: the append-only ledger, written by the event worker;
//! - [`payouts`]: payouts, their listed transactions and their reconciliation;
//! - [`summary`]: a campaign's figures over a period, from the ledger;
//! - [`access`]: tokens, roles, and the [`access::Caller`] / [`access::Admin`] extractors;
//! - [`audit`]: the audit log and `GET /v1/finance/audit`;
//! - [`params`]: strict query parameters, times, ranges, cursors and limits;
//! - [`export`]: content negotiation, CSV safe for spreadsheets, streamed bodies;
//! - [`gift_aid`]: HMRC's Gift Aid schedule and the claims made from it.

pub mod access;
pub mod audit;
pub mod donations;
pub mod export;
pub mod gift_aid;
pub mod ledger;
pub mod params;
pub mod payouts;
pub mod summary;

use sqlx::{PgPool, Postgres, Transaction};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::problem::Problem;
use crate::startup::AppState;

/// The problem of a finance read given a query parameter it does not take, one twice, or a
/// bad value, for its documentation (`responses(finance::BadParameter, ...)`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum BadParameter {
    #[response(
        status = 400,
        description = "`/problems/bad-parameter`: `errors` names the parameter.",
        content_type = "application/problem+json"
    )]
    BadParameter(Problem),
}

/// The problems every finance route can answer, for its documentation
/// (`responses(finance::Refusals, ...)`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Refusals {
    /// No bearer token, or one malformed, unknown or revoked.
    #[response(
        status = 401,
        description = "`/problems/unauthorized`: no valid bearer token.",
        content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "`Bearer`, or \
                  `Bearer error=\"invalid_token\"` when the token sent is not valid."))
    )]
    Unauthorized(Problem),
    /// The database is out of reach.
    #[response(
        status = 503,
        description = "`/problems/service-unavailable`.",
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait."))
    )]
    Unavailable(Problem),
}

/// The problem of a finance read whose `Accept` takes none of its formats.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum NotAcceptable {
    #[response(
        status = 406,
        description = "`/problems/not-acceptable`: `Accept` takes none of the formats served.",
        content_type = "application/problem+json"
    )]
    NotAcceptable(Problem),
}

/// Every `/v1/finance/...` route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(donations::list))
        .routes(routes!(audit::list))
        .routes(routes!(payouts::routes::list))
        .routes(routes!(payouts::routes::overdue))
        .routes(routes!(payouts::routes::show))
        .routes(routes!(summary::show))
        .merge(gift_aid::routes::router())
}

/// A read-only transaction on one snapshot (an export's count and rows agree), whose
/// statements are planned for their own parameters: a list's optional filters (`$1 IS NULL OR
/// ...`) under a plan cached for all would scan from the first row on every page.
pub async fn reading(db: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
    let mut tx = db
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    sqlx::query!("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)")
        .fetch_one(&mut *tx)
        .await?;
    Ok(tx)
}
