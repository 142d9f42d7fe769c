//! Payouts reconciled against the ledger, worked out when asked for, so they always reflect the
//! ledger as it is; and the gifts no paid payout contains though one should by now.

use time::OffsetDateTime;

/// A balance transaction of a payout that the ledger does not hold as Stripe describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = UnmatchedTransaction)]
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

/// What a payout contains, by Stripe's reporting category (`charge`, `refund`, `dispute`,
/// `fee`, `other_adjustment`, ...): gross, fee and net, the nets summing to the payout's amount
/// once its list is complete. For the journal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[schema(as = PayoutSplit)]
pub struct Split {
    pub category: String,
    pub count: i64,
    pub gross: i64,
    pub fee: i64,
    pub net: i64,
}

/// A payout, reconciled against the ledger.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Payout)]
pub struct Reconciliation {
    pub id: String,
    pub status: String,
    pub amount: i64,
    pub currency: String,
    /// When the bank should have it: what to match on the bank statement.
    #[serde(with = "time::serde::rfc3339::option")]
    pub arrival_date: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// What the bank can find it by, once Stripe has it.
    pub trace_id: Option<String>,
    /// `supported`, `pending`, `unsupported` or `not_applicable`.
    pub trace_status: Option<String>,
    /// What the bank statement shows.
    pub statement_descriptor: Option<String>,
    /// `standard` or `instant`.
    pub method: Option<String>,
    /// Made by Stripe's payout schedule; a manual payout lists no transactions.
    pub automatic: Option<bool>,
    /// Stripe's fee for the payout itself (an instant payout's), from its own transaction;
    /// null while that is not known.
    pub payout_fee: Option<i64>,
    /// `listed` (Stripe's list of what it paid out is held, complete or not: see
    /// `listing_complete`), `not_listed` yet, or `unknown`: a manual payout, of which Stripe
    /// lists nothing, so nothing can be said to be missing.
    pub contents: &'static str,
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
    /// `amount` less `ledger_total`: 0 when the ledger accounts for every penny; null when
    /// `contents` is `unknown`.
    pub difference: Option<i64>,
    /// What it contains by reporting category, for the journal.
    pub split: Vec<Split>,
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
                  p.trace_id, p.trace_status, p.statement_descriptor, p.method, p.automatic,
                  (SELECT own.fee FROM payout_transactions own
                   WHERE own.payout_id = p.id
                     AND own.balance_transaction_id = p.balance_transaction_id) AS payout_fee,
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
    let splits = sqlx::query!(
        r#"SELECT t.payout_id, coalesce(t.reporting_category, t.type) AS "category!",
                  count(*) AS "count!", sum(t.amount)::bigint AS "gross!",
                  sum(t.fee)::bigint AS "fee!", sum(t.net)::bigint AS "net!"
           FROM payout_transactions t JOIN payouts p ON p.id = t.payout_id
           WHERE t.payout_id = ANY($1)
             AND t.balance_transaction_id IS DISTINCT FROM p.balance_transaction_id
             AND t.balance_transaction_id IS DISTINCT FROM p.failure_balance_transaction_id
           GROUP BY t.payout_id, coalesce(t.reporting_category, t.type)
           ORDER BY t.payout_id, 2"#,
        ids
    )
    .fetch_all(db)
    .await?;
    let mut by_id: std::collections::HashMap<String, Reconciliation> = payouts
        .into_iter()
        .map(|p| {
            let manual = p.automatic == Some(false);
            let reconciliation = Reconciliation {
                difference: (!manual).then_some(p.amount - p.ledger_total),
                contents: if manual {
                    "unknown"
                } else if p.listed {
                    "listed"
                } else {
                    "not_listed"
                },
                split: Vec::new(),
                id: p.id.clone(),
                status: p.status,
                amount: p.amount,
                currency: p.currency,
                arrival_date: p.arrival_date,
                created: p.created,
                trace_id: p.trace_id,
                trace_status: p.trace_status,
                statement_descriptor: p.statement_descriptor,
                method: p.method,
                automatic: p.automatic,
                payout_fee: p.payout_fee,
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
    for row in splits {
        if let Some(payout) = by_id.get_mut(&row.payout_id) {
            payout.split.push(Split {
                category: row.category,
                count: row.count,
                gross: row.gross,
                fee: row.fee,
                net: row.net,
            });
        }
    }
    Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
}

/// A succeeded donation that no paid payout contains, though it should have by now.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = OverdueDonation)]
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
             AND NOT EXISTS (SELECT 1 FROM paid_out_transactions t
                             WHERE t.balance_transaction_id = d.balance_transaction_id)
           ORDER BY d.payment_status_at, d.id
           LIMIT $2"#,
        before,
        limit
    )
    .fetch_all(db)
    .await
}

/// One balance transaction a payout contains, with what the ledger holds for it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = PayoutTransaction)]
pub struct Contained {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub reporting_category: Option<String>,
    pub amount: i64,
    pub fee: i64,
    pub net: i64,
    pub currency: String,
    pub source: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created: Option<OffsetDateTime>,
    /// What the ledger holds for it; `null` when nothing (a transaction not ours).
    pub ledger: Option<i64>,
    pub donation_id: Option<uuid::Uuid>,
    pub campaign: Option<String>,
}

/// The balance transactions payout `id` contains, in the order Stripe made them.
pub async fn contained(db: &sqlx::PgPool, id: &str) -> sqlx::Result<Vec<Contained>> {
    sqlx::query_as!(
        Contained,
        r#"SELECT t.balance_transaction_id AS id, t.type AS kind, t.reporting_category, t.amount,
                  t.fee, t.net, t.currency, t.source_id AS source, t.created,
                  l.ledger, l.donation_id, l.campaign
           FROM payout_transactions t
           LEFT JOIN LATERAL (
               SELECT sum(e.amount)::bigint AS ledger, min(e.donation_id::text)::uuid AS donation_id,
                      min(e.campaign) AS campaign
               FROM ledger_entries e WHERE e.balance_transaction_id = t.balance_transaction_id
               HAVING count(*) > 0) l ON true
           WHERE t.payout_id = $1
           ORDER BY t.created, t.balance_transaction_id"#,
        id
    )
    .fetch_all(db)
    .await
}
