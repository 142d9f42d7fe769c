//! A batch's payout events applied: each payout's furthest status, its balance transactions as
//! Stripe listed them, and its own movements in the ledger, in the worker's transaction.

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
        let further = (facts.status.rank(), at) > (self.facts.status.rank(), self.at);
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

/// What we hold of a payout, read before calling Stripe: whether its transactions were listed
/// (for a manual payout, its own transaction fetched), and whether the list is complete.
#[derive(Debug, Clone, Copy, Default)]
pub struct Held {
    pub listed: bool,
    pub complete: bool,
}

pub async fn held(db: &sqlx::PgPool, id: &str) -> sqlx::Result<Held> {
    Ok(sqlx::query!(
        "SELECT listed_at IS NOT NULL AS \"listed!\", listed_complete FROM payouts WHERE id = $1",
        id
    )
    .fetch_optional(db)
    .await?
    .map(|row| Held {
        listed: row.listed,
        complete: row.listed_complete,
    })
    .unwrap_or_default())
}

/// What to ask Stripe of a payout, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// List the balance transactions it paid out: once its money has moved, for an automatic
    /// payout (Stripe lists those of automatic payouts only), until the list is complete.
    List,
    /// Fetch its own balance transaction, once: a manual payout contains no list, but its own
    /// transaction carries its fee (an instant payout's), which the ledger records.
    OwnTransaction(String),
}

pub fn call(facts: &PayoutFacts, held: Held) -> Option<Call> {
    if facts.automatic {
        return (facts.settled() && !held.complete).then_some(Call::List);
    }
    match &facts.balance_transaction {
        Some(BalanceTransactionRef::Id(id)) if !held.listed => {
            Some(Call::OwnTransaction(id.clone()))
        }
        _ => None,
    }
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
        .is_none_or(|h| (p.status.rank(), work.at) > (h.status_rank, h.status_at));
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
                                reconciliation_status, listed_at, listed_complete, trace_id,
                                trace_status, statement_descriptor, method, automatic)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
                   CASE WHEN $12 THEN now() END, $13, $15, $16, $17, $18, $19)
           ON CONFLICT (id) DO UPDATE SET
               trace_id = coalesce(EXCLUDED.trace_id, payouts.trace_id),
               trace_status = CASE WHEN EXCLUDED.trace_id IS NOT NULL THEN EXCLUDED.trace_status
                                   WHEN payouts.trace_id IS NOT NULL THEN payouts.trace_status
                                   WHEN $14 THEN coalesce(EXCLUDED.trace_status,
                                                          payouts.trace_status)
                                   ELSE coalesce(payouts.trace_status, EXCLUDED.trace_status)
                              END,
               statement_descriptor = CASE WHEN $14 THEN coalesce(EXCLUDED.statement_descriptor,
                                                                  payouts.statement_descriptor)
                                           ELSE coalesce(payouts.statement_descriptor,
                                                         EXCLUDED.statement_descriptor)
                                      END,
               method = coalesce(EXCLUDED.method, payouts.method),
               automatic = coalesce(EXCLUDED.automatic, payouts.automatic),
               status = CASE WHEN $14 THEN EXCLUDED.status ELSE payouts.status END,
               status_rank = CASE WHEN $14 THEN EXCLUDED.status_rank ELSE payouts.status_rank END,
               status_at = CASE WHEN $14 THEN EXCLUDED.status_at ELSE payouts.status_at END,
               arrival_date = CASE WHEN $14 THEN coalesce(EXCLUDED.arrival_date,
                                                          payouts.arrival_date)
                                   ELSE coalesce(payouts.arrival_date, EXCLUDED.arrival_date)
                              END,
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
        p.status.as_stripe(),
        p.status.rank(),
        work.at,
        p.arrival_date,
        p.created.unwrap_or(work.at),
        own,
        failure,
        reconciliation,
        work.listing.is_some(),
        complete,
        further,
        p.trace_id,
        p.trace_status,
        p.statement_descriptor,
        p.method,
        p.automatic,
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
