//! Fetching from Stripe what a batch's payments lack, and listing what its payouts paid out,
//! holding nothing in the database: at most one call per payment (a payout's listing, every
//! page), a few in flight at once per instance, and none started after the batch's time for
//! Stripe ([`FETCH_BUDGET`]); what was not started is left for the next batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Semaphore;

use super::apply::Fetched;
use super::plan::Plan;
use crate::finance::payouts;
use crate::payments::objects::{self, BalanceTransactionFacts, ChargeRef};
use crate::payments::{PaymentError, Payments};

/// How long a batch may spend fetching from Stripe; payments not fetched by then are released
/// to be tried again at once.
pub const FETCH_BUDGET: Duration = Duration::from_secs(60);
/// Stripe calls in flight at once from one instance's workers.
const FETCHES_IN_FLIGHT: usize = 8;

/// Calls Stripe for the worker's batches; cloning shares the calls in flight.
#[derive(Clone)]
pub struct Fetcher {
    payments: Payments,
    in_flight: Arc<Semaphore>,
}

impl Fetcher {
    pub fn new(payments: Payments) -> Self {
        Self {
            payments,
            in_flight: Arc::new(Semaphore::new(FETCHES_IN_FLIGHT)),
        }
    }

    /// Lists, for each automatic payout whose money has moved, its balance transactions,
    /// unless a complete list is held already; fetches, for a manual payout, its own balance
    /// transaction, once (its fee).
    pub async fn payouts(
        &self,
        db: &PgPool,
        plan: &Plan,
    ) -> sqlx::Result<HashMap<String, Fetch<Vec<BalanceTransactionFacts>>>> {
        let deadline = tokio::time::Instant::now() + FETCH_BUDGET;
        let mut calls = tokio::task::JoinSet::new();
        for (id, payout) in &plan.payouts {
            let held = payouts::apply::held(db, id).await?;
            let Some(call) = payouts::apply::call(&payout.facts, held) else {
                continue;
            };
            let (id, payments, fetches) =
                (id.clone(), self.payments.clone(), self.in_flight.clone());
            calls.spawn(async move {
                let Ok(Ok(_permit)) =
                    tokio::time::timeout_at(deadline, fetches.acquire_owned()).await
                else {
                    return (id, Fetch::Deferred);
                };
                let listed = match call {
                    payouts::Call::List => list_payout(&payments, &id).await,
                    payouts::Call::OwnTransaction(txn) => {
                        own_transaction(&payments, &id, &txn).await.map(|t| vec![t])
                    }
                };
                (id, Fetch::Done(listed))
            });
        }
        let mut results = HashMap::new();
        while let Some(done) = calls.join_next().await {
            if let Ok((id, listed)) = done {
                results.insert(id, listed);
            }
        }
        Ok(results)
    }

    /// One payment as Stripe has it now (see [`Fetcher::payments`]), waiting its turn among the
    /// calls in flight.
    pub async fn payment(&self, intent: &str) -> Result<Fetched, FetchError> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .expect("the semaphore is never closed");
        fetch_payment(&self.payments, intent).await
    }

    /// Fetches, for each payment that needs it, the payment as Stripe has it now: the
    /// PaymentIntent with its latest charge, that charge's balance transaction and its
    /// refunds, in one call.
    pub async fn payments(&self, plan: &Plan) -> HashMap<String, Fetch> {
        let deadline = tokio::time::Instant::now() + FETCH_BUDGET;
        let mut calls = tokio::task::JoinSet::new();
        let mut results = HashMap::new();
        for (key, payment) in &plan.payments {
            if payment.needs.is_empty() {
                continue;
            }
            let Some(intent) = payment.payment_intent.clone() else {
                results.insert(
                    key.clone(),
                    Fetch::Done(Err(FetchError {
                        message: "nothing names this payment's PaymentIntent".to_owned(),
                        poison: true,
                        wait: Duration::ZERO,
                    })),
                );
                continue;
            };
            let (key, payments, fetches) =
                (key.clone(), self.payments.clone(), self.in_flight.clone());
            calls.spawn(async move {
                let Ok(Ok(_permit)) =
                    tokio::time::timeout_at(deadline, fetches.acquire_owned()).await
                else {
                    return (key, Fetch::Deferred);
                };
                (key, Fetch::Done(fetch_payment(&payments, &intent).await))
            });
        }
        while let Some(done) = calls.join_next().await {
            if let Ok((key, fetch)) = done {
                results.insert(key, fetch);
            }
        }
        results
    }
}

/// What became of a payment's fetch, or a payout's listing.
pub enum Fetch<T = Fetched> {
    Done(Result<T, FetchError>),
    /// Not started within the batch's time for Stripe.
    Deferred,
}

#[derive(Debug, Clone)]
pub struct FetchError {
    pub message: String,
    pub poison: bool,
    /// The least wait before the events that needed this fetch are tried again.
    pub wait: Duration,
}

impl FetchError {
    /// Stripe failed `what`: the event's fault if Stripe refused it; if Stripe was away, the
    /// events wait for it (see [`PaymentError::retry_after`]) and it is nobody's fault.
    fn stripe(error: PaymentError, what: &str) -> Self {
        Self {
            poison: matches!(error, PaymentError::Rejected(_)),
            wait: error.retry_after().unwrap_or_default(),
            message: format!(
                "{error}: {} ({what})",
                std::error::Error::source(&error)
                    .map(ToString::to_string)
                    .unwrap_or_default()
            ),
        }
    }

    /// What Stripe sent cannot be read: the event's fault.
    fn unreadable(message: String) -> Self {
        Self {
            message,
            poison: true,
            wait: Duration::ZERO,
        }
    }
}

/// Lists a payout's balance transactions from Stripe.
async fn list_payout(
    payments: &Payments,
    payout: &str,
) -> Result<Vec<BalanceTransactionFacts>, FetchError> {
    let listed = payments
        .list_payout_transactions(payout)
        .await
        .map_err(|error| {
            FetchError::stripe(error, &format!("listing the transactions of {payout}"))
        })?;
    listed
        .iter()
        .map(objects::balance_transaction)
        .collect::<Result<_, _>>()
        .map_err(|error| {
            FetchError::unreadable(format!(
                "Stripe's transactions of {payout} are unreadable: {error}"
            ))
        })
}

/// A manual payout's own balance transaction, from Stripe.
async fn own_transaction(
    payments: &Payments,
    payout: &str,
    txn: &str,
) -> Result<BalanceTransactionFacts, FetchError> {
    let value = payments
        .retrieve_balance_transaction(txn)
        .await
        .map_err(|error| FetchError::stripe(error, &format!("fetching {txn} of {payout}")))?;
    objects::balance_transaction(&value).map_err(|error| {
        FetchError::unreadable(format!("Stripe's {txn} of {payout} is unreadable: {error}"))
    })
}

async fn fetch_payment(payments: &Payments, intent: &str) -> Result<Fetched, FetchError> {
    let stripe_error =
        |error: PaymentError| FetchError::stripe(error, &format!("fetching {intent}"));
    let unreadable =
        |error: String| FetchError::unreadable(format!("Stripe's {intent} is unreadable: {error}"));
    let value = payments
        .retrieve_payment(intent)
        .await
        .map_err(stripe_error)?;
    let at = time::OffsetDateTime::now_utc();
    let mut intent_facts = objects::payment_intent(&value).map_err(unreadable)?;
    // An expanded list holds the first page; a donation with more refunds than that is read
    // in full.
    if let Some(ChargeRef::Object(charge)) = &mut intent_facts.latest_charge
        && let Some(list) = &mut charge.refunds
        && !list.complete
    {
        let all = payments
            .list_refunds(&charge.id)
            .await
            .map_err(stripe_error)?;
        list.refunds = all
            .iter()
            .map(objects::refund)
            .collect::<Result<_, _>>()
            .map_err(unreadable)?;
        list.complete = true;
    }
    Ok(Fetched {
        intent: intent_facts,
        at,
    })
}
