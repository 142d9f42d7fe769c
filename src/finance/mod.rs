//! Finance: what finance staff read (donations, the audit log) behind bearer tokens, as JSON
//! pages or streamed CSV, and the same exports from the command line. Every read is audited.
//!
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
pub mod params;

use axum::Router;
use axum::routing::get;
use sqlx::{PgPool, Postgres, Transaction};

use crate::startup::AppState;

/// Every `/v1/finance/...` route.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/finance/donations", get(donations::list))
        .route("/v1/finance/audit", get(audit::list))
        .merge(gift_aid::routes::router())
}

/// A read-only transaction whose statements are planned for their own parameters: a list's
/// optional filters (`$1 IS NULL OR ...`) under a plan cached for all would scan from the
/// first row on every page.
pub async fn reading(db: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
    let mut tx = db.begin_with("BEGIN READ ONLY").await?;
    sqlx::query!("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)")
        .fetch_one(&mut *tx)
        .await?;
    Ok(tx)
}
