//! `GET /staff/payouts` and `GET /staff/payouts/{id}`: payouts by arrival date with their
//! reconciliation (`GET /v1/finance/payouts`), a payout's split and transactions with every
//! unmatched line highlighted and said what it is (`GET /v1/finance/payouts/{id}`), and the
//! donations overdue for a payout (`GET /v1/finance/payouts/overdue-donations`).

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{Shell, failed_page, html, money, read_pairs, when};
use crate::staff::StaffState;
use crate::staff::api::{Api, path_with};
use crate::staff::sessions::Signed;

#[derive(Deserialize, Default)]
pub struct Filters {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub arrival_from: String,
    #[serde(default)]
    pub arrival_to: String,
    #[serde(default)]
    pub cursor: String,
    #[serde(default)]
    pub overdue: String,
}

impl Filters {
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("status", &self.status),
            ("arrival_from", &self.arrival_from),
            ("arrival_to", &self.arrival_to),
        ]
    }
}

#[derive(Deserialize)]
struct ApiPage {
    data: Vec<ApiPayout>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct ApiPayout {
    id: String,
    status: String,
    amount: i64,
    currency: String,
    arrival_date: Option<String>,
    created: String,
    trace_id: Option<String>,
    statement_descriptor: Option<String>,
    method: Option<String>,
    contents: String,
    listing_complete: bool,
    transaction_count: i64,
    transactions_total: i64,
    ledger_total: i64,
    difference: Option<i64>,
    split: Vec<ApiSplit>,
    unmatched: Vec<ApiUnmatched>,
    donation_count: i64,
    #[serde(default)]
    transactions: Vec<ApiTransaction>,
}

#[derive(Deserialize)]
struct ApiSplit {
    category: String,
    count: i64,
    gross: i64,
    fee: i64,
    net: i64,
}

#[derive(Deserialize)]
struct ApiUnmatched {
    id: String,
}

#[derive(Deserialize)]
struct ApiTransaction {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    reporting_category: Option<String>,
    amount: i64,
    fee: i64,
    net: i64,
    currency: String,
    source: Option<String>,
    created: Option<String>,
    ledger: Option<i64>,
    donation_id: Option<String>,
}

/// A payout as the pages show it.
pub struct Payout {
    pub id: String,
    pub status: String,
    pub amount: String,
    pub arrival: String,
    pub created: String,
    pub trace_id: String,
    pub statement_descriptor: String,
    pub method: String,
    /// What its reconciliation says, in words.
    pub reconciled: String,
    /// Whether it needs a look: a difference, or an unmatched line.
    pub differs: bool,
    pub transactions: i64,
    pub transactions_total: String,
    pub ledger_total: String,
    pub donations: i64,
}

fn reconciled(payout: &ApiPayout) -> (String, bool) {
    let currency = &payout.currency;
    match (payout.contents.as_str(), payout.difference) {
        ("unknown", _) => (
            "manual payout: Stripe lists nothing it contains".to_owned(),
            false,
        ),
        ("not_listed", _) => ("transactions not listed yet".to_owned(), false),
        (_, Some(0)) if payout.unmatched.is_empty() => (
            if payout.listing_complete {
                "matches the ledger to the penny".to_owned()
            } else {
                "matches so far (Stripe's list not final)".to_owned()
            },
            false,
        ),
        (_, Some(difference)) => (
            format!(
                "differs by {} ({} unmatched line(s))",
                money(difference, currency),
                payout.unmatched.len()
            ),
            true,
        ),
        (_, None) => ("not reconciled".to_owned(), true),
    }
}

impl From<&ApiPayout> for Payout {
    fn from(p: &ApiPayout) -> Self {
        let (reconciled, differs) = reconciled(p);
        let currency = &p.currency;
        Payout {
            id: p.id.clone(),
            status: p.status.clone(),
            amount: money(p.amount, currency),
            arrival: p
                .arrival_date
                .as_deref()
                .map(|d| d.get(..10).unwrap_or(d).to_owned())
                .unwrap_or_default(),
            created: when(&p.created),
            trace_id: p.trace_id.clone().unwrap_or_default(),
            statement_descriptor: p.statement_descriptor.clone().unwrap_or_default(),
            method: p.method.clone().unwrap_or_default(),
            reconciled,
            differs,
            transactions: p.transaction_count,
            transactions_total: money(p.transactions_total, currency),
            ledger_total: money(p.ledger_total, currency),
            donations: p.donation_count,
        }
    }
}

#[derive(Deserialize)]
struct ApiOverdue {
    days: i64,
    data: Vec<ApiOverdueRow>,
}

#[derive(Deserialize)]
struct ApiOverdueRow {
    id: String,
    campaign: String,
    total_amount: i64,
    currency: String,
    succeeded_at: Option<String>,
    charge_id: Option<String>,
}

pub struct OverdueRow {
    pub id: String,
    pub campaign: String,
    pub amount: String,
    pub succeeded: String,
    pub charge: String,
}

#[derive(Template)]
#[template(path = "payouts.html")]
struct PayoutsPage {
    shell: Shell,
    filters: Filters,
    payouts: Vec<Payout>,
    next: Option<String>,
    csv: String,
    /// With `overdue=1`: the donations overdue for a payout, and after how many days.
    overdue: Option<(i64, Vec<OverdueRow>)>,
    statuses: &'static [&'static str],
}

/// `GET /staff/payouts`: payouts with their reconciliation.
#[utoipa::path(
    get,
    path = "/staff/payouts",
    operation_id = "staffPayouts",
    tag = "staff console",
    summary = "The console's payouts",
    description = "Payouts newest first with their reconciliation status, filtered by \
                   `status`, `arrival_from`, `arrival_to` (dates) and paged by `cursor`; with \
                   `overdue=1`, the donations overdue for a payout too.",
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 303, description = "Not signed in: to the sign-in page."),
    ),
)]
pub async fn list(
    State(state): State<StaffState>,
    axum::Extension(api): axum::Extension<Api>,
    signed: Signed,
    RawQuery(query): RawQuery,
) -> Response {
    let filters: Filters =
        read_pairs(query.as_deref().unwrap_or_default().as_bytes()).unwrap_or_default();
    let mut pairs = filters.pairs();
    pairs.push(("cursor", &filters.cursor));
    pairs.push(("limit", "50"));
    let page: ApiPage = match api
        .get(&signed, &path_with("/v1/finance/payouts", &pairs))
        .await
    {
        Ok(page) => page,
        Err(failed) => return failed_page(failed),
    };
    let overdue = if filters.overdue.is_empty() {
        None
    } else {
        match api
            .get::<ApiOverdue>(&signed, "/v1/finance/payouts/overdue-donations?limit=200")
            .await
        {
            Ok(overdue) => Some((
                overdue.days,
                overdue
                    .data
                    .into_iter()
                    .map(|row| OverdueRow {
                        amount: money(row.total_amount, &row.currency),
                        succeeded: row.succeeded_at.as_deref().map(when).unwrap_or_default(),
                        charge: row.charge_id.unwrap_or_default(),
                        id: row.id,
                        campaign: row.campaign,
                    })
                    .collect(),
            )),
            Err(failed) => return failed_page(failed),
        }
    };
    let next = page.next_cursor.as_ref().map(|cursor| {
        let mut pairs = filters.pairs();
        pairs.push(("cursor", cursor));
        path_with("/staff/payouts", &pairs)
    });
    html(
        StatusCode::OK,
        PayoutsPage {
            shell: Shell::signed_in(&state, &signed, "Payouts", "payouts"),
            payouts: page.data.iter().map(Payout::from).collect(),
            next,
            csv: path_with("/staff/exports/payouts.csv", &filters.pairs()),
            overdue,
            filters,
            statuses: &crate::payments::status::PayoutStatus::DOCUMENTED,
        },
    )
}

/// A transaction line of a payout's page.
pub struct Line {
    pub id: String,
    pub kind: String,
    pub category: String,
    pub amount: String,
    pub fee: String,
    pub net: String,
    pub ledger: String,
    pub source: String,
    pub created: String,
    pub donation: String,
    /// Why it does not match, when it does not.
    pub unmatched: Option<String>,
}

pub struct SplitLine {
    pub category: String,
    pub count: i64,
    pub gross: String,
    pub fee: String,
    pub net: String,
}

#[derive(Template)]
#[template(path = "payout.html")]
struct PayoutPage {
    shell: Shell,
    payout: Payout,
    split: Vec<SplitLine>,
    lines: Vec<Line>,
    csv: String,
}

/// What an unmatched line is, for the one reconciling: the ledger holds nothing for it, or a
/// different amount.
fn unmatched_reason(t: &ApiTransaction) -> String {
    match t.ledger {
        None => format!(
            "Not in our ledger: a {} {} not made by this service (another product's, or Stripe's own)",
            t.kind,
            t.source.as_deref().unwrap_or("transaction")
        ),
        Some(ledger) => format!(
            "The ledger holds {} for it, Stripe says {}",
            money(ledger, &t.currency),
            money(t.net, &t.currency)
        ),
    }
}

/// `GET /staff/payouts/{id}`: one payout, its split and its transactions.
#[utoipa::path(
    get,
    path = "/staff/payouts/{id}",
    operation_id = "staffPayout",
    tag = "staff console",
    summary = "A payout in the console",
    description = "One payout: what the bank statement shows, its reconciliation, its split by \
                   reporting category, and every transaction it contains, the unmatched ones \
                   highlighted with what they are.",
    params(("id" = String, Path, description = "The payout (`po_...`).")),
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 303, description = "Not signed in: to the sign-in page."),
        (status = 404, description = "No such payout.", body = String, content_type = "text/html"),
    ),
)]
pub async fn show(
    State(state): State<StaffState>,
    axum::Extension(api): axum::Extension<Api>,
    signed: Signed,
    Path(id): Path<String>,
) -> Response {
    let encoded = crate::staff::api::encoded(&id);
    let payout: ApiPayout = match api
        .get(&signed, &format!("/v1/finance/payouts/{encoded}"))
        .await
    {
        Ok(payout) => payout,
        Err(failed) => return failed_page(failed),
    };
    let unmatched: Vec<&str> = payout.unmatched.iter().map(|u| u.id.as_str()).collect();
    let lines = payout
        .transactions
        .iter()
        .map(|t| Line {
            unmatched: unmatched
                .contains(&t.id.as_str())
                .then(|| unmatched_reason(t)),
            id: t.id.clone(),
            kind: t.kind.clone(),
            category: t.reporting_category.clone().unwrap_or_default(),
            amount: money(t.amount, &t.currency),
            fee: money(t.fee, &t.currency),
            net: money(t.net, &t.currency),
            ledger: t.ledger.map(|l| money(l, &t.currency)).unwrap_or_default(),
            source: t.source.clone().unwrap_or_default(),
            created: t.created.as_deref().map(when).unwrap_or_default(),
            donation: t.donation_id.clone().unwrap_or_default(),
        })
        .collect();
    let split = payout
        .split
        .iter()
        .map(|s| SplitLine {
            category: s.category.clone(),
            count: s.count,
            gross: money(s.gross, &payout.currency),
            fee: money(s.fee, &payout.currency),
            net: money(s.net, &payout.currency),
        })
        .collect();
    let title = format!("Payout {}", payout.id);
    html(
        StatusCode::OK,
        PayoutPage {
            shell: Shell::signed_in(&state, &signed, &title, "payouts"),
            csv: format!("/staff/exports/payout.csv?id={encoded}"),
            payout: Payout::from(&payout),
            split,
            lines,
        },
    )
}
