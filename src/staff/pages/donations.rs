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
