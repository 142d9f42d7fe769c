//! The schedule (`GET .../schedule`) and the gifts near HMRC's 4-year limit
//! (`GET .../expiring`).

use super::*;

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
    total: i64,
    /// 25% of `total`, in pence.
    gift_aid: i64,
    /// HMRC's box 1: the earliest gift on this part (`YYYY-MM-DD`); null when it has none.
    earliest_donation_date: Option<String>,
    /// HMRC's box 2: the tax earlier claims overclaimed on gifts given back since, in pence.
    overclaimed_tax: i64,
    /// What makes up `overclaimed_tax`.
    adjustments: Vec<Adjustment>,
    /// Gifts whose donor cannot be written as HMRC reads them, held back.
    held_back: Vec<HeldBack>,
    /// Eligible gifts in the range past HMRC's 4-year limit: never claimed.
    expired: usize,
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
                   HMRC's schedule lines, in parts of at most 1,000 lines, with box 1 (the \
                   earliest donation date) and box 2 (the tax previously overclaimed). JSON, \
                   CSV with HMRC's columns, or HMRC's own workbook (`R68GAD_V1_00_0_EN`, to \
                   upload as it is), by `Accept`. Any finance token; audited.",
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
             ("Earliest-Donation-Date" = String, description = "Box 1, `DD/MM/YY`."),
             ("Overclaimed-Tax" = String, description = "Box 2, `12.34` (`0.00` when none)."),
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
pub(super) async fn show_schedule(
    State(db): State<PgPool>,
    State(reads): State<crate::db::Reads>,
    State(rules): State<Rules>,
    caller: Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let params = Params::parse(query.as_deref(), SCHEDULE_PARAMETERS)?;
    let format = export::negotiate(&headers, FORMATS)?;
    let (from, to) = required_range(&params)?;
    let part = part(&params)?;

    let mut tx = crate::db::reading(&reads).await?;
    let eligible = store::gifts(&mut *tx, &rules, from, to, today()).await?;
    let adjustments = store::pending_adjustments(&mut *tx).await?;
    tx.commit().await?;

    let schedule = schedule::lines(&eligible.gifts, &rules.making);
    let parts = schedule::part_count(schedule.lines.len());
    if part > parts {
        return Err(bad_parameter(
            "part",
            format!("is past the last part: this schedule has {parts}"),
        )
        .into());
    }
    let lines = schedule::part(&schedule.lines, part);
    audit::record(
        &db,
        &caller,
        &format!("GET {SCHEDULE}"),
        &params.filters(),
        (lines.len() + adjustments.len()) as i64,
    )
    .await?;

    let next_part = (part < parts).then_some(part + 1);
    let boxes = Boxes {
        earliest: schedule::earliest(lines),
        overclaimed_tax: adjustments.iter().map(|a| a.tax).sum(),
    };
    let total = lines.iter().map(|l| l.amount).sum::<i64>();
    let view = json!({
        "from": rfc3339(from),
        "to": rfc3339(to),
        "part": part,
        "parts": parts,
        "next_part": next_part,
        "currency": CURRENCY,
        "rows": rows(lines),
        "total": total,
        "gift_aid": tax_on(total),
        "earliest_donation_date": boxes.earliest.map(|d| d.to_string()),
        "overclaimed_tax": boxes.overclaimed_tax,
        "adjustments": adjustments,
        "held_back": schedule.held_back,
        "expired": eligible.expired.len(),
    });
    let mut response = render(
        format,
        &schedule_stem(from, to, part, parts),
        lines,
        &boxes,
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

/// How far back `expiring` lists the gifts already past their limit: two years of lost Gift
/// Aid is what finance can still act on (and explain); older gifts are not read at all, so the
/// answer costs what the window holds, not the whole history.
const EXPIRED_SHOWN: time::Duration = time::Duration::days(730);

/// `GET /v1/finance/gift-aid/expiring?within=90d`.
#[utoipa::path(
    get,
    path = "/v1/finance/gift-aid/expiring",
    operation_id = "showExpiringGiftAid",
    tag = "finance",
    summary = "Gift Aid about to pass HMRC's 4-year limit",
    description = "Eligible gifts no claim has taken whose last day to be claimed (4 years \
                   after the end of their accounting period, `GIFT_AID_YEAR_END`) is within \
                   `within` (default 90d), and those whose limit passed in the last two years \
                   (`expired`). Any finance token; audited.",
    security(("bearerAuth" = [])),
    params(("within" = Option<String>, Query, description = "A duration: `90d` by default.")),
    responses(
        (status = 200, description = "The gifts.", body = Value),
        Refusals,
        BadParameter,
    ),
)]
pub(super) async fn show_expiring(
    State(db): State<PgPool>,
    State(reads): State<crate::db::Reads>,
    State(rules): State<Rules>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let params = Params::parse(query.as_deref(), &["within"])?;
    let within = match params.text("within") {
        None => time::Duration::days(90),
        Some(raw) => humantime::parse_duration(raw)
            .ok()
            .and_then(|d| time::Duration::try_from(d).ok())
            .filter(|d| *d <= time::Duration::days(3650))
            .ok_or_else(|| bad_parameter("within", "must be a duration like 90d, up to 3650d"))?,
    };
    let today = today();
    let year_end = rules.making.year_end;
    // Only the gifts that can be listed are read, not every gift ever made: received after
    // the last day whose limit passed `EXPIRED_SHOWN` ago, and on or before the last day
    // whose limit falls within `within`. The bounds are UTC days around those UK days, and
    // the deadlines themselves are checked below.
    let shown_since = today - EXPIRED_SHOWN;
    let day_start = |day: time::Date| day.midnight().assume_utc();
    let from = day_start(year_end.last_received_with_deadline_by(shown_since));
    let to = day_start(
        year_end.last_received_with_deadline_by(today + within) + time::Duration::days(1),
    )
    .min(OffsetDateTime::now_utc());
    let mut tx = crate::db::reading(&reads).await?;
    let eligible = store::gifts(&mut *tx, &rules, from, to, today).await?;
    tx.commit().await?;
    let view = |gift: &schedule::Gift| {
        json!({
            "donation_id": gift.donation_id,
            "date": gift.date.to_string(),
            "amount": gift.amount,
            "currency": CURRENCY,
            "gift_aid": tax_on(gift.amount),
            "claim_by": year_end.claim_deadline(gift.date).to_string(),
        })
    };
    let expiring: Vec<Value> = eligible
        .gifts
        .iter()
        .filter(|g| year_end.claim_deadline(g.date) <= today + within)
        .map(view)
        .collect();
    let expired: Vec<Value> = eligible
        .expired
        .iter()
        .filter(|g| year_end.claim_deadline(g.date) > shown_since)
        .map(view)
        .collect();
    audit::record(
        &db,
        &caller,
        "GET /v1/finance/gift-aid/expiring",
        &params.filters(),
        (expiring.len() + expired.len()) as i64,
    )
    .await?;
    Ok(Json(json!({
        "today": today.to_string(),
        "year_end": year_end.to_string(),
        "within_days": within.whole_days(),
        "expiring": expiring,
        "expired": expired,
    }))
    .into_response())
}
