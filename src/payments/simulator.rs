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
use axum::extract::{Path, State};
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
    /// Idempotency-Key -> (the request's parameters, the object id answered).
    idempotency: HashMap<String, (Vec<(String, String)>, String)>,
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
            .with_state(self.clone())
    }

    /// A stored PaymentIntent, as Stripe would show it.
    pub fn payment_intent(&self, id: &str) -> Option<Value> {
        self.lock().payment_intents.get(id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Objects> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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

async fn retrieve_payment_intent(
    State(stripe): State<SimulatedStripe>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    match stripe.payment_intent(&id) {
        Some(intent) => (StatusCode::OK, axum::Json(intent)).into_response(),
        None => stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("id"),
            &format!("No such payment_intent: '{id}'"),
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
