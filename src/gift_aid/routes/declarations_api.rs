//! Declarations: cancelled from a day (`POST .../declarations/{id}/cancel`, admins), and each
//! donor's Gift Aid gifts in a tax year (`GET .../donors?tax_year=2026-27`, JSON or CSV).

use super::*;
use crate::gift_aid::declarations::{self, CancelError, Declaration, Donor, Later};
use crate::gift_aid::donor::{self, Declared};

/// The body of `POST /v1/finance/gift-aid/declarations`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(as = GiftAidLaterDeclaration)]
#[allow(dead_code)]
struct LaterBody {
    email: String,
    title: Option<String>,
    /// As on the donor's tax records, in Latin letters.
    first_name: String,
    last_name: String,
    house_name_or_number: String,
    /// Required in the UK (HMRC's pattern); outside it, any.
    postcode: Option<String>,
    /// Default `GB`.
    country: Option<String>,
    /// The words the donor agreed to, and their version.
    wording_version: String,
    wording: String,
    /// RFC 3339: when the donor declared; default now.
    declared_at: Option<String>,
    /// RFC 3339: the earliest gift it covers; default 4 years before `declared_at`.
    covers_from: Option<String>,
}

/// `POST /v1/finance/gift-aid/declarations`: a declaration made on a later form.
#[utoipa::path(
    post,
    path = "/v1/finance/gift-aid/declarations",
    operation_id = "recordGiftAidDeclaration",
    tag = "finance",
    summary = "Record a Gift Aid declaration made on a later form",
    description = "A declaration the donor made after giving (a thank-you page, a paper \
                   form), with the words they agreed to: its name and address checked by the \
                   rules HMRC's schedule applies, as the donation form checks them. Admin \
                   tokens only; audited.",
    security(("bearerAuth" = [])),
    request_body(content = LaterBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The declaration.", body = Declaration),
        (status = 422, description = "`/problems/validation`: each field at fault named.",
         body = Problem, content_type = "application/problem+json"),
        Refusals,
    ),
)]
pub(super) async fn record_declaration(
    State(db): State<PgPool>,
    Admin(caller): Admin,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let later = parse_later(&body)?;
    let declaration = declarations::record(&db, &later, &caller).await?;
    tracing::info!(declaration_id = %declaration.id, "a Gift Aid declaration made on a later form recorded");
    Ok((StatusCode::CREATED, Json(declaration)).into_response())
}

/// A later form's declaration, every field at fault named at once.
fn parse_later(body: &Value) -> Result<Later, Problem> {
    const FIELDS: [&str; 11] = [
        "email",
        "title",
        "first_name",
        "last_name",
        "house_name_or_number",
        "postcode",
        "country",
        "wording_version",
        "wording",
        "declared_at",
        "covers_from",
    ];
    let Some(object) = body.as_object() else {
        return Err(Problem::invalid(vec![FieldError::new(
            "",
            "must be a JSON object",
        )]));
    };
    let mut errors: Vec<FieldError> = object
        .keys()
        .filter(|key| !FIELDS.contains(&key.as_str()))
        .map(|key| FieldError::new(key.clone(), "is not a known field"))
        .collect();
    let mut text = |name: &str, required: bool, max: usize| {
        text_field(object, name, required, max, &mut errors)
    };
    let email = text("email", true, 254);
    let title = text("title", false, 20);
    let first = text("first_name", true, 100);
    let last = text("last_name", true, 100);
    let house = text("house_name_or_number", true, donor::HOUSE_MAX);
    let postcode = text("postcode", false, 16);
    let country = text("country", false, 56).unwrap_or_else(|| "GB".to_owned());
    let wording_version = text("wording_version", true, 64);
    let wording = text("wording", true, 2000);
    let mut time = |name: &str| match object.get(name) {
        None | Some(Value::Null) => None,
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
                "must be an RFC 3339 time with an offset",
            ));
            None
        }
    };
    let declared_at = time("declared_at").unwrap_or_else(OffsetDateTime::now_utc);
    let covers_from = time("covers_from").unwrap_or_else(|| {
        declared_at
            .replace_year(declared_at.year() - 4)
            .unwrap_or(declared_at - time::Duration::days(4 * 365))
    });
    if covers_from > declared_at {
        errors.push(FieldError::new("covers_from", "is after declared_at"));
    }
    if declared_at > OffsetDateTime::now_utc() + time::Duration::minutes(5) {
        errors.push(FieldError::new("declared_at", "is in the future"));
    }
    // HMRC's rules, as the donation form applies them.
    for (name, value, rule) in [
        ("first_name", &first, donor::first_name as fn(&str) -> _),
        ("last_name", &last, donor::last_name),
    ] {
        if let Some(Err(unwritable)) = value.as_deref().map(rule) {
            errors.push(FieldError::new(name, unwritable.name_message()));
        }
    }
    let declared = Declared {
        title,
        first_name: first.clone().unwrap_or_default(),
        last_name: last.clone().unwrap_or_default(),
        house_name_or_number: house.clone().unwrap_or_default(),
        postcode: postcode.clone(),
        country: country.clone(),
    };
    if house.is_some()
        && let Err(unwritable) = donor::house(&declared)
    {
        errors.push(FieldError::new(
            "house_name_or_number",
            unwritable.address_message(),
        ));
    }
    let postcode = if donor::is_uk(&country) {
        match postcode.as_deref().map(donor::uk_postcode) {
            Some(Some(postcode)) => Some(postcode),
            _ => {
                errors.push(FieldError::new(
                    "postcode",
                    "is required in the UK: a postcode like SW1A 1AA, as HMRC writes them",
                ));
                None
            }
        }
    } else {
        postcode
    };
    let options = email_address::Options::default()
        .with_required_tld()
        .without_display_text()
        .without_domain_literal();
    if let Some(email) = &email
        && email_address::EmailAddress::parse_with_options(email, options).is_err()
    {
        errors.push(FieldError::new("email", "must be an email address"));
    }
    match (email, wording_version, wording) {
        (Some(email), Some(wording_version), Some(wording)) if errors.is_empty() => Ok(Later {
            email,
            donor: Declared {
                postcode,
                ..declared
            },
            wording_version,
            wording,
            declared_at,
            covers_from,
        }),
        _ => Err(Problem::invalid(errors)),
    }
}

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
