//! Claims: one schedule sent to HMRC, recorded with its lines, the donations on them and the
//! adjustments it carries, so that no donation is ever claimed twice by claims that stand and
//! no adjustment made twice; and the claim's life after: submitted to HMRC, paid, rejected, or
//! void before it was sent. A rejected or void claim releases its donations and adjustments
//! for the next claim.
//!
//! Two guards: claims are made one at a time (a transaction-scoped advisory lock, so a second
//! claim waits for the first and then sees what it took), and the database refuses a second
//! standing row for a claimed donation or an adjustment's cause (partial unique indexes),
//! whatever else runs. Every claim and every move is audited in its own transaction.

use serde_json::{Map, Value};
use sqlx::{PgConnection, PgExecutor, PgPool};
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use super::schedule::{self, Line};
use super::{Adjustment, CURRENCY, Rules, store, tax_on};
use crate::operators::access::Caller;
use crate::operators::audit;
use crate::timestamps::rfc3339;

mod life;

pub use life::{Move, MoveError, Status, change};

/// Claims are made one at a time, across every instance.
const CLAIM_LOCK: i64 = 0x6769_6674_6169_6421; // "giftaid!"

/// A claim as recorded.
#[derive(Debug, Clone)]
pub struct Claim {
    pub id: Uuid,
    pub created_at: OffsetDateTime,
    /// The name of the token that made it.
    pub created_by: String,
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub part: i32,
    pub status: Status,
    pub status_at: OffsetDateTime,
    pub hmrc_reference: Option<String>,
    pub amount_paid: Option<i64>,
    pub paid_on: Option<Date>,
    pub rejection_reason: Option<String>,
    /// HMRC's box 1: the earliest gift the claim takes.
    pub earliest_donation_date: Option<Date>,
    pub lines: Vec<Line>,
    /// The adjustments this claim carries (claimed earlier, given back since).
    pub adjustments: Vec<Adjustment>,
}

impl Claim {
    /// What the lines claim on, in pence.
    pub fn total(&self) -> i64 {
        self.lines.iter().map(|l| l.amount).sum()
    }

    /// HMRC's box 2: the tax the adjustments repay, in pence.
    pub fn overclaimed_tax(&self) -> i64 {
        self.adjustments.iter().map(|a| a.tax).sum()
    }
}

/// Why no claim was made.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("nothing to claim")]
    NothingToClaim,
    #[error("the schedule has {parts} part(s)")]
    NoSuchPart { parts: usize },
    /// Another claim took some of the same donations at the same moment.
    #[error("a donation was claimed at the same time by another claim")]
    Conflict,
    /// The Idempotency-Key made a claim from another request.
    #[error("the idempotency key was used for another request")]
    KeyReused,
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for ClaimError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => ClaimError::Conflict,
            _ => ClaimError::Database(error),
        }
    }
}

/// What a claim is asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub part: usize,
}

/// An `Idempotency-Key` and the fingerprint of the request it came with.
pub struct Keyed<'a> {
    pub key: &'a str,
    pub fingerprint: &'a [u8],
}

/// Claims part `request.part` of the schedule of `[from, to)` as it stands on `today`, with
/// every adjustment due; `by` claims, audited in the same transaction. Nothing is written
/// unless there is a line to claim (HMRC's schedule needs at least one; adjustments wait for
/// a claim that has one). With a key already used by the same request, the claim it made is
/// answered again (`true`), and nothing else is done.
pub async fn create(
    db: &PgPool,
    rules: &Rules,
    by: &Caller,
    request: &Request,
    keyed: Option<Keyed<'_>>,
    today: Date,
) -> Result<(Claim, bool), ClaimError> {
    let mut tx = db.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
        .execute(&mut *tx)
        .await?;
    if let Some(keyed) = &keyed
        && let Some(made) = sqlx::query!(
            "SELECT id, request_fingerprint FROM gift_aid_claims WHERE idempotency_key = $1",
            keyed.key
        )
        .fetch_optional(&mut *tx)
        .await?
    {
        if made.request_fingerprint.as_deref() != Some(keyed.fingerprint) {
            return Err(ClaimError::KeyReused);
        }
        let claim = find(&mut tx, made.id).await?.expect("the claim exists");
        tx.commit().await?;
        return Ok((claim, true));
    }

    let eligible = store::gifts(&mut *tx, rules, request.from, request.to, today).await?;
    let schedule = schedule::lines(&eligible.gifts, &rules.making);
    let parts = schedule::part_count(schedule.lines.len());
    if request.part > parts {
        return Err(ClaimError::NoSuchPart { parts });
    }
    let lines = schedule::part(&schedule.lines, request.part);
    if lines.is_empty() {
        return Err(ClaimError::NothingToClaim);
    }
    let adjustments = store::pending_adjustments(&mut *tx).await?;

    let id = Uuid::now_v7();
    let part = i32::try_from(request.part).expect("a part number is small");
    record(
        &mut tx,
        id,
        &by.name,
        request,
        part,
        lines,
        &adjustments,
        keyed,
    )
    .await?;
    let claim = find(&mut tx, id)
        .await?
        .expect("the claim was just written");

    let mut filters = Map::new();
    filters.insert("from".into(), rfc3339(request.from).into());
    filters.insert("to".into(), rfc3339(request.to).into());
    filters.insert("part".into(), request.part.into());
    filters.insert("claim".into(), claim.id.to_string().into());
    audit::record(
        &mut *tx,
        by,
        "POST /v1/finance/gift-aid/claims",
        &Value::Object(filters),
        (claim.lines.len() + claim.adjustments.len()) as i64,
    )
    .await?;
    tx.commit().await?;
    Ok((claim, false))
}

#[allow(clippy::too_many_arguments)]
async fn record(
    tx: &mut PgConnection,
    id: Uuid,
    by: &str,
    request: &Request,
    part: i32,
    lines: &[Line],
    adjustments: &[Adjustment],
    keyed: Option<Keyed<'_>>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO gift_aid_claims (id, created_by, range_from, range_to, part, currency,
                                        earliest_donation_date, overclaimed_tax,
                                        idempotency_key, request_fingerprint)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"#,
        id,
        by,
        request.from,
        request.to,
        part,
        CURRENCY,
        schedule::earliest(lines),
        adjustments.iter().map(|a| a.tax).sum::<i64>(),
        keyed.as_ref().map(|k| k.key),
        keyed.as_ref().map(|k| k.fingerprint)
    )
    .execute(&mut *tx)
    .await?;

    let numbers: Vec<i32> = (1..=lines.len() as i32).collect();
    let column = |f: fn(&Line) -> &String| lines.iter().map(|l| f(l).clone()).collect::<Vec<_>>();
    sqlx::query!(
        r#"INSERT INTO gift_aid_claim_lines
               (claim_id, line, title, first_name, last_name, house_name_or_number, postcode,
                aggregated_donations, sponsored_event, donation_date, amount)
           SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::text[], $5::text[], $6::text[],
                                    $7::text[], $8::text[], $9::text[], $10::date[],
                                    $11::bigint[])"#,
        id,
        &numbers,
        &column(|l| &l.title),
        &column(|l| &l.first_name),
        &column(|l| &l.last_name),
        &column(|l| &l.house_name_or_number),
        &column(|l| &l.postcode),
        &column(|l| &l.aggregated_donations),
        &column(|l| &l.sponsored_event),
        &lines.iter().map(|l| l.date).collect::<Vec<_>>(),
        &lines.iter().map(|l| l.amount).collect::<Vec<_>>()
    )
    .execute(&mut *tx)
    .await?;

    let mut donation_ids = Vec::new();
    let mut on_line = Vec::new();
    let mut amounts = Vec::new();
    for (line, number) in lines.iter().zip(&numbers) {
        for (donation_id, amount) in &line.donations {
            donation_ids.push(*donation_id);
            on_line.push(*number);
            amounts.push(*amount);
        }
    }
    // The unique index on a standing claimed donation refuses any donation claimed already.
    sqlx::query!(
        r#"INSERT INTO gift_aid_claimed_donations (donation_id, claim_id, line, amount)
           SELECT d, $1, l, a FROM UNNEST($2::uuid[], $3::int[], $4::bigint[]) AS u(d, l, a)"#,
        id,
        &donation_ids,
        &on_line,
        &amounts
    )
    .execute(&mut *tx)
    .await?;

    // And the one on a standing adjustment's cause, any adjustment made already.
    sqlx::query!(
        r#"INSERT INTO gift_aid_adjustments (cause, cause_kind, donation_id, claimed_in,
                                             carried_by, given_back, tax)
           SELECT c, k, d, i, $1, g, t
           FROM UNNEST($2::text[], $3::text[], $4::uuid[], $5::uuid[], $6::bigint[],
                       $7::bigint[]) AS u(c, k, d, i, g, t)"#,
        id,
        &adjustments
            .iter()
            .map(|a| a.cause.clone())
            .collect::<Vec<_>>(),
        &adjustments
            .iter()
            .map(|a| a.cause_kind.clone())
            .collect::<Vec<_>>(),
        &adjustments
            .iter()
            .map(|a| a.donation_id)
            .collect::<Vec<_>>(),
        &adjustments.iter().map(|a| a.claim_id).collect::<Vec<_>>(),
        &adjustments.iter().map(|a| a.given_back).collect::<Vec<_>>(),
        &adjustments.iter().map(|a| a.tax).collect::<Vec<_>>()
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A claim in the list: its figures, not its lines.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: Uuid,
    pub created_at: OffsetDateTime,
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
    pub part: i32,
    pub status: Status,
    pub status_at: OffsetDateTime,
    pub hmrc_reference: Option<String>,
    pub rows: i64,
    pub total: i64,
    pub overclaimed_tax: i64,
}

/// Every claim, newest first.
pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Listed>> {
    let rows = sqlx::query!(
        r#"SELECT k.id, k.created_at, k.range_from, k.range_to, k.part, k.status, k.status_at,
                  k.hmrc_reference, k.overclaimed_tax,
                  (SELECT count(*) FROM gift_aid_claim_lines l WHERE l.claim_id = k.id) AS "rows!",
                  (SELECT coalesce(sum(l.amount), 0) FROM gift_aid_claim_lines l
                   WHERE l.claim_id = k.id)::bigint AS "total!"
           FROM gift_aid_claims k
           ORDER BY k.created_at DESC, k.id DESC"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Listed {
            id: row.id,
            created_at: row.created_at,
            from: row.range_from,
            to: row.range_to,
            part: row.part,
            status: Status::parse(&row.status).expect("the database checks a claim's status"),
            status_at: row.status_at,
            hmrc_reference: row.hmrc_reference,
            rows: row.rows,
            total: row.total,
            overclaimed_tax: row.overclaimed_tax,
        })
        .collect())
}

/// The claim `id` as recorded, if there is one.
pub async fn find(db: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Claim>> {
    let Some(claim) = sqlx::query!(
        r#"SELECT id, created_at, created_by, range_from, range_to, part, status, status_at,
                  hmrc_reference, amount_paid, paid_on, rejection_reason, earliest_donation_date
           FROM gift_aid_claims WHERE id = $1"#,
        id
    )
    .fetch_optional(&mut *db)
    .await?
    else {
        return Ok(None);
    };
    let mut lines = lines_of(&mut *db, id).await?;
    let donations = sqlx::query!(
        r#"SELECT donation_id, line, amount FROM gift_aid_claimed_donations
           WHERE claim_id = $1 ORDER BY line, donation_id"#,
        id
    )
    .fetch_all(&mut *db)
    .await?;
    for donation in donations {
        if let Some(line) = usize::try_from(donation.line - 1)
            .ok()
            .and_then(|i| lines.get_mut(i))
        {
            line.donations.push((donation.donation_id, donation.amount));
        }
    }
    let adjustments = sqlx::query!(
        r#"SELECT a.donation_id, a.claimed_in, a.cause, a.cause_kind, a.given_back, a.tax
           FROM gift_aid_adjustments a
           WHERE a.carried_by = $1
           ORDER BY a.claimed_in, a.donation_id, a.cause"#,
        id
    )
    .fetch_all(&mut *db)
    .await?
    .into_iter()
    .map(|row| Adjustment {
        donation_id: row.donation_id,
        claim_id: row.claimed_in,
        cause: row.cause,
        cause_kind: row.cause_kind,
        given_back: row.given_back,
        tax: row.tax,
        currency: CURRENCY,
    })
    .collect();
    Ok(Some(Claim {
        id: claim.id,
        created_at: claim.created_at,
        created_by: claim.created_by,
        from: claim.range_from,
        to: claim.range_to,
        part: claim.part,
        status: Status::parse(&claim.status).expect("the database checks a claim's status"),
        status_at: claim.status_at,
        hmrc_reference: claim.hmrc_reference,
        amount_paid: claim.amount_paid,
        paid_on: claim.paid_on,
        rejection_reason: claim.rejection_reason,
        earliest_donation_date: claim.earliest_donation_date,
        lines,
        adjustments,
    }))
}

/// A claim's lines in order, as they were claimed; their donations are added by the caller.
async fn lines_of(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Vec<Line>> {
    let rows = sqlx::query!(
        r#"SELECT l.title, l.first_name, l.last_name, l.house_name_or_number, l.postcode,
                  l.aggregated_donations, l.sponsored_event, l.donation_date, l.amount,
                  coalesce((SELECT (min(coalesce(d.payment_status_at, d.created_at))
                                    AT TIME ZONE 'Europe/London')::date
                            FROM gift_aid_claimed_donations c JOIN donations d ON d.id = c.donation_id
                            WHERE c.claim_id = l.claim_id AND c.line = l.line),
                           l.donation_date) AS "earliest!"
           FROM gift_aid_claim_lines l WHERE l.claim_id = $1 ORDER BY l.line"#,
        id
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Line {
            title: row.title,
            first_name: row.first_name,
            last_name: row.last_name,
            house_name_or_number: row.house_name_or_number,
            postcode: row.postcode,
            aggregated_donations: row.aggregated_donations,
            sponsored_event: row.sponsored_event,
            date: row.donation_date,
            earliest: row.earliest,
            amount: row.amount,
            donations: Vec::new(),
        })
        .collect())
}

/// The Gift Aid a claim's total claims: 25% of it.
pub fn gift_aid_of(total: i64) -> i64 {
    tax_on(total)
}
