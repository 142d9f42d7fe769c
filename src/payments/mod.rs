//! Stripe, through the real `async-stripe` client. In simulated mode the client talks to the
//! Stripe look-alike of `crate::simulator`, so local runs take exactly the production path.

pub mod objects;
pub mod status;
pub mod transport;

use std::collections::HashMap;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use stripe::ApiErrorsCode;
use stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_client_core::{RequestBuilder, StripeMethod};
use stripe_core::PaymentIntentStatus;
use stripe_core::payment_intent::{
    CreatePaymentIntent, CreatePaymentIntentAutomaticPaymentMethods,
};
use uuid::Uuid;

use crate::config;
use crate::metrics::Metrics;

/// Attempts at one Stripe call that failed in a way worth repeating (network, 429, 5xx), and
/// the back-off after each: fixed in [`config::budget`], where `STRIPE_TIMEOUT_SECS` is checked
/// against them.
pub use crate::config::budget::{STRIPE_ATTEMPTS as ATTEMPTS, STRIPE_BACKOFF as BACKOFF};
/// How long work that can wait (applying an event) leaves Stripe alone once a call has failed
/// all its attempts for want of Stripe (no answer, 429, 5xx): at least this, or the usual
/// back-off if longer.
///
/// This stands in for Stripe's `Retry-After`: async-stripe's client (1.0.0-rc.10) reads no
/// header of an error answer but `Stripe-Should-Retry`, so a `Retry-After` never reaches us,
/// and Stripe's own guidance for its 429s is to back off rather than a given wait. Half a
/// minute is longer than the waits Stripe's rate limits reset within.
pub const AWAY_PAUSE: Duration = Duration::from_secs(30);

/// Our handle on Stripe.
#[derive(Clone, Debug)]
pub struct Payments {
    client: transport::Transport,
    publishable_key: String,
    statement_descriptor_suffix: String,
    /// Each call's latency and errors, by operation.
    metrics: Metrics,
}

/// What a PaymentIntent is created for.
#[derive(Debug)]
pub struct IntentRequest<'a> {
    pub donation_id: Uuid,
    pub campaign: &'a str,
    /// What is charged: the gift and its fee cover.
    pub amount: i64,
    /// Of `amount`, what the donor added to cover the fee: in the metadata, so that a donation
    /// recreated from Stripe after a restore (`events backfill`) knows its gift.
    pub cover_fees_amount: i64,
    pub currency: &'a str,
}

/// What the website needs from a new PaymentIntent.
#[derive(Debug)]
pub struct CreatedIntent {
    pub id: String,
    pub client_secret: String,
}

/// Why a Stripe call failed, in the terms the caller acts on.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// No answer: the network, a timeout, or Stripe too busy. Safe to retry later.
    #[error("Stripe could not be reached")]
    Unavailable(#[source] StripeFailure),
    /// Stripe answered with an error.
    #[error("Stripe refused the request")]
    Rejected(#[source] StripeFailure),
}

impl PaymentError {
    /// How long to leave Stripe alone before trying work that can wait again: [`AWAY_PAUSE`]
    /// when Stripe was away; `None` when it answered and refused.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            PaymentError::Unavailable(_) => Some(AWAY_PAUSE),
            PaymentError::Rejected(_) => None,
        }
    }
}

/// A Stripe error, described without anything secret: no keys, no client secrets.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StripeFailure(String);

impl From<&StripeError> for StripeFailure {
    fn from(error: &StripeError) -> Self {
        Self(match error {
            StripeError::Stripe(api, status) => format!(
                "Stripe answered {status}: {} {} {}",
                api.type_.as_str(),
                api.code.as_ref().map(|c| c.as_str()).unwrap_or("-"),
                api.message.as_deref().unwrap_or("")
            ),
            StripeError::Timeout => "timed out waiting for Stripe".to_owned(),
            StripeError::ClientError(msg) => format!("transport: {msg}"),
            StripeError::JSONDeserialize(msg) => format!("unreadable answer: {msg}"),
            StripeError::ConfigError(msg) => format!("client configuration: {msg}"),
        })
    }
}

impl Payments {
    pub fn new(
        secret_key: &SecretString,
        publishable_key: String,
        api_base: &str,
        timeout: Duration,
        statement_descriptor_suffix: String,
    ) -> anyhow::Result<Self> {
        let client = transport::Transport::new(secret_key.expose_secret(), api_base, timeout)
            .map_err(|e| anyhow::anyhow!("STRIPE_API_BASE: {e}"))?;
        Ok(Self {
            client,
            publishable_key,
            statement_descriptor_suffix,
            metrics: Metrics::disabled(),
        })
    }

    /// The same client, counting its calls in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The client for real Stripe, with its keys, as configured.
    pub fn for_stripe(
        config: &config::Stripe,
        secret_key: &SecretString,
        publishable_key: String,
    ) -> anyhow::Result<Self> {
        Self::new(
            secret_key,
            publishable_key,
            &config.api_base,
            config.timeout,
            config.statement_descriptor_suffix.clone(),
        )
    }

    pub fn publishable_key(&self) -> &str {
        &self.publishable_key
    }

    /// Creates the PaymentIntent for a donation. The Idempotency-Key is derived from the
    /// donation id, so however often this runs for one donation (a retry, a crash and a
    /// replay), Stripe makes one PaymentIntent and answers every call with it.
    #[tracing::instrument(name = "Creating the PaymentIntent", skip_all, fields(donation_id = %intent.donation_id))]
    pub async fn create_payment_intent(
        &self,
        intent: IntentRequest<'_>,
    ) -> Result<CreatedIntent, PaymentError> {
        let metadata = HashMap::from([
            ("donation_id".to_owned(), intent.donation_id.to_string()),
            ("campaign".to_owned(), intent.campaign.to_owned()),
            (
                "cover_fees_amount".to_owned(),
                intent.cover_fees_amount.to_string(),
            ),
        ]);
        let request = CreatePaymentIntent::new(
            intent.amount,
            intent
                .currency
                .parse::<stripe_types::Currency>()
                .expect("parsing a currency is infallible"),
        )
        .automatic_payment_methods(CreatePaymentIntentAutomaticPaymentMethods::new(true))
        .metadata(metadata)
        .description("Donation")
        .statement_descriptor_suffix(self.statement_descriptor_suffix.clone());
        let key = payment_intent_idempotency_key(intent.donation_id);

        let intent = with_retries(&self.metrics, Operation::CREATE_PAYMENT_INTENT, || {
            request
                .customize()
                .request_strategy(RequestStrategy::Idempotent(key.clone()))
                .send(&self.client)
        })
        .await?;
        let client_secret = intent.client_secret.ok_or_else(|| {
            PaymentError::Rejected(StripeFailure(
                "the PaymentIntent came back without a client_secret".to_owned(),
            ))
        })?;
        Ok(CreatedIntent {
            id: intent.id.to_string(),
            client_secret,
        })
    }
}

/// What became of a request to cancel a PaymentIntent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancellation {
    /// It is canceled (now, or it already was), at this unix time if Stripe says.
    Canceled { at: Option<i64> },
    /// Stripe will not cancel it: it succeeded or is processing. Its events say so.
    NotCancelable { status: String },
    /// Stripe has no such PaymentIntent.
    Missing,
}

impl Payments {
    /// Cancels a PaymentIntent no one will pay, so that a stale client secret can never
    /// complete it. Sent without an idempotency key: Stripe keeps a key's first answer for a
    /// day, a 500 included, which would answer every later try the same; and cancelling is
    /// safe to repeat (a cancelled intent is reported as such).
    #[tracing::instrument(name = "Cancelling the PaymentIntent", skip_all, fields(donation_id = %donation_id))]
    pub async fn cancel_payment_intent(
        &self,
        payment_intent: &str,
        donation_id: Uuid,
    ) -> Result<Cancellation, PaymentError> {
        let path = format!("/payment_intents/{payment_intent}/cancel");
        with_retries(&self.metrics, Operation::CANCEL_PAYMENT_INTENT, || {
            let mut request = RequestBuilder::new(StripeMethod::Post, path.as_str());
            request.body = Some("cancellation_reason=abandoned".to_owned());
            let sent = request
                .customize::<miniserde::json::Value>()
                .request_strategy(RequestStrategy::Once)
                .send(&self.client);
            async move {
                match sent.await {
                    Ok(intent) => {
                        let intent: Value =
                            serde_json::from_str(&miniserde::json::to_string(&intent))
                                .unwrap_or_default();
                        Ok(Cancellation::Canceled {
                            at: intent["canceled_at"].as_i64(),
                        })
                    }
                    Err(StripeError::Stripe(error, 404))
                        if error.code == Some(ApiErrorsCode::ResourceMissing) =>
                    {
                        Ok(Cancellation::Missing)
                    }
                    Err(StripeError::Stripe(error, 400))
                        if error.code == Some(ApiErrorsCode::PaymentIntentUnexpectedState) =>
                    {
                        Ok(match &error.payment_intent {
                            Some(intent) if intent.status == PaymentIntentStatus::Canceled => {
                                Cancellation::Canceled {
                                    at: intent.canceled_at,
                                }
                            }
                            Some(intent) => Cancellation::NotCancelable {
                                status: intent.status.as_str().to_owned(),
                            },
                            None => Cancellation::NotCancelable {
                                status: "unknown".to_owned(),
                            },
                        })
                    }
                    Err(error) => Err(error),
                }
            }
        })
        .await
    }
}

impl Payments {
    /// A payment as Stripe has it now, in one call: the PaymentIntent with its latest charge,
    /// that charge's balance transaction (the fee), and its refunds with theirs, expanded.
    pub async fn retrieve_payment(&self, payment_intent: &str) -> Result<Value, PaymentError> {
        self.get(
            &format!("/payment_intents/{payment_intent}"),
            &[
                ("expand[]", "latest_charge.balance_transaction"),
                ("expand[]", "latest_charge.refunds"),
                ("expand[]", "latest_charge.refunds.data.balance_transaction"),
                (
                    "expand[]",
                    "latest_charge.refunds.data.failure_balance_transaction",
                ),
            ],
        )
        .await
    }

    /// Every refund of a charge, with its balance transactions, page by page (a charge has few).
    pub async fn list_refunds(&self, charge_id: &str) -> Result<Vec<Value>, PaymentError> {
        self.list_all(
            "/refunds",
            &[
                ("charge", charge_id),
                ("expand[]", "data.balance_transaction"),
                ("expand[]", "data.failure_balance_transaction"),
            ],
        )
        .await
    }

    /// One balance transaction (a manual payout's own, with its fee).
    pub async fn retrieve_balance_transaction(&self, id: &str) -> Result<Value, PaymentError> {
        self.get(&format!("/balance_transactions/{id}"), &[]).await
    }

    /// Every balance transaction paid out in an automatic payout, page by page: the gifts,
    /// fees, refunds and disputes it took to the bank.
    pub async fn list_payout_transactions(&self, payout: &str) -> Result<Vec<Value>, PaymentError> {
        self.list_all("/balance_transactions", &[("payout", payout)])
            .await
    }

    /// Every item of a Stripe list, following `has_more` page by page (100 at a time).
    async fn list_all(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<Value>, PaymentError> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut page_query = query.to_vec();
            page_query.push(("limit", "100"));
            if let Some(after) = &after {
                page_query.push(("starting_after", after));
            }
            let page = self.get(path, &page_query).await?;
            let data = page["data"].as_array().cloned().unwrap_or_default();
            let last = data
                .last()
                .and_then(|item| item["id"].as_str())
                .map(str::to_owned);
            items.extend(data);
            if !page["has_more"].as_bool().unwrap_or(false) || last.is_none() {
                return Ok(items);
            }
            if last == after {
                // A list that says there is more but gives the same page again never ends.
                return Err(PaymentError::Rejected(StripeFailure(format!(
                    "{path} gave the same page twice"
                ))));
            }
            after = last;
        }
    }

    /// One page of events created at or after `since` (unix seconds), newest first as Stripe
    /// lists them, continuing after `starting_after`. Returns the events and whether more follow.
    pub async fn list_events(
        &self,
        since: i64,
        starting_after: Option<&str>,
    ) -> Result<(Vec<Value>, bool), PaymentError> {
        let since = since.to_string();
        let mut query = vec![("created[gte]", since.as_str()), ("limit", "100")];
        if let Some(after) = starting_after {
            query.push(("starting_after", after));
        }
        let page = self.get("/events", &query).await?;
        let has_more = page["has_more"].as_bool().unwrap_or(false);
        Ok((
            page["data"].as_array().cloned().unwrap_or_default(),
            has_more,
        ))
    }

    /// A GET through the Stripe client, answered as plain JSON so that we read Stripe's objects
    /// with the same code whether an event carried them or we fetched them. GETs change
    /// nothing, so they are retried.
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, PaymentError> {
        let query = (!query.is_empty()).then(|| {
            form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query)
                .finish()
        });
        let value = with_retries(&self.metrics, Operation::read(path), || {
            let mut request = RequestBuilder::new(StripeMethod::Get, path);
            request.query = query.clone();
            request
                .customize::<miniserde::json::Value>()
                .request_strategy(RequestStrategy::Once)
                .send(&self.client)
        })
        .await?;
        serde_json::from_str(&miniserde::json::to_string(&value))
            .map_err(|e| PaymentError::Rejected(StripeFailure(format!("unreadable answer: {e}"))))
    }
}

/// Runs `call` until it succeeds, fails in a way not worth repeating, or has had `ATTEMPTS`.
/// Each attempt is the same request; a creating call carries the same idempotency key, so a
/// repeat can never act twice.
/// Each call's latency (retries included) and each failed attempt are counted in `metrics`
/// under `operation`.
async fn with_retries<T, F, Fut>(
    metrics: &Metrics,
    operation: Operation,
    mut call: F,
) -> Result<T, PaymentError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StripeError>>,
{
    let what = operation.what;
    let started = std::time::Instant::now();
    let mut attempt = 1;
    loop {
        let error = match call().await {
            Ok(value) => {
                metrics.stripe_call(operation.label, "ok", started.elapsed());
                return Ok(value);
            }
            Err(error) => error,
        };
        metrics.stripe_error(operation.label, error_kind(&error));
        let failure = StripeFailure::from(&error);
        let retryable = is_retryable(&error);
        if !retryable || attempt >= ATTEMPTS {
            tracing::warn!(attempt, error = %failure, "could not {what}");
            let outcome = if retryable { "unavailable" } else { "rejected" };
            metrics.stripe_call(operation.label, outcome, started.elapsed());
            return Err(if retryable {
                PaymentError::Unavailable(failure)
            } else {
                PaymentError::Rejected(failure)
            });
        }
        tracing::info!(attempt, error = %failure, "retrying to {what}");
        tokio::time::sleep(BACKOFF * attempt).await;
        attempt += 1;
    }
}

/// A kind of Stripe call, as the log says it and as metrics label it (never with an id).
#[derive(Debug, Clone, Copy)]
struct Operation {
    what: &'static str,
    label: &'static str,
}

impl Operation {
    const CREATE_PAYMENT_INTENT: Self = Self {
        what: "create the PaymentIntent",
        label: "create_payment_intent",
    };

    const CANCEL_PAYMENT_INTENT: Self = Self {
        what: "cancel the PaymentIntent",
        label: "cancel_payment_intent",
    };

    /// A read of `path`, named by the kind of object it reads.
    fn read(path: &str) -> Self {
        let mut parts = path.trim_start_matches('/').split('/');
        let label = match (parts.next(), parts.next()) {
            (Some("payment_intents"), _) => "retrieve_payment_intent",
            (Some("refunds"), _) => "list_refunds",
            (Some("balance_transactions"), Some(_)) => "retrieve_balance_transaction",
            (Some("balance_transactions"), None) => "list_balance_transactions",
            (Some("events"), _) => "list_events",
            _ => "read_other",
        };
        Self {
            what: "read from Stripe",
            label,
        }
    }
}

/// How a Stripe call attempt failed, for the error counter.
fn error_kind(error: &StripeError) -> &'static str {
    match error {
        StripeError::Timeout => "timeout",
        StripeError::ClientError(_) => "transport",
        StripeError::Stripe(_, 429) => "rate_limited",
        StripeError::Stripe(_, 500..=599) => "server_error",
        StripeError::Stripe(..) => "refused",
        StripeError::JSONDeserialize(_) => "unreadable",
        StripeError::ConfigError(_) => "configuration",
    }
}

/// The key Stripe dedupes PaymentIntent creation on: one per donation, forever.
pub fn payment_intent_idempotency_key(donation_id: Uuid) -> IdempotencyKey {
    IdempotencyKey::new(format!("quickdonate-pi-{donation_id}"))
        .expect("a fixed prefix and a UUID make a valid idempotency key")
}

/// Worth another attempt with the same key: no answer, a rate limit, a lock conflict on the
/// key (409 while the first attempt is still running at Stripe) or Stripe's own failure.
fn is_retryable(error: &StripeError) -> bool {
    match error {
        StripeError::Timeout | StripeError::ClientError(_) => true,
        StripeError::Stripe(_, status) => matches!(status, 409 | 429 | 500..=599),
        StripeError::JSONDeserialize(_) | StripeError::ConfigError(_) => false,
    }
}
