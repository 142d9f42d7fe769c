//! The simulator's controls, served by the API only when payments are simulated:
//! `POST /v1/simulator/payment_intents/{id}/succeed`, `/fail` and `/refund` (body `{amount}`,
//! optional), `POST /v1/simulator/refunds/{id}/fail`, and `POST /v1/simulator/payouts` (body
//! `{fail}`, optional). Each changes the simulated Stripe's objects the way a donor, the
//! dashboard, a card issuer or a bank would, then delivers the resulting events, signed with
//! the webhook secret, to our own webhook endpoint: the local flow runs the production code
//! from end to end. A control answers once the worker has applied its events (or after
//! [`APPLIED_WITHIN`], saying which were not), so the next `GET` shows what it did, as a test
//! helper should. Every use is logged as a warning.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use secrecy::SecretString;
use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{SimulatedStripe, SimulationError};
use crate::http::problem::{ApiError, ApiResult, FieldError, Problem, ProblemType};
use crate::webhooks::signature;

/// The longest a control waits for the worker to apply the events it delivered.
pub const APPLIED_WITHIN: Duration = Duration::from_secs(5);

/// The simulated Stripe, and how its events reach us.
#[derive(Clone)]
pub struct Simulator {
    pub stripe: SimulatedStripe,
    webhook_url: String,
    secret: SecretString,
    http: reqwest::Client,
    /// Whether this instance's worker applies events (`APPLY_EVENTS`): a control waits for them
    /// only then.
    applies_events: bool,
}

impl Simulator {
    pub fn new(
        stripe: SimulatedStripe,
        webhook_url: String,
        secret: SecretString,
        applies_events: bool,
    ) -> Self {
        Self {
            stripe,
            webhook_url,
            secret,
            http: reqwest::Client::new(),
            applies_events,
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

/// The controls, served only when payments are simulated, with the simulator bound to them.
pub fn router<S>(simulator: Simulator) -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new()
        .routes(routes!(simulate))
        .routes(routes!(simulate_refund))
        .routes(routes!(simulate_payout))
        .with_state(simulator)
}

/// An event the simulator made, and what our webhook endpoint answered it.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = SimulatedEvent)]
#[allow(dead_code)]
struct DeliveredDoc {
    #[schema(example = "evt_sim_...")]
    id: String,
    /// The event's type, e.g. `payment_intent.succeeded`.
    #[serde(rename = "type")]
    kind: String,
    /// Our webhook endpoint's HTTP status; 0 if it could not be reached.
    delivery_status: u16,
    /// Its state in our event log when the control answered: `applied`, `ignored` or
    /// `failed`; `pending` if it was not applied within 5 s, or this instance applies no
    /// events (`APPLY_EVENTS=false`); null if it was not stored.
    state: Option<String>,
}

// Documentation of the JSON the handler builds.
/// What a PaymentIntent control did.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = SimulatedPaymentIntent)]
#[allow(dead_code)]
struct PaymentIntentAnswer {
    payment_intent: String,
    /// `refund` only: the refund made (`re_sim_...`), for the refund's own control.
    #[serde(skip_serializing_if = "Option::is_none")]
    refund: Option<String>,
    events: Vec<DeliveredDoc>,
}

/// What the refund control did.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = SimulatedRefund)]
#[allow(dead_code)]
struct RefundAnswer {
    refund: String,
    /// `refund.updated`, `refund.failed`, `charge.refund.updated`.
    events: Vec<DeliveredDoc>,
}

/// A payout the simulator made.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = SimulatedPayoutMade)]
#[allow(dead_code)]
struct PayoutDoc {
    id: String,
    amount: i64,
    currency: String,
    /// `paid`, or `failed` when the bank returned it.
    status: String,
}

/// What the payout control did.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = SimulatedPayouts)]
#[allow(dead_code)]
struct PayoutAnswer {
    /// One per currency with a balance above 0.
    payouts: Vec<PayoutDoc>,
    /// `payout.created`, `payout.paid` or `payout.failed`, `payout.reconciliation_completed`.
    events: Vec<DeliveredDoc>,
}

/// The optional body of the `refund` control.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SimulatedRefundRequest)]
#[allow(dead_code)]
struct RefundBody {
    /// Minor units, more than 0; by default all that is left.
    #[schema(nullable = false, minimum = 1)]
    amount: Option<i64>,
}

/// The optional body of the payout control.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SimulatedPayoutRequest)]
#[allow(dead_code)]
struct PayoutBody {
    /// The bank returns the payout; default false.
    #[schema(nullable = false)]
    fail: Option<bool>,
}

/// The simulator's actions on a PaymentIntent.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum PaymentIntentAction {
    /// The card is charged.
    Succeed,
    /// The card is declined; the PaymentIntent waits for another try.
    Fail,
    /// A refund, of `amount` or all that is left.
    Refund,
}

/// The simulator's actions on a refund.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum RefundAction {
    /// A succeeded refund fails: the money comes back.
    Fail,
}

#[utoipa::path(
    post,
    path = "/v1/simulator/payment_intents/{id}/{action}",
    operation_id = "simulatePaymentIntent",
    tag = "simulator",
    summary = "Play the donor or the dashboard on a PaymentIntent",
    description = "Only with simulated payments. `succeed`: the card is charged; `fail`: the \
                   card is declined (the PaymentIntent waits for another try); `refund`: a \
                   refund of `amount` (by default all that is left). The simulated Stripe's \
                   objects change as Stripe's would, and the resulting events are delivered, \
                   signed, to our own webhook endpoint.",
    params(
        ("id" = String, Path, description = "The PaymentIntent (`pi_sim_...`)."),
        ("action" = inline(PaymentIntentAction), Path, description = "What happens."),
    ),
    request_body(content = Option<RefundBody>, content_type = "application/json",
                 description = "`refund` only, optional."),
    responses(
        (status = 200, description = "Done; the events and how each was delivered.",
         body = PaymentIntentAnswer),
        (status = 400, description = "`/problems/malformed-json`.", body = Problem,
         content_type = "application/problem+json"),
        (status = 404, description = "`/problems/not-found`: no such PaymentIntent or action.",
         body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`/problems/simulation-refused`: not possible in its state.",
         body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`/problems/validation`: a bad `amount`.", body = Problem,
         content_type = "application/problem+json"),
    ),
)]
async fn simulate(
    State(simulator): State<Simulator>,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
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
    answer["events"] = json!(simulator.deliver_all(&events).await?);
    Ok(Json(answer))
}

/// `POST /v1/simulator/refunds/{id}/fail`: a succeeded refund fails.
#[utoipa::path(
    post,
    path = "/v1/simulator/refunds/{id}/{action}",
    operation_id = "simulateRefund",
    tag = "simulator",
    summary = "Play the card issuer: a refund fails",
    description = "Only with simulated payments. A succeeded refund fails: its status `failed`, \
                   a `refund_failure` balance transaction puts the money back, the charge's \
                   `amount_refunded` is lowered; the events are delivered to our webhook \
                   endpoint.",
    params(
        ("id" = String, Path, description = "The refund (`re_sim_...`)."),
        ("action" = inline(RefundAction), Path, description = "What happens."),
    ),
    responses(
        (status = 200, description = "Done.", body = RefundAnswer),
        (status = 404, description = "`/problems/not-found`: a refund the simulator never \
                                      made, or no such action.", body = Problem,
         content_type = "application/problem+json"),
        (status = 409, description = "`/problems/simulation-refused`: the refund is not \
                                      succeeded.", body = Problem,
         content_type = "application/problem+json"),
    ),
)]
async fn simulate_refund(
    State(simulator): State<Simulator>,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    if action != "fail" {
        return Err(Problem::not_found("The simulator can fail a refund.").into());
    }
    warn_simulated("fail", "refund", &id);
    let events = simulator.stripe.fail_refund(&id).await.map_err(refused)?;
    let events = simulator.deliver_all(&events).await?;
    Ok(Json(json!({"refund": id, "events": events})))
}

/// `POST /v1/simulator/payouts`: an automatic payout of the balance, paid or (`{"fail": true}`)
/// returned by the bank.
#[utoipa::path(
    post,
    path = "/v1/simulator/payouts",
    operation_id = "simulatePayout",
    tag = "simulator",
    summary = "Play the bank: an automatic payout",
    description = "Only with simulated payments. Pays out every balance transaction not yet \
                   paid out, one payout per currency whose total is above 0, as Stripe's \
                   automatic payouts do; with `{\"fail\": true}` the bank returns it and its \
                   money waits for the next payout.",
    request_body(content = Option<PayoutBody>, content_type = "application/json",
                 description = "Optional."),
    responses(
        (status = 200, description = "The payouts made and their events.", body = PayoutAnswer),
        (status = 400, description = "`/problems/malformed-json`.", body = Problem,
         content_type = "application/problem+json"),
        (status = 409, description = "`/problems/simulation-refused`: nothing to pay out.",
         body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`/problems/validation`: a field other than `fail`, or \
                                      not a boolean.", body = Problem,
         content_type = "application/problem+json"),
    ),
)]
async fn simulate_payout(
    State(simulator): State<Simulator>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let fail = payout_fails(&body)?;
    tracing::warn!(
        fail,
        "SIMULATED PAYMENTS: the simulator's payout control was used; no money moves"
    );
    let (payouts, events) = simulator.stripe.pay_out(fail).await.map_err(refused)?;
    let events = simulator.deliver_all(&events).await?;
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
    /// Delivers each event in turn, then waits for the worker to apply them (at most
    /// [`APPLIED_WITHIN`]); what became of each.
    async fn deliver_all(&self, events: &[Value]) -> ApiResult<Vec<Value>> {
        let mut delivered = Vec::new();
        for event in events {
            let status = self.deliver(event).await;
            delivered
                .push(json!({"id": event["id"], "type": event["type"], "delivery_status": status}));
        }
        let ids: Vec<String> = events
            .iter()
            .filter_map(|event| event["id"].as_str().map(str::to_owned))
            .collect();
        let states = self.states_once_applied(&ids).await?;
        for event in &mut delivered {
            let id = event["id"].as_str().unwrap_or_default();
            event["state"] = json!(states.get(id));
        }
        Ok(delivered)
    }

    /// The events' states in the log, once none is pending any more or [`APPLIED_WITHIN`] has
    /// passed (at once if this instance applies no events).
    async fn states_once_applied(
        &self,
        ids: &[String],
    ) -> sqlx::Result<std::collections::HashMap<String, String>> {
        let deadline = tokio::time::Instant::now() + APPLIED_WITHIN;
        loop {
            let states = crate::webhooks::log::states(&self.stripe.db, ids).await?;
            let pending = states.values().any(|state| state == "pending");
            if !pending || !self.applies_events || tokio::time::Instant::now() >= deadline {
                return Ok(states);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The problem a refusal of the simulator's is.
fn refused(error: SimulationError) -> ApiError {
    let not_now =
        |error: &SimulationError| Problem::new(ProblemType::SimulationRefused, error.to_string());
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
            ProblemType::MalformedJson,
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
