//! Declarations: cancelled from a day (`POST .../declarations/{id}/cancel`, admins), and each
//! donor's Gift Aid gifts in a tax year (`GET .../donors?tax_year=2026-27`, JSON or CSV).

use super::*;
use crate::gift_aid::declarations::{self, CancelError, Declaration, Donor};

/// The body of `POST /v1/finance/gift-aid/declarations/{id}/cancel`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(as = GiftAidCancellation)]
#[allow(dead_code)]
struct CancelBody {
    /// RFC 3339 with an offset: gifts from then on are not claimed. Default: now.
    from: Option<String>,
}

/// `POST /v1/finance/gift-aid/declarations/{id}/cancel`.
#[utoipa::path(
    post,
    path = "/v1/finance/gift-aid/declarations/{id}/cancel",
    operation_id = "cancelGiftAidDeclaration",
    tag = "finance",
    summary = "End a Gift Aid declaration",
    description = "Ends the declaration from `from` (default now): gifts made from then on are \
                   not claimed; claims made stand. Cancelled twice, the earlier day stays. \
                   Admin tokens only; audited.",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The declaration's id (a UUID).")),
    request_body(content = CancelBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The declaration.", body = Declaration),
        (status = 404, description = "`/problems/not-found`: no such declaration.",
         body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`/problems/validation`: `from` is not a time, or is \
                                      before the declaration was made.",
         body = Problem, content_type = "application/problem+json"),
        Refusals,
    ),
)]
pub(super) async fn cancel_declaration(
    State(db): State<PgPool>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let not_found = || Problem::unknown("id", "Gift Aid declaration", &id);
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let invalid = |message: String| Problem::invalid(vec![FieldError::new("from", message)]);
    let Some(object) = body.as_object() else {
        return Err(Problem::invalid(vec![FieldError::new("", "must be a JSON object")]).into());
    };
    if let Some(key) = object.keys().find(|key| *key != "from") {
        return Err(
            Problem::invalid(vec![FieldError::new(key.clone(), "is not a known field")]).into(),
        );
    }
    let from = match object.get("from") {
        None | Some(Value::Null) => OffsetDateTime::now_utc(),
        Some(Value::String(raw)) => parse_time(raw).map_err(invalid)?,
        Some(_) => return Err(invalid("must be an RFC 3339 time with an offset".into()).into()),
    };
    let declaration = declarations::cancel(&db, id, from, &caller)
        .await
        .map_err(|error| match error {
            CancelError::NotFound => not_found().into(),
            CancelError::BeforeDeclared { declared_at } => invalid(format!(
                "is before the declaration was made ({})",
                rfc3339(declared_at)
            ))
            .into(),
            CancelError::Database(error) => crate::http::problem::ApiError::from(error),
        })?;
    tracing::info!(declaration_id = %id, "Gift Aid declaration cancelled");
    Ok(Json(declaration).into_response())
}

/// `GET /v1/finance/gift-aid/donors?tax_year=2026-27`.
#[utoipa::path(
    get,
    path = "/v1/finance/gift-aid/donors",
    operation_id = "listGiftAidDonors",
    tag = "finance",
    summary = "Each donor's Gift Aid gifts in a tax year",
    description = "Every donor with Gift Aid gifts in the tax year (6 April to 5 April), each \
                   gift with what Gift Aid is on, its declaration and the claim that took it, \
                   and the donor's totals: for a donor who asks. JSON, or CSV (one line per \
                   gift). Any finance token; audited.",
    security(("bearerAuth" = [])),
    params(("tax_year" = String, Query, description = "`2026-27`: 6 April 2026 to 5 April 2027.")),
    responses(
        (status = 200, description = "The donors.", content(
            (Vec<Donor> = "application/json"),
            (String = "text/csv"),
        )),
        Refusals,
        NotAcceptable,
        BadParameter,
    ),
)]
pub(super) async fn show_donors(
    State(db): State<PgPool>,
    State(reads): State<crate::db::Reads>,
    caller: Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let params = Params::parse(query.as_deref(), &["tax_year"])?;
    let format = export::negotiate(&headers, &[Format::Json, Format::Csv])?;
    let year = params
        .text("tax_year")
        .and_then(declarations::parse_tax_year)
        .ok_or_else(|| bad_parameter("tax_year", "is required, as 2026-27"))?;
    let mut tx = crate::db::reading(&reads).await?;
    let donors = declarations::donors(&mut *tx, year).await?;
    tx.commit().await?;
    audit::record(
        &db,
        &caller,
        "GET /v1/finance/gift-aid/donors",
        &params.filters(),
        donors.iter().map(|d| d.gifts.len()).sum::<usize>() as i64,
    )
    .await?;
    let tax_year = format!("{}-{:02}", year, (year + 1) % 100);
    match format {
        Format::Csv => {
            let mut csv = CsvChunks::new();
            let write = |csv: &mut CsvChunks| -> std::io::Result<()> {
                csv.header(&[
                    "email",
                    "first_name",
                    "last_name",
                    "donation_id",
                    "date",
                    "amount",
                    "currency",
                    "gift_aid",
                    "declaration_id",
                    "claim_id",
                    "claim_status",
                ])?;
                for donor in &donors {
                    for gift in &donor.gifts {
                        let texts = [
                            donor.email.clone(),
                            donor.first_name.clone(),
                            donor.last_name.clone(),
                            gift.donation_id.to_string(),
                            gift.date.to_string(),
                            schedule::amount(gift.amount),
                            gift.currency.to_owned(),
                            schedule::amount(gift.gift_aid),
                            gift.declaration_id.to_string(),
                            gift.claim_id.map(|c| c.to_string()).unwrap_or_default(),
                            gift.claim_status.clone().unwrap_or_default(),
                        ];
                        let cells: Vec<Cell<'_>> = texts.iter().map(Cell::from).collect();
                        csv.row(&cells)?;
                    }
                }
                Ok(())
            };
            write(&mut csv).map_err(anyhow::Error::from)?;
            let bytes = csv.take().map_err(anyhow::Error::from)?;
            Ok(export::csv_response(
                &format!("gift-aid-donors-{tax_year}"),
                Body::from(bytes),
            ))
        }
        _ => Ok(Json(json!({ "tax_year": tax_year, "donors": donors })).into_response()),
    }
}
