//! Claims: one schedule sent to HMRC, recorded with its lines, the donations on them and the
//! adjustments it carries, so that no donation is ever claimed twice and no adjustment made
//! twice.
//!
//! Two guards: claims are made one at a time (a transaction-scoped advisory lock, so a second
//! claim waits for the first and then sees what it took), and the database refuses a second
//! row for a claimed donation or an adjustment (their primary keys), whatever else runs.

use sqlx::{PgConnection, PgExecutor, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use super::schedule::{self, Line};
use super::{Adjustment, CURRENCY, store};

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
    pub lines: Vec<Line>,
    /// The adjustments this claim carries (claimed earlier, refunded or disputed since).
    pub adjustments: Vec<Adjustment>,
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

/// Claims part `part` of the schedule of `[from, to)` as it stands now, with every adjustment
/// due; `by` names who claims. Nothing is written unless there is something to claim.
pub async fn create(
    db: &PgPool,
    by: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    part: usize,
) -> Result<Claim, ClaimError> {
    let mut tx = db.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
        .execute(&mut *tx)
        .await?;
    let gifts = store::gifts(&mut *tx, from, to).await?;
    let lines = schedule::lines(&gifts);
    let parts = schedule::part_count(lines.len());
    if part > parts {
        return Err(ClaimError::NoSuchPart { parts });
    }
    let lines = schedule::part(&lines, part);
    let adjustments = store::pending_adjustments(&mut *tx).await?;
    if lines.is_empty() && adjustments.is_empty() {
        return Err(ClaimError::NothingToClaim);
    }

    let id = Uuid::now_v7();
    let part = i32::try_from(part).expect("a part number is small");
    record(&mut tx, id, by, from, to, part, lines, &adjustments).await?;
    let claim = find(&mut tx, id)
        .await?
        .expect("the claim was just written");
    tx.commit().await?;
    Ok(claim)
}

#[allow(clippy::too_many_arguments)]
async fn record(
    tx: &mut PgConnection,
    id: Uuid,
    by: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
    part: i32,
    lines: &[Line],
    adjustments: &[Adjustment],
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO gift_aid_claims (id, created_by, range_from, range_to, part, currency)
           VALUES ($1, $2, $3, $4, $5, $6)"#,
        id,
        by,
        from,
        to,
        part,
        CURRENCY
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
    // The primary key on donation_id refuses any donation already claimed.
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

    // And the one on an adjustment's donation_id, any adjustment made already.
    sqlx::query!(
        r#"INSERT INTO gift_aid_adjustments (donation_id, claim_id, amount, reason)
           SELECT d, $1, a, r FROM UNNEST($2::uuid[], $3::bigint[], $4::text[]) AS u(d, a, r)"#,
        id,
        &adjustments
            .iter()
            .map(|a| a.donation_id)
            .collect::<Vec<_>>(),
        &adjustments.iter().map(|a| a.amount).collect::<Vec<_>>(),
        &adjustments
            .iter()
            .map(|a| a.reason.clone())
            .collect::<Vec<_>>()
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The claim `id` as recorded, if there is one.
pub async fn find(db: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Claim>> {
    let Some(claim) = sqlx::query!(
        r#"SELECT id, created_at, created_by, range_from, range_to, part
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
        r#"SELECT a.donation_id, c.claim_id, a.amount, a.reason
           FROM gift_aid_adjustments a
           JOIN gift_aid_claimed_donations c ON c.donation_id = a.donation_id
           WHERE a.claim_id = $1
           ORDER BY c.claim_id, c.line, a.donation_id"#,
        id
    )
    .fetch_all(&mut *db)
    .await?
    .into_iter()
    .map(|row| Adjustment {
        donation_id: row.donation_id,
        claim_id: row.claim_id,
        amount: row.amount,
        currency: CURRENCY,
        reason: row.reason,
    })
    .collect();
    Ok(Some(Claim {
        id: claim.id,
        created_at: claim.created_at,
        created_by: claim.created_by,
        from: claim.range_from,
        to: claim.range_to,
        part: claim.part,
        lines,
        adjustments,
    }))
}

/// A claim's lines in order, as they were claimed; their donations are added by the caller.
async fn lines_of(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Vec<Line>> {
    let rows = sqlx::query!(
        r#"SELECT title, first_name, last_name, house_name_or_number, postcode,
                  aggregated_donations, sponsored_event, donation_date, amount
           FROM gift_aid_claim_lines WHERE claim_id = $1 ORDER BY line"#,
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
            amount: row.amount,
            donations: Vec::new(),
        })
        .collect())
}
