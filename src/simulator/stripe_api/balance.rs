//! Balance transactions, payouts and the events API, as Stripe answers for them.

use std::collections::HashMap;

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use serde_json::Value;
use sqlx::PgConnection;

use super::{
    Answer, TransactionExpansion, authorized, cannot_expand, expansions, found_or_404, limit_of,
    list, list_expansions, snapshot, stripe_error, unauthorized,
};
use crate::simulator::SimulatedStripe;

pub(super) async fn retrieve_balance_transaction(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    if !authorized(&headers) {
        return Ok(unauthorized());
    }
    let found = sqlx::query_scalar!(
        "SELECT object FROM simulator_balance_transactions WHERE id = $1",
        id
    )
    .fetch_optional(&stripe.db)
    .await?;
    Ok(found_or_404(found, "balance_transaction", &id))
}

/// `GET /v1/balance_transactions`: newest first, paginated; with `payout=po_...`, only those
/// that payout paid out, its own `payout` transaction among them. `expand[]=data.source`
/// embeds each one's charge, refund or payout.
pub(super) async fn list_balance_transactions(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    RawQuery(raw): RawQuery,
) -> Answer {
    if !authorized(&headers) {
        return Ok(unauthorized());
    }
    let mut source = false;
    if let Some(path) = list_expansions(raw.as_deref(), |p| {
        let known = p == "source";
        source |= known;
        known
    }) {
        return Ok(cannot_expand(&path));
    }
    let limit = limit_of(&query);
    let payout = query.get("payout");
    let mut tx = snapshot(&stripe.db).await?;
    if let Some(payout) = payout {
        let known = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM simulator_payouts WHERE id = $1) AS "known!""#,
            payout
        )
        .fetch_one(&mut *tx)
        .await?;
        if !known {
            return Ok(stripe_error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("payout"),
                &format!("No such payout: '{payout}'"),
            ));
        }
    }
    // After a transaction we do not know, nothing: the page cannot be placed.
    let mut transactions = sqlx::query_scalar!(
        r#"SELECT object FROM simulator_balance_transactions
           WHERE ($1::text IS NULL OR payout_id = $1)
             AND ($2::text IS NULL
                  OR seq < (SELECT seq FROM simulator_balance_transactions WHERE id = $2))
           ORDER BY seq DESC
           LIMIT $3"#,
        payout,
        query.get("starting_after"),
        limit + 1
    )
    .fetch_all(&mut *tx)
    .await?;
    let has_more = transactions.len() as i64 > limit;
    transactions.truncate(limit as usize);
    if source {
        for transaction in &mut transactions {
            expand_source(&mut tx, &mut transaction["source"]).await?;
        }
    }
    tx.commit().await?;
    Ok(list(transactions, has_more, "/v1/balance_transactions"))
}

/// Puts the charge, refund or payout whose id `slot` holds in its place.
async fn expand_source(tx: &mut PgConnection, slot: &mut Value) -> sqlx::Result<()> {
    let Some(id) = slot.as_str() else {
        return Ok(());
    };
    let found = sqlx::query_scalar!(
        r#"SELECT object AS "object!" FROM simulator_charges WHERE id = $1
           UNION ALL SELECT object FROM simulator_refunds WHERE id = $1
           UNION ALL SELECT object FROM simulator_payouts WHERE id = $1"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(object) = found {
        *slot = object;
    }
    Ok(())
}

/// A payout; `expand[]=balance_transaction` and `failure_balance_transaction` embed those.
pub(super) async fn retrieve_payout(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    if !authorized(&headers) {
        return Ok(unauthorized());
    }
    let mut expansion = TransactionExpansion::default();
    if let Some(path) = expansions(query.as_deref())
        .into_iter()
        .find(|p| !expansion.take(p))
    {
        return Ok(cannot_expand(&path));
    }
    let mut tx = snapshot(&stripe.db).await?;
    let mut payout = sqlx::query_scalar!("SELECT object FROM simulator_payouts WHERE id = $1", id)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(payout) = payout.as_mut() {
        expansion.apply(&mut tx, payout).await?;
    }
    tx.commit().await?;
    Ok(found_or_404(payout, "payout", &id))
}

/// `GET /v1/payouts`: newest first, paginated.
pub(super) async fn list_payouts(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    RawQuery(raw): RawQuery,
) -> Answer {
    if !authorized(&headers) {
        return Ok(unauthorized());
    }
    let mut expansion = TransactionExpansion::default();
    if let Some(path) = list_expansions(raw.as_deref(), |p| expansion.take(p)) {
        return Ok(cannot_expand(&path));
    }
    let limit = limit_of(&query);
    let mut tx = snapshot(&stripe.db).await?;
    // After a payout we do not know, nothing: the page cannot be placed.
    let mut payouts = sqlx::query_scalar!(
        r#"SELECT object FROM simulator_payouts
           WHERE ($1::text IS NULL OR seq < (SELECT seq FROM simulator_payouts WHERE id = $1))
           ORDER BY seq DESC
           LIMIT $2"#,
        query.get("starting_after"),
        limit + 1
    )
    .fetch_all(&mut *tx)
    .await?;
    let has_more = payouts.len() as i64 > limit;
    payouts.truncate(limit as usize);
    for payout in &mut payouts {
        expansion.apply(&mut tx, payout).await?;
    }
    tx.commit().await?;
    Ok(list(payouts, has_more, "/v1/payouts"))
}

/// Events newest first, as Stripe lists them.
pub(super) async fn list_events(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Answer {
    if !authorized(&headers) {
        return Ok(unauthorized());
    }
    let since: i64 = query
        .get("created[gte]")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let limit = limit_of(&query);
    // After an event we do not know, nothing: the page cannot be placed.
    let mut events = sqlx::query_scalar!(
        r#"SELECT event FROM simulator_events
           WHERE created >= $1
             AND ($2::text IS NULL
                  OR seq < (SELECT seq FROM simulator_events WHERE id = $2))
           ORDER BY seq DESC
           LIMIT $3"#,
        since,
        query.get("starting_after"),
        limit + 1
    )
    .fetch_all(&stripe.db)
    .await?;
    let has_more = events.len() as i64 > limit;
    events.truncate(limit as usize);
    Ok(list(events, has_more, "/v1/events"))
}
