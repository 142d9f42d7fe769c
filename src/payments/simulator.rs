//! Simulated payments: a small Stripe look-alike served inside the process on a loopback port
//! of its own. With no Stripe key configured, the real Stripe client is pointed here, so local
//! runs go through exactly the code that talks to Stripe in production. No money moves.
//!
//! It answers the calls quickdonate makes, with Stripe's shapes and Stripe's idempotency rules
//! (same key and same parameters: the same object; other parameters: `idempotency_error`).
//! Its objects, events and idempotency keys live in Postgres (the `simulator_*` tables), so a
//! PaymentIntent made before a restart can still be paid, and an event's objects can still be
//! fetched when it is applied or replayed later. A change to a PaymentIntent is made in one
//! transaction with its row locked, so two controls used at once on one payment act one after
//! the other, as at Stripe.
//!
//! Money moves as it does in a Stripe balance: a charge, a refund, a refund that fails later and
//! a payout each make a balance transaction. A payout pays out every transaction still in the
//! balance, and remembers them, for `GET /v1/balance_transactions?payout=po_...`.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

/// The secret and publishable keys the simulated Stripe hands out and expects.
pub const SECRET_KEY: &str = "sk_test_simulated";
pub const PUBLISHABLE_KEY: &str = "pk_test_simulated";

/// The simulated Stripe, over the database that holds its objects.
#[derive(Clone)]
pub struct SimulatedStripe {
    db: PgPool,
}

/// Why the simulator would not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum SimulationError {
    #[error("the simulator has no PaymentIntent {0}")]
    UnknownPaymentIntent(String),
    #[error("the PaymentIntent is {0}; it cannot be {1}")]
    WrongState(String, &'static str),
    #[error("must be more than 0 and at most the {0} not yet refunded")]
    BadRefundAmount(i64),
    #[error("the simulator has no refund {0}")]
    UnknownRefund(String),
    #[error("the refund is {0}; only a succeeded refund can fail")]
    RefundCannotFail(String),
    #[error("the simulated balance has nothing to pay out: {0}")]
    NothingToPayOut(String),
    #[error("the simulator could not use its database")]
    Database(#[from] sqlx::Error),
}

impl SimulatedStripe {
    pub fn new(db: PgPool) -> Self {
        Self { db }
    }

    /// Serves the look-alike on a free loopback port; returns its base URL for the client.
    pub async fn start(&self) -> anyhow::Result<String> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let app = self.router();
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the simulated Stripe stopped");
            }
        });
        let base = format!("http://{addr}/");
        // Where to read its objects (payouts, balance transactions) with Stripe's API.
        tracing::info!("the simulated Stripe answers Stripe's API at {base}");
        Ok(base)
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "Stripe's API as the simulated Stripe answers it, on a listener of its own: not ours to document"
    )]
    fn router(&self) -> Router {
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
            .with_state(self.clone())
    }

    /// The card is charged: the PaymentIntent succeeds, with a new charge and its balance
    /// transaction (the fee at 1.5% + 20p). Returns the events Stripe would send.
    pub async fn succeed(&self, id: &str) -> Result<Vec<Value>, SimulationError> {
        let mut tx = self.db.begin().await?;
        let mut intent = lock_intent(&mut tx, id).await?;
        let status = status_of(&intent);
        if !awaits_payment(&status) {
            return Err(SimulationError::WrongState(status, "paid"));
        }
        let amount = intent["amount"].as_i64().unwrap_or(0);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let charge_id = format!("ch_sim_{}", Uuid::new_v4().simple());
        let txn_id = format!("txn_sim_{}", Uuid::new_v4().simple());
        // Stripe rounds its fee to the nearest penny.
        let fee = (amount * 150 + 5_000) / 10_000 + 20;
        let transaction = json!({
            "id": txn_id, "object": "balance_transaction", "amount": amount,
            "available_on": now + 7 * 86_400, "created": now, "currency": intent["currency"],
            "description": "Donation", "exchange_rate": null, "fee": fee,
            "fee_details": [{"amount": fee, "application": null, "currency": intent["currency"],
                             "description": "Stripe processing fees", "type": "stripe_fee"}],
            "net": amount - fee, "reporting_category": "charge", "source": charge_id,
            "status": "pending", "type": "charge"
        });
        let charge = json!({
            "id": charge_id, "object": "charge", "amount": amount, "amount_captured": amount,
            "amount_refunded": 0, "balance_transaction": txn_id, "captured": true,
            "created": now, "currency": intent["currency"], "description": "Donation",
            "disputed": false, "failure_code": null, "failure_message": null,
            "livemode": false, "metadata": intent["metadata"],
            "outcome": {"network_status": "approved_by_network", "reason": null,
                        "risk_level": "normal", "seller_message": "Payment complete.",
                        "type": "authorized"},
            "paid": true, "payment_intent": id, "refunded": false, "status": "succeeded"
        });
        intent["status"] = json!("succeeded");
        intent["amount_received"] = json!(amount);
        intent["latest_charge"] = json!(charge_id);
        intent["last_payment_error"] = Value::Null;
        insert_balance_transaction(&mut tx, &transaction).await?;
        insert_charge(&mut tx, id, &charge).await?;
        save_intent(&mut tx, id, &intent).await?;
        let events = vec![
            record_event(&mut tx, "payment_intent.succeeded", intent, now).await?,
            record_event(&mut tx, "charge.succeeded", charge, now).await?,
        ];
        tx.commit().await?;
        Ok(events)
    }

    /// The card is declined, as Stripe does it: a failed charge, and the PaymentIntent waits
    /// for another payment method, naming the failed charge as its latest.
    pub async fn fail(&self, id: &str) -> Result<Vec<Value>, SimulationError> {
        let mut tx = self.db.begin().await?;
        let mut intent = lock_intent(&mut tx, id).await?;
        let status = status_of(&intent);
        if !awaits_payment(&status) {
            return Err(SimulationError::WrongState(status, "declined"));
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let charge_id = format!("ch_sim_{}", Uuid::new_v4().simple());
        let message = "Your card was declined.";
        let charge = json!({
            "id": charge_id, "object": "charge", "amount": intent["amount"],
            "amount_captured": 0, "amount_refunded": 0, "balance_transaction": null,
            "captured": false, "created": now, "currency": intent["currency"],
            "description": "Donation", "disputed": false, "failure_code": "card_declined",
            "failure_message": message, "livemode": false, "metadata": intent["metadata"],
            "outcome": {"network_status": "declined_by_network", "reason": "generic_decline",
                        "risk_level": "normal",
                        "seller_message": "The bank did not return any further details with this decline.",
                        "type": "issuer_declined"},
            "paid": false, "payment_intent": id, "refunded": false, "status": "failed"
        });
        intent["status"] = json!("requires_payment_method");
        intent["latest_charge"] = json!(charge_id);
        intent["last_payment_error"] = json!({
            "type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
            "message": message, "charge": charge_id
        });
        insert_charge(&mut tx, id, &charge).await?;
        save_intent(&mut tx, id, &intent).await?;
        let events = vec![
            record_event(&mut tx, "charge.failed", charge, now).await?,
            record_event(&mut tx, "payment_intent.payment_failed", intent, now).await?,
        ];
        tx.commit().await?;
        Ok(events)
    }

    /// Refunds `amount` (all that is left if `None`) of a succeeded PaymentIntent.
    pub async fn refund(
        &self,
        id: &str,
        amount: Option<i64>,
    ) -> Result<Vec<Value>, SimulationError> {
        let mut tx = self.db.begin().await?;
        let intent = lock_intent(&mut tx, id).await?;
        let status = status_of(&intent);
        if status != "succeeded" {
            return Err(SimulationError::WrongState(status, "refunded"));
        }
        let charge_id = intent["latest_charge"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut charge = sqlx::query_scalar!(
            "SELECT object FROM simulator_charges WHERE id = $1 FOR UPDATE",
            charge_id
        )
        .fetch_one(&mut *tx)
        .await?;
        let left = charge["amount"].as_i64().unwrap_or(0)
            - charge["amount_refunded"].as_i64().unwrap_or(0);
        let amount = amount.unwrap_or(left);
        if amount <= 0 || amount > left {
            return Err(SimulationError::BadRefundAmount(left));
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let refund_id = format!("re_sim_{}", Uuid::new_v4().simple());
        let txn_id = format!("txn_sim_{}", Uuid::new_v4().simple());
        // The money leaves the balance at once; Stripe keeps no fee back on a refund.
        let transaction = json!({
            "id": txn_id, "object": "balance_transaction", "amount": -amount,
            "available_on": now, "created": now, "currency": charge["currency"],
            "description": "REFUND FOR CHARGE (Donation)", "exchange_rate": null, "fee": 0,
            "fee_details": [], "net": -amount, "reporting_category": "refund",
            "source": refund_id, "status": "available", "type": "refund"
        });
        let refund = json!({
            "id": refund_id, "object": "refund", "amount": amount, "balance_transaction": txn_id,
            "charge": charge_id, "created": now, "currency": charge["currency"],
            "failure_balance_transaction": null, "failure_reason": null, "metadata": {},
            "payment_intent": id, "reason": "requested_by_customer", "receipt_number": null,
            "source_transfer_reversal": null, "status": "succeeded", "transfer_reversal": null
        });
        let refunded = charge["amount_refunded"].as_i64().unwrap_or(0) + amount;
        charge["amount_refunded"] = json!(refunded);
        charge["refunded"] = json!(refunded == charge["amount"].as_i64().unwrap_or(0));
        insert_balance_transaction(&mut tx, &transaction).await?;
        sqlx::query!(
            "INSERT INTO simulator_refunds (id, charge_id, object) VALUES ($1, $2, $3)",
            refund_id,
            charge_id,
            refund
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE simulator_charges SET object = $2 WHERE id = $1",
            charge_id,
            charge
        )
        .execute(&mut *tx)
        .await?;
        let events = vec![
            record_event(&mut tx, "refund.created", refund, now).await?,
            record_event(&mut tx, "charge.refunded", charge, now).await?,
        ];
        tx.commit().await?;
        Ok(events)
    }
}

impl SimulatedStripe {
    /// A succeeded refund fails afterwards, as one does when the card it went back to is closed:
    /// the money comes back to the balance (a `refund_failure` balance transaction, the refund's
    /// `failure_balance_transaction`) and the charge counts it refunded no more.
    pub async fn fail_refund(&self, refund_id: &str) -> Result<Vec<Value>, SimulationError> {
        let mut tx = self.db.begin().await?;
        let unknown = || SimulationError::UnknownRefund(refund_id.to_owned());
        let found = sqlx::query!(
            r#"SELECT c.id AS charge_id, c.payment_intent_id
               FROM simulator_refunds r JOIN simulator_charges c ON c.id = r.charge_id
               WHERE r.id = $1"#,
            refund_id
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(unknown)?;
        // Locked in the order every control takes them: the PaymentIntent, its charge, then
        // the refund.
        lock_intent(&mut tx, &found.payment_intent_id).await?;
        let mut charge = sqlx::query_scalar!(
            "SELECT object FROM simulator_charges WHERE id = $1 FOR UPDATE",
            found.charge_id
        )
        .fetch_one(&mut *tx)
        .await?;
        let mut refund = sqlx::query_scalar!(
            "SELECT object FROM simulator_refunds WHERE id = $1 FOR UPDATE",
            refund_id
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(unknown)?;
        let status = status_of(&refund);
        if status != "succeeded" {
            return Err(SimulationError::RefundCannotFail(status));
        }
        let amount = refund["amount"].as_i64().unwrap_or(0);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let txn_id = format!("txn_sim_{}", Uuid::new_v4().simple());
        let transaction = json!({
            "id": txn_id, "object": "balance_transaction", "amount": amount,
            "available_on": now, "created": now, "currency": refund["currency"],
            "description": "REFUND FAILURE", "exchange_rate": null, "fee": 0,
            "fee_details": [], "net": amount, "reporting_category": "refund_failure",
            "source": refund_id, "status": "available", "type": "refund_failure"
        });
        refund["status"] = json!("failed");
        refund["failure_reason"] = json!("expired_or_canceled_card");
        refund["failure_balance_transaction"] = json!(txn_id);
        let refunded = charge["amount_refunded"].as_i64().unwrap_or(0) - amount;
        charge["amount_refunded"] = json!(refunded);
        charge["refunded"] = json!(refunded == charge["amount"].as_i64().unwrap_or(0));
        insert_balance_transaction(&mut tx, &transaction).await?;
        sqlx::query!(
            "UPDATE simulator_refunds SET object = $2 WHERE id = $1",
            refund_id,
            refund
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!(
            "UPDATE simulator_charges SET object = $2 WHERE id = $1",
            found.charge_id,
            charge
        )
        .execute(&mut *tx)
        .await?;
        let events = vec![
            record_event(&mut tx, "refund.updated", refund.clone(), now).await?,
            record_event(&mut tx, "refund.failed", refund.clone(), now).await?,
            record_event(&mut tx, "charge.refund.updated", refund, now).await?,
        ];
        tx.commit().await?;
        Ok(events)
    }

    /// An automatic payout of everything in the balance not yet paid out: one payout per
    /// currency whose transactions add up to more than 0, each remembering the transactions
    /// it pays out, with its own `payout` balance transaction. With `fail`, the bank returns
    /// it: the payout fails and a `payout_failure` transaction puts the money back in the
    /// balance, for the next payout. Returns the payouts as they end and the events Stripe
    /// would send.
    pub async fn pay_out(&self, fail: bool) -> Result<(Vec<Value>, Vec<Value>), SimulationError> {
        let mut tx = self.db.begin().await?;
        // Each transaction is paid out once: a payout made at the same time waits for these
        // rows, then finds them paid out and passes them by.
        let unpaid = sqlx::query!(
            r#"SELECT id, object->>'currency' AS "currency!", (object->>'net')::bigint AS "net!"
               FROM simulator_balance_transactions
               WHERE payout_id IS NULL
               ORDER BY seq
               FOR UPDATE"#
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut balances: Vec<(String, i64, Vec<String>)> = Vec::new();
        for row in unpaid {
            match balances.iter_mut().find(|(c, ..)| *c == row.currency) {
                Some((_, total, ids)) => {
                    *total += row.net;
                    ids.push(row.id);
                }
                None => balances.push((row.currency, row.net, vec![row.id])),
            }
        }
        if let Some(reason) = nothing_to_pay_out(&balances) {
            return Err(SimulationError::NothingToPayOut(reason));
        }

        let now = OffsetDateTime::now_utc();
        // Stripe's arrival dates are midnight UTC; a standard payout arrives two days on.
        let arrival = (now.date() + time::Duration::days(2))
            .midnight()
            .assume_utc()
            .unix_timestamp();
        let now = now.unix_timestamp();
        let (mut payouts, mut events) = (Vec::new(), Vec::new());
        for (currency, amount, ids) in balances.into_iter().filter(|(_, total, _)| *total > 0) {
            let payout_id = format!("po_sim_{}", Uuid::new_v4().simple());
            let txn_id = format!("txn_sim_{}", Uuid::new_v4().simple());
            let transaction = json!({
                "id": txn_id, "object": "balance_transaction", "amount": -amount,
                "available_on": arrival, "created": now, "currency": currency,
                "description": "STRIPE PAYOUT", "exchange_rate": null, "fee": 0,
                "fee_details": [], "net": -amount, "reporting_category": "payout",
                "source": payout_id, "status": "available", "type": "payout"
            });
            let mut payout = json!({
                "id": payout_id, "object": "payout", "amount": amount,
                "application_fee": null, "application_fee_amount": null,
                "arrival_date": arrival, "automatic": true, "balance_transaction": txn_id,
                "created": now, "currency": currency, "description": "STRIPE PAYOUT",
                "destination": "ba_sim_charity", "failure_balance_transaction": null,
                "failure_code": null, "failure_message": null, "livemode": false,
                "metadata": {}, "method": "standard", "original_payout": null,
                "reconciliation_status": "in_progress", "reversed_by": null,
                "source_type": "card", "statement_descriptor": null, "status": "pending",
                "trace_id": {"status": "unsupported", "value": null}, "type": "bank_account"
            });
            sqlx::query!(
                "INSERT INTO simulator_payouts (id, object) VALUES ($1, $2)",
                payout_id,
                payout
            )
            .execute(&mut *tx)
            .await?;
            insert_balance_transaction(&mut tx, &transaction).await?;
            // What it pays out had to be available to be paid out; its own transaction is
            // part of it, as Stripe lists it.
            sqlx::query!(
                r#"UPDATE simulator_balance_transactions
                   SET payout_id = $1, object = jsonb_set(object, '{status}', '"available"')
                   WHERE id = ANY($2) OR id = $3"#,
                payout_id,
                &ids,
                txn_id
            )
            .execute(&mut *tx)
            .await?;
            events.push(record_event(&mut tx, "payout.created", payout.clone(), now).await?);

            if fail {
                let failure_id = format!("txn_sim_{}", Uuid::new_v4().simple());
                let failure = json!({
                    "id": failure_id, "object": "balance_transaction", "amount": amount,
                    "available_on": now, "created": now, "currency": currency,
                    "description": "STRIPE PAYOUT FAILURE", "exchange_rate": null, "fee": 0,
                    "fee_details": [], "net": amount, "reporting_category": "payout_reversal",
                    "source": payout_id, "status": "available", "type": "payout_failure"
                });
                insert_balance_transaction(&mut tx, &failure).await?;
                payout["status"] = json!("failed");
                payout["failure_balance_transaction"] = json!(failure_id);
                payout["failure_code"] = json!("account_closed");
                payout["failure_message"] = json!("The bank account has been closed.");
                events.push(record_event(&mut tx, "payout.failed", payout.clone(), now).await?);
            } else {
                payout["status"] = json!("paid");
                events.push(record_event(&mut tx, "payout.paid", payout.clone(), now).await?);
            }
            payout["reconciliation_status"] = json!("completed");
            sqlx::query!(
                "UPDATE simulator_payouts SET object = $2 WHERE id = $1",
                payout_id,
                payout
            )
            .execute(&mut *tx)
            .await?;
            events.push(
                record_event(
                    &mut tx,
                    "payout.reconciliation_completed",
                    payout.clone(),
                    now,
                )
                .await?,
            );
            payouts.push(payout);
        }
        tx.commit().await?;
        Ok((payouts, events))
    }
}

/// Why nothing can be paid out of `balances` (currency, total, transactions), if so.
fn nothing_to_pay_out(balances: &[(String, i64, Vec<String>)]) -> Option<String> {
    if balances.is_empty() {
        return Some("every balance transaction is in a payout already".to_owned());
    }
    if balances.iter().any(|(_, total, _)| *total > 0) {
        return None;
    }
    let totals: Vec<String> = balances
        .iter()
        .map(|(currency, total, _)| format!("{total} {currency}"))
        .collect();
    Some(format!(
        "what is not paid out adds up to {}, nothing above 0",
        totals.join(", ")
    ))
}

fn status_of(intent: &Value) -> String {
    intent["status"].as_str().unwrap_or_default().to_owned()
}

/// Whether a PaymentIntent in `status` can still be paid or declined.
fn awaits_payment(status: &str) -> bool {
    status.starts_with("requires_") || status == "processing"
}

/// The PaymentIntent `id`, its row locked until `tx` ends.
async fn lock_intent(tx: &mut PgConnection, id: &str) -> Result<Value, SimulationError> {
    sqlx::query_scalar!(
        "SELECT object FROM simulator_payment_intents WHERE id = $1 FOR UPDATE",
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| SimulationError::UnknownPaymentIntent(id.to_owned()))
}

async fn save_intent(tx: &mut PgConnection, id: &str, intent: &Value) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE simulator_payment_intents SET object = $2 WHERE id = $1",
        id,
        intent
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn insert_charge(tx: &mut PgConnection, intent: &str, charge: &Value) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO simulator_charges (id, payment_intent_id, object) VALUES ($1, $2, $3)",
        charge["id"].as_str(),
        intent,
        charge
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn insert_balance_transaction(
    tx: &mut PgConnection,
    transaction: &Value,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO simulator_balance_transactions (id, object) VALUES ($1, $2)",
        transaction["id"].as_str(),
        transaction
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Wraps `object` in an event as Stripe does, and keeps it for the events API.
async fn record_event(
    tx: &mut PgConnection,
    kind: &str,
    object: Value,
    created: i64,
) -> sqlx::Result<Value> {
    let id = format!("evt_sim_{}", Uuid::new_v4().simple());
    let event = json!({
        "id": id,
        "object": "event",
        "api_version": stripe_client_core::VERSION.as_str(),
        "created": created,
        "data": {"object": object},
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": kind
    });
    sqlx::query!(
        "INSERT INTO simulator_events (id, created, event) VALUES ($1, $2, $3)",
        id,
        created,
        event
    )
    .execute(&mut *tx)
    .await?;
    Ok(event)
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

async fn create_payment_intent(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    if !authorized(&headers) {
        return Ok(unauthorized());
    }
    let mut params: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    params.sort();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let amount = match param("amount").and_then(|a| a.parse::<i64>().ok()) {
        Some(amount) if amount > 0 => amount,
        _ => return Ok(invalid_request("amount", "Missing or invalid amount.")),
    };
    let Some(currency) = param("currency").filter(|c| c.len() == 3) else {
        return Ok(invalid_request("currency", "Missing or invalid currency."));
    };
    let metadata: serde_json::Map<String, Value> = params
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((name.to_owned(), Value::String(v.clone())))
        })
        .collect();

    let id = format!("pi_sim_{}", Uuid::new_v4().simple());
    let secret = format!("{id}_secret_{}", Uuid::new_v4().simple());
    let intent = json!({
        "id": id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": null,
        "application_fee_amount": null,
        "automatic_payment_methods": {"enabled": param("automatic_payment_methods[enabled]") == Some("true")},
        "canceled_at": null,
        "cancellation_reason": null,
        "capture_method": "automatic",
        "client_secret": secret,
        "confirmation_method": "automatic",
        "created": OffsetDateTime::now_utc().unix_timestamp(),
        "currency": currency,
        "customer": null,
        "description": param("description"),
        "last_payment_error": null,
        "latest_charge": null,
        "livemode": false,
        "metadata": metadata,
        "next_action": null,
        "on_behalf_of": null,
        "payment_method": null,
        "payment_method_options": {},
        "payment_method_types": ["card"],
        "processing": null,
        "receipt_email": null,
        "review": null,
        "setup_future_usage": null,
        "shipping": null,
        "source": null,
        "statement_descriptor": null,
        "statement_descriptor_suffix": param("statement_descriptor_suffix"),
        "status": "requires_payment_method",
        "transfer_data": null,
        "transfer_group": null
    });

    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let params = json!(params);
    let mut tx = stripe.db.begin().await?;
    sqlx::query!(
        "INSERT INTO simulator_payment_intents (id, object) VALUES ($1, $2)",
        id,
        intent
    )
    .execute(&mut *tx)
    .await?;
    if let Some(key) = &key {
        // A request holding the same key commits first, or this one does; the other finds
        // the key taken (after waiting for it) and answers as the first request did.
        let taken = sqlx::query!(
            r#"INSERT INTO simulator_idempotency_keys (key, params, payment_intent_id, response)
               VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO NOTHING"#,
            key,
            params,
            id,
            intent
        )
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 0;
        if taken {
            tx.rollback().await?;
            return replay(&stripe.db, key, &params).await;
        }
    }
    tx.commit().await?;
    Ok((StatusCode::OK, axum::Json(intent)).into_response())
}

/// The answer to a request whose Idempotency-Key was used before: the first answer again if
/// the parameters are the same, Stripe's `idempotency_error` if not.
async fn replay(db: &PgPool, key: &str, params: &Value) -> Answer {
    let earlier = sqlx::query!(
        "SELECT params, response FROM simulator_idempotency_keys WHERE key = $1",
        key
    )
    .fetch_one(db)
    .await?;
    if earlier.params != *params {
        return Ok(stripe_error(
            StatusCode::BAD_REQUEST,
            "idempotency_error",
            None,
            "Keys for idempotent requests can only be used with the same parameters they \
             were first used with.",
        ));
    }
    Ok((
        StatusCode::OK,
        [("idempotent-replayed", "true")],
        axum::Json(earlier.response),
    )
        .into_response())
}

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

/// A PaymentIntent. `expand[]=latest_charge` embeds the charge; `latest_charge.
/// balance_transaction` and `latest_charge.refunds` embed the charge with those inside it, and
/// `latest_charge.refunds.data.balance_transaction` (or `.failure_balance_transaction`) each
/// refund's transaction inside those.
async fn retrieve_payment_intent(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    if !authorized(&headers) {
        return Ok(unauthorized());
    }
    let mut latest_charge = false;
    let mut inside = ChargeExpansion::default();
    for path in expansions(query.as_deref()) {
        let known = match path.split_once('.') {
            None => path == "latest_charge",
            Some(("latest_charge", rest)) => inside.take(rest),
            Some(_) => false,
        };
        if !known {
            return Ok(cannot_expand(&path));
        }
        latest_charge = true;
    }
    let mut tx = snapshot(&stripe.db).await?;
    let mut intent = sqlx::query_scalar!(
        "SELECT object FROM simulator_payment_intents WHERE id = $1",
        id
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(intent) = intent.as_mut().filter(|_| latest_charge)
        && let Some(charge_id) = intent["latest_charge"].as_str().map(str::to_owned)
    {
        let charge = sqlx::query_scalar!(
            "SELECT object FROM simulator_charges WHERE id = $1",
            charge_id
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(mut charge) = charge {
            inside.apply(&mut tx, &mut charge).await?;
            intent["latest_charge"] = charge;
        }
    }
    tx.commit().await?;
    Ok(found_or_404(intent, "payment_intent", &id))
}

/// Cancels a PaymentIntent still waiting for its payment, as Stripe does: one that succeeded,
/// is processing or is already canceled cannot be, and the error carries it.
async fn cancel_payment_intent(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Answer {
    if !authorized(&headers) {
        return Ok(unauthorized());
    }
    let reason = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "cancellation_reason")
        .map(|(_, v)| v.into_owned());
    let mut tx = stripe.db.begin().await?;
    let mut intent = match lock_intent(&mut tx, &id).await {
        Ok(intent) => intent,
        Err(SimulationError::Database(error)) => return Err(error.into()),
        Err(_) => return Ok(found_or_404(None, "payment_intent", &id)),
    };
    let status = status_of(&intent);
    if !status.starts_with("requires_") {
        let message =
            format!("You cannot cancel this PaymentIntent because it has a status of {status}.");
        let body = json!({"error": {
            "type": "invalid_request_error", "code": "payment_intent_unexpected_state",
            "message": message, "payment_intent": intent
        }});
        return Ok((StatusCode::BAD_REQUEST, axum::Json(body)).into_response());
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    intent["status"] = json!("canceled");
    intent["canceled_at"] = json!(now);
    intent["cancellation_reason"] = json!(reason);
    save_intent(&mut tx, &id, &intent).await?;
    record_event(&mut tx, "payment_intent.canceled", intent.clone(), now).await?;
    tx.commit().await?;
    Ok((StatusCode::OK, axum::Json(intent)).into_response())
}

/// A charge; `expand[]=balance_transaction` and `expand[]=refunds` (and the refunds' own, as
/// for a PaymentIntent's charge) embed those.
async fn retrieve_charge(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    if !authorized(&headers) {
        return Ok(unauthorized());
    }
    let mut expansion = ChargeExpansion::default();
    for path in expansions(query.as_deref()) {
        if !expansion.take(&path) {
            return Ok(cannot_expand(&path));
        }
    }
    let mut tx = snapshot(&stripe.db).await?;
    let mut charge = sqlx::query_scalar!("SELECT object FROM simulator_charges WHERE id = $1", id)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(charge) = charge.as_mut() {
        expansion.apply(&mut tx, charge).await?;
    }
    tx.commit().await?;
    Ok(found_or_404(charge, "charge", &id))
}

async fn retrieve_balance_transaction(
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

/// `GET /v1/refunds?charge=...`: a charge's refunds, newest first, paginated;
/// `expand[]=data.balance_transaction` and `data.failure_balance_transaction` embed those.
async fn list_refunds(
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
    let charge = query.get("charge").cloned().unwrap_or_default();
    let limit = limit_of(&query);
    let mut tx = snapshot(&stripe.db).await?;
    let after = query.get("starting_after").map(String::as_str);
    let mut refunds = refunds_of(&mut tx, &charge, after, limit + 1).await?;
    let has_more = refunds.len() as i64 > limit;
    refunds.truncate(limit as usize);
    for refund in &mut refunds {
        expansion.apply(&mut tx, refund).await?;
    }
    tx.commit().await?;
    Ok(list(refunds, has_more, "/v1/refunds"))
}

/// `GET /v1/balance_transactions`: newest first, paginated; with `payout=po_...`, only those
/// that payout paid out, its own `payout` transaction among them. `expand[]=data.source`
/// embeds each one's charge, refund or payout.
async fn list_balance_transactions(
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
async fn retrieve_payout(
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
async fn list_payouts(
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
async fn list_events(
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
