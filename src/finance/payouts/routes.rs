//! `GET /v1/finance/payouts`, `GET /v1/finance/payouts/{id}` and
//! `GET /v1/finance/payouts/overdue-donations`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use time::OffsetDateTime;

use super::reconcile::{self, Contained, NotPaidOut, Reconciliation};
use crate::finance::FinanceState;
use crate::http::export::NotAcceptable;
use crate::http::export::{self, Cell, CsvChunks, CsvRow, Format};
use crate::http::problem::{ApiResult, Problem};
use crate::http::query::BadParameter;
use crate::http::query::{Cursor, Params, bad_parameter, next_page};
use crate::http::query::{PageParams, RangeParams};
use crate::operators::access::Caller;
use crate::operators::access::Refusals;
use crate::operators::audit;
use crate::payments::status::PayoutStatus;

/// A page of `GET /v1/finance/payouts`.
#[derive(utoipa::ToSchema)]
#[schema(as = PayoutPage)]
#[allow(dead_code)]
pub(crate) struct Page {
    data: Vec<Reconciliation>,
    /// For the next page (`cursor=`); null on the last.
    next_cursor: Option<String>,
}

/// `GET /v1/finance/payouts/{id}`: the payout and every transaction it contains.
#[derive(utoipa::ToSchema)]
#[schema(as = PayoutWithTransactions)]
#[allow(dead_code)]
pub(crate) struct Detail {
    #[serde(flatten)]
    payout: Reconciliation,
    /// In the order Stripe made them.
    transactions: Vec<Contained>,
}

/// `GET /v1/finance/payouts/overdue-donations`.
#[derive(utoipa::ToSchema)]
#[schema(as = OverdueDonations)]
#[allow(dead_code)]
pub(crate) struct Overdue {
    /// The `days` applied.
    days: i64,
    /// Oldest first.
    data: Vec<NotPaidOut>,
}

/// Payouts newest first (by when Stripe made them), in [from, to), in `status`.
#[utoipa::path(
    get,
    path = "/v1/finance/payouts",
    operation_id = "listPayouts",
    tag = "finance",
    summary = "Payouts, reconciled",
    description = "Payouts newest first (by when Stripe made them), each reconciled against \
                   the ledger (`difference` 0: every penny accounted for; null for a manual \
                   payout, whose contents Stripe does not list) with its split by reporting \
                   category. JSON pages, or the whole selection as the accountant's CSV \
                   (`Accept: text/csv`: one line per payout, amounts with two decimals beside \
                   the currency, the arrival day, the trace id, the split). Any finance \
                   token; audited.",
    security(("bearerAuth" = [])),
    params(
        ("status" = Option<String>, Query,
         description = "Only in this status: `pending`, `in_transit`, `paid`, `failed` or \
                        `canceled`."),
        ("arrival_from" = Option<String>, Query,
         description = "Only those arriving at the bank on or after this day, `YYYY-MM-DD`."),
        ("arrival_to" = Option<String>, Query,
         description = "Only those arriving on or before this day, `YYYY-MM-DD`."),
        RangeParams,
        PageParams,
    ),
    responses(
        (status = 200, description = "A page, or the CSV.", content(
            (Page = "application/json"),
            (String = "text/csv"),
        )),
        Refusals,
        NotAcceptable,
        BadParameter,
    ),
)]
pub async fn list(
    State(state): State<FinanceState>,
    caller: Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let params = Params::parse(
        query.as_deref(),
        &[
            "from",
            "to",
            "status",
            "cursor",
            "limit",
            "arrival_from",
            "arrival_to",
        ],
    )?;
    let format = export::negotiate(&headers, &[Format::Json, Format::Csv])?;
    let (from, to) = params.range()?;
    let arrival_from = day(&params, "arrival_from")?.map(|d| d.midnight().assume_utc());
    let arrival_to =
        day(&params, "arrival_to")?.map(|d| d.midnight().assume_utc() + time::Duration::days(1));
    let status = params.text("status");
    if let Some(status) = status
        && !PayoutStatus::DOCUMENTED.contains(&status)
    {
        return Err(bad_parameter(
            "status",
            format!("must be one of {}", PayoutStatus::DOCUMENTED.join(", ")),
        )
        .into());
    }
    if format == Format::Csv {
        export::refuse_paging(&params)?;
    }
    let (cursor, limit) = match format {
        Format::Json => (params.cursor::<String>()?, params.limit()?),
        _ => (None, crate::http::query::MAX_LIMIT * 100),
    };
    let mut page = sqlx::query!(
        r#"SELECT id, created FROM payouts
               WHERE ($1::timestamptz IS NULL OR created >= $1)
                 AND ($2::timestamptz IS NULL OR created < $2)
                 AND ($3::text IS NULL OR status = $3)
                 AND ($4::timestamptz IS NULL OR (created, id) < ($4, $5))
                 AND ($7::timestamptz IS NULL OR arrival_date >= $7)
                 AND ($8::timestamptz IS NULL OR arrival_date < $8)
               ORDER BY created DESC, id DESC
               LIMIT $6"#,
        from,
        to,
        status,
        cursor.as_ref().map(|c| c.at),
        cursor.as_ref().map(|c| c.id.clone()),
        limit + 1,
        arrival_from,
        arrival_to
    )
    .fetch_all(&mut *crate::db::reading(&state.reads).await?)
    .await?;
    let next_cursor = next_page(&mut page, limit, |p| Cursor::new(p.created, p.id.clone()));
    let ids: Vec<String> = page.into_iter().map(|p| p.id).collect();
    let payouts = reconcile::reconcile(&state.reads.pool, &ids).await?;
    let what = match format {
        Format::Json => "GET /v1/finance/payouts",
        _ => "GET /v1/finance/payouts (csv)",
    };
    audit::record(
        &state.db,
        &caller,
        what,
        &params.filters(),
        payouts.len() as i64,
    )
    .await?;
    match format {
        Format::Json => {
            Ok(Json(json!({"data": payouts, "next_cursor": next_cursor})).into_response())
        }
        _ => csv("payouts", &payouts),
    }
}

/// One payout's reconciliation, with every transaction it contains.
#[utoipa::path(
    get,
    path = "/v1/finance/payouts/{id}",
    operation_id = "showPayout",
    tag = "finance",
    summary = "A payout and its transactions",
    description = "One payout's reconciliation with every balance transaction it contains \
                   and what the ledger holds for each; as CSV (`Accept: text/csv`), the \
                   transactions. Any finance token; audited.",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The payout (`po_...`).")),
    responses(
        (status = 200, description = "The payout, or its transactions as CSV.", content(
            (Detail = "application/json"),
            (String = "text/csv"),
        )),
        (status = 404, description = "`/problems/not-found`: no such payout.", body = Problem,
         content_type = "application/problem+json"),
        Refusals,
        NotAcceptable,
        BadParameter,
    ),
)]
pub async fn show(
    State(state): State<FinanceState>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let params = Params::parse(query.as_deref(), &[])?;
    let format = export::negotiate(&headers, &[Format::Json, Format::Csv])?;
    let Some(payout) = reconcile::reconcile(&state.reads.pool, std::slice::from_ref(&id))
        .await?
        .pop()
    else {
        return Err(Problem::unknown("payout", "payout", &id).into());
    };
    let transactions = reconcile::contained(&state.reads.pool, &id).await?;
    let what = format!("GET /v1/finance/payouts/{id}");
    let mut filters = params.filters();
    filters["payout"] = json!(id);
    audit::record(
        &state.db,
        &caller,
        &what,
        &filters,
        transactions.len() as i64,
    )
    .await?;
    match format {
        Format::Json => {
            let mut shown = serde_json::to_value(&payout).map_err(anyhow::Error::from)?;
            shown["transactions"] =
                serde_json::to_value(&transactions).map_err(anyhow::Error::from)?;
            Ok(Json(shown).into_response())
        }
        _ => csv(&format!("payout-{id}"), &transactions),
    }
}

/// Succeeded donations no paid payout contains, `days` (by default PAYOUT_OVERDUE_DAYS)
/// after they succeeded, oldest first.
#[utoipa::path(
    get,
    path = "/v1/finance/payouts/overdue-donations",
    operation_id = "listOverdueDonations",
    tag = "finance",
    summary = "Succeeded gifts no payout has paid out",
    description = "Succeeded donations that no paid payout contains, `days` after they \
                   succeeded (by default `PAYOUT_OVERDUE_DAYS`), oldest first; JSON or CSV \
                   (`Accept: text/csv`). Any finance token; audited.",
    security(("bearerAuth" = [])),
    params(
        ("days" = Option<i64>, Query, minimum = 0, maximum = 3650,
         description = "Overdue after this many days; 0 to 3650."),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000,
         description = "At most this many, 1 to 1000; default 100."),
    ),
    responses(
        (status = 200, description = "The overdue donations.", content(
            (Overdue = "application/json"),
            (String = "text/csv"),
        )),
        Refusals,
        NotAcceptable,
        BadParameter,
    ),
)]
pub async fn overdue(
    State(state): State<FinanceState>,
    caller: Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let params = Params::parse(query.as_deref(), &["days", "limit"])?;
    let format = export::negotiate(&headers, &[Format::Json, Format::Csv])?;
    let days = match params.text("days") {
        None => state.payout_overdue_days,
        Some(raw) => match raw.parse::<i64>() {
            Ok(days) if (0..=3650).contains(&days) => days,
            _ => {
                return Err(bad_parameter("days", "must be a whole number from 0 to 3650").into());
            }
        },
    };
    let limit = params.limit()?;
    let before = OffsetDateTime::now_utc() - time::Duration::days(days);
    let donations = reconcile::not_paid_out(&state.reads.pool, before, limit).await?;
    audit::record(
        &state.db,
        &caller,
        "GET /v1/finance/payouts/overdue-donations",
        &params.filters(),
        donations.len() as i64,
    )
    .await?;
    match format {
        Format::Json => Ok(Json(json!({"days": days, "data": donations})).into_response()),
        _ => csv("overdue-donations", &donations),
    }
}

/// A short list as one CSV body.
fn csv<T: CsvRow>(stem: &str, rows: &[T]) -> ApiResult<Response> {
    let mut chunks = CsvChunks::new();
    chunks.header(T::HEADER).map_err(anyhow::Error::from)?;
    for row in rows {
        row.write(&mut chunks).map_err(anyhow::Error::from)?;
    }
    let bytes = chunks.take().map_err(anyhow::Error::from)?;
    Ok(export::csv_response(stem, Body::from(bytes)))
}

/// A day given as `YYYY-MM-DD`, named if it is not one.
fn day(params: &Params, name: &str) -> Result<Option<time::Date>, Problem> {
    params
        .text(name)
        .map(|raw| {
            time::Date::parse(
                raw,
                time::macros::format_description!("[year]-[month]-[day]"),
            )
            .map_err(|_| bad_parameter(name, "must be a day, YYYY-MM-DD"))
        })
        .transpose()
}

fn time(at: Option<OffsetDateTime>) -> String {
    at.map(crate::timestamps::rfc3339).unwrap_or_default()
}

/// The journal's columns of a payout's split: Stripe's reporting categories as an accountant
/// posts them; every other category is `other`.
const SPLIT_COLUMNS: [&str; 5] = ["charge", "refund", "dispute", "fee", "other"];

fn split_column(category: &str) -> &'static str {
    match category {
        "charge" => "charge",
        "refund" | "refund_failure" => "refund",
        "dispute" | "dispute_reversal" => "dispute",
        "fee" => "fee",
        _ => "other",
    }
}

/// The accountant's file: one line per payout, amounts in pounds (or the currency's major
/// unit) with two decimals beside the currency, the arrival day, the trace id, and the split.
impl CsvRow for Reconciliation {
    const HEADER: &'static [&'static str] = &[
        "id",
        "status",
        "arrival_date",
        "currency",
        "amount",
        "method",
        "automatic",
        "trace_id",
        "statement_descriptor",
        "payout_fee",
        "charge_gross",
        "charge_fee",
        "charge_net",
        "refund_gross",
        "refund_fee",
        "refund_net",
        "dispute_gross",
        "dispute_fee",
        "dispute_net",
        "fee_gross",
        "fee_fee",
        "fee_net",
        "other_gross",
        "other_fee",
        "other_net",
        "contents",
        "listing_complete",
        "difference",
        "unmatched",
        "donation_count",
        "created",
    ];

    fn write(&self, csv: &mut CsvChunks) -> std::io::Result<()> {
        let currency = self.currency.as_str();
        let money = |minor: i64| Cell::Money(minor, currency);
        let mut split = [(0i64, 0i64, 0i64); SPLIT_COLUMNS.len()];
        for part in &self.split {
            let at = SPLIT_COLUMNS
                .iter()
                .position(|c| *c == split_column(&part.category))
                .expect("every category has a column");
            split[at].0 += part.gross;
            split[at].1 += part.fee;
            split[at].2 += part.net;
        }
        let arrival = self
            .arrival_date
            .map(|at| at.date().to_string())
            .unwrap_or_default();
        let automatic = self.automatic.map(|a| a.to_string());
        let unmatched: Vec<&str> = self.unmatched.iter().map(|u| u.id.as_str()).collect();
        let unmatched = unmatched.join(" ");
        let created = crate::timestamps::rfc3339(self.created);
        let mut cells = vec![
            Cell::Text(&self.id),
            Cell::Text(&self.status),
            Cell::Text(&arrival),
            Cell::Text(currency),
            money(self.amount),
            self.method.as_deref().into(),
            automatic.as_deref().into(),
            self.trace_id.as_deref().into(),
            self.statement_descriptor.as_deref().into(),
            self.payout_fee.map_or(Cell::Empty, money),
        ];
        for (gross, fee, net) in split {
            cells.extend([money(gross), money(fee), money(net)]);
        }
        cells.extend([
            Cell::Text(self.contents),
            Cell::Bool(self.listing_complete),
            self.difference.map_or(Cell::Empty, money),
            Cell::Text(&unmatched),
            Cell::Int(self.donation_count),
            Cell::Text(&created),
        ]);
        csv.row(&cells)
    }
}

impl CsvRow for Contained {
    const HEADER: &'static [&'static str] = &[
        "id",
        "type",
        "reporting_category",
        "amount",
        "fee",
        "net",
        "currency",
        "source",
        "created",
        "ledger",
        "donation_id",
        "campaign",
    ];

    fn write(&self, csv: &mut CsvChunks) -> std::io::Result<()> {
        let donation = self.donation_id.map(|d| d.to_string());
        csv.row(&[
            Cell::Text(&self.id),
            Cell::Text(&self.kind),
            self.reporting_category.as_deref().into(),
            Cell::Int(self.amount),
            Cell::Int(self.fee),
            Cell::Int(self.net),
            Cell::Text(&self.currency),
            self.source.as_deref().into(),
            Cell::Text(&time(self.created)),
            self.ledger.into(),
            donation.as_deref().into(),
            self.campaign.as_deref().into(),
        ])
    }
}

impl CsvRow for NotPaidOut {
    const HEADER: &'static [&'static str] = &[
        "id",
        "campaign",
        "total_amount",
        "currency",
        "succeeded_at",
        "charge_id",
        "balance_transaction_id",
    ];

    fn write(&self, csv: &mut CsvChunks) -> std::io::Result<()> {
        let id = self.id.to_string();
        csv.row(&[
            Cell::Text(&id),
            Cell::Text(&self.campaign),
            Cell::Int(self.total_amount),
            Cell::Text(&self.currency),
            Cell::Text(&time(self.succeeded_at)),
            self.charge_id.as_deref().into(),
            self.balance_transaction_id.as_deref().into(),
        ])
    }
}
