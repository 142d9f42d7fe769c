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

use axum::Router;
use axum::routing::get;
use sqlx::{PgPool, Postgres, Transaction};

use crate::http::problem::{FieldError, Problem};
use crate::startup::AppState;

/// A 404 problem naming `field`: there is no `what` called `value` (shown at most 64
/// characters long, quoted).
pub fn unknown(field: &str, what: &str, value: &str) -> Problem {
    let shown: String = value.chars().take(64).collect();
    Problem::not_found(format!("There is no {what} {shown:?}."))
        .with_errors(vec![FieldError::new(field, format!("names no {what}"))])
}

/// Every `/v1/finance/...` route.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/finance/donations", get(donations::list))
        .route("/v1/finance/audit", get(audit::list))
        .route("/v1/finance/payouts", get(payouts::routes::list))
        .route(
            "/v1/finance/payouts/overdue-donations",
            get(payouts::routes::overdue),
        )
        .route("/v1/finance/payouts/{id}", get(payouts::routes::show))
        .route("/v1/finance/campaigns/{slug}/summary", get(summary::show))
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
