//! `GET /staff/gift-aid`: the schedule for a period (`GET /v1/finance/gift-aid/schedule`) with
//! its workbook and CSV to download, the claims (`GET /v1/finance/gift-aid/claims`), and for an
//! admin the form that prepares a claim (`POST /v1/finance/gift-aid/claims`, with an
//! Idempotency-Key made when the page was, so a form sent twice makes one claim).
//! `GET /staff/gift-aid/claims/{id}` shows a claim with its workbook and, for an admin, the
//! forms that record what HMRC did (`PATCH /v1/finance/gift-aid/claims/{id}`).
//!
//! A period is whole days from midnight UTC, as the API takes it: consecutive periods meet
//! exactly, so no gift falls between two claims.

use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use time::Date;

use super::{Shell, failed_page, html, money, read_pairs, when};
use crate::staff::StaffState;
use crate::staff::api::{Api, Failed, path_with};
use crate::staff::sessions::{Posted, Signed};

#[derive(Deserialize, Default)]
pub struct Period {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub part: String,
}

/// `YYYY-MM-DD` as the API's midnight UTC.
fn midnight(day: &str) -> Option<String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(day, &format)
        .ok()
        .map(|date| crate::timestamps::rfc3339(date.midnight().assume_utc()))
}

#[derive(Deserialize)]
struct ApiSchedule {
    part: usize,
    parts: usize,
    rows: Vec<ApiRow>,
    total: i64,
    gift_aid: i64,
    earliest_donation_date: Option<String>,
    overclaimed_tax: i64,
    adjustments: Vec<Value>,
    held_back: Vec<Value>,
    expired: usize,
}

#[derive(Deserialize)]
struct ApiRow {
    item: usize,
    title: String,
    first_name: String,
    last_name: String,
    house_name_or_number: String,
    postcode: String,
    aggregated_donations: String,
    donation_date: String,
    amount: i64,
}

pub struct Row {
    pub item: usize,
    pub donor: String,
    pub house: String,
    pub postcode: String,
    pub aggregated: String,
    pub date: String,
    pub amount: String,
}

impl From<ApiRow> for Row {
    fn from(r: ApiRow) -> Self {
        Row {
            item: r.item,
            donor: [r.title, r.first_name, r.last_name]
                .iter()
                .filter(|part| !part.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join(" "),
            house: r.house_name_or_number,
            postcode: r.postcode,
            aggregated: r.aggregated_donations,
            date: r.donation_date,
            amount: money(r.amount, "gbp"),
        }
    }
}

/// The schedule's preview.
pub struct Preview {
    pub part: usize,
    pub parts: usize,
    pub rows: Vec<Row>,
    pub total: String,
    pub gift_aid: String,
    pub earliest: String,
    pub overclaimed: String,
    pub adjustments: usize,
    pub held_back: usize,
    pub expired: usize,
    pub ods: String,
    pub csv: String,
    /// The API's from and to, for the claim form.
    pub from: String,
    pub to: String,
}

#[derive(Deserialize)]
struct ApiClaims {
    data: Vec<ApiClaimListed>,
}

#[derive(Deserialize)]
struct ApiClaimListed {
    id: String,
    status: String,
    created_at: String,
    from: String,
    to: String,
    part: i64,
    rows: i64,
    total: i64,
    gift_aid: i64,
    hmrc_reference: Option<String>,
}

pub struct Claim {
    pub id: String,
    pub status: String,
    pub created: String,
    pub period: String,
    pub part: i64,
    pub rows: i64,
    pub total: String,
    pub gift_aid: String,
    pub reference: String,
}

#[derive(Template)]
#[template(path = "gift_aid.html")]
struct GiftAidPage {
    shell: Shell,
    period: Period,
    preview: Option<Preview>,
    problem: Option<String>,
    claims: Vec<Claim>,
    /// The claim form's Idempotency-Key.
    key: String,
    admin: bool,
}

fn day_of(rfc3339: &str) -> &str {
    rfc3339.get(..10).unwrap_or(rfc3339)
}

/// `GET /staff/gift-aid`: the schedule for a period, and the claims.
#[utoipa::path(
    get,
    path = "/staff/gift-aid",
    operation_id = "staffGiftAid",
    tag = "staff console",
    summary = "The console's Gift Aid",
    description = "The schedule for the days `from` to `to` (`YYYY-MM-DD`, `to` not included; \
                   midnight UTC) and its `part`, with HMRC's workbook and CSV to download; \
                   the claims; and for an admin, the form that prepares a claim.",
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 303, description = "Not signed in: to the sign-in page."),
    ),
)]
pub async fn page(
    State(state): State<StaffState>,
    axum::Extension(api): axum::Extension<Api>,
    signed: Signed,
    RawQuery(query): RawQuery,
) -> Response {
    let period: Period =
        read_pairs(query.as_deref().unwrap_or_default().as_bytes()).unwrap_or_default();
    let (preview, problem) = match (midnight(&period.from), midnight(&period.to)) {
        (Some(from), Some(to)) => match preview(&api, &signed, &from, &to, &period.part).await {
            Ok(preview) => (Some(preview), None),
            Err(failed) if failed.status.is_client_error() => (None, Some(failed.detail)),
            Err(failed) => return failed_page(failed),
        },
        _ if period.from.is_empty() && period.to.is_empty() => (None, None),
        _ => (
            None,
            Some("Give both days as YYYY-MM-DD: from, and to (not included).".to_owned()),
        ),
    };
    let claims: ApiClaims = match api.get(&signed, "/v1/finance/gift-aid/claims").await {
        Ok(claims) => claims,
        Err(failed) => return failed_page(failed),
    };
    html(
        StatusCode::OK,
        GiftAidPage {
            shell: Shell::signed_in(&state, &signed, "Gift Aid", "gift-aid"),
            period,
            preview,
            problem,
            claims: claims
                .data
                .into_iter()
                .map(|c| Claim {
                    status: c.status,
                    created: when(&c.created_at),
                    period: format!("{} to {}", day_of(&c.from), day_of(&c.to)),
                    part: c.part,
                    rows: c.rows,
                    total: money(c.total, "gbp"),
                    gift_aid: money(c.gift_aid, "gbp"),
                    reference: c.hmrc_reference.unwrap_or_default(),
                    id: c.id,
                })
                .collect(),
            key: uuid::Uuid::new_v4().to_string(),
            admin: signed.is_admin(),
        },
    )
}

async fn preview(
    api: &Api,
    signed: &Signed,
    from: &str,
    to: &str,
    part: &str,
) -> Result<Preview, Failed> {
    let pairs = [("from", from), ("to", to), ("part", part)];
    let schedule: ApiSchedule = api
        .get(signed, &path_with("/v1/finance/gift-aid/schedule", &pairs))
        .await?;
    let part = schedule.part.to_string();
    let download = [("from", from), ("to", to), ("part", part.as_str())];
    Ok(Preview {
        part: schedule.part,
        parts: schedule.parts,
        rows: schedule.rows.into_iter().map(Row::from).collect(),
        total: money(schedule.total, "gbp"),
        gift_aid: money(schedule.gift_aid, "gbp"),
        earliest: schedule.earliest_donation_date.unwrap_or_default(),
        overclaimed: money(schedule.overclaimed_tax, "gbp"),
        adjustments: schedule.adjustments.len(),
        held_back: schedule.held_back.len(),
        expired: schedule.expired,
        ods: path_with("/staff/exports/gift-aid-schedule.ods", &download),
        csv: path_with("/staff/exports/gift-aid-schedule.csv", &download),
        from: from.to_owned(),
        to: to.to_owned(),
    })
}

#[derive(Deserialize)]
pub struct Prepare {
    from: String,
    to: String,
    part: String,
    key: String,
}

/// `POST /staff/gift-aid/claims`: prepares a claim of the schedule's part (admins).
#[utoipa::path(
    post,
    path = "/staff/gift-aid/claims",
    operation_id = "staffPrepareClaim",
    tag = "staff console",
    summary = "Prepare a Gift Aid claim",
    description = "A form post (`from`, `to`, `part`, `key`, `csrf`): claims that part of the \
                   schedule through the finance API, `key` its Idempotency-Key. Admins only.",
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Made: to the claim's page."),
        (status = 403, description = "Not an admin, or no CSRF token.", body = String,
         content_type = "text/html"),
        (status = 409, description = "Nothing to claim, or claimed at the same moment.",
         body = String, content_type = "text/html"),
    ),
)]
pub async fn prepare(
    axum::Extension(api): axum::Extension<Api>,
    posted: Posted<Prepare>,
) -> Response {
    let Posted { signed, form } = posted;
    if let Some(refusal) = signed.unless_admin() {
        return refusal;
    }
    let mut body = json!({"from": form.from, "to": form.to});
    if let Ok(part) = form.part.parse::<u32>() {
        body["part"] = json!(part);
    }
    let made: Result<Value, Failed> = api
        .call(
            &signed,
            Method::POST,
            "/v1/finance/gift-aid/claims",
            &body,
            Some(&form.key),
        )
        .await;
    match made {
        Ok(claim) => Redirect::to(&format!(
            "/staff/gift-aid/claims/{}",
            claim["id"].as_str().unwrap_or_default()
        ))
        .into_response(),
        Err(failed) => failed_page(failed),
    }
}

#[derive(Deserialize)]
struct ApiClaim {
    id: String,
    status: String,
    status_at: String,
    created_at: String,
    created_by: String,
    from: String,
    to: String,
    part: usize,
    rows: Vec<ApiRow>,
    total: i64,
    gift_aid: i64,
    overclaimed_tax: i64,
    earliest_donation_date: Option<String>,
    adjustments: Vec<Value>,
    hmrc_reference: Option<String>,
    amount_paid: Option<i64>,
    paid_on: Option<String>,
    rejection_reason: Option<String>,
}

#[derive(Template)]
#[template(path = "claim.html")]
struct ClaimPage {
    shell: Shell,
    id: String,
    status: String,
    status_at: String,
    created: String,
    created_by: String,
    period: String,
    part: usize,
    rows: Vec<Row>,
    total: String,
    gift_aid: String,
    overclaimed: String,
    earliest: String,
    adjustments: usize,
    reference: String,
    paid: String,
    reason: String,
    ods: String,
    csv: String,
    admin: bool,
    /// The moves this claim can still make.
    can_submit: bool,
    can_settle: bool,
}

/// `GET /staff/gift-aid/claims/{id}`: a claim, its workbook, and what HMRC did.
#[utoipa::path(
    get,
    path = "/staff/gift-aid/claims/{id}",
    operation_id = "staffClaim",
    tag = "staff console",
    summary = "A Gift Aid claim in the console",
    description = "A claim with its lines and boxes, its workbook and CSV to download, and for \
                   an admin the forms that record it submitted, paid, rejected or void.",
    params(("id" = String, Path, description = "The claim's id.")),
    responses(
        (status = 200, description = "The page.", body = String, content_type = "text/html"),
        (status = 303, description = "Not signed in: to the sign-in page."),
        (status = 404, description = "No such claim.", body = String, content_type = "text/html"),
    ),
)]
pub async fn claim(
    State(state): State<StaffState>,
    axum::Extension(api): axum::Extension<Api>,
    signed: Signed,
    Path(id): Path<String>,
) -> Response {
    let encoded = crate::staff::api::encoded(&id);
    let claim: ApiClaim = match api
        .get(&signed, &format!("/v1/finance/gift-aid/claims/{encoded}"))
        .await
    {
        Ok(claim) => claim,
        Err(failed) => return failed_page(failed),
    };
    let title = format!(
        "Gift Aid claim of {} to {}",
        day_of(&claim.from),
        day_of(&claim.to)
    );
    html(
        StatusCode::OK,
        ClaimPage {
            shell: Shell::signed_in(&state, &signed, &title, "gift-aid"),
            status_at: when(&claim.status_at),
            created: when(&claim.created_at),
            created_by: claim.created_by,
            period: format!("{} to {}", day_of(&claim.from), day_of(&claim.to)),
            part: claim.part,
            rows: claim.rows.into_iter().map(Row::from).collect(),
            total: money(claim.total, "gbp"),
            gift_aid: money(claim.gift_aid, "gbp"),
            overclaimed: money(claim.overclaimed_tax, "gbp"),
            earliest: claim.earliest_donation_date.unwrap_or_default(),
            adjustments: claim.adjustments.len(),
            reference: claim.hmrc_reference.unwrap_or_default(),
            paid: match (claim.amount_paid, claim.paid_on) {
                (Some(amount), Some(on)) => format!("{} on {on}", money(amount, "gbp")),
                _ => String::new(),
            },
            reason: claim.rejection_reason.unwrap_or_default(),
            ods: format!("/staff/exports/gift-aid-claim.ods?id={encoded}"),
            csv: format!("/staff/exports/gift-aid-claim.csv?id={encoded}"),
            admin: signed.is_admin(),
            can_submit: claim.status == "prepared",
            can_settle: claim.status == "submitted",
            status: claim.status,
            id: claim.id,
        },
    )
}

#[derive(Deserialize)]
pub struct Move {
    status: String,
    #[serde(default)]
    hmrc_reference: String,
    /// Pounds and pence as typed: `1234.50`.
    #[serde(default)]
    amount_paid: String,
    #[serde(default)]
    paid_on: String,
    #[serde(default)]
    reason: String,
}

/// `12.50` (or `£1,234.5`) as pence.
fn pence(typed: &str) -> Option<i64> {
    let cleaned: String = typed
        .trim()
        .trim_start_matches('£')
        .chars()
        .filter(|c| *c != ',')
        .collect();
    let (pounds, fraction) = cleaned.split_once('.').unwrap_or((&cleaned, ""));
    if pounds.is_empty() || !pounds.bytes().all(|b| b.is_ascii_digit()) || fraction.len() > 2 {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pounds: i64 = pounds.parse().ok()?;
    let pence: i64 = format!("{fraction:0<2}").parse().ok()?;
    pounds.checked_mul(100)?.checked_add(pence)
}

/// `POST /staff/gift-aid/claims/{id}/move`: records what HMRC did (admins).
#[utoipa::path(
    post,
    path = "/staff/gift-aid/claims/{id}/move",
    operation_id = "staffMoveClaim",
    tag = "staff console",
    summary = "Record what became of a Gift Aid claim",
    description = "A form post (`status` and its fields: `hmrc_reference`; `amount_paid` in \
                   pounds and `paid_on`; `reason`; and `csrf`), through the finance API. \
                   Admins only.",
    params(("id" = String, Path, description = "The claim's id.")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "Recorded: back to the claim's page."),
        (status = 403, description = "Not an admin, or no CSRF token.", body = String,
         content_type = "text/html"),
        (status = 409, description = "Not a move the claim can make.", body = String,
         content_type = "text/html"),
        (status = 422, description = "A field is missing or wrong.", body = String,
         content_type = "text/html"),
    ),
)]
pub async fn move_claim(
    axum::Extension(api): axum::Extension<Api>,
    Path(id): Path<String>,
    posted: Posted<Move>,
) -> Response {
    let Posted { signed, form } = posted;
    if let Some(refusal) = signed.unless_admin() {
        return refusal;
    }
    let body = match form.status.as_str() {
        "submitted" => json!({"status": "submitted", "hmrc_reference": form.hmrc_reference}),
        "paid" => json!({
            "status": "paid",
            "amount_paid": pence(&form.amount_paid).map_or(Value::String(form.amount_paid.clone()), Value::from),
            "paid_on": form.paid_on,
        }),
        "rejected" => json!({"status": "rejected", "reason": form.reason}),
        other => json!({"status": other}),
    };
    let encoded = crate::staff::api::encoded(&id);
    let moved: Result<Value, Failed> = api
        .call(
            &signed,
            Method::PATCH,
            &format!("/v1/finance/gift-aid/claims/{encoded}"),
            &body,
            None,
        )
        .await;
    match moved {
        Ok(_) => Redirect::to(&format!("/staff/gift-aid/claims/{encoded}")).into_response(),
        Err(failed) => failed_page(failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_typed_in_pounds_are_pence() {
        assert_eq!(pence("1234.50"), Some(123_450));
        assert_eq!(pence("£1,234.5"), Some(123_450));
        assert_eq!(pence("7"), Some(700));
        assert_eq!(pence("0.05"), Some(5));
        for bad in ["", "1.234", "-5", "12.a", "abc", "£"] {
            assert_eq!(pence(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_day_is_its_midnight_utc() {
        assert_eq!(
            midnight("2026-04-06").as_deref(),
            Some("2026-04-06T00:00:00Z")
        );
        assert_eq!(midnight("06/04/2026"), None);
    }
}
