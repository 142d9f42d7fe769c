//! Finance: the ledger of every movement of money in our Stripe balance, payouts reconciled to
//! it, and what finance staff read (donations, summaries, payouts) behind bearer tokens, as
//! JSON pages or streamed CSV, and the same exports from the command line. Every read is
//! audited (`operators::audit`).
//!
//! - [`ledger`]: the append-only ledger, written by the event worker;
//! - [`payouts`]: payouts, their listed transactions and their reconciliation;
//! - [`donations`]: `GET /v1/finance/donations` and `quickdonate export donations`;
//! - [`summary`]: a campaign's figures over a period, from the ledger.

pub mod donations;
pub mod ledger;
pub mod payouts;
pub mod summary;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::startup::AppState;

/// Every `/v1/finance/...` route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(donations::list))
        .routes(routes!(payouts::routes::list))
        .routes(routes!(payouts::routes::overdue))
        .routes(routes!(payouts::routes::show))
        .routes(routes!(summary::show))
}
