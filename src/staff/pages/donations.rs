//! `GET /staff/donations`: the finance list (`GET /v1/finance/donations`) with its filters,
//! its search and its pages, every one of them in the address.

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::{Shell, failed_page, html, money, read_pairs, when};
use crate::staff::StaffState;
use crate::staff::api::{Api, path_with};
use crate::staff::sessions::Signed;

/// The filters the page takes, as the API takes them.
#[derive(Deserialize, Default)]
pub struct Filters {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub campaign: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub cursor: String,
}

impl Filters {
    fn pairs(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("q", &self.q),
            ("campaign", &self.campaign),
            ("status", &self.status),
            ("from", &self.from),
            ("to", &self.to),
        ]
    }
}

#[derive(Deserialize)]
struct ApiPage {
    data: Vec<ApiRow>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct ApiRow {
    id: String,
    created_at: String,
    campaign: String,
    status: String,
    donor: ApiDonor,
    total_amount: i64,
    currency: String,
    fee: Option<i64>,
    net: Option<i64>,
    settlement_currency: Option<String>,
    refunded_amount: i64,
    gift_aid: bool,
    payment_intent_id: Option<String>,
    payout_id: Option<String>,
}

#[derive(Deserialize)]
struct ApiDonor {
    email: String,
    first_name: String,
    last_name: String,
}

pub struct Row {
    pub id: String,
    pub created: String,
    pub campaign: String,
    pub status: String,
    pub donor: String,
    pub email: String,
    pub amount: String,
    pub fee: String,
    pub net: String,
    pub refunded: String,
    pub gift_aid: bool,
    pub payment_intent: String,
    pub payout: String,
}

impl From<ApiRow> for Row {
    fn from(row: ApiRow) -> Self {
        let settled = row.settlement_currency.as_deref().unwrap_or(&row.currency);
        Row {
            created: when(&row.created_at),
            donor: format!("{} {}", row.donor.first_name, row.donor.last_name)
                .trim()
                .to_owned(),
            email: row.donor.email,
            amount: money(row.total_amount, &row.currency),
            fee: row.fee.map(|fee| money(fee, settled)).unwrap_or_default(),
            net: row.net.map(|net| money(net, settled)).unwrap_or_default(),
            refunded: if row.refunded_amount > 0 {
                money(row.refunded_amount, &row.currency)
            } else {
                String::new()
            },
            gift_aid: row.gift_aid,
            payment_intent: row.payment_intent_id.unwrap_or_default(),
            payout: row.payout_id.unwrap_or_default(),
            id: row.id,
            campaign: row.campaign,
            status: row.status,
        }
    }
}

#[derive(Template)]
#[template(path = "donations.html")]
struct DonationsPage {
    shell: Shell,
    filters: Filters,
    rows: Vec<Row>,
    /// The next page's address, if there is one.
    next: Option<String>,
    /// The same list as CSV.
    csv: String,
    statuses: &'static [&'static str],
}

/// `GET /staff/donations`: donations, filtered and searched.
#[utoipa::path(
    get,
    path = "/staff/donations",
    operation_id = "staffDonations",
    tag = "staff console",
    summary = "The console's donations",
    description = "The finance list with its filters (`campaign`, `status`, `from`, `to`), its \
                   search (`q`: an email, a name, a PaymentIntent, a charge or a donation id) \
                   and its pages (`cursor`), each in the address.",
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
        .get(&signed, &path_with("/v1/finance/donations", &pairs))
        .await
    {
        Ok(page) => page,
        Err(failed) => return failed_page(failed),
    };
    let next = page.next_cursor.map(|cursor| {
        let mut pairs = filters.pairs();
        pairs.push(("cursor", &cursor));
        path_with("/staff/donations", &pairs)
    });
    let csv = path_with("/staff/exports/donations.csv", &filters.pairs());
    html(
        StatusCode::OK,
        DonationsPage {
            shell: Shell::signed_in(&state, &signed, "Donations", "donations"),
            rows: page.data.into_iter().map(Row::from).collect(),
            next,
            csv,
            filters,
            statuses: &crate::donations::DonationStatus::NAMES,
        },
    )
}

#[derive(Deserialize)]
struct ApiWhole {
    donation: ApiDonation,
    events: Vec<ApiEvent>,
    ledger: Vec<ApiLedger>,
    receipts: Vec<ApiReceipt>,
    gift_aid: ApiGiftAid,
}

#[derive(Deserialize)]
struct ApiDonation {
    #[serde(flatten)]
    row: ApiRow,
    amount: i64,
    cover_fees_amount: i64,
    charge_id: Option<String>,
    dispute_status: Option<String>,
    recovered: bool,
    succeeded_at: Option<String>,
}

#[derive(Deserialize)]
pub struct ApiEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: String,
    pub received_at: String,
    pub state: String,
    pub attempts: i64,
}

#[derive(Deserialize)]
struct ApiLedger {
    kind: String,
    amount: i64,
    currency: String,
    occurred_at: String,
    source_id: String,
    balance_transaction_id: String,
}

#[derive(Deserialize)]
pub struct ApiReceipt {
    pub kind: String,
    pub status: String,
    pub attempts: i64,
    pub created_at: String,
    pub sent_at: Option<String>,
}

#[derive(Deserialize)]
struct ApiGiftAid {
    declared: bool,
    cancelled: bool,
    claim: Option<ApiClaim>,
}

#[derive(Deserialize)]
struct ApiClaim {
    id: String,
    status: String,
    line: i64,
    amount: i64,
}

pub struct LedgerLine {
    pub kind: String,
    pub amount: String,
    pub occurred: String,
    pub source: String,
    pub balance_transaction: String,
}

#[derive(Template)]
#[template(path = "donation.html")]
struct DonationPage {
    shell: Shell,
    row: Row,
    gift: String,
    cover: String,
    charge: String,
    dispute: String,
    recovered: bool,
    succeeded: String,
    events: Vec<ApiEvent>,
    ledger: Vec<LedgerLine>,
    receipts: Vec<ApiReceipt>,
    /// What its Gift Aid is, in words, and the claim holding it.
    gift_aid: String,
    claim: Option<String>,
}

/// `GET /staff/donations/{id}`: one donation whole.
#[utoipa::path(
    get,
    path = "/staff/donations/{id}",
    operation_id = "staffDonation",
    tag = "staff console",
    summary = "A donation in the console",
    description = "One donation: its money, donor and Stripe ids, its events in the order \
                   Stripe created them, its ledger rows, its receipts and its Gift Aid.",
    params(("id" = String, Path, description = "The donation's id.")),
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 303, description = "Not signed in: to the sign-in page."),
        (status = 404, description = "No such donation.", body = String,
         content_type = "text/html"),
    ),
)]
pub async fn show(
    State(state): State<StaffState>,
    axum::Extension(api): axum::Extension<Api>,
    signed: Signed,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let encoded = crate::staff::api::encoded(&id);
    let whole: ApiWhole = match api
        .get(&signed, &format!("/v1/finance/donations/{encoded}"))
        .await
    {
        Ok(whole) => whole,
        Err(failed) => return failed_page(failed),
    };
    let donation = whole.donation;
    let currency = donation.row.currency.clone();
    let gift_aid = match (&whole.gift_aid, &whole.gift_aid.claim) {
        (_, Some(claim)) => format!(
            "claimed: line {} of a {} claim, {}",
            claim.line,
            claim.status,
            money(claim.amount, "gbp")
        ),
        (g, None) if g.declared && g.cancelled => {
            "declared with the gift; the declaration was cancelled since".to_owned()
        }
        (g, None) if g.declared => "declared with the gift; not claimed yet".to_owned(),
        _ => "no declaration with the gift".to_owned(),
    };
    let title = format!("Donation {}", donation.row.id);
    html(
        StatusCode::OK,
        DonationPage {
            shell: Shell::signed_in(&state, &signed, &title, "donations"),
            gift: money(donation.amount, &currency),
            cover: money(donation.cover_fees_amount, &currency),
            charge: donation.charge_id.unwrap_or_default(),
            dispute: donation.dispute_status.unwrap_or_default(),
            recovered: donation.recovered,
            succeeded: donation
                .succeeded_at
                .as_deref()
                .map(when)
                .unwrap_or_default(),
            row: Row::from(donation.row),
            events: whole
                .events
                .into_iter()
                .map(|e| ApiEvent {
                    created: when(&e.created),
                    received_at: when(&e.received_at),
                    ..e
                })
                .collect(),
            ledger: whole
                .ledger
                .into_iter()
                .map(|l| LedgerLine {
                    amount: money(l.amount, &l.currency),
                    occurred: when(&l.occurred_at),
                    kind: l.kind,
                    source: l.source_id,
                    balance_transaction: l.balance_transaction_id,
                })
                .collect(),
            receipts: whole
                .receipts
                .into_iter()
                .map(|r| ApiReceipt {
                    created_at: when(&r.created_at),
                    sent_at: r.sent_at.as_deref().map(when),
                    ..r
                })
                .collect(),
            gift_aid,
            claim: whole.gift_aid.claim.map(|c| c.id),
        },
    )
}
