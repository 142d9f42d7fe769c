//! `GET /v1/finance/gift-aid/schedule`, `POST /v1/finance/gift-aid/claims` and
//! `GET /v1/finance/gift-aid/claims/{id}`: any finance token; every one audited.
//!
//! The schedule and a claim answer as JSON, as CSV with exactly HMRC's columns, or as an ODS
//! workbook (the schedule sheet and an adjustments sheet), by `Accept`. A schedule of more than
//! 1,000 lines comes in parts: the answer says which part it is and how many there are (in the
//! JSON, and in `Schedule-Parts` and a `Link: <...>; rel="next"` header in every format).

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRef, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use super::claims::{self, Claim, ClaimError};
use super::schedule::{self, COLUMNS, Line};
use super::{Adjustment, CURRENCY, ods, store};
use crate::http::export::NotAcceptable;
use crate::http::export::{self, Cell, CsvChunks, Format};
use crate::http::json::JsonBody;
use crate::http::problem::{ApiResult, FieldError, Problem, ProblemType};
use crate::http::query::BadParameter;
use crate::http::query::RangeParams;
use crate::http::query::{Params, bad_parameter, parse_time};
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

const FORMATS: &[Format] = &[Format::Json, Format::Csv, Format::Ods];

pub fn router<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    PgPool: FromRef<S>,
    crate::db::Reads: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(show_schedule))
        .routes(routes!(create_claim))
        .routes(routes!(show_claim))
}

// The JSON of `Row`, its `Line` flattened.
/// A schedule line as the JSON answers show it.
#[derive(utoipa::ToSchema)]
#[schema(as = GiftAidLine)]
#[allow(dead_code)]
struct LineDoc {
    /// Its number in the schedule, from 1.
    line: usize,
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

/// `GET /v1/finance/gift-aid/schedule` as JSON.
#[derive(utoipa::ToSchema)]
#[schema(as = GiftAidSchedule)]
#[allow(dead_code)]
struct ScheduleDoc {
    /// RFC 3339.
    from: String,
    to: String,
    /// This part, from 1, of `parts` (at most 1,000 lines each).
    part: usize,
    parts: usize,
    /// Null on the last part.
    next_part: Option<usize>,
    /// `gbp`.
    currency: String,
    rows: Vec<LineDoc>,
    /// The rows' amounts, in pence.
    total_amount: i64,
    /// What earlier claims claimed on gifts since refunded or disputed.
    adjustments: Vec<Adjustment>,
    adjustments_amount: i64,
}

/// A Gift Aid claim as JSON.
#[derive(utoipa::ToSchema)]
#[schema(as = GiftAidClaim)]
#[allow(dead_code)]
struct ClaimDoc {
    id: Uuid,
    /// RFC 3339.
    created_at: String,
    /// The name of the token that made it.
    created_by: String,
    from: String,
    to: String,
    part: usize,
    currency: String,
    rows: Vec<LineDoc>,
    total_amount: i64,
    adjustments: Vec<Adjustment>,
    adjustments_amount: i64,
}

/// The body of `POST /v1/finance/gift-aid/claims`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = GiftAidClaimRequest)]
#[allow(dead_code)]
struct ClaimBody {
    /// RFC 3339 with an offset: the claim covers the donations made in [from, to).
    from: String,
    to: String,
    /// The schedule's part to claim, from 1; default 1.
    part: Option<u32>,
}

/// `GET /v1/finance/gift-aid/schedule?from=&to=&part=`: the eligible donations made in
/// [from, to) that no claim has taken, as HMRC's schedule lines, part `part` (from 1) of at
/// most 1,000 lines; and the adjustments due.
#[utoipa::path(
    get,
    path = "/v1/finance/gift-aid/schedule",
    operation_id = "showGiftAidSchedule",
    tag = "finance",
    summary = "HMRC's Gift Aid schedule",
    description = "The eligible donations made in [from, to) that no claim has taken, as \
                   HMRC's schedule lines, in parts of at most 1,000 lines, and the adjustments \
                   due. JSON, CSV with exactly HMRC's columns, or an ODS workbook, by `Accept`. \
                   Any finance token; audited.",
    security(("bearerAuth" = [])),
    params(
        RangeParams,
        ("part" = Option<u32>, Query, minimum = 1, description = "The part, from 1; default 1."),
    ),
    responses(
        (status = 200, description = "The schedule's part.",
         headers(
             ("Schedule-Parts" = u32, description = "How many parts the schedule has."),
             ("Link" = String, description = "`<...>; rel=\"next\"`: the next part, if any."),
         ),
         content(
             (ScheduleDoc = "application/json"),
             (String = "text/csv"),
             (String = "application/vnd.oasis.opendocument.spreadsheet"),
         )),
        Refusals,
        NotAcceptable,
        BadParameter,
    ),
)]
async fn show_schedule(
    State(db): State<PgPool>,
    State(reads): State<crate::db::Reads>,
    caller: Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let params = Params::parse(query.as_deref(), SCHEDULE_PARAMETERS)?;
    let format = export::negotiate(&headers, FORMATS)?;
    let (from, to) = required_range(&params)?;
    let part = part(&params)?;

    let mut tx = crate::db::reading(&reads).await?;
    let gifts = store::gifts(&mut *tx, from, to).await?;
    let adjustments = store::pending_adjustments(&mut *tx).await?;
    tx.commit().await?;

    let lines = schedule::lines(&gifts);
    let parts = schedule::part_count(lines.len());
    if part > parts {
        return Err(bad_parameter(
            "part",
            format!("is past the last part: this schedule has {parts}"),
        )
        .into());
    }
    let lines = schedule::part(&lines, part);
    audit::record(
        &db,
        &caller,
        &format!("GET {SCHEDULE}"),
        &params.filters(),
        (lines.len() + adjustments.len()) as i64,
    )
    .await?;

    let next_part = (part < parts).then_some(part + 1);
    let view = json!({
        "from": rfc3339(from),
        "to": rfc3339(to),
        "part": part,
        "parts": parts,
        "next_part": next_part,
        "currency": CURRENCY,
        "rows": rows(lines),
        "total_amount": lines.iter().map(|l| l.amount).sum::<i64>(),
        "adjustments": adjustments,
        "adjustments_amount": adjustments.iter().map(|a| a.amount).sum::<i64>(),
    });
    let mut response = render(
        format,
        &schedule_stem(from, to, part, parts),
        lines,
        &adjustments,
        view,
    )?;
    let headers = response.headers_mut();
    headers.insert("schedule-parts", HeaderValue::from(parts));
    if let Some(next) = next_part {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("from", &rfc3339(from))
            .append_pair("to", &rfc3339(to))
            .append_pair("part", &next.to_string())
            .finish();
        let link = format!("<{SCHEDULE}?{query}>; rel=\"next\"");
        headers.insert(
            header::LINK,
            HeaderValue::from_str(&link).expect("an encoded query is a header value"),
        );
    }
    Ok(response)
}

/// `POST /v1/finance/gift-aid/claims` with `{"from", "to", "part"?}`: claims that part of the
/// schedule as it stands, with every adjustment due; 201 with the claim.
#[utoipa::path(
    post,
    path = "/v1/finance/gift-aid/claims",
    operation_id = "createGiftAidClaim",
    tag = "finance",
    summary = "Claim a part of the Gift Aid schedule",
    description = "Claims that part of the schedule as it stands, with every adjustment due. \
                   Any finance token; audited.",
    security(("bearerAuth" = [])),
    request_body(content = ClaimBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The claim.", body = ClaimDoc,
         headers(("Location" = String, description = "`/v1/finance/gift-aid/claims/{id}`"))),
        (status = 400, description = "`/problems/malformed-json` or `/problems/unreadable-body`.",
         body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`/problems/nothing-to-claim` or `/problems/claim-conflict`.",
         body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`/problems/body-too-large`.", body = Problem,
         content_type = "application/problem+json"),
        (status = 415, description = "`/problems/unsupported-media-type`.", body = Problem,
         content_type = "application/problem+json"),
        (status = 422, description = "`/problems/validation`.", body = Problem,
         content_type = "application/problem+json"),
        Refusals,
    ),
)]
async fn create_claim(
    State(db): State<PgPool>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let request = ClaimRequest::parse(&body)?;
    let claim = claims::create(&db, &caller.name, request.from, request.to, request.part)
        .await
        .map_err(|error| match error {
            ClaimError::NothingToClaim => Problem::new(
                ProblemType::NothingToClaim,
                "Every eligible donation made in [from, to) has been claimed already, and no \
             adjustment is due: no claim was made.",
            )
            .into(),
            ClaimError::NoSuchPart { parts } => Problem::invalid(vec![FieldError::new(
                "part",
                format!("is past the last part: this schedule has {parts}"),
            )])
            .into(),
            ClaimError::Conflict => Problem::new(
                ProblemType::ClaimConflict,
                "Another claim took some of these donations at the same moment; nothing was \
             claimed. Read the schedule again.",
            )
            .into(),
            ClaimError::Database(error) => crate::http::problem::ApiError::from(error),
        })?;
    tracing::info!(claim_id = %claim.id, lines = claim.lines.len(), adjustments = claim.adjustments.len(), "Gift Aid claim made");

    let mut filters = Map::new();
    filters.insert("from".into(), rfc3339(request.from).into());
    filters.insert("to".into(), rfc3339(request.to).into());
    filters.insert("part".into(), request.part.into());
    filters.insert("claim".into(), claim.id.to_string().into());
    audit::record(
        &db,
        &caller,
        &format!("POST {CLAIMS}"),
        &filters.into(),
        (claim.lines.len() + claim.adjustments.len()) as i64,
    )
    .await?;

    let mut response = (StatusCode::CREATED, Json(claim_view(&claim))).into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("{CLAIMS}/{}", claim.id)).expect("a path is a header"),
    );
    Ok(response)
}

/// `GET /v1/finance/gift-aid/claims/{id}`: the claim as it was made, in any of the formats.
#[utoipa::path(
    get,
    path = "/v1/finance/gift-aid/claims/{id}",
    operation_id = "showGiftAidClaim",
    tag = "finance",
    summary = "A Gift Aid claim",
    description = "A claim made, as JSON, CSV with HMRC's columns, or an ODS workbook, by \
                   `Accept`. Any finance token; audited.",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The claim's id (a UUID).")),
    responses(
        (status = 200, description = "The claim.", content(
            (ClaimDoc = "application/json"),
            (String = "text/csv"),
            (String = "application/vnd.oasis.opendocument.spreadsheet"),
        )),
        (status = 404, description = "`/problems/not-found`: no such claim.", body = Problem,
         content_type = "application/problem+json"),
        Refusals,
        NotAcceptable,
        BadParameter,
    ),
)]
async fn show_claim(
    State(db): State<PgPool>,
    State(reads): State<crate::db::Reads>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let params = Params::parse(query.as_deref(), &[])?;
    let format = export::negotiate(&headers, FORMATS)?;
    let not_found = || Problem::unknown("id", "Gift Aid claim", &id);
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let mut tx = crate::db::reading(&reads).await?;
    let claim = claims::find(&mut tx, id).await?.ok_or_else(not_found)?;
    tx.commit().await?;

    let mut filters = params.filters();
    if let Value::Object(map) = &mut filters {
        map.insert("id".into(), id.to_string().into());
    }
    audit::record(
        &db,
        &caller,
        &format!("GET {CLAIMS}/{{id}}"),
        &filters,
        (claim.lines.len() + claim.adjustments.len()) as i64,
    )
    .await?;
    let stem = format!("gift-aid-claim-{id}");
    render(
        format,
        &stem,
        &claim.lines,
        &claim.adjustments,
        claim_view(&claim),
    )
}

/// What `POST /v1/finance/gift-aid/claims` takes.
#[derive(Debug)]
struct ClaimRequest {
    from: OffsetDateTime,
    to: OffsetDateTime,
    part: usize,
}

impl ClaimRequest {
    /// Every bad field named at once: a 422 problem.
    fn parse(body: &Value) -> Result<Self, Problem> {
        let Some(object) = body.as_object() else {
            return Err(Problem::invalid(vec![FieldError::new(
                "",
                "must be a JSON object with from, to and, for a later part, part",
            )]));
        };
        let mut errors = Vec::new();
        for key in object.keys() {
            if !["from", "to", "part"].contains(&key.as_str()) {
                errors.push(FieldError::new(key.clone(), "is not a known field"));
            }
        }
        let mut time = |name: &str| match object.get(name) {
            None | Some(Value::Null) => {
                errors.push(FieldError::new(
                    name,
                    "is required: a claim covers the donations made in [from, to)",
                ));
                None
            }
            Some(Value::String(raw)) => match parse_time(raw) {
                Ok(at) => Some(at),
                Err(message) => {
                    errors.push(FieldError::new(name, message));
                    None
                }
            },
            Some(_) => {
                errors.push(FieldError::new(
                    name,
                    "must be an RFC 3339 time with an offset, as a string",
                ));
                None
            }
        };
        let from = time("from");
        let to = time("to");
        let part = match object.get("part") {
            None | Some(Value::Null) => Some(1),
            Some(value) => match value.as_u64() {
                Some(part) if part >= 1 && part <= u32::MAX as u64 => Some(part as usize),
                _ => {
                    errors.push(FieldError::new("part", "must be a whole number from 1"));
                    None
                }
            },
        };
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            errors.push(FieldError::new("from", "is after `to`"));
        }
        match (from, to, part) {
            (Some(from), Some(to), Some(part)) if errors.is_empty() => Ok(Self { from, to, part }),
            _ => Err(Problem::invalid(errors)),
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

/// A line as the JSON answers show it: its number in the schedule, HMRC's cells, the amount
/// as integer pence beside its currency, and the donations it claims.
#[derive(Serialize)]
struct Row<'a> {
    line: usize,
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
            line: i + 1,
            cells: line,
            donation_date: schedule::date(line.date),
            schedule_amount: schedule::amount(line.amount),
            amount: line.amount,
            currency: CURRENCY,
            donation_ids: line.donation_ids(),
        })
        .collect()
}

fn claim_view(claim: &Claim) -> Value {
    json!({
        "id": claim.id,
        "created_at": rfc3339(claim.created_at),
        "created_by": claim.created_by,
        "from": rfc3339(claim.from),
        "to": rfc3339(claim.to),
        "part": claim.part,
        "currency": CURRENCY,
        "rows": rows(&claim.lines),
        "total_amount": claim.lines.iter().map(|l| l.amount).sum::<i64>(),
        "adjustments": claim.adjustments,
        "adjustments_amount": claim.adjustments.iter().map(|a| a.amount).sum::<i64>(),
    })
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

/// The answer in `format`: `json` as it is; CSV with exactly HMRC's columns (the schedule
/// only: adjustments are in the JSON and the workbook); the ODS workbook.
fn render(
    format: Format,
    stem: &str,
    lines: &[Line],
    adjustments: &[Adjustment],
    json: Value,
) -> ApiResult<Response> {
    match format {
        Format::Json => Ok(Json(json).into_response()),
        Format::Csv => {
            let mut csv = CsvChunks::new();
            let write = |csv: &mut CsvChunks| -> std::io::Result<()> {
                csv.header(&COLUMNS)?;
                for line in lines {
                    let cells = line.cells();
                    let cells: Vec<Cell<'_>> = cells.iter().map(Cell::from).collect();
                    csv.row(&cells)?;
                }
                Ok(())
            };
            write(&mut csv).map_err(anyhow::Error::from)?;
            let bytes = csv.take().map_err(anyhow::Error::from)?;
            Ok(export::csv_response(stem, Body::from(bytes)))
        }
        Format::Ods => {
            let bytes = ods::workbook(lines, adjustments)?;
            Ok(export::download(stem, Format::Ods, Body::from(bytes)))
        }
    }
}
