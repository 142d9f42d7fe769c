//! Gift Aid's routes: the schedule and the gifts near the 4-year limit (`schedule_api.rs`),
//! claims and their life (`claims_api.rs`), declarations recorded, cancelled, and each donor's
//! tax year (`declarations_api.rs`). Reads take any finance token; `POST .../claims`,
//! `PATCH .../claims/{id}` and the declarations' `POST`s take an admin's. Every one audited.
//!
//! The schedule and a claim answer as JSON, as CSV with HMRC's columns (item number first), or
//! as HMRC's own workbook (`R68GAD_V1_00_0_EN`), by `Accept`. Box 1 (the earliest donation
//! date) and box 2 (the tax previously overclaimed) are in the JSON, in the workbook, and in
//! the `Earliest-Donation-Date` and `Overclaimed-Tax` headers of every format. A schedule of
//! more than 1,000 lines comes in parts, each valid alone: the answer says which part it is and
//! how many there are (in the JSON, and in `Schedule-Parts` and a `Link: <...>; rel="next"`
//! header in every format).

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRef, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::claims::{self, Claim, ClaimError, Keyed, Move, MoveError};
use super::schedule::{self, COLUMNS, HeldBack, Line};
use super::{Adjustment, CURRENCY, Rules, ods, store, tax_on};
use crate::http::export::NotAcceptable;
use crate::http::export::{self, Cell, CsvChunks, Format};
use crate::http::json::JsonBody;
use crate::http::problem::{ApiResult, FieldError, Problem, ProblemType};
use crate::http::query::BadParameter;
use crate::http::query::RangeParams;
use crate::http::query::{Params, bad_parameter, parse_time};
use crate::idempotency::{self, IdempotencyKey};
use crate::operators::access::Admin;
use crate::operators::access::Caller;
use crate::operators::access::Refusals;
use crate::operators::audit;
use crate::timestamps::rfc3339;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const SCHEDULE: &str = "/v1/finance/gift-aid/schedule";
const CLAIMS: &str = "/v1/finance/gift-aid/claims";

/// The query parameters the schedule takes.
pub const SCHEDULE_PARAMETERS: &[&str] = &["from", "to", "part"];

mod claims_api;
mod declarations_api;
mod schedule_api;

const FORMATS: &[Format] = &[Format::Json, Format::Csv, Format::Ods];

pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    PgPool: FromRef<S>,
    crate::db::Reads: FromRef<S>,
    Rules: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(schedule_api::show_schedule))
        .routes(routes!(schedule_api::show_expiring))
        .routes(routes!(claims_api::create_claim, claims_api::list_claims))
        .routes(routes!(claims_api::show_claim, claims_api::move_claim))
        .routes(routes!(declarations_api::record_declaration))
        .routes(routes!(declarations_api::cancel_declaration))
        .routes(routes!(declarations_api::show_donors))
}

/// A schedule line as the JSON answers show it.
#[derive(utoipa::ToSchema)]
#[schema(as = GiftAidLine)]
#[allow(dead_code)]
struct LineDoc {
    /// Its item number in the schedule (HMRC's column B), from 1.
    item: usize,
    title: String,
    first_name: String,
    last_name: String,
    house_name_or_number: String,
    postcode: String,
    /// HMRC's "Aggregated donations" cell (empty for a single gift).
    aggregated_donations: String,
    /// HMRC's "Sponsored event" cell.
    sponsored_event: String,
    /// As the schedule writes it (`DD/MM/YY`).
    donation_date: String,
    /// As the schedule writes it: `25.00`.
    schedule_amount: String,
    /// Pence.
    amount: i64,
    currency: String,
    /// The donations the line claims.
    donation_ids: Vec<Uuid>,
}

/// HMRC's two boxes above the donation rows.
struct Boxes {
    /// Box 1, D13.
    earliest: Option<time::Date>,
    /// Box 2, D17, in pence.
    overclaimed_tax: i64,
}

/// Today in the UK: HMRC's dates are UK dates.
fn today() -> time::Date {
    crate::timestamps::uk_date(OffsetDateTime::now_utc())
}

/// A text field of a body: trimmed, 1 to `max` characters, no control characters. Missing, it
/// is `None`, with an error naming it if `required`; given badly, an error naming it.
fn text_field(
    object: &serde_json::Map<String, Value>,
    name: &str,
    required: bool,
    max: usize,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match object.get(name) {
        None | Some(Value::Null) if !required => None,
        Some(Value::String(raw))
            if !raw.trim().is_empty()
                && raw.chars().count() <= max
                && !raw.chars().any(char::is_control) =>
        {
            Some(raw.trim().to_owned())
        }
        _ => {
            let what = if required {
                "is required"
            } else {
                "must be text"
            };
            errors.push(FieldError::new(
                name,
                format!("{what}: 1 to {max} characters"),
            ));
            None
        }
    }
}

/// `from` and `to`, both required; `from` not after `to`.
fn required_range(params: &Params) -> Result<(OffsetDateTime, OffsetDateTime), Problem> {
    let (from, to) = params.range()?;
    let required = |name| {
        bad_parameter(
            name,
            "is required: the schedule covers the donations made in [from, to)",
        )
    };
    Ok((
        from.ok_or_else(|| required("from"))?,
        to.ok_or_else(|| required("to"))?,
    ))
}

/// `part`: a whole number from 1, by default 1.
fn part(params: &Params) -> Result<usize, Problem> {
    match params.text("part") {
        None => Ok(1),
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|part| *part >= 1)
            .map(|part| part as usize)
            .ok_or_else(|| bad_parameter("part", "must be a whole number from 1")),
    }
}

/// A line as the JSON answers show it: its item number, HMRC's cells, the amount as integer
/// pence beside its currency, and the donations it claims.
#[derive(Serialize)]
struct Row<'a> {
    item: usize,
    #[serde(flatten)]
    cells: &'a Line,
    donation_date: String,
    /// The amount as the schedule writes it: `25.00`.
    schedule_amount: String,
    amount: i64,
    currency: &'static str,
    donation_ids: Vec<Uuid>,
}

fn rows(lines: &[Line]) -> Vec<Row<'_>> {
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| Row {
            item: i + 1,
            cells: line,
            donation_date: schedule::date(line.date),
            schedule_amount: schedule::amount(line.amount),
            amount: line.amount,
            currency: CURRENCY,
            donation_ids: line.donation_ids(),
        })
        .collect()
}

/// What a schedule's download is named by: its period, and its part when it has more than one
/// (`gift-aid-schedule-2026-10-01-to-2027-01-01-part-2`), whatever its format.
fn schedule_stem(from: OffsetDateTime, to: OffsetDateTime, part: usize, parts: usize) -> String {
    let stem = format!("gift-aid-schedule-{}-to-{}", from.date(), to.date());
    if parts > 1 {
        format!("{stem}-part-{part}")
    } else {
        stem
    }
}

/// The answer in `format`: `json` as it is; CSV with HMRC's columns, the item number first;
/// HMRC's workbook. Every format says boxes 1 and 2 in its headers too.
fn render(
    format: Format,
    stem: &str,
    lines: &[Line],
    boxes: &Boxes,
    json: Value,
) -> ApiResult<Response> {
    let mut response = match format {
        Format::Json => Json(json).into_response(),
        Format::Csv => {
            let mut csv = CsvChunks::new();
            let write = |csv: &mut CsvChunks| -> std::io::Result<()> {
                let mut columns = vec!["Item"];
                columns.extend(COLUMNS);
                csv.header(&columns)?;
                for (i, line) in lines.iter().enumerate() {
                    let item = (i + 1).to_string();
                    let cells = line.cells();
                    let cells: Vec<Cell<'_>> = std::iter::once(Cell::from(&item))
                        .chain(cells.iter().map(Cell::from))
                        .collect();
                    csv.row(&cells)?;
                }
                Ok(())
            };
            write(&mut csv).map_err(anyhow::Error::from)?;
            let bytes = csv.take().map_err(anyhow::Error::from)?;
            export::csv_response(stem, Body::from(bytes))
        }
        Format::Ods => {
            let bytes = ods::workbook(lines, boxes.earliest, boxes.overclaimed_tax)?;
            export::download(stem, Format::Ods, Body::from(bytes))
        }
    };
    let headers = response.headers_mut();
    if let Some(earliest) = boxes.earliest {
        headers.insert(
            "earliest-donation-date",
            HeaderValue::from_str(&schedule::date(earliest)).expect("a date is a header"),
        );
    }
    headers.insert(
        "overclaimed-tax",
        HeaderValue::from_str(&schedule::amount(boxes.overclaimed_tax))
            .expect("an amount is a header"),
    );
    Ok(response)
}
