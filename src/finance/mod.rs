//! Finance: the ledger of every movement of money in our Stripe balance, payouts reconciled to
//! it, and what finance staff read (donations, summaries, payouts) behind bearer tokens, as
//! JSON pages or streamed CSV, and the same exports from the command line. Every read is
//! audited (`operators::audit`).
//!
//! - [`ledger`]: the append-only ledger, written by the event worker;
//! - [`payouts`]: payouts, their listed transactions and their reconciliation;
//! - [`donations`]: `GET /v1/finance/donations` and `quickdonate export donations`;
//! - [`summary`]: a campaign's figures over a period, from the ledger.

pub mod donation;
pub mod donations;
pub mod ledger;
pub mod payouts;
pub mod summary;

use axum::extract::FromRef;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What finance's reads touch: the database, and after how many days a succeeded donation in no
/// paid payout is overdue (`PAYOUT_OVERDUE_DAYS`).
#[derive(Clone)]
pub struct FinanceState {
    /// For writes (the audit log) and the tokens' check.
    pub db: PgPool,
    /// For every read of finance data (see `db::Reads`).
    pub reads: crate::db::Reads,
    pub payout_overdue_days: i64,
}

/// Every `/v1/finance/...` route of finance's own (the audit log's is `operators`', Gift Aid's
/// `gift_aid`'s).
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    FinanceState: FromRef<S>,
    PgPool: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(donations::list))
        .routes(routes!(donation::show))
        .routes(routes!(payouts::routes::list))
        .routes(routes!(payouts::routes::overdue))
        .routes(routes!(payouts::routes::show))
        .routes(routes!(summary::show))
}
