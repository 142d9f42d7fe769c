//! The simulator's controls, served by the API only when payments are simulated:
//! `POST /v1/simulator/payment_intents/{id}/succeed`, `/fail` and `/refund` (body `{amount}`,
//! optional), `POST /v1/simulator/refunds/{id}/fail`, and `POST /v1/simulator/payouts` (body
//! `{fail}`, optional). Each changes the simulated Stripe's objects the way a donor, the
//! dashboard, a card issuer or a bank would, then delivers the resulting events, signed with
//! the webhook secret, to our own webhook endpoint: the local flow runs the production code
//! from end to end. Every use is logged as a warning.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use secrecy::SecretString;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::simulator::{SimulatedStripe, SimulationError};
use crate::http::problem::{ApiError, ApiResult, FieldError, Problem};
use crate::startup::AppState;
use crate::webhooks::signature;

/// The simulated Stripe, and how its events reach us.
#[derive(Clone)]
pub struct Simulator {
    pub stripe: SimulatedStripe,
    webhook_url: String,
    secret: SecretString,
    http: reqwest::Client,
}

impl Simulator {
    pub fn new(stripe: SimulatedStripe, webhook_url: String, secret: SecretString) -> Self {
        Self {
            stripe,
            webhook_url,
            secret,
            http: reqwest::Client::new(),
        }
    }

    /// Delivers `event` to our webhook endpoint as Stripe would; returns the HTTP status.
    async fn deliver(&self, event: &Value) -> u16 {
        let body = serde_json::to_vec(event).expect("an event serialises");
        let header = signature::sign(
            &self.secret,
            &body,
            OffsetDateTime::now_utc().unix_timestamp(),
        );
        let sent = self
            .http
            .post(&self.webhook_url)
            .header("content-type", "application/json")
            .header("stripe-signature", header)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => response.status().as_u16(),
            Err(error) => {
                tracing::warn!(%error, "the simulator could not deliver an event");
                0
            }
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/simulator/payment_intents/{id}/{action}",
            post(simulate),
        )
        .route("/v1/simulator/refunds/{id}/{action}", post(simulate_refund))
        .route("/v1/simulator/payouts", post(simulate_payout))
}

fn simulator_of(state: &AppState) -> Result<&Simulator, Problem> {
    state
        .simulator
        .as_ref()
        .ok_or_else(|| Problem::not_found("Payments are not simulated."))
}

async fn simulate(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let simulator = simulator_of(&state)?;
    let events = match action.as_str() {
        "succeed" => {
            warn_simulated("succeed", "PaymentIntent", &id);
            simulator.stripe.succeed(&id).await
        }
        "fail" => {
            warn_simulated("fail", "PaymentIntent", &id);
            simulator.stripe.fail(&id).await
        }
        "refund" => {
            warn_simulated("refund", "PaymentIntent", &id);
            // The body is checked before the PaymentIntent is looked up.
            let amount = refund_amount(&body)?;
            simulator.stripe.refund(&id, amount).await
        }
        _ => {
            return Err(Problem::not_found(
                "The simulator can succeed, fail or refund a PaymentIntent.",
            )
            .into());
        }
    }
    .map_err(refused)?;
    let mut answer = json!({"payment_intent": id});
    if action == "refund" {
        // Its id, for the refund's own control.
        answer["refund"] = events[0]["data"]["object"]["id"].clone();
    }
    answer["events"] = json!(simulator.deliver_all(&events).await);
    Ok(Json(answer))
}

/// `POST /v1/simulator/refunds/{id}/fail`: a succeeded refund fails.
async fn simulate_refund(
    State(state): State<AppState>,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let simulator = simulator_of(&state)?;
    if action != "fail" {
        return Err(Problem::not_found("The simulator can fail a refund.").into());
    }
    warn_simulated("fail", "refund", &id);
    let events = simulator.stripe.fail_refund(&id).await.map_err(refused)?;
    let events = simulator.deliver_all(&events).await;
    Ok(Json(json!({"refund": id, "events": events})))
}

/// `POST /v1/simulator/payouts`: an automatic payout of the balance, paid or (`{"fail": true}`)
/// returned by the bank.
async fn simulate_payout(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let simulator = simulator_of(&state)?;
    let fail = payout_fails(&body)?;
    tracing::warn!(
        fail,
        "SIMULATED PAYMENTS: the simulator's payout control was used; no money moves"
    );
    let (payouts, events) = simulator.stripe.pay_out(fail).await.map_err(refused)?;
    let events = simulator.deliver_all(&events).await;
    let payouts: Vec<Value> = payouts
        .iter()
        .map(|p| {
            json!({"id": p["id"], "amount": p["amount"], "currency": p["currency"],
                   "status": p["status"]})
        })
        .collect();
    Ok(Json(json!({"payouts": payouts, "events": events})))
}

impl Simulator {
    /// Delivers each event in turn; what became of each.
    async fn deliver_all(&self, events: &[Value]) -> Vec<Value> {
        let mut delivered = Vec::new();
        for event in events {
            let status = self.deliver(event).await;
            delivered
                .push(json!({"id": event["id"], "type": event["type"], "delivery_status": status}));
        }
        delivered
    }
}

/// The problem a refusal of the simulator's is.
fn refused(error: SimulationError) -> ApiError {
    let not_now = |error: &SimulationError| {
        Problem::new(
            StatusCode::CONFLICT,
            "simulation-refused",
            "Not possible now",
            error.to_string(),
        )
    };
    match error {
        SimulationError::UnknownPaymentIntent(_) | SimulationError::UnknownRefund(_) => {
            Problem::not_found(error.to_string()).into()
        }
        SimulationError::WrongState(..)
        | SimulationError::RefundCannotFail(_)
        | SimulationError::NothingToPayOut(_) => not_now(&error).into(),
        SimulationError::BadRefundAmount(_) => {
            Problem::invalid(vec![FieldError::new("amount", error.to_string())]).into()
        }
        SimulationError::Database(error) => error.into(),
    }
}

/// Says loudly that a control was used: it changes payments as a donor or Stripe would, so
/// it must never pass unnoticed in a log. The id is quoted, as the path gave it.
fn warn_simulated(action: &'static str, what: &'static str, id: &str) {
    tracing::warn!(
        action,
        id = ?id,
        "SIMULATED PAYMENTS: the simulator's {action} control was used on a {what}; no money moves"
    );
}

/// A JSON body, or a 400 problem.
fn json_body(body: &[u8]) -> Result<Value, Problem> {
    serde_json::from_slice(body).map_err(|e| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-json",
            "Malformed JSON",
            format!("The body is not valid JSON: {e}."),
        )
    })
}

/// `{"fail": true|false}`, or an empty body for a payout that is paid.
fn payout_fails(body: &[u8]) -> Result<bool, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let value = json_body(body)?;
    let Some(object) = value.as_object() else {
        return Err(Problem::invalid(vec![FieldError::new(
            "",
            "must be a JSON object",
        )]));
    };
    let mut errors: Vec<FieldError> = object
        .keys()
        .filter(|k| *k != "fail")
        .map(|k| FieldError::new(k.clone(), "is not a field of a payout"))
        .collect();
    let fail = match object.get("fail") {
        None => false,
        Some(Value::Bool(fail)) => *fail,
        Some(_) => {
            errors.push(FieldError::new("fail", "must be true or false"));
            false
        }
    };
    if errors.is_empty() {
        Ok(fail)
    } else {
        Err(Problem::invalid(errors))
    }
}

/// `{"amount": N}`, or an empty body for all that is left.
fn refund_amount(body: &[u8]) -> Result<Option<i64>, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value = json_body(body)?;
    let object = value
        .as_object()
        .filter(|o| o.keys().all(|k| k == "amount"));
    match object.map(|o| o.get("amount").map(Value::as_i64)) {
        Some(None) => Ok(None),
        Some(Some(Some(amount))) if amount > 0 => Ok(Some(amount)),
        _ => Err(Problem::invalid(vec![FieldError::new(
            "amount",
            "must be a whole number of minor units, more than 0",
        )])),
    }
}
