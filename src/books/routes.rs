//! `GET /v1/finance/verify`: the books' checks, for admins.

use axum::Json;
use axum::extract::{RawQuery, State};
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::verify::{self, Report};
use crate::http::problem::{ApiResult, Problem};
use crate::http::query::{Params, bad_parameter};
use crate::operators::access::Admin;
use crate::operators::audit;

/// What the audit log says was read.
const WHAT: &str = "GET /v1/finance/verify";

pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    PgPool: axum::extract::FromRef<S>,
    crate::db::Reads: axum::extract::FromRef<S>,
{
    OpenApiRouter::new().routes(routes!(show))
}

/// `GET /v1/finance/verify?settle=`: admins only.
#[utoipa::path(
    get,
    path = "/v1/finance/verify",
    operation_id = "verifyBooks",
    tag = "finance",
    summary = "Check the books",
    description = "Runs every check of the books on one snapshot, read-only: campaign totals \
                   against their donations, each donation against its refunds, disputes and \
                   ledger rows, succeeded gifts in the ledger, paid payouts against the ledger, \
                   Gift Aid claimed once, receipts owed. Each difference names its ids. `settle` \
                   (a duration such as `10m`, the default) is how long a succeeded gift may wait \
                   for its ledger row. Admin tokens only; audited, with the number of \
                   differences as its row count.",
    security(("bearerAuth" = [])),
    params(("settle" = Option<String>, Query, description = "How long a succeeded gift may wait for its ledger row: `10m` unless given.")),
    responses(
        (status = 200, description = "The report; `ok` is true when nothing differs.", body = Report),
        (status = 403, description = "`/problems/forbidden`: not an admin token.", body = Problem,
         content_type = "application/problem+json"),
        crate::operators::access::Refusals,
        crate::http::query::BadParameter,
    ),
)]
pub async fn show(
    State(db): State<PgPool>,
    State(reads): State<crate::db::Reads>,
    Admin(caller): Admin,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Report>> {
    let params = Params::parse(query.as_deref(), &["settle"])?;
    let settle = match params.text("settle") {
        None => verify::SETTLE,
        Some(raw) => humantime::parse_duration(raw.trim())
            .map_err(|_| bad_parameter("settle", "settle: a duration such as 10m or 0s"))?,
    };
    let mut snapshot = crate::db::reading(&reads).await?;
    let report = verify::verify(&mut snapshot, settle).await?;
    drop(snapshot);
    audit::record(
        &db,
        &caller,
        WHAT,
        &params.filters(),
        report.differences() as i64,
    )
    .await?;
    Ok(Json(report))
}
