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
        p.created.unwrap_or(work.at),
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

/// A payout, reconciled against the ledger.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Payout)]
pub struct Reconciliation {
    pub id: String,
    pub status: String,
    pub amount: i64,
    pub currency: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub arrival_date: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
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

pub mod routes {
    //! `GET /v1/finance/payouts`, `GET /v1/finance/payouts/{id}` and
    //! `GET /v1/finance/payouts/overdue-donations`.

    use axum::Json;
    use axum::body::Body;
    use axum::extract::{Path, RawQuery, State};
    use axum::http::HeaderMap;
    use axum::response::{IntoResponse, Response};
    use serde_json::json;
    use time::OffsetDateTime;

    use super::{Contained, NotPaidOut, Reconciliation};
    use crate::http::export::NotAcceptable;
    use crate::http::export::{self, Cell, CsvChunks, CsvRow, Format};
    use crate::http::problem::{ApiResult, Problem};
    use crate::http::query::BadParameter;
    use crate::http::query::{Cursor, Params, bad_parameter, next_page};
    use crate::http::query::{PageParams, RangeParams};
    use crate::operators::access::Caller;
    use crate::operators::access::Refusals;
    use crate::operators::audit;
    use crate::startup::AppState;

    /// A page of `GET /v1/finance/payouts`.
    #[derive(utoipa::ToSchema)]
    #[schema(as = PayoutPage)]
    #[allow(dead_code)]
    pub(crate) struct Page {
        data: Vec<Reconciliation>,
        /// For the next page (`cursor=`); null on the last.
        next_cursor: Option<String>,
    }

    /// `GET /v1/finance/payouts/{id}`: the payout and every transaction it contains.
    #[derive(utoipa::ToSchema)]
    #[schema(as = PayoutWithTransactions)]
    #[allow(dead_code)]
    pub(crate) struct Detail {
        #[serde(flatten)]
        payout: Reconciliation,
        /// In the order Stripe made them.
        transactions: Vec<Contained>,
    }

    /// `GET /v1/finance/payouts/overdue-donations`.
    #[derive(utoipa::ToSchema)]
    #[schema(as = OverdueDonations)]
    #[allow(dead_code)]
    pub(crate) struct Overdue {
        /// The `days` applied.
        days: i64,
        /// Oldest first.
        data: Vec<NotPaidOut>,
    }

    /// Payouts newest first (by when Stripe made them), in [from, to), in `status`.
    #[utoipa::path(
        get,
        path = "/v1/finance/payouts",
        operation_id = "listPayouts",
        tag = "finance",
        summary = "Payouts, reconciled",
        description = "Payouts newest first (by when Stripe made them), each reconciled against \
                       the ledger (`difference` 0: every penny accounted for). JSON pages, or \
                       the whole selection as CSV (`Accept: text/csv`). Any finance token; \
                       audited.",
        security(("bearerAuth" = [])),
        params(
            ("status" = Option<String>, Query,
             description = "Only in this status: `pending`, `in_transit`, `paid`, `failed` or \
                            `canceled`."),
            RangeParams,
            PageParams,
        ),
        responses(
            (status = 200, description = "A page, or the CSV.", content(
                (Page = "application/json"),
                (String = "text/csv"),
            )),
            Refusals,
            NotAcceptable,
            BadParameter,
        ),
    )]
    pub async fn list(
        State(state): State<AppState>,
        caller: Caller,
        RawQuery(query): RawQuery,
        headers: HeaderMap,
    ) -> ApiResult<Response> {
        let params = Params::parse(
            query.as_deref(),
            &["from", "to", "status", "cursor", "limit"],
        )?;
        let format = export::negotiate(&headers, &[Format::Json, Format::Csv])?;
        let (from, to) = params.range()?;
        let status = params.text("status");
        if let Some(status) = status
            && !STATUSES.contains(&status)
        {
            return Err(
                bad_parameter("status", format!("must be one of {}", STATUSES.join(", "))).into(),
            );
        }
        if format == Format::Csv {
            export::refuse_paging(&params)?;
        }
        let (cursor, limit) = match format {
            Format::Json => (params.cursor::<String>()?, params.limit()?),
            _ => (None, crate::http::query::MAX_LIMIT * 100),
        };
        let mut page = sqlx::query!(
            r#"SELECT id, created FROM payouts
               WHERE ($1::timestamptz IS NULL OR created >= $1)
                 AND ($2::timestamptz IS NULL OR created < $2)
                 AND ($3::text IS NULL OR status = $3)
                 AND ($4::timestamptz IS NULL OR (created, id) < ($4, $5))
               ORDER BY created DESC, id DESC
               LIMIT $6"#,
            from,
            to,
            status,
            cursor.as_ref().map(|c| c.at),
            cursor.as_ref().map(|c| c.id.clone()),
            limit + 1
        )
        .fetch_all(&mut *crate::db::reading(&state.db).await?)
        .await?;
        let next_cursor = next_page(&mut page, limit, |p| Cursor::new(p.created, p.id.clone()));
        let ids: Vec<String> = page.into_iter().map(|p| p.id).collect();
        let payouts = super::reconcile(&state.db, &ids).await?;
        let what = match format {
            Format::Json => "GET /v1/finance/payouts",
            _ => "GET /v1/finance/payouts (csv)",
        };
        audit::record(
            &state.db,
            &caller,
            what,
            &params.filters(),
            payouts.len() as i64,
        )
        .await?;
        match format {
            Format::Json => {
                Ok(Json(json!({"data": payouts, "next_cursor": next_cursor})).into_response())
            }
            _ => csv("payouts", &payouts),
        }
    }

    /// One payout's reconciliation, with every transaction it contains.
    #[utoipa::path(
        get,
        path = "/v1/finance/payouts/{id}",
        operation_id = "showPayout",
        tag = "finance",
        summary = "A payout and its transactions",
        description = "One payout's reconciliation with every balance transaction it contains \
                       and what the ledger holds for each; as CSV (`Accept: text/csv`), the \
                       transactions. Any finance token; audited.",
        security(("bearerAuth" = [])),
        params(("id" = String, Path, description = "The payout (`po_...`).")),
        responses(
            (status = 200, description = "The payout, or its transactions as CSV.", content(
                (Detail = "application/json"),
                (String = "text/csv"),
            )),
            (status = 404, description = "`/problems/not-found`: no such payout.", body = Problem,
             content_type = "application/problem+json"),
            Refusals,
            NotAcceptable,
            BadParameter,
        ),
    )]
    pub async fn show(
        State(state): State<AppState>,
        caller: Caller,
        Path(id): Path<String>,
        RawQuery(query): RawQuery,
        headers: HeaderMap,
    ) -> ApiResult<Response> {
        let params = Params::parse(query.as_deref(), &[])?;
        let format = export::negotiate(&headers, &[Format::Json, Format::Csv])?;
        let Some(payout) = super::reconcile(&state.db, std::slice::from_ref(&id))
            .await?
            .pop()
        else {
            return Err(Problem::unknown("payout", "payout", &id).into());
        };
        let transactions = super::contained(&state.db, &id).await?;
        let what = format!("GET /v1/finance/payouts/{id}");
        let mut filters = params.filters();
        filters["payout"] = json!(id);
        audit::record(
            &state.db,
            &caller,
            &what,
            &filters,
            transactions.len() as i64,
        )
        .await?;
        match format {
            Format::Json => {
                let mut shown = serde_json::to_value(&payout).map_err(anyhow::Error::from)?;
                shown["transactions"] =
                    serde_json::to_value(&transactions).map_err(anyhow::Error::from)?;
                Ok(Json(shown).into_response())
            }
            _ => csv(&format!("payout-{id}"), &transactions),
        }
    }

    /// Succeeded donations no paid payout contains, `days` (by default PAYOUT_OVERDUE_DAYS)
    /// after they succeeded, oldest first.
    #[utoipa::path(
        get,
        path = "/v1/finance/payouts/overdue-donations",
        operation_id = "listOverdueDonations",
        tag = "finance",
        summary = "Succeeded gifts no payout has paid out",
        description = "Succeeded donations that no paid payout contains, `days` after they \
                       succeeded (by default `PAYOUT_OVERDUE_DAYS`), oldest first; JSON or CSV \
                       (`Accept: text/csv`). Any finance token; audited.",
        security(("bearerAuth" = [])),
        params(
            ("days" = Option<i64>, Query, minimum = 0, maximum = 3650,
             description = "Overdue after this many days; 0 to 3650."),
            ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000,
             description = "At most this many, 1 to 1000; default 100."),
        ),
        responses(
            (status = 200, description = "The overdue donations.", content(
                (Overdue = "application/json"),
                (String = "text/csv"),
            )),
            Refusals,
            NotAcceptable,
            BadParameter,
        ),
    )]
    pub async fn overdue(
        State(state): State<AppState>,
        caller: Caller,
        RawQuery(query): RawQuery,
        headers: HeaderMap,
    ) -> ApiResult<Response> {
        let params = Params::parse(query.as_deref(), &["days", "limit"])?;
        let format = export::negotiate(&headers, &[Format::Json, Format::Csv])?;
        let days = match params.text("days") {
            None => state.payout_overdue_days,
            Some(raw) => match raw.parse::<i64>() {
                Ok(days) if (0..=3650).contains(&days) => days,
                _ => {
                    return Err(
                        bad_parameter("days", "must be a whole number from 0 to 3650").into(),
                    );
                }
            },
        };
        let limit = params.limit()?;
        let before = OffsetDateTime::now_utc() - time::Duration::days(days);
        let donations = super::not_paid_out(&state.db, before, limit).await?;
        audit::record(
            &state.db,
            &caller,
            "GET /v1/finance/payouts/overdue-donations",
            &params.filters(),
            donations.len() as i64,
        )
        .await?;
        match format {
            Format::Json => Ok(Json(json!({"days": days, "data": donations})).into_response()),
            _ => csv("overdue-donations", &donations),
        }
    }

    const STATUSES: &[&str] = &["pending", "in_transit", "paid", "failed", "canceled"];

    /// A short list as one CSV body.
    fn csv<T: CsvRow>(stem: &str, rows: &[T]) -> ApiResult<Response> {
        let mut chunks = CsvChunks::new();
        chunks.header(T::HEADER).map_err(anyhow::Error::from)?;
        for row in rows {
            row.write(&mut chunks).map_err(anyhow::Error::from)?;
        }
        let bytes = chunks.take().map_err(anyhow::Error::from)?;
        Ok(export::csv_response(stem, Body::from(bytes)))
    }

    fn time(at: Option<OffsetDateTime>) -> String {
        at.map(crate::timestamps::rfc3339).unwrap_or_default()
    }

    impl CsvRow for Reconciliation {
        const HEADER: &'static [&'static str] = &[
            "id",
            "status",
            "amount",
            "currency",
            "arrival_date",
            "created",
            "listing_complete",
            "transaction_count",
            "transactions_total",
            "ledger_total",
            "difference",
            "unmatched",
            "donation_count",
        ];

        fn write(&self, csv: &mut CsvChunks) -> std::io::Result<()> {
            let unmatched: Vec<&str> = self.unmatched.iter().map(|u| u.id.as_str()).collect();
            csv.row(&[
                Cell::Text(&self.id),
                Cell::Text(&self.status),
                Cell::Int(self.amount),
                Cell::Text(&self.currency),
                Cell::Text(&time(self.arrival_date)),
                Cell::Text(&crate::timestamps::rfc3339(self.created)),
                Cell::Bool(self.listing_complete),
                Cell::Int(self.transaction_count),
                Cell::Int(self.transactions_total),
                Cell::Int(self.ledger_total),
                Cell::Int(self.difference),
                Cell::Text(&unmatched.join(" ")),
                Cell::Int(self.donation_count),
            ])
        }
    }

    impl CsvRow for Contained {
        const HEADER: &'static [&'static str] = &[
            "id",
            "type",
            "reporting_category",
            "amount",
            "fee",
            "net",
            "currency",
            "source",
            "created",
            "ledger",
            "donation_id",
            "campaign",
        ];

        fn write(&self, csv: &mut CsvChunks) -> std::io::Result<()> {
            let donation = self.donation_id.map(|d| d.to_string());
            csv.row(&[
                Cell::Text(&self.id),
                Cell::Text(&self.kind),
                self.reporting_category.as_deref().into(),
                Cell::Int(self.amount),
                Cell::Int(self.fee),
                Cell::Int(self.net),
                Cell::Text(&self.currency),
                self.source.as_deref().into(),
                Cell::Text(&time(self.created)),
                self.ledger.into(),
                donation.as_deref().into(),
                self.campaign.as_deref().into(),
            ])
        }
    }

    impl CsvRow for NotPaidOut {
        const HEADER: &'static [&'static str] = &[
            "id",
            "campaign",
            "total_amount",
            "currency",
            "succeeded_at",
            "charge_id",
            "balance_transaction_id",
        ];

        fn write(&self, csv: &mut CsvChunks) -> std::io::Result<()> {
            let id = self.id.to_string();
            csv.row(&[
                Cell::Text(&id),
                Cell::Text(&self.campaign),
                Cell::Int(self.total_amount),
                Cell::Text(&self.currency),
                Cell::Text(&time(self.succeeded_at)),
                self.charge_id.as_deref().into(),
                self.balance_transaction_id.as_deref().into(),
            ])
        }
    }
}
