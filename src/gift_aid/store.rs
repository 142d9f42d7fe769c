//! What the database says: the eligible gifts not yet claimed, and the adjustments due.

use sqlx::PgExecutor;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use super::donor::Declared;
use super::schedule::Gift;
use super::{Adjustment, CURRENCY, Rules, tax_on};

/// The eligible gifts made in `[from, to)` that no standing claim has taken, oldest first, and
/// those of them past HMRC's 4-year limit on `today` (never claimed). A gift's moment is when
/// Stripe said it succeeded (when it was created, if that is missing), and its date is that
/// moment's date in the UK.
///
/// Eligible: succeeded, in pounds, Stripe received at least the gift, and, with
/// `GIFT_AID_CLAIM_AFTER_PAYOUT`, in a paid payout; no refund still pending and no dispute
/// still open (what they give back is not known yet); what is claimed is the gift less what of
/// it was given back (`gift_given_back`: succeeded refunds and chargebacks lost, off the fee
/// cover first), if anything is left.
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
    rules: &Rules,
    from: OffsetDateTime,
    to: OffsetDateTime,
    today: Date,
) -> sqlx::Result<Eligible> {
    let rows = sqlx::query!(
        r#"WITH made AS (
               SELECT d.id, d.amount - gift_given_back(d.id) AS claimable, d.donor_email,
                      d.donor_first_name, d.donor_last_name,
                      coalesce(d.payment_status_at, d.created_at) AS at
               FROM donations d
               WHERE d.currency = 'gbp'
                 AND d.payment_status = 'succeeded'
                 AND d.personal_data_erased_at IS NULL
                 AND d.received_currency = 'gbp' AND d.amount_received >= d.amount
                 AND coalesce(d.payment_status_at, d.created_at) >= $1
                 AND coalesce(d.payment_status_at, d.created_at) < $2
                 AND (NOT $3 OR EXISTS (SELECT 1 FROM paid_out_transactions t
                                        WHERE t.balance_transaction_id = d.balance_transaction_id))
                 AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.donation_id = d.id
                                   AND r.status NOT IN ('succeeded', 'failed', 'canceled'))
                 AND NOT EXISTS (SELECT 1 FROM disputes x WHERE x.donation_id = d.id
                                   AND x.status NOT IN ('won', 'lost', 'warning_closed',
                                                        'prevented'))
                 AND NOT EXISTS (SELECT 1 FROM gift_aid_claimed_donations c
                                 WHERE c.donation_id = d.id AND NOT c.released))
           SELECT m.id AS "id!", m.claimable AS "amount!",
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
           WHERE m.claimable > 0
           ORDER BY m.at, m.id"#,
        from,
        to,
        rules.claim_after_payout
    )
    .fetch_all(db)
    .await?;
    let mut eligible = Eligible::default();
    for row in rows {
        let gift = Gift {
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
        };
        if !rules.making.year_end.claimable_on(gift.date, today) {
            eligible.expired.push(gift);
        } else {
            eligible.gifts.push(gift);
        }
    }
    Ok(eligible)
}

/// Eligible gifts: those that may be claimed, and those past HMRC's 4-year limit.
#[derive(Debug, Default)]
pub struct Eligible {
    pub gifts: Vec<Gift>,
    pub expired: Vec<Gift>,
}

/// What of claimed gifts was given back since they were claimed and no standing claim has
/// repaid yet: one adjustment per cause (a succeeded refund, a chargeback lost), the part of
/// the claimed gift it gave back, and the tax on that part.
///
/// Per claimed donation, what is due is what of the claimed amount has been given back (all
/// that `gift_given_back` says, less what was given back before the claim) less what earlier
/// adjustments carried; it is set against its causes not yet carried, in the order of their
/// ids, each up to its own amount. So the sums hold whatever order Stripe's events came in.
pub async fn pending_adjustments(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<Adjustment>> {
    let rows = sqlx::query!(
        r#"WITH given AS (
               SELECT c.claim_id, c.donation_id,
                      least(c.amount, greatest(0, gift_given_back(c.donation_id)
                                                  - (d.amount - c.amount))) AS over,
                      coalesce((SELECT sum(a.given_back) FROM gift_aid_adjustments a
                                WHERE a.claimed_in = c.claim_id AND a.donation_id = c.donation_id
                                  AND NOT a.released), 0) AS carried
               FROM gift_aid_claimed_donations c
               JOIN donations d ON d.id = c.donation_id
               WHERE NOT c.released
                 AND (EXISTS (SELECT 1 FROM refunds r WHERE r.donation_id = c.donation_id
                                AND r.status = 'succeeded')
                      OR EXISTS (SELECT 1 FROM disputes x WHERE x.donation_id = c.donation_id
                                   AND x.status = 'lost')))
           SELECT g.claim_id AS "claim_id!", g.donation_id AS "donation_id!",
                  (g.over - g.carried)::bigint AS "due!",
                  m.cause AS "cause!", m.kind AS "kind!", m.amount AS "amount!"
           FROM given g
           CROSS JOIN LATERAL (
               SELECT r.id AS cause, 'refund' AS kind, r.amount FROM refunds r
               WHERE r.donation_id = g.donation_id AND r.status = 'succeeded'
               UNION ALL
               SELECT x.id, 'dispute', x.amount FROM disputes x
               WHERE x.donation_id = g.donation_id AND x.status = 'lost') m
           WHERE g.over > g.carried
             AND NOT EXISTS (SELECT 1 FROM gift_aid_adjustments a
                             WHERE a.cause = m.cause AND a.claimed_in = g.claim_id
                               AND NOT a.released)
           ORDER BY g.claim_id, g.donation_id, m.cause"#
    )
    .fetch_all(db)
    .await?;
    let mut adjustments = Vec::new();
    let mut left: Option<((Uuid, Uuid), i64)> = None;
    for row in rows {
        let key = (row.claim_id, row.donation_id);
        let due = match left {
            Some((k, due)) if k == key => due,
            _ => row.due,
        };
        let given_back = due.min(row.amount);
        left = Some((key, due - given_back));
        if given_back > 0 {
            adjustments.push(Adjustment {
                donation_id: row.donation_id,
                claim_id: row.claim_id,
                cause: row.cause,
                cause_kind: row.kind,
                given_back,
                tax: tax_on(given_back),
                currency: CURRENCY,
            });
        }
    }
    Ok(adjustments)
}
