//! Payouts: what Stripe sent to the bank, the balance transactions each one contains, and
//! their reconciliation against the ledger.
//!
//! On a payout's events the worker records its latest status and, once the money has moved
//! (paid, failed, or reconciled by Stripe), lists the payout's balance transactions from
//! Stripe, every page, before any transaction begins. The listing is kept as Stripe gave it;
//! the reconciliation is worked out when asked for, so it always reflects the ledger as it is.

use sqlx::PgConnection;
use time::OffsetDateTime;

use crate::finance::ledger::{self, Source};
use crate::payments::objects::{BalanceTransactionFacts, BalanceTransactionRef, PayoutFacts};

/// A payout's events in a batch, merged, and what was listed for it.
#[derive(Debug, Clone)]
pub struct PayoutWork {
    /// The furthest status the events show, and when Stripe sent it.
    pub facts: PayoutFacts,
    pub at: OffsetDateTime,
    pub events: Vec<String>,
    /// Its balance transactions as Stripe listed them, if they were listed.
    pub listing: Option<Vec<BalanceTransactionFacts>>,
}

impl PayoutWork {
    /// Takes `facts` as of `at` if they are further on than what is held.
    pub fn merge(&mut self, facts: PayoutFacts, at: OffsetDateTime) {
        let further = (facts.rank(), at) > (self.facts.rank(), self.at);
        let reconciled = facts.reconciliation_status.as_deref() == Some("completed");
        if further {
            let keep = self.facts.reconciliation_status.take();
            self.facts = facts;
            self.at = at;
            if !reconciled && keep.as_deref() == Some("completed") {
                self.facts.reconciliation_status = keep;
            }
        } else if reconciled {
            self.facts.reconciliation_status = facts.reconciliation_status;
        }
    }
}

/// What we hold of a payout, read before listing: whether its list is complete already.
pub async fn listed_complete(db: &sqlx::PgPool, id: &str) -> sqlx::Result<bool> {
    Ok(
        sqlx::query_scalar!("SELECT listed_complete FROM payouts WHERE id = $1", id)
            .fetch_optional(db)
            .await?
            .unwrap_or(false),
    )
}

/// Whether the payout's transactions should be listed now: the money has moved, Stripe lists
/// the transactions of automatic payouts only, and a complete list never changes.
pub fn wants_listing(facts: &PayoutFacts, complete: bool) -> bool {
    facts.automatic && facts.settled() && !complete
}

/// Records each payout's status, its listed transactions and its own balance transactions in
/// the ledger.
pub async fn apply(tx: &mut PgConnection, work: &[PayoutWork]) -> sqlx::Result<()> {
    for payout in work {
        apply_one(tx, payout).await?;
    }
    Ok(())
}

async fn apply_one(tx: &mut PgConnection, work: &PayoutWork) -> sqlx::Result<()> {
    let p = &work.facts;
    let held = sqlx::query!(
        r#"SELECT status_rank, status_at, reconciliation_status FROM payouts
           WHERE id = $1 FOR UPDATE"#,
        p.id
    )
    .fetch_optional(&mut *tx)
    .await?;
    let further = held
        .as_ref()
        .is_none_or(|h| (p.rank(), work.at) > (h.status_rank, h.status_at));
    let reconciliation = match (&held, p.reconciliation_status.as_deref()) {
        (Some(h), _) if h.reconciliation_status.as_deref() == Some("completed") => {
            Some("completed".to_owned())
        }
        (Some(h), None) => h.reconciliation_status.clone(),
        (_, status) => status.map(str::to_owned),
    };
    let complete =
        work.listing.is_some() && p.reconciliation_status.as_deref() == Some("completed");
    let own = p.balance_transaction.as_ref().map(|t| t.id().to_owned());
    let failure = p
        .failure_balance_transaction
        .as_ref()
        .map(|t| t.id().to_owned());
    sqlx::query!(
        r#"INSERT INTO payouts (id, amount, currency, status, status_rank, status_at, arrival_date,
                                created, balance_transaction_id, failure_balance_transaction_id,
                                reconciliation_status, listed_at, listed_complete)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                   CASE WHEN $12 THEN now() END, $13)
           ON CONFLICT (id) DO UPDATE SET
               status = CASE WHEN $14 THEN EXCLUDED.status ELSE payouts.status END,
               status_rank = CASE WHEN $14 THEN EXCLUDED.status_rank ELSE payouts.status_rank END,
               status_at = CASE WHEN $14 THEN EXCLUDED.status_at ELSE payouts.status_at END,
               arrival_date = coalesce(EXCLUDED.arrival_date, payouts.arrival_date),
               balance_transaction_id = coalesce(payouts.balance_transaction_id,
                                                 EXCLUDED.balance_transaction_id),
               failure_balance_transaction_id = coalesce(payouts.failure_balance_transaction_id,
                                                         EXCLUDED.failure_balance_transaction_id),
               reconciliation_status = EXCLUDED.reconciliation_status,
               listed_at = coalesce(EXCLUDED.listed_at, payouts.listed_at),
               listed_complete = payouts.listed_complete OR EXCLUDED.listed_complete,
               updated_at = now()"#,
        p.id,
        p.amount,
        p.currency,
        p.status,
        p.rank(),
        work.at,
        p.arrival_date,
        p.created,
        own,
        failure,
        reconciliation,
        work.listing.is_some(),
        complete,
        further,
    )
    .execute(&mut *tx)
    .await?;

    let listed = work.listing.as_deref().unwrap_or_default();
    if !listed.is_empty() {
        sqlx::query!(
            r#"INSERT INTO payout_transactions (payout_id, balance_transaction_id, type,
                                                reporting_category, amount, fee, net, currency,
                                                source_id, created)
               SELECT $1, * FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[],
                                        $6::bigint[], $7::bigint[], $8::text[], $9::text[],
                                        $10::timestamptz[])
               ON CONFLICT DO NOTHING"#,
            p.id,
            &listed.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
            &listed
                .iter()
                .map(|t| t.kind.clone().unwrap_or_default())
                .collect::<Vec<_>>(),
            &listed
                .iter()
                .map(|t| t.reporting_category.clone())
                .collect::<Vec<_>>() as &[Option<String>],
            &listed.iter().map(|t| t.amount).collect::<Vec<_>>(),
            &listed.iter().map(|t| t.fee).collect::<Vec<_>>(),
            &listed.iter().map(|t| t.net).collect::<Vec<_>>(),
            &listed
                .iter()
                .map(|t| t.currency.clone())
                .collect::<Vec<_>>(),
            &listed.iter().map(|t| t.source.clone()).collect::<Vec<_>>() as &[Option<String>],
            &listed.iter().map(|t| t.created).collect::<Vec<_>>() as &[Option<OffsetDateTime>],
        )
        .execute(&mut *tx)
        .await?;
    }

    // The payout's own movements: the money leaving the balance, and coming back if it failed.
    let mut entries = Vec::new();
    for (reference, source, sign) in [
        (&p.balance_transaction, Source::Payout, -1),
        (&p.failure_balance_transaction, Source::PayoutFailure, 1),
    ] {
        if let Some(bt) = own_transaction(p, reference.as_ref(), listed, sign) {
            entries.extend(ledger::entries(&bt, source, &p.id, None));
        }
    }
    ledger::append(tx, &entries).await?;
    Ok(())
}

/// A payout's own balance transaction: as Stripe listed or expanded it, or else as the payout
/// describes it (its amount, leaving the balance or coming back, in its currency, at its time).
fn own_transaction(
    payout: &PayoutFacts,
    reference: Option<&BalanceTransactionRef>,
    listed: &[BalanceTransactionFacts],
    sign: i64,
) -> Option<BalanceTransactionFacts> {
    match reference? {
        BalanceTransactionRef::Object(bt) => Some(bt.clone()),
        BalanceTransactionRef::Id(id) => Some(
            listed
                .iter()
                .find(|t| &t.id == id)
                .cloned()
                .unwrap_or_else(|| BalanceTransactionFacts {
                    id: id.clone(),
                    amount: sign * payout.amount,
                    fee: 0,
                    net: sign * payout.amount,
                    currency: payout.currency.clone(),
                    kind: Some(if sign < 0 { "payout" } else { "payout_failure" }.to_owned()),
                    reporting_category: None,
                    source: Some(payout.id.clone()),
                    created: payout.created,
                }),
        ),
    }
}

/// A balance transaction of a payout that the ledger does not hold as Stripe describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct Unmatched {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// What Stripe says it adds to the payout.
    pub net: i64,
    /// What the ledger holds for it (0 when nothing).
    pub ledger: i64,
    pub currency: String,
    pub source: Option<String>,
}

/// A payout, reconciled against the ledger.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reconciliation {
    pub id: String,
    pub status: String,
    pub amount: i64,
    pub currency: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub arrival_date: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created: Option<OffsetDateTime>,
    pub reconciliation_status: Option<String>,
    /// Whether its transactions were listed from Stripe, and whether Stripe had finished
    /// reconciling the payout when they were (only then is the list final).
    pub transactions_listed: bool,
    pub listing_complete: bool,
    /// The balance transactions it contains (its own left out), and the sum of their nets.
    pub transaction_count: i64,
    pub transactions_total: i64,
    /// What the ledger holds for those transactions.
    pub ledger_total: i64,
    /// `amount` less `ledger_total`: 0 when the ledger accounts for every penny.
    pub difference: i64,
    /// Transactions the ledger does not hold, or holds for a different amount.
    pub unmatched: Vec<Unmatched>,
    /// Donations whose gift the payout contains.
    pub donation_count: i64,
}

/// The reconciliation of each payout in `ids`, in that order; unknown ids are left out.
pub async fn reconcile(db: &sqlx::PgPool, ids: &[String]) -> sqlx::Result<Vec<Reconciliation>> {
    let payouts = sqlx::query!(
        r#"WITH contained AS (
               SELECT t.payout_id, t.balance_transaction_id, t.net,
                      (SELECT sum(l.amount) FROM ledger_entries l
                       WHERE l.balance_transaction_id = t.balance_transaction_id)::bigint AS ledger,
                      (SELECT count(*) FROM ledger_entries l
                       WHERE l.balance_transaction_id = t.balance_transaction_id
                         AND l.kind = 'gift') AS gifts
               FROM payout_transactions t JOIN payouts p ON p.id = t.payout_id
               WHERE t.payout_id = ANY($1)
                 AND t.balance_transaction_id IS DISTINCT FROM p.balance_transaction_id
                 AND t.balance_transaction_id IS DISTINCT FROM p.failure_balance_transaction_id)
           SELECT p.id, p.status, p.amount, p.currency, p.arrival_date, p.created,
                  p.reconciliation_status, p.listed_at IS NOT NULL AS "listed!",
                  p.listed_complete,
                  count(c.balance_transaction_id) AS "transaction_count!",
                  coalesce(sum(c.net), 0)::bigint AS "transactions_total!",
                  coalesce(sum(c.ledger), 0)::bigint AS "ledger_total!",
                  coalesce(sum(c.gifts), 0)::bigint AS "donation_count!"
           FROM payouts p LEFT JOIN contained c ON c.payout_id = p.id
           WHERE p.id = ANY($1)
           GROUP BY p.id"#,
        ids
    )
    .fetch_all(db)
    .await?;
    let unmatched = sqlx::query!(
        r#"SELECT t.payout_id, t.balance_transaction_id AS id, t.type AS kind, t.net,
                  coalesce((SELECT sum(l.amount) FROM ledger_entries l
                            WHERE l.balance_transaction_id = t.balance_transaction_id), 0)::bigint
                      AS "ledger!",
                  t.currency, t.source_id AS source
           FROM payout_transactions t JOIN payouts p ON p.id = t.payout_id
           WHERE t.payout_id = ANY($1)
             AND t.balance_transaction_id IS DISTINCT FROM p.balance_transaction_id
             AND t.balance_transaction_id IS DISTINCT FROM p.failure_balance_transaction_id
             AND t.net IS DISTINCT FROM (SELECT sum(l.amount) FROM ledger_entries l
                                         WHERE l.balance_transaction_id = t.balance_transaction_id)
           ORDER BY t.payout_id, t.created, t.balance_transaction_id"#,
        ids
    )
    .fetch_all(db)
    .await?;
    let mut by_id: std::collections::HashMap<String, Reconciliation> = payouts
        .into_iter()
        .map(|p| {
            let reconciliation = Reconciliation {
                difference: p.amount - p.ledger_total,
                id: p.id.clone(),
                status: p.status,
                amount: p.amount,
                currency: p.currency,
                arrival_date: p.arrival_date,
                created: p.created,
                reconciliation_status: p.reconciliation_status,
                transactions_listed: p.listed,
                listing_complete: p.listed_complete,
                transaction_count: p.transaction_count,
                transactions_total: p.transactions_total,
                ledger_total: p.ledger_total,
                unmatched: Vec::new(),
                donation_count: p.donation_count,
            };
            (p.id, reconciliation)
        })
        .collect();
    for u in unmatched {
        if let Some(payout) = by_id.get_mut(&u.payout_id) {
            payout.unmatched.push(Unmatched {
                id: u.id,
                kind: u.kind,
                net: u.net,
                ledger: u.ledger,
                currency: u.currency,
                source: u.source,
            });
        }
    }
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

/// A succeeded donation that no paid payout contains, though it should have by now.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct NotPaidOut {
    pub id: uuid::Uuid,
    pub campaign: String,
    pub total_amount: i64,
    pub currency: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub succeeded_at: Option<OffsetDateTime>,
    pub charge_id: Option<String>,
    pub balance_transaction_id: Option<String>,
}

/// Succeeded donations that succeeded before `before` and are in no paid payout, oldest first.
pub async fn not_paid_out(
    db: &sqlx::PgPool,
    before: OffsetDateTime,
    limit: i64,
) -> sqlx::Result<Vec<NotPaidOut>> {
    sqlx::query_as!(
        NotPaidOut,
        r#"SELECT d.id, d.campaign, d.total_amount, d.currency,
                  d.payment_status_at AS succeeded_at, d.charge_id, d.balance_transaction_id
           FROM donations d
           WHERE d.payment_status = 'succeeded' AND d.payment_status_at < $1
             AND NOT EXISTS (
                 SELECT 1 FROM payout_transactions t JOIN payouts p ON p.id = t.payout_id
                 WHERE t.balance_transaction_id = d.balance_transaction_id AND p.status = 'paid')
           ORDER BY d.payment_status_at, d.id
           LIMIT $2"#,
        before,
        limit
    )
    .fetch_all(db)
    .await
}
