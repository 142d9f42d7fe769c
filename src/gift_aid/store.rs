//! What the database says: the eligible gifts not yet claimed, and the adjustments due.

use sqlx::PgExecutor;
use time::OffsetDateTime;

use super::schedule::{Declared, Gift};
use super::{Adjustment, CURRENCY};

/// The eligible gifts made in `[from, to)` that no claim has taken, oldest first. A gift's
/// moment is when Stripe said it succeeded (when it was created, if that is missing), and its
/// date is that moment's date in the UK.
///
/// An erased donor's gifts are never claimed after the erasure: their declaration is gone.
///
/// The declaration used for a gift is the one made with it if it covers it, else the latest
/// of its donor's that does (their address as last declared). Another gift's declaration
/// counts only if that gift went through (a form sent and never paid, or paid by a declined
/// card, declares nothing) and it names the same person: the same email alone is not the same
/// donor (a shared mailbox, or someone typing another's address).
pub async fn gifts(
    db: impl PgExecutor<'_>,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> sqlx::Result<Vec<Gift>> {
    let rows = sqlx::query!(
        r#"WITH made AS (
               SELECT d.id, d.amount, d.donor_email, d.donor_first_name, d.donor_last_name,
                      coalesce(d.payment_status_at, d.created_at) AS at
               FROM donations d
               WHERE d.currency = 'gbp'
                 AND d.payment_status = 'succeeded'
                 AND d.refunded_amount = 0
                 AND d.dispute_status IS NULL
                 AND d.personal_data_erased_at IS NULL
                 AND d.received_currency = 'gbp' AND d.amount_received >= d.amount
                 AND coalesce(d.payment_status_at, d.created_at) >= $1
                 AND coalesce(d.payment_status_at, d.created_at) < $2
                 AND NOT EXISTS (SELECT 1 FROM gift_aid_claimed_donations c
                                 WHERE c.donation_id = d.id))
           SELECT m.id AS "id!", m.amount AS "amount!",
                  (m.at AT TIME ZONE 'Europe/London')::date AS "date!",
                  g.title, g.first_name, g.last_name, g.house_name_or_number, g.postcode,
                  g.country
           FROM made m
           CROSS JOIN LATERAL (
               SELECT g.title, g.first_name, g.last_name, g.house_name_or_number, g.postcode,
                      g.country
               FROM gift_aid_declarations g
               WHERE lower(g.donor_email) = lower(m.donor_email)
                 AND g.covers_from <= m.at
                 AND (g.cancelled_at IS NULL OR g.cancelled_at > m.at)
                 AND (g.donation_id = m.id
                      OR (lower(trim(g.first_name)) = lower(trim(m.donor_first_name))
                          AND lower(trim(g.last_name)) = lower(trim(m.donor_last_name))
                          AND (g.donation_id IS NULL
                               OR EXISTS (SELECT 1 FROM donations x
                                          WHERE x.id = g.donation_id
                                            AND x.payment_status = 'succeeded'))))
               ORDER BY g.donation_id IS NOT DISTINCT FROM m.id DESC, g.declared_at DESC, g.id
               LIMIT 1) g
           ORDER BY m.at, m.id"#,
        from,
        to
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Gift {
            donation_id: row.id,
            amount: row.amount,
            date: row.date,
            donor: Declared {
                title: row.title,
                first_name: row.first_name,
                last_name: row.last_name,
                house_name_or_number: row.house_name_or_number,
                postcode: row.postcode,
                country: row.country,
            },
        })
        .collect())
}

/// Claimed donations since refunded (in any part) or disputed that no claim has adjusted for
/// yet, whenever they were made.
pub async fn pending_adjustments(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Adjustment>> {
    let rows = sqlx::query!(
        r#"SELECT c.donation_id, c.claim_id, c.amount,
                  CASE WHEN d.refunded_amount > 0 THEN 'refunded' ELSE 'disputed' END AS "reason!"
           FROM gift_aid_claimed_donations c
           JOIN donations d ON d.id = c.donation_id
           WHERE (d.refunded_amount > 0 OR d.dispute_status IS NOT NULL)
             AND NOT EXISTS (SELECT 1 FROM gift_aid_adjustments a
                             WHERE a.donation_id = c.donation_id)
           ORDER BY c.claim_id, c.line, c.donation_id"#
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Adjustment {
            donation_id: row.donation_id,
            claim_id: row.claim_id,
            amount: row.amount,
            currency: CURRENCY,
            reason: row.reason,
        })
        .collect())
}
