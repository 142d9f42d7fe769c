//! Operators: who may read finance data and do what an operator does, and the record of what
//! they did. Finance staff's routes, the receipts' retries and a donor's erasure all go through
//! here.
//!
//! - [`access`]: bearer tokens and their roles, made and revoked from the command line, and the
//!   [`access::Caller`] / [`access::Admin`] extractors;
//! - [`audit`]: the append-only audit log of every read and every operator's action, and
//!   `GET /v1/finance/audit`.

pub mod access;
pub mod audit;

use axum::extract::FromRef;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// `GET /v1/finance/audit`.
pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    PgPool: FromRef<S>,
    crate::db::Reads: FromRef<S>,
{
    OpenApiRouter::new().routes(routes!(audit::list))
}
