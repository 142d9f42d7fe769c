//! The invariants the design promises, each checked against the database as it is, read-only
//! and on one snapshot. A difference names the rows it is about, so an operator can look.
//!
//! The money Stripe moved is the ledger's; everything else is derived from it or from
//! Stripe's objects, so each check compares what is stored with what its sources say.

use std::time::Duration;

use serde::Serialize;
use sqlx::PgConnection;

/// How long a succeeded gift may wait for its ledger row by default: Stripe reports the fee
/// within seconds, and the worker fetches it if no event carries it.
pub const SETTLE: Duration = Duration::from_secs(600);

/// One invariant, and what differs from it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = BooksCheck)]
pub struct Check {
    /// Its name, stable: what the metric's `check` label says.
    pub check: &'static str,
    /// What it promises.
    pub description: &'static str,
    pub differences: Vec<Difference>,
}

/// A row (or rows) that do not hold to a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = BooksDifference)]
pub struct Difference {
    /// The ids it is about: a campaign's slug, a donation's, a payout's, a receipt's.
    pub ids: Vec<String>,
    /// What differs, with the figures.
    pub detail: String,
}

/// Every check, in order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = BooksReport)]
pub struct Report {
    /// True when nothing differs.
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn differences(&self) -> usize {
        self.checks.iter().map(|c| c.differences.len()).sum()
    }
}

/// The names and promises of the checks, in the order they run.
pub const CHECKS: &[(&str, &str)] = &[
    (
        "campaign_totals",
        "each campaign's raised_amount and donation_count are the sums of its donations' parts",
    ),
    (
        "donation_parts",
        "each donation's refunded, lost and counted amounts follow from its refunds and disputes",
    ),
    (
        "donation_ledger",
        "each donation's fee, net, dispute fee, refunds and disputed money are its ledger rows'",
    ),
    (
        "gift_in_ledger",
        "every succeeded donation has its gift's ledger row (once Stripe has had time to settle it)",
    ),
    (
        "payouts",
        "every paid payout's difference from the ledger is 0, or made of transactions not ours",
    ),
    (
        "gift_aid_once",
        "no donation is claimed for Gift Aid twice, and each claim line is the sum of its gifts",
    ),
    (
        "receipts_owed",
        "no receipt is owed and unsent for more than a day",
    ),
];

/// Runs every check on `tx` (a read-only snapshot: `db::reading`). A succeeded donation is
/// expected to have its gift in the ledger once it succeeded more than `settle` ago.
pub async fn verify(tx: &mut PgConnection, settle: Duration) -> sqlx::Result<Report> {
    let mut checks = Vec::new();
    for &(check, description) in CHECKS {
        let differences = match check {
            "campaign_totals" => campaign_totals(tx).await?,
            "donation_parts" => donation_parts(tx).await?,
            "donation_ledger" => donation_ledger(tx).await?,
            "gift_in_ledger" => gift_in_ledger(tx, settle).await?,
            "payouts" => payouts(tx).await?,
            "gift_aid_once" => gift_aid_once(tx).await?,
            "receipts_owed" => receipts_owed(tx).await?,
            other => unreachable!("no check named {other}"),
        };
        checks.push(Check {
            check,
            description,
            differences,
        });
    }
    Ok(Report {
        ok: checks.iter().all(|c| c.differences.is_empty()),
        checks,
    })
}

fn one(id: impl ToString, detail: String) -> Difference {
    Difference {
        ids: vec![id.to_string()],
        detail,
    }
}

async fn campaign_totals(tx: &mut PgConnection) -> sqlx::Result<Vec<Difference>> {
    let rows = sqlx::query!(
        r#"SELECT c.slug, c.raised_amount, c.donation_count,
                  coalesce(sum(d.counted_amount), 0)::bigint AS "summed!",
                  count(d.id) FILTER (WHERE d.counted_amount > 0) AS "counted!"
           FROM campaigns c LEFT JOIN donations d ON d.campaign = c.slug
           GROUP BY c.slug
           HAVING c.raised_amount <> coalesce(sum(d.counted_amount), 0)
               OR c.donation_count <> count(d.id) FILTER (WHERE d.counted_amount > 0)
           ORDER BY c.slug"#
    )
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            one(
                &r.slug,
                format!(
                    "raised_amount {} and donation_count {}, but its donations sum to {} over {}",
                    r.raised_amount, r.donation_count, r.summed, r.counted
                ),
            )
        })
        .collect())
}

async fn donation_parts(tx: &mut PgConnection) -> sqlx::Result<Vec<Difference>> {
    // The rule of `webhooks::apply::counted_amount`, in SQL: what Stripe received of the gift
    // (in its currency), less refunds that have not failed and money a chargeback withdrew
    // (open, or lost), never above the gift nor below 0.
    let rows = sqlx::query!(
        r#"WITH facts AS (
               SELECT d.id, d.payment_status, d.amount, d.total_amount, d.refunded_amount,
                      d.dispute_lost_amount, d.counted_amount,
                      CASE WHEN d.received_currency = d.currency
                           THEN d.amount_received ELSE 0 END AS received,
                      coalesce((SELECT sum(r.amount) FROM refunds r WHERE r.donation_id = d.id
                                AND r.status NOT IN ('failed', 'canceled')), 0)::bigint AS refunds,
                      coalesce((SELECT sum(x.amount) FROM disputes x WHERE x.donation_id = d.id
                                AND x.status = 'lost'), 0)::bigint AS lost,
                      coalesce((SELECT sum(x.amount) FROM disputes x WHERE x.donation_id = d.id
                                AND dispute_withdraws(x.status)), 0)::bigint AS withdrawn
               FROM donations d)
           SELECT id, refunded_amount, refunds AS "refunds!", dispute_lost_amount,
                  lost AS "lost!", counted_amount,
                  CASE WHEN payment_status = 'succeeded'
                       THEN GREATEST(0, LEAST(amount,
                                LEAST(received, total_amount) - refunds - withdrawn))
                       ELSE 0 END AS "part!"
           FROM facts
           WHERE refunded_amount <> refunds OR dispute_lost_amount <> lost
              OR counted_amount <> CASE WHEN payment_status = 'succeeded'
                       THEN GREATEST(0, LEAST(amount,
                                LEAST(received, total_amount) - refunds - withdrawn))
                       ELSE 0 END
           ORDER BY id"#
    )
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            one(
                r.id,
                format!(
                    "refunded_amount {} (its refunds: {}), dispute_lost_amount {} (its lost \
                     disputes: {}), counted_amount {} (by its facts: {})",
                    r.refunded_amount,
                    r.refunds,
                    r.dispute_lost_amount,
                    r.lost,
                    r.counted_amount,
                    r.part
                ),
            )
        })
        .collect())
}

async fn donation_ledger(tx: &mut PgConnection) -> sqlx::Result<Vec<Difference>> {
    // Refunds and disputes are compared only where Stripe settled the gift in its own currency
    // (otherwise the ledger's amounts are converted). A refund's money is in the ledger from
    // the moment its balance transaction is known: at least the refunds that succeeded, at
    // most those that have not failed. A dispute's: at least what was lost, at most what a
    // chargeback withdrew.
    let rows = sqlx::query!(
        r#"WITH l AS (
               SELECT donation_id,
                      count(*) FILTER (WHERE kind = 'gift') AS gifts,
                      coalesce(sum(amount) FILTER (WHERE kind = 'gift'), 0)::bigint AS gift,
                      coalesce(sum(amount) FILTER (WHERE kind = 'stripe_fee'), 0)::bigint AS fee,
                      coalesce(sum(amount) FILTER (WHERE kind = 'dispute_fee'), 0)::bigint AS dispute_fee,
                      coalesce(-sum(amount) FILTER (WHERE kind IN ('refund', 'refund_failure')), 0)::bigint
                          AS refunded,
                      coalesce(-sum(amount) FILTER (WHERE kind IN ('dispute_withdrawal',
                                                               'dispute_reinstatement')), 0)::bigint
                          AS disputed
               FROM ledger_entries WHERE donation_id IS NOT NULL
               GROUP BY donation_id),
           facts AS (
               SELECT d.id, d.fee, d.net, d.dispute_fee, d.refunded_amount,
                      d.settlement_currency = d.currency AS same_currency,
                      coalesce((SELECT sum(r.amount) FROM refunds r WHERE r.donation_id = d.id
                                AND r.status = 'succeeded'), 0)::bigint AS refunds_succeeded,
                      d.dispute_lost_amount,
                      coalesce((SELECT sum(x.amount) FROM disputes x WHERE x.donation_id = d.id
                                AND dispute_withdraws(x.status)), 0)::bigint AS withdrawn,
                      l.gifts, l.gift, l.fee AS ledger_fee, l.dispute_fee AS ledger_dispute_fee,
                      l.refunded, l.disputed
               FROM donations d JOIN l ON l.donation_id = d.id)
           SELECT id, fee, net, dispute_fee, refunded_amount, refunds_succeeded AS "refunds_succeeded!",
                  dispute_lost_amount, withdrawn AS "withdrawn!", gifts AS "gifts!",
                  gift AS "gift!", ledger_fee AS "ledger_fee!",
                  ledger_dispute_fee AS "ledger_dispute_fee!", refunded AS "refunded!",
                  disputed AS "disputed!"
           FROM facts
           WHERE gifts > 1
              OR (gifts = 1 AND (fee IS DISTINCT FROM -ledger_fee
                                 OR net IS DISTINCT FROM gift + ledger_fee))
              OR dispute_fee <> -ledger_dispute_fee
              OR (same_currency AND (refunded NOT BETWEEN refunds_succeeded AND refunded_amount
                                     OR disputed NOT BETWEEN dispute_lost_amount AND withdrawn))
           ORDER BY id"#
    )
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            one(
                r.id,
                format!(
                    "fee {:?}, net {:?}, dispute_fee {}; the ledger: {} gift row(s) of {}, fees \
                     {}, dispute fees {}; refunds in the ledger {} (succeeded {}, counted {}); \
                     disputed money in the ledger {} (lost {}, withdrawn {})",
                    r.fee,
                    r.net,
                    r.dispute_fee,
                    r.gifts,
                    r.gift,
                    -r.ledger_fee,
                    -r.ledger_dispute_fee,
                    r.refunded,
                    r.refunds_succeeded,
                    r.refunded_amount,
                    r.disputed,
                    r.dispute_lost_amount,
                    r.withdrawn
                ),
            )
        })
        .collect())
}

async fn gift_in_ledger(tx: &mut PgConnection, settle: Duration) -> sqlx::Result<Vec<Difference>> {
    let rows = sqlx::query!(
        r#"SELECT d.id, d.charge_id FROM donations d
           WHERE d.payment_status = 'succeeded'
             AND coalesce(d.payment_status_at, d.updated_at) < now() - make_interval(secs => $1)
             AND NOT EXISTS (SELECT 1 FROM ledger_entries l
                             WHERE l.donation_id = d.id AND l.kind = 'gift')
           ORDER BY d.id"#,
        settle.as_secs_f64()
    )
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Difference {
            ids: std::iter::once(r.id.to_string())
                .chain(r.charge_id)
                .collect(),
            detail: "succeeded, but the ledger holds no gift for it".to_owned(),
        })
        .collect())
}

async fn payouts(tx: &mut PgConnection) -> sqlx::Result<Vec<Difference>> {
    // A payout's lines, its own transaction left out. A line is explained when the ledger
    // holds nothing for it and it is not one of our payments' (another product's charge, a
    // Stripe fee or adjustment); a line the ledger holds for another amount, or a payment of
    // ours the ledger lacks, is not.
    let rows = sqlx::query!(
        r#"WITH lines AS (
               SELECT t.payout_id, t.balance_transaction_id, t.net,
                      (SELECT sum(l.amount) FROM ledger_entries l
                       WHERE l.balance_transaction_id = t.balance_transaction_id)::bigint AS ledger,
                      (EXISTS (SELECT 1 FROM donations d WHERE d.charge_id = t.source_id)
                       OR EXISTS (SELECT 1 FROM refunds r WHERE r.id = t.source_id)
                       OR EXISTS (SELECT 1 FROM disputes x WHERE x.id = t.source_id)) AS ours
               FROM payout_transactions t JOIN payouts p ON p.id = t.payout_id
               WHERE p.status = 'paid'
                 AND t.balance_transaction_id IS DISTINCT FROM p.balance_transaction_id
                 AND t.balance_transaction_id IS DISTINCT FROM p.failure_balance_transaction_id)
           SELECT p.id, p.amount, p.listed_at IS NOT NULL AS "listed!",
                  coalesce(sum(l.ledger), 0)::bigint AS "ledger!",
                  coalesce(sum(l.net) FILTER (WHERE l.ledger IS NULL AND NOT l.ours), 0)::bigint
                      AS "others!",
                  coalesce(array_agg(l.balance_transaction_id ORDER BY l.balance_transaction_id)
                           FILTER (WHERE l.net IS DISTINCT FROM l.ledger
                                   AND (l.ledger IS NOT NULL OR l.ours)), '{}') AS "lines!"
           FROM payouts p LEFT JOIN lines l ON l.payout_id = p.id
           WHERE p.status = 'paid' AND p.automatic IS NOT FALSE
           GROUP BY p.id
           HAVING p.amount - coalesce(sum(l.ledger), 0)
                  <> coalesce(sum(l.net) FILTER (WHERE l.ledger IS NULL AND NOT l.ours), 0)
               OR p.listed_at IS NULL
               OR count(*) FILTER (WHERE l.net IS DISTINCT FROM l.ledger
                                   AND (l.ledger IS NOT NULL OR l.ours)) > 0
           ORDER BY p.id"#
    )
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let detail = if !r.listed {
                "paid, but its transactions were never listed from Stripe".to_owned()
            } else {
                format!(
                    "amount {}, the ledger accounts for {}, transactions not ours {}: {} \
                     unexplained",
                    r.amount,
                    r.ledger,
                    r.others,
                    r.amount - r.ledger - r.others
                )
            };
            Difference {
                ids: std::iter::once(r.id).chain(r.lines).collect(),
                detail,
            }
        })
        .collect())
}

async fn gift_aid_once(tx: &mut PgConnection) -> sqlx::Result<Vec<Difference>> {
    let twice = sqlx::query!(
        r#"SELECT donation_id, count(*) AS "claims!" FROM gift_aid_claimed_donations
           WHERE NOT released
           GROUP BY donation_id HAVING count(*) > 1 ORDER BY donation_id"#
    )
    .fetch_all(&mut *tx)
    .await?;
    let lines = sqlx::query!(
        r#"SELECT l.claim_id, l.line, l.amount,
                  coalesce(sum(c.amount), 0)::bigint AS "gifts!", count(c.donation_id) AS "count!"
           FROM gift_aid_claim_lines l
           LEFT JOIN gift_aid_claimed_donations c ON c.claim_id = l.claim_id AND c.line = l.line
           GROUP BY l.claim_id, l.line, l.amount
           HAVING l.amount <> coalesce(sum(c.amount), 0)
           ORDER BY l.claim_id, l.line"#
    )
    .fetch_all(&mut *tx)
    .await?;
    let over = sqlx::query!(
        r#"SELECT c.donation_id, c.amount, d.amount AS gift
           FROM gift_aid_claimed_donations c JOIN donations d ON d.id = c.donation_id
           WHERE c.amount > d.amount AND NOT c.released ORDER BY c.donation_id"#
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut differences: Vec<Difference> = twice
        .into_iter()
        .map(|r| one(r.donation_id, format!("claimed {} times", r.claims)))
        .collect();
    differences.extend(lines.into_iter().map(|r| Difference {
        ids: vec![r.claim_id.to_string(), format!("line {}", r.line)],
        detail: format!(
            "the line claims {} on {} gift(s) that sum to {}",
            r.amount, r.count, r.gifts
        ),
    }));
    differences.extend(over.into_iter().map(|r| {
        one(
            r.donation_id,
            format!("claimed on {}, more than the gift of {}", r.amount, r.gift),
        )
    }));
    Ok(differences)
}

async fn receipts_owed(tx: &mut PgConnection) -> sqlx::Result<Vec<Difference>> {
    let unsent = sqlx::query!(
        r#"SELECT id, donation_id, kind, status, attempts FROM receipts
           WHERE status IN ('pending', 'failed') AND created_at < now() - interval '1 day'
           ORDER BY created_at, id"#
    )
    .fetch_all(&mut *tx)
    .await?;
    // A thank-you is queued in the transaction that first sees the gift succeed; a donation
    // with an address to send it to, succeeded a day ago and with none, was never thanked.
    let never_queued = sqlx::query!(
        r#"SELECT d.id FROM donations d
           WHERE d.payment_status = 'succeeded'
             AND coalesce(d.payment_status_at, d.updated_at) < now() - interval '1 day'
             AND d.personal_data_erased_at IS NULL AND d.recovered_at IS NULL
             AND NOT EXISTS (SELECT 1 FROM receipts r
                             WHERE r.donation_id = d.id AND r.kind = 'thank_you')
           ORDER BY d.id"#
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut differences: Vec<Difference> = unsent
        .into_iter()
        .map(|r| Difference {
            ids: vec![r.id.to_string(), r.donation_id.to_string()],
            detail: format!(
                "a {} owed for more than a day is {} after {} attempt(s)",
                r.kind, r.status, r.attempts
            ),
        })
        .collect();
    differences.extend(never_queued.into_iter().map(|r| {
        one(
            r.id,
            "succeeded more than a day ago, and no thank-you was ever queued".to_owned(),
        )
    }));
    Ok(differences)
}
