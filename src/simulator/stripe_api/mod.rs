//! Stripe's API as the simulated Stripe answers it: the calls quickdonate's Stripe client
//! makes, with Stripe's shapes, errors and idempotency rules, on a listener of its own.
//!
//! - [`payments`]: PaymentIntents (created once per idempotency key), their charges and refunds;
//! - [`balance`]: balance transactions, payouts and the events API.

mod balance;
mod payments;

use std::collections::HashMap;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};

use super::{SECRET_KEY, SimulatedStripe};
use balance::{
    list_balance_transactions, list_events, list_payouts, retrieve_balance_transaction,
    retrieve_payout,
};
use payments::{
    cancel_payment_intent, create_payment_intent, list_refunds, retrieve_charge,
    retrieve_payment_intent,
};

#[expect(
    clippy::disallowed_methods,
    reason = "Stripe's API as the simulated Stripe answers it, on a listener of its own: not ours to document"
)]
pub(super) fn router(stripe: SimulatedStripe) -> Router {
    Router::new()
        .route("/v1/payment_intents", post(create_payment_intent))
        .route("/v1/payment_intents/{id}", get(retrieve_payment_intent))
        .route(
            "/v1/payment_intents/{id}/cancel",
            post(cancel_payment_intent),
        )
        .route("/v1/charges/{id}", get(retrieve_charge))
        .route(
            "/v1/balance_transactions/{id}",
            get(retrieve_balance_transaction),
        )
        .route("/v1/balance_transactions", get(list_balance_transactions))
        .route("/v1/refunds", get(list_refunds))
        .route("/v1/payouts", get(list_payouts))
        .route("/v1/payouts/{id}", get(retrieve_payout))
        .route("/v1/events", get(list_events))
        .with_state(stripe)
}

/// A handler's answer when the database fails it: Stripe's own 500, which the client retries.
struct DatabaseFailure(sqlx::Error);

impl From<sqlx::Error> for DatabaseFailure {
    fn from(error: sqlx::Error) -> Self {
        Self(error)
    }
}

impl IntoResponse for DatabaseFailure {
    fn into_response(self) -> Response {
        tracing::error!(error = %self.0, "the simulated Stripe could not use its database");
        stripe_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            None,
            "The simulated Stripe could not reach its database.",
        )
    }
}

type Answer = Result<Response, DatabaseFailure>;

/// The paths named by `expand[]` (or `expand[0]`...) in a query.
fn expansions(query: Option<&str>) -> Vec<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k.starts_with("expand[") && k.ends_with(']'))
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// Stripe's answer to an expansion it does not offer.
fn cannot_expand(path: &str) -> Response {
    invalid_request(
        "expand",
        &format!("The simulated Stripe cannot expand {path}."),
    )
}

/// What of a charge to embed in place of its ids.
#[derive(Default)]
struct ChargeExpansion {
    balance_transaction: bool,
    refunds: bool,
    inside_refunds: TransactionExpansion,
}

impl ChargeExpansion {
    /// Takes `path` (relative to the charge) if it names something of the charge. A path
    /// into its refunds (`refunds.data.balance_transaction`) expands the refunds too.
    fn take(&mut self, path: &str) -> bool {
        match path {
            "balance_transaction" => self.balance_transaction = true,
            "refunds" => self.refunds = true,
            _ => {
                let Some(inside) = path.strip_prefix("refunds.data.") else {
                    return false;
                };
                if !self.inside_refunds.take(inside) {
                    return false;
                }
                self.refunds = true;
            }
        }
        true
    }

    /// Embeds the charge's balance transaction and its refunds (a list, newest first).
    async fn apply(&self, tx: &mut PgConnection, charge: &mut Value) -> sqlx::Result<()> {
        if self.balance_transaction {
            expand_transaction(tx, &mut charge["balance_transaction"]).await?;
        }
        if self.refunds {
            let id = charge["id"].as_str().unwrap_or_default().to_owned();
            let mut refunds = refunds_of(tx, &id, None, i64::MAX).await?;
            for refund in &mut refunds {
                self.inside_refunds.apply(tx, refund).await?;
            }
            charge["refunds"] = json!({
                "object": "list", "data": refunds, "has_more": false,
                "url": format!("/v1/charges/{id}/refunds")
            });
        }
        Ok(())
    }
}

/// What of a refund or a payout to embed in place of its ids: its balance transaction, and
/// the one that reversed it if it failed.
#[derive(Default)]
struct TransactionExpansion {
    balance_transaction: bool,
    failure_balance_transaction: bool,
}

impl TransactionExpansion {
    /// Takes `path` (relative to the object) if it names one of those.
    fn take(&mut self, path: &str) -> bool {
        match path {
            "balance_transaction" => self.balance_transaction = true,
            "failure_balance_transaction" => self.failure_balance_transaction = true,
            _ => return false,
        }
        true
    }

    async fn apply(&self, tx: &mut PgConnection, object: &mut Value) -> sqlx::Result<()> {
        if self.balance_transaction {
            expand_transaction(tx, &mut object["balance_transaction"]).await?;
        }
        if self.failure_balance_transaction {
            expand_transaction(tx, &mut object["failure_balance_transaction"]).await?;
        }
        Ok(())
    }
}

/// Puts the balance transaction whose id `slot` holds in its place; a null stays null.
async fn expand_transaction(tx: &mut PgConnection, slot: &mut Value) -> sqlx::Result<()> {
    let Some(id) = slot.as_str() else {
        return Ok(());
    };
    let transaction = sqlx::query_scalar!(
        "SELECT object FROM simulator_balance_transactions WHERE id = $1",
        id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(transaction) = transaction {
        *slot = transaction;
    }
    Ok(())
}

/// A read of several objects sees them as of one moment.
async fn snapshot(db: &PgPool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    db.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
}

/// The page size a list asks for: Stripe's default of 10, at most 100.
fn limit_of(query: &HashMap<String, String>) -> i64 {
    query
        .get("limit")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .clamp(1, 100)
}

/// What a list's `expand[]=data.X` asks of each item, taken by `take`; the first path it
/// does not know, if any.
fn list_expansions(query: Option<&str>, mut take: impl FnMut(&str) -> bool) -> Option<String> {
    expansions(query)
        .into_iter()
        .find(|path| !path.strip_prefix("data.").is_some_and(&mut take))
}

fn list(data: Vec<Value>, has_more: bool, url: &str) -> Response {
    let body = json!({"object": "list", "data": data, "has_more": has_more, "url": url});
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn found_or_404(found: Option<Value>, kind: &str, id: &str) -> Response {
    match found {
        Some(object) => (StatusCode::OK, axum::Json(object)).into_response(),
        None => {
            let body = json!({"error": {
                "type": "invalid_request_error", "code": "resource_missing", "param": "id",
                "message": format!("No such {kind}: '{id}'")
            }});
            (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
        }
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    let expected = format!("Bearer {SECRET_KEY}");
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str())
}

fn unauthorized() -> Response {
    stripe_error(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        None,
        "Invalid API Key provided.",
    )
}

fn invalid_request(param: &str, message: &str) -> Response {
    stripe_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some(param),
        message,
    )
}

fn stripe_error(status: StatusCode, kind: &str, param: Option<&str>, message: &str) -> Response {
    let body = json!({"error": {"type": kind, "param": param, "message": message}});
    (status, axum::Json(body)).into_response()
}

/// Up to `limit` refunds of a charge, newest first, after the refund `starting_after` if given.
async fn refunds_of(
    tx: &mut PgConnection,
    charge: &str,
    starting_after: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<Value>> {
    // After a refund we do not know, nothing: the page cannot be placed.
    sqlx::query_scalar!(
        r#"SELECT object FROM simulator_refunds
           WHERE charge_id = $1
             AND ($2::text IS NULL
                  OR seq < (SELECT seq FROM simulator_refunds WHERE id = $2))
           ORDER BY seq DESC LIMIT $3"#,
        charge,
        starting_after,
        limit
    )
    .fetch_all(&mut *tx)
    .await
}
