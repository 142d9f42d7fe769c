//! Simulated payments: a small Stripe look-alike served inside the process on a loopback port
//! of its own. With no Stripe key configured, the real Stripe client is pointed here, so local
//! runs go through exactly the code that talks to Stripe in production. No money moves.
//!
//! It answers the calls quickdonate makes, with Stripe's shapes and Stripe's idempotency rules
//! (same key and same parameters: the same object; other parameters: `idempotency_error`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

/// The secret and publishable keys the simulated Stripe hands out and expects.
pub const SECRET_KEY: &str = "sk_test_simulated";
pub const PUBLISHABLE_KEY: &str = "pk_test_simulated";

#[derive(Clone, Default)]
pub struct SimulatedStripe {
    state: Arc<Mutex<Objects>>,
}

#[derive(Default)]
struct Objects {
    payment_intents: HashMap<String, Value>,
    charges: HashMap<String, Value>,
    balance_transactions: HashMap<String, Value>,
    refunds: HashMap<String, Value>,
    /// Every event made, oldest first.
    events: Vec<Value>,
    /// Idempotency-Key -> (the request's parameters, the object id answered).
    idempotency: HashMap<String, (Vec<(String, String)>, String)>,
}

/// Why the simulator would not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum SimulationError {
    #[error(
        "the simulator has no PaymentIntent {0} (it keeps its objects in memory, so not across a restart)"
    )]
    UnknownPaymentIntent(String),
    #[error("the PaymentIntent is {0}; it cannot be {1}")]
    WrongState(String, &'static str),
    #[error("a refund must be more than 0 and at most the {0} not yet refunded")]
    BadRefundAmount(i64),
}

impl SimulatedStripe {
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
        Ok(format!("http://{addr}/"))
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/v1/payment_intents", post(create_payment_intent))
            .route("/v1/payment_intents/{id}", get(retrieve_payment_intent))
            .route(
                "/v1/balance_transactions/{id}",
                get(retrieve_balance_transaction),
            )
            .route("/v1/refunds", get(list_refunds))
            .route("/v1/events", get(list_events))
            .with_state(self.clone())
    }

    /// The card is charged: the PaymentIntent succeeds, with a charge and its balance
    /// transaction (the fee at 1.5% + 20p). Returns the events Stripe would send.
    pub fn succeed(&self, id: &str) -> Result<Vec<Value>, SimulationError> {
        let mut objects = self.lock();
        let mut intent = objects.intent(id)?;
        let status = intent["status"].as_str().unwrap_or_default().to_owned();
        if !status.starts_with("requires_") && status != "processing" {
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
            "disputed": false, "livemode": false, "metadata": intent["metadata"],
            "paid": true, "payment_intent": id, "refunded": false, "status": "succeeded"
        });
        intent["status"] = json!("succeeded");
        intent["amount_received"] = json!(amount);
        intent["latest_charge"] = json!(charge_id);
        intent["last_payment_error"] = Value::Null;
        objects.balance_transactions.insert(txn_id, transaction);
        objects.charges.insert(charge_id, charge.clone());
        objects
            .payment_intents
            .insert(id.to_owned(), intent.clone());
        Ok(vec![
            objects.event("payment_intent.succeeded", intent, now),
            objects.event("charge.succeeded", charge, now),
        ])
    }

    /// The card is declined: the PaymentIntent waits for another payment method.
    pub fn fail(&self, id: &str) -> Result<Vec<Value>, SimulationError> {
        let mut objects = self.lock();
        let mut intent = objects.intent(id)?;
        let status = intent["status"].as_str().unwrap_or_default().to_owned();
        if !status.starts_with("requires_") && status != "processing" {
            return Err(SimulationError::WrongState(status, "declined"));
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        intent["status"] = json!("requires_payment_method");
        intent["last_payment_error"] = json!({
            "type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
            "message": "Your card was declined."
        });
        objects
            .payment_intents
            .insert(id.to_owned(), intent.clone());
        Ok(vec![objects.event(
            "payment_intent.payment_failed",
            intent,
            now,
        )])
    }

    /// Refunds `amount` (all that is left if `None`) of a succeeded PaymentIntent.
    pub fn refund(&self, id: &str, amount: Option<i64>) -> Result<Vec<Value>, SimulationError> {
        let mut objects = self.lock();
        let intent = objects.intent(id)?;
        if intent["status"] != "succeeded" {
            let status = intent["status"].as_str().unwrap_or_default().to_owned();
            return Err(SimulationError::WrongState(status, "refunded"));
        }
        let charge_id = intent["latest_charge"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut charge = objects.charges[&charge_id].clone();
        let left = charge["amount"].as_i64().unwrap_or(0)
            - charge["amount_refunded"].as_i64().unwrap_or(0);
        let amount = amount.unwrap_or(left);
        if amount <= 0 || amount > left {
            return Err(SimulationError::BadRefundAmount(left));
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let refund_id = format!("re_sim_{}", Uuid::new_v4().simple());
        let refund = json!({
            "id": refund_id, "object": "refund", "amount": amount, "charge": charge_id,
            "created": now, "currency": charge["currency"], "metadata": {},
            "payment_intent": id, "reason": "requested_by_customer", "status": "succeeded"
        });
        let refunded = charge["amount_refunded"].as_i64().unwrap_or(0) + amount;
        charge["amount_refunded"] = json!(refunded);
        charge["refunded"] = json!(refunded == charge["amount"].as_i64().unwrap_or(0));
        objects.refunds.insert(refund_id, refund.clone());
        objects.charges.insert(charge_id, charge.clone());
        Ok(vec![
            objects.event("refund.created", refund, now),
            objects.event("charge.refunded", charge, now),
        ])
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Objects> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Objects {
    fn intent(&self, id: &str) -> Result<Value, SimulationError> {
        self.payment_intents
            .get(id)
            .cloned()
            .ok_or_else(|| SimulationError::UnknownPaymentIntent(id.to_owned()))
    }

    /// Wraps `object` in an event as Stripe does, and keeps it for the events API.
    fn event(&mut self, kind: &str, object: Value, created: i64) -> Value {
        let event = json!({
            "id": format!("evt_sim_{}", Uuid::new_v4().simple()),
            "object": "event",
            "api_version": stripe_client_core::VERSION.as_str(),
            "created": created,
            "data": {"object": object},
            "livemode": false,
            "pending_webhooks": 1,
            "request": {"id": null, "idempotency_key": null},
            "type": kind
        });
        self.events.push(event.clone());
        event
    }
}

async fn create_payment_intent(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
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
        _ => return invalid_request("amount", "Missing or invalid amount."),
    };
    let Some(currency) = param("currency").filter(|c| c.len() == 3) else {
        return invalid_request("currency", "Missing or invalid currency.");
    };
    let metadata: serde_json::Map<String, Value> = params
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((name.to_owned(), Value::String(v.clone())))
        })
        .collect();

    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut objects = stripe.lock();
    if let Some(key) = &key
        && let Some((earlier, id)) = objects.idempotency.get(key)
    {
        if *earlier != params {
            return stripe_error(
                StatusCode::BAD_REQUEST,
                "idempotency_error",
                None,
                "Keys for idempotent requests can only be used with the same parameters they \
                 were first used with.",
            );
        }
        let intent = objects.payment_intents[id].clone();
        return (
            StatusCode::OK,
            [("idempotent-replayed", "true")],
            axum::Json(intent),
        )
            .into_response();
    }

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
    objects.payment_intents.insert(id.clone(), intent.clone());
    if let Some(key) = key {
        objects.idempotency.insert(key, (params.clone(), id));
    }
    (StatusCode::OK, axum::Json(intent)).into_response()
}

/// A PaymentIntent; `expand[]=latest_charge...` embeds the charge and its balance transaction.
async fn retrieve_payment_intent(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let objects = stripe.lock();
    let mut intent = objects.payment_intents.get(&id).cloned();
    let expand = query.is_some_and(|q| q.contains("latest_charge"));
    if let Some(intent) = intent.as_mut().filter(|_| expand) {
        let charge = intent["latest_charge"]
            .as_str()
            .and_then(|c| objects.charges.get(c))
            .cloned();
        if let Some(mut charge) = charge {
            let transaction = charge["balance_transaction"]
                .as_str()
                .and_then(|t| objects.balance_transactions.get(t))
                .cloned();
            if let Some(transaction) = transaction {
                charge["balance_transaction"] = transaction;
            }
            intent["latest_charge"] = charge;
        }
    }
    found_or_404(intent, "payment_intent", &id)
}

async fn retrieve_balance_transaction(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let found = stripe.lock().balance_transactions.get(&id).cloned();
    found_or_404(found, "balance_transaction", &id)
}

async fn list_refunds(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let charge = query.get("charge").cloned().unwrap_or_default();
    let mut refunds: Vec<Value> = stripe
        .lock()
        .refunds
        .values()
        .filter(|r| r["charge"] == charge.as_str())
        .cloned()
        .collect();
    refunds.sort_by_key(|r| std::cmp::Reverse(r["created"].as_i64()));
    list(refunds, false, "/v1/refunds")
}

/// Events newest first, as Stripe lists them.
async fn list_events(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let since: i64 = query
        .get("created[gte]")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let objects = stripe.lock();
    let newest_first = objects
        .events
        .iter()
        .rev()
        .filter(|e| e["created"].as_i64().unwrap_or(0) >= since);
    let after: Vec<&Value> = match query.get("starting_after") {
        Some(after) => newest_first
            .skip_while(|e| e["id"] != after.as_str())
            .skip(1)
            .collect(),
        None => newest_first.collect(),
    };
    let page: Vec<Value> = after.iter().take(limit).map(|e| (*e).clone()).collect();
    list(page, after.len() > limit, "/v1/events")
}

fn list(data: Vec<Value>, has_more: bool, url: &str) -> Response {
    let body = json!({"object": "list", "data": data, "has_more": has_more, "url": url});
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn found_or_404(found: Option<Value>, kind: &str, id: &str) -> Response {
    match found {
        Some(object) => (StatusCode::OK, axum::Json(object)).into_response(),
        None => stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("id"),
            &format!("No such {kind}: '{id}'"),
        ),
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
