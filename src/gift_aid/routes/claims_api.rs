//! Claims: made (`POST .../claims`, admins), listed, shown in every format, and moved through
//! their life (`PATCH .../claims/{id}`, admins).

use super::*;

/// A Gift Aid claim as JSON.
#[derive(utoipa::ToSchema)]
#[schema(as = GiftAidClaim)]
#[allow(dead_code)]
struct ClaimDoc {
    id: Uuid,
    /// `prepared`, `submitted`, `paid`, `rejected` or `void`.
    status: String,
    /// RFC 3339: when it last moved.
    status_at: String,
    /// RFC 3339.
    created_at: String,
    /// The name of the token that made it.
    created_by: String,
    from: String,
    to: String,
    part: usize,
    currency: String,
    rows: Vec<LineDoc>,
    total: i64,
    /// 25% of `total`, in pence.
    gift_aid: i64,
    /// HMRC's box 2, in pence.
    overclaimed_tax: i64,
    /// HMRC's box 1 (`YYYY-MM-DD`).
    earliest_donation_date: Option<String>,
    adjustments: Vec<Adjustment>,
    hmrc_reference: Option<String>,
    /// Pence, once paid.
    amount_paid: Option<i64>,
    /// `YYYY-MM-DD`, once paid.
    paid_on: Option<String>,
    rejection_reason: Option<String>,
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

/// The body of `PATCH /v1/finance/gift-aid/claims/{id}`.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(as = GiftAidClaimMove)]
#[allow(dead_code)]
struct MoveBody {
    /// `submitted` (with `hmrc_reference`), `paid` (with `amount_paid` in pence and `paid_on`,
    /// `YYYY-MM-DD`), `rejected` (with `reason`) or `void` (before submission).
    status: String,
    hmrc_reference: Option<String>,
    amount_paid: Option<i64>,
    paid_on: Option<String>,
    reason: Option<String>,
}

/// `POST /v1/finance/gift-aid/claims` with `{"from", "to", "part"?}`: claims that part of the
/// schedule as it stands, with every adjustment due; 201 with the claim.
#[utoipa::path(
    post,
    path = "/v1/finance/gift-aid/claims",
    operation_id = "createGiftAidClaim",
    tag = "finance",
    summary = "Claim a part of the Gift Aid schedule",
    description = "Claims that part of the schedule as it stands, with every adjustment due, \
                   recorded with its audit row in one transaction. Admin tokens only. With an \
                   `Idempotency-Key`, the same request again answers the same claim (200), \
                   and the key with another request is refused.",
    security(("bearerAuth" = [])),
    params(("Idempotency-Key" = Option<String>, Header,
            description = "Makes a lost answer safe to retry.")),
    request_body(content = ClaimBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The claim.", body = ClaimDoc,
         headers(("Location" = String, description = "`/v1/finance/gift-aid/claims/{id}`"))),
        (status = 200, description = "The claim this key made before.", body = ClaimDoc),
        (status = 400, description = "`/problems/malformed-json`, `/problems/unreadable-body` \
                                      or `/problems/invalid-idempotency-key`.",
         body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`/problems/nothing-to-claim` or `/problems/claim-conflict`.",
         body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`/problems/body-too-large`.", body = Problem,
         content_type = "application/problem+json"),
        (status = 415, description = "`/problems/unsupported-media-type`.", body = Problem,
         content_type = "application/problem+json"),
        (status = 422, description = "`/problems/validation` or \
                                      `/problems/idempotency-key-reused`.",
         body = Problem, content_type = "application/problem+json"),
        Refusals,
    ),
)]
pub(super) async fn create_claim(
    State(db): State<PgPool>,
    State(rules): State<Rules>,
    Admin(caller): Admin,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let key = IdempotencyKey::from_headers(&headers)?;
    let request = ClaimRequest::parse(&body)?;
    let fingerprint = idempotency::fingerprint(CLAIMS, &body);
    let keyed = key.as_ref().map(|key| Keyed {
        key: key.as_str(),
        fingerprint: &fingerprint,
    });
    let request = claims::Request {
        from: request.from,
        to: request.to,
        part: request.part,
    };
    let (claim, replayed) = claims::create(&db, &rules, &caller, &request, keyed, today())
        .await
        .map_err(|error| match error {
            ClaimError::NothingToClaim => Problem::new(
                ProblemType::NothingToClaim,
                "Every eligible donation made in [from, to) has been claimed already: no claim \
                 was made. Adjustments due wait for a claim with a line to claim.",
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
            ClaimError::KeyReused => Problem::new(
                ProblemType::IdempotencyKeyReused,
                "This Idempotency-Key made a claim from another request; nothing was claimed.",
            )
            .into(),
            ClaimError::Database(error) => crate::http::problem::ApiError::from(error),
        })?;
    tracing::info!(claim_id = %claim.id, lines = claim.lines.len(), adjustments = claim.adjustments.len(), replayed, "Gift Aid claim made");

    let status = if replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, Json(claim_view(&claim))).into_response();
    response.headers_mut().insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("{CLAIMS}/{}", claim.id)).expect("a path is a header"),
    );
    Ok(response)
}

/// `GET /v1/finance/gift-aid/claims`: every claim, newest first.
#[utoipa::path(
    get,
    path = "/v1/finance/gift-aid/claims",
    operation_id = "listGiftAidClaims",
    tag = "finance",
    summary = "Gift Aid claims",
    description = "Every claim, newest first, with its status and figures. Any finance token; \
                   audited.",
    security(("bearerAuth" = [])),
    responses(
        (status = 200, description = "The claims.", body = Value),
        Refusals,
        BadParameter,
    ),
)]
pub(super) async fn list_claims(
    State(db): State<PgPool>,
    State(reads): State<crate::db::Reads>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let params = Params::parse(query.as_deref(), &[])?;
    let mut tx = crate::db::reading(&reads).await?;
    let claims = claims::list(&mut *tx).await?;
    tx.commit().await?;
    audit::record(
        &db,
        &caller,
        &format!("GET {CLAIMS}"),
        &params.filters(),
        claims.len() as i64,
    )
    .await?;
    let data: Vec<Value> = claims
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "status": c.status.as_str(),
                "status_at": rfc3339(c.status_at),
                "created_at": rfc3339(c.created_at),
                "from": rfc3339(c.from),
                "to": rfc3339(c.to),
                "part": c.part,
                "rows": c.rows,
                "total": c.total,
                "gift_aid": tax_on(c.total),
                "overclaimed_tax": c.overclaimed_tax,
                "currency": CURRENCY,
                "hmrc_reference": c.hmrc_reference,
            })
        })
        .collect();
    Ok(Json(json!({ "data": data })).into_response())
}

/// `GET /v1/finance/gift-aid/claims/{id}`: the claim as it was made, in any of the formats.
#[utoipa::path(
    get,
    path = "/v1/finance/gift-aid/claims/{id}",
    operation_id = "showGiftAidClaim",
    tag = "finance",
    summary = "A Gift Aid claim",
    description = "A claim made, as JSON, CSV with HMRC's columns, or HMRC's own workbook, by \
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
pub(super) async fn show_claim(
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
    let boxes = Boxes {
        earliest: claim.earliest_donation_date,
        overclaimed_tax: claim.overclaimed_tax(),
    };
    render(format, &stem, &claim.lines, &boxes, claim_view(&claim))
}

/// `PATCH /v1/finance/gift-aid/claims/{id}`: what HMRC did with it.
#[utoipa::path(
    patch,
    path = "/v1/finance/gift-aid/claims/{id}",
    operation_id = "moveGiftAidClaim",
    tag = "finance",
    summary = "Record what became of a Gift Aid claim",
    description = "`submitted` (HMRC's reference), `paid` (amount and day), `rejected` (why) \
                   or `void` (before submission). A rejected or void claim releases its \
                   donations and adjustments for the next claim. The same move again changes \
                   nothing. Admin tokens only; audited with the move.",
    security(("bearerAuth" = [])),
    params(("id" = String, Path, description = "The claim's id (a UUID).")),
    request_body(content = MoveBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The claim.", body = ClaimDoc),
        (status = 404, description = "`/problems/not-found`: no such claim.", body = Problem,
         content_type = "application/problem+json"),
        (status = 409, description = "`/problems/claim-move-refused`: not a move this claim \
                                      can make.",
         body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`/problems/validation`.", body = Problem,
         content_type = "application/problem+json"),
        Refusals,
    ),
)]
pub(super) async fn move_claim(
    State(db): State<PgPool>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> ApiResult<Response> {
    let not_found = || Problem::unknown("id", "Gift Aid claim", &id);
    let id = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let change = parse_move(&body)?;
    let claim = claims::change(&db, id, &change, &caller)
        .await
        .map_err(|error| match error {
            MoveError::NotFound => not_found().into(),
            MoveError::Illegal { from, to } => Problem::new(
                ProblemType::ClaimMoveRefused,
                format!(
                    "A {from} claim cannot become {to}: a claim is prepared, then submitted or \
                     void; a submitted one is paid or rejected; nothing comes after."
                ),
            )
            .into(),
            MoveError::Database(error) => crate::http::problem::ApiError::from(error),
        })?;
    tracing::info!(claim_id = %claim.id, status = claim.status.as_str(), "Gift Aid claim moved");
    Ok(Json(claim_view(&claim)).into_response())
}

/// A move's body, every bad field named at once.
fn parse_move(body: &Value) -> Result<Move, Problem> {
    let Some(object) = body.as_object() else {
        return Err(Problem::invalid(vec![FieldError::new(
            "",
            "must be a JSON object with status and what HMRC said",
        )]));
    };
    let mut errors = Vec::new();
    let allowed: &[&str] = match object.get("status").and_then(Value::as_str) {
        Some("submitted") => &["status", "hmrc_reference"],
        Some("paid") => &["status", "amount_paid", "paid_on"],
        Some("rejected") => &["status", "reason"],
        Some("void") => &["status"],
        _ => {
            errors.push(FieldError::new(
                "status",
                "must be submitted, paid, rejected or void",
            ));
            &[
                "status",
                "hmrc_reference",
                "amount_paid",
                "paid_on",
                "reason",
            ]
        }
    };
    for key in object.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.push(FieldError::new(key.clone(), "is not a field of this move"));
        }
    }
    let mut text = |name: &str, max: usize| text_field(object, name, true, max, &mut errors);
    let change = match object.get("status").and_then(Value::as_str) {
        Some("submitted") => {
            text("hmrc_reference", 64).map(|hmrc_reference| Move::Submitted { hmrc_reference })
        }
        Some("rejected") => text("reason", 500).map(|reason| Move::Rejected { reason }),
        Some("void") => Some(Move::Void),
        Some("paid") => {
            let amount_paid = match object.get("amount_paid").and_then(Value::as_i64) {
                Some(amount) if amount >= 0 => Some(amount),
                _ => {
                    errors.push(FieldError::new(
                        "amount_paid",
                        "is required: what HMRC paid, in pence, a whole number from 0",
                    ));
                    None
                }
            };
            let paid_on = match object.get("paid_on").and_then(Value::as_str).map(|raw| {
                time::Date::parse(
                    raw,
                    time::macros::format_description!("[year]-[month]-[day]"),
                )
            }) {
                Some(Ok(day)) if day <= today() => Some(day),
                _ => {
                    errors.push(FieldError::new(
                        "paid_on",
                        "is required: the day HMRC paid, YYYY-MM-DD, not in the future",
                    ));
                    None
                }
            };
            amount_paid
                .zip(paid_on)
                .map(|(amount_paid, paid_on)| Move::Paid {
                    amount_paid,
                    paid_on,
                })
        }
        _ => None,
    };
    match change {
        Some(change) if errors.is_empty() => Ok(change),
        _ => Err(Problem::invalid(errors)),
    }
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

fn claim_view(claim: &Claim) -> Value {
    let total = claim.total();
    json!({
        "id": claim.id,
        "status": claim.status.as_str(),
        "status_at": rfc3339(claim.status_at),
        "created_at": rfc3339(claim.created_at),
        "created_by": claim.created_by,
        "from": rfc3339(claim.from),
        "to": rfc3339(claim.to),
        "part": claim.part,
        "currency": CURRENCY,
        "rows": rows(&claim.lines),
        "total": total,
        "gift_aid": claims::gift_aid_of(total),
        "overclaimed_tax": claim.overclaimed_tax(),
        "earliest_donation_date": claim.earliest_donation_date.map(|d| d.to_string()),
        "adjustments": claim.adjustments,
        "hmrc_reference": claim.hmrc_reference,
        "amount_paid": claim.amount_paid,
        "paid_on": claim.paid_on.map(|d| d.to_string()),
        "rejection_reason": claim.rejection_reason,
    })
}
