//! `GET /v1/finance/donations`: every donation with its donor, money and Stripe ids, for
//! finance staff, in (created_at, id) order: JSON pages, or the whole filtered set as CSV
//! streamed from the database. `quickdonate export donations` writes the same rows.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::ser::SerializeStruct;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use sqlx::PgPool;

use crate::donations::DonationStatus;
use crate::finance::FinanceState;
use crate::http::export::{self, Cell, CsvChunks, CsvRow, Format, Sink};
use crate::http::problem::{ApiError, ApiResult, Problem};
use crate::http::query::{Cursor, Params, bad_parameter, next_page};
use crate::operators::access::Caller;
use crate::operators::audit;

/// The query parameters `GET /v1/finance/donations` takes.
pub const PARAMETERS: &[&str] = &["campaign", "status", "from", "to", "q", "cursor", "limit"];

/// Which donations: a campaign, a status, created in [from, to), and what was searched for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub campaign: Option<String>,
    pub status: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    pub search: Option<Search>,
}

/// A search (`q=`), read by its shape: a donation id, a PaymentIntent (`pi_...`), a charge
/// (`ch_...`, `py_...`), an email (it has an `@`; any case), or else a name: a surname, or a
/// first name and surname (any case). Each is an exact match on an index of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Search {
    Id(Uuid),
    PaymentIntent(String),
    Charge(String),
    Email(String),
    Name(String),
}

impl Search {
    pub fn parse(raw: &str) -> Option<Search> {
        let text = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() {
            return None;
        }
        Some(if let Ok(id) = Uuid::parse_str(&text) {
            Search::Id(id)
        } else if text.starts_with("pi_") {
            Search::PaymentIntent(text)
        } else if text.starts_with("ch_") || text.starts_with("py_") {
            Search::Charge(text)
        } else if text.contains('@') {
            Search::Email(text.to_lowercase())
        } else {
            Search::Name(text.to_lowercase())
        })
    }

    /// What kind of search it is: what the audit log keeps of it (never the email or name).
    pub fn kind(&self) -> &'static str {
        match self {
            Search::Id(_) => "(donation id)",
            Search::PaymentIntent(_) => "(payment intent)",
            Search::Charge(_) => "(charge)",
            Search::Email(_) => "(email)",
            Search::Name(_) => "(name)",
        }
    }

    fn id(&self) -> Option<Uuid> {
        match self {
            Search::Id(id) => Some(*id),
            _ => None,
        }
    }

    fn text(&self, which: fn(&Search) -> bool) -> Option<&str> {
        match self {
            Search::PaymentIntent(t) | Search::Charge(t) | Search::Email(t) | Search::Name(t)
                if which(self) =>
            {
                Some(t)
            }
            _ => None,
        }
    }
}

/// The query's parameters as the audit log keeps them: a search only by its kind, since an
/// email or a name is a donor's personal data.
pub fn audited(params: &Params) -> Value {
    let mut filters = params.filters();
    if let Some(search) = params.text("q").and_then(Search::parse) {
        filters["q"] = json!(search.kind());
    } else if let Some(map) = filters.as_object_mut() {
        map.remove("q");
    }
    filters
}

impl Filters {
    /// The filters of `params`: a 400 problem naming a bad `status`, `from` or `to`, a 404
    /// naming an unknown `campaign`.
    pub async fn read(db: &sqlx::PgPool, params: &Params) -> Result<Filters, ApiError> {
        let (from, to) = params.range()?;
        let status = params.text("status").map(str::to_owned);
        if let Some(status) = &status
            && !DonationStatus::ALL.iter().any(|s| s.as_str() == status)
        {
            let statuses: Vec<&str> = DonationStatus::ALL.iter().map(|s| s.as_str()).collect();
            return Err(
                bad_parameter("status", format!("must be one of {}", statuses.join(", "))).into(),
            );
        }
        let campaign = params.text("campaign").map(str::to_owned);
        if let Some(slug) = &campaign
            && crate::campaigns::find(db, slug).await?.is_none()
        {
            return Err(Problem::unknown("campaign", "campaign", slug).into());
        }
        Ok(Filters {
            campaign,
            status,
            from,
            to,
            search: params.text("q").and_then(Search::parse),
        })
    }
}

/// A donation as finance sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: Uuid,
    pub created_at: OffsetDateTime,
    pub campaign: String,
    pub status: String,
    pub donor_email: String,
    pub donor_first_name: String,
    pub donor_last_name: String,
    pub amount: i64,
    pub cover_fees_amount: i64,
    pub total_amount: i64,
    pub currency: String,
    pub fee: Option<i64>,
    pub net: Option<i64>,
    pub settlement_currency: Option<String>,
    pub refunded_amount: i64,
    pub dispute_status: Option<String>,
    /// Whether a Gift Aid declaration was made with the gift.
    pub gift_aid: bool,
    pub payment_intent_id: Option<String>,
    pub charge_id: Option<String>,
    /// The paid payout that took the gift to the bank, once one has.
    pub payout_id: Option<String>,
    /// Recreated from Stripe after a restore from backup: no donor details, no receipt.
    pub recovered: bool,
}

/// As JSON: the donor's fields under `donor`, times in RFC 3339.
impl Serialize for Row {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Donor<'a> {
            email: &'a str,
            first_name: &'a str,
            last_name: &'a str,
        }
        let mut row = s.serialize_struct("Donation", 20)?;
        row.serialize_field("id", &self.id)?;
        row.serialize_field("created_at", &crate::timestamps::rfc3339(self.created_at))?;
        row.serialize_field("campaign", &self.campaign)?;
        row.serialize_field("status", &self.status)?;
        row.serialize_field(
            "donor",
            &Donor {
                email: &self.donor_email,
                first_name: &self.donor_first_name,
                last_name: &self.donor_last_name,
            },
        )?;
        row.serialize_field("amount", &self.amount)?;
        row.serialize_field("cover_fees_amount", &self.cover_fees_amount)?;
        row.serialize_field("total_amount", &self.total_amount)?;
        row.serialize_field("currency", &self.currency)?;
        row.serialize_field("fee", &self.fee)?;
        row.serialize_field("net", &self.net)?;
        row.serialize_field("settlement_currency", &self.settlement_currency)?;
        row.serialize_field("refunded_amount", &self.refunded_amount)?;
        row.serialize_field("dispute_status", &self.dispute_status)?;
        row.serialize_field("gift_aid", &self.gift_aid)?;
        row.serialize_field("payment_intent_id", &self.payment_intent_id)?;
        row.serialize_field("charge_id", &self.charge_id)?;
        row.serialize_field("payout_id", &self.payout_id)?;
        row.serialize_field("recovered", &self.recovered)?;
        row.end()
    }
}

impl CsvRow for Row {
    const HEADER: &'static [&'static str] = &[
        "id",
        "created_at",
        "campaign",
        "status",
        "donor_email",
        "donor_first_name",
        "donor_last_name",
        "amount",
        "cover_fees_amount",
        "total_amount",
        "currency",
        "fee",
        "net",
        "settlement_currency",
        "refunded_amount",
        "dispute_status",
        "gift_aid",
        "payment_intent_id",
        "charge_id",
        "payout_id",
        "recovered",
    ];

    fn write(&self, csv: &mut CsvChunks) -> std::io::Result<()> {
        let id = self.id.to_string();
        let created_at = crate::timestamps::rfc3339(self.created_at);
        csv.row(&[
            Cell::Text(&id),
            Cell::Text(&created_at),
            Cell::Text(&self.campaign),
            Cell::Text(&self.status),
            Cell::Text(&self.donor_email),
            Cell::Text(&self.donor_first_name),
            Cell::Text(&self.donor_last_name),
            Cell::Int(self.amount),
            Cell::Int(self.cover_fees_amount),
            Cell::Int(self.total_amount),
            Cell::Text(&self.currency),
            self.fee.into(),
            self.net.into(),
            self.settlement_currency.as_deref().into(),
            Cell::Int(self.refunded_amount),
            self.dispute_status.as_deref().into(),
            Cell::Bool(self.gift_aid),
            self.payment_intent_id.as_deref().into(),
            self.charge_id.as_deref().into(),
            self.payout_id.as_deref().into(),
            Cell::Bool(self.recovered),
        ])
    }
}

/// The donations `filters` select, after `cursor`, at most `limit` (all if none), in
/// (created_at, id) order.
macro_rules! rows {
    ($filters:expr, $cursor:expr, $limit:expr) => {{
        let filters: &Filters = $filters;
        let cursor: Option<&Cursor<Uuid>> = $cursor;
        sqlx::query_as!(
            Row,
            r#"SELECT d.id, d.created_at, d.campaign, d.status, d.donor_email,
                      d.donor_first_name, d.donor_last_name, d.amount, d.cover_fees_amount,
                      d.total_amount, d.currency, d.fee, d.net, d.settlement_currency,
                      d.refunded_amount, d.dispute_status,
                      EXISTS (SELECT 1 FROM gift_aid_declarations g WHERE g.donation_id = d.id)
                          AS "gift_aid!",
                      d.payment_intent_id, d.charge_id,
                      (SELECT t.payout_id FROM paid_out_transactions t
                       WHERE t.balance_transaction_id = d.balance_transaction_id
                       ORDER BY t.created DESC LIMIT 1) AS payout_id,
                      d.recovered_at IS NOT NULL AS "recovered!"
               FROM donations d
               WHERE ($1::text IS NULL OR d.campaign = $1)
                 AND ($2::text IS NULL OR d.status = $2)
                 AND ($3::timestamptz IS NULL OR d.created_at >= $3)
                 AND ($4::timestamptz IS NULL OR d.created_at < $4)
                 AND ($5::timestamptz IS NULL OR (d.created_at, d.id) > ($5, $6::uuid))
                 AND ($8::uuid IS NULL OR d.id = $8)
                 AND ($9::text IS NULL OR d.payment_intent_id = $9)
                 AND ($10::text IS NULL OR d.charge_id = $10)
                 AND ($11::text IS NULL OR lower(d.donor_email) = $11)
                 AND ($12::text IS NULL OR lower(d.donor_last_name) = $12
                      OR lower(d.donor_first_name || ' ' || d.donor_last_name) = $12)
               ORDER BY d.created_at, d.id
               LIMIT $7"#,
            filters.campaign.as_deref(),
            filters.status.as_deref(),
            filters.from,
            filters.to,
            cursor.map(|c| c.at),
            cursor.map(|c| c.id),
            $limit,
            filters.search.as_ref().and_then(Search::id),
            filters
                .search
                .as_ref()
                .and_then(|s| s.text(|s| matches!(s, Search::PaymentIntent(_)))),
            filters
                .search
                .as_ref()
                .and_then(|s| s.text(|s| matches!(s, Search::Charge(_)))),
            filters
                .search
                .as_ref()
                .and_then(|s| s.text(|s| matches!(s, Search::Email(_)))),
            filters
                .search
                .as_ref()
                .and_then(|s| s.text(|s| matches!(s, Search::Name(_))))
        )
    }};
}

const WHAT: &str = "GET /v1/finance/donations";
/// What the audit log says of `quickdonate export donations`.
pub const CLI_WHAT: &str = "export donations (cli)";

/// A page of `GET /v1/finance/donations`.
#[derive(utoipa::ToSchema)]
#[schema(as = FinanceDonationPage)]
#[allow(dead_code)]
pub(super) struct Page {
    data: Vec<RowDoc>,
    /// For the next page (`cursor=`); null on the last.
    next_cursor: Option<String>,
}

// The JSON of `Row` (serialised by hand).
/// A donation as finance sees it. CSV has the same columns, the donor's
/// flattened to `donor_email`, `donor_first_name`, `donor_last_name`.
#[derive(utoipa::ToSchema)]
#[schema(as = FinanceDonation)]
#[allow(dead_code)]
struct RowDoc {
    id: Uuid,
    /// RFC 3339.
    #[schema(value_type = String, format = DateTime)]
    created_at: String,
    campaign: String,
    /// `pending`, `processing`, `succeeded`, `failed`, `canceled` or `refunded`.
    status: String,
    donor: DonorDoc,
    amount: i64,
    cover_fees_amount: i64,
    total_amount: i64,
    currency: String,
    /// Stripe's fee, once the gift succeeded, in the settlement currency.
    fee: Option<i64>,
    net: Option<i64>,
    settlement_currency: Option<String>,
    refunded_amount: i64,
    dispute_status: Option<String>,
    /// Whether a Gift Aid declaration was made with the gift.
    gift_aid: bool,
    payment_intent_id: Option<String>,
    charge_id: Option<String>,
    /// The paid payout that took the gift to the bank, once one has.
    payout_id: Option<String>,
    /// Recreated from Stripe after a restore from backup (`events backfill`): no donor details
    /// (Stripe never had them), no receipt.
    recovered: bool,
}

#[derive(utoipa::ToSchema)]
#[schema(as = FinanceDonor)]
#[allow(dead_code)]
struct DonorDoc {
    email: String,
    first_name: String,
    last_name: String,
}

/// `GET /v1/finance/donations?campaign=&status=&from=&to=&cursor=&limit=`: any finance token.
#[utoipa::path(
    get,
    path = "/v1/finance/donations",
    operation_id = "listFinanceDonations",
    tag = "finance",
    summary = "Every donation, with its donor and money",
    description = "Donations in (created_at, id) order with their donor, amounts, fees and \
                   Stripe ids: JSON pages, or (`Accept: text/csv`) the whole filtered set as \
                   a CSV download streamed from the database (no `cursor` or `limit`). Any \
                   finance token; audited.",
    security(("bearerAuth" = [])),
    params(
        ("campaign" = Option<String>, Query, description = "Only this campaign's (its slug)."),
        ("status" = Option<String>, Query,
         description = "Only in this status: `pending`, `processing`, `succeeded`, `failed`, \
                        `canceled` or `refunded`."),
        ("q" = Option<String>, Query,
         description = "Search, by its shape: a donation id, a PaymentIntent (`pi_...`), a \
                        charge (`ch_...`, `py_...`), an email (any case), or a surname or \
                        first name and surname (any case); exact matches. The audit log keeps \
                        only which kind it was."),
        crate::http::query::RangeParams,
        crate::http::query::PageParams,
    ),
    responses(
        (status = 200, description = "A page, or the CSV.", content(
            (Page = "application/json"),
            (String = "text/csv"),
        )),
        (status = 404, description = "`/problems/not-found`: no such `campaign`.", body = Problem,
         content_type = "application/problem+json"),
        crate::operators::access::Refusals,
        crate::http::export::NotAcceptable,
        crate::http::query::BadParameter,
    ),
)]
pub(super) async fn list(
    State(state): State<FinanceState>,
    caller: Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let params = Params::parse(query.as_deref(), PARAMETERS)?;
    let format = export::negotiate(&headers, &[Format::Json, Format::Csv])?;
    let filters = Filters::read(&state.db, &params).await?;
    if format == Format::Csv {
        export::refuse_paging(&params)?;
        let what = format!("{WHAT} (csv)");
        return audit::csv_export(
            &state.db,
            &state.reads,
            &caller,
            &what,
            &audited(&params),
            "donations",
            move |conn| rows!(&filters, None, None::<i64>).fetch(conn),
        )
        .await;
    }
    let cursor = params.cursor::<Uuid>()?;
    let limit = params.limit()?;
    let mut rows = rows!(&filters, cursor.as_ref(), Some(limit + 1))
        .fetch_all(&mut *crate::db::reading(&state.reads).await?)
        .await?;
    let next_cursor = next_page(&mut rows, limit, |row| Cursor::new(row.created_at, row.id));
    audit::record(
        &state.db,
        &caller,
        WHAT,
        &audited(&params),
        rows.len() as i64,
    )
    .await?;
    let page: Value = json!({"data": rows, "next_cursor": next_cursor});
    Ok(Json(page).into_response())
}

/// `quickdonate export donations`: the rows `params` selects written to `out` as they are read
/// (CSV, or JSON as one array with a row to a line), audited as [`CLI_WHAT`] by `caller`;
/// `progress` is told the total, then the rows written so far. Returns how many were written.
pub async fn export(
    db: &PgPool,
    caller: &Caller,
    params: &Params,
    format: Format,
    out: &mut impl Sink,
    progress: Option<&(dyn Fn(Progress) + Sync)>,
) -> anyhow::Result<i64> {
    let filters = Filters::read(db, params)
        .await
        .map_err(|error| match error {
            ApiError::Client(problem) => match problem.errors.first() {
                Some(field) => anyhow::anyhow!("--{} {}", field.field, field.message),
                None => anyhow::anyhow!("{}", problem.detail),
            },
            other => anyhow::Error::new(other),
        })?;
    let mut filters_given = audited(params);
    filters_given["format"] = format.extension().into();
    let audit = audit::begin(db, caller, CLI_WHAT, &filters_given).await?;
    let mut tx = crate::db::reading(&crate::db::Reads::on(db.clone())).await?;
    if let Some(progress) = progress {
        let total = sqlx::query_scalar!(
            r#"SELECT count(*) AS "count!" FROM donations d
               WHERE ($1::text IS NULL OR d.campaign = $1)
                 AND ($2::text IS NULL OR d.status = $2)
                 AND ($3::timestamptz IS NULL OR d.created_at >= $3)
                 AND ($4::timestamptz IS NULL OR d.created_at < $4)"#,
            filters.campaign.as_deref(),
            filters.status.as_deref(),
            filters.from,
            filters.to,
        )
        .fetch_one(&mut *tx)
        .await?;
        progress(Progress::Total(total));
    }
    let told = |rows: i64| {
        if let Some(progress) = progress {
            progress(Progress::Written(rows));
        }
    };
    let rows = rows!(&filters, None, None::<i64>).fetch(&mut *tx);
    let streamed = match format {
        Format::Csv => export::write_csv(rows, out, told).await,
        Format::Json => export::write_json_array(rows, out, told).await,
        Format::Ods => anyhow::bail!("donations are exported as CSV or JSON"),
    };
    drop(tx);
    audit::finish(db, audit, streamed.rows).await?;
    streamed.outcome?;
    Ok(streamed.rows)
}

/// What an export tells its progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// How many rows there are to write.
    Total(i64),
    /// How many have been written so far.
    Written(i64),
}
