//! A claimed batch, planned and fetched, sorted into what to apply: each payment with what was
//! fetched for it, each payout with its listing, and every event's outcome, decided from what
//! Stripe answered (or did not).

use std::collections::HashMap;
use std::time::Duration;

use super::apply::Fetched;
use super::fetch::{Fetch, FetchError};
use super::plan::{Need, Payment, Plan};
use super::queue::{Failure, Outcomes};
use crate::finance::payouts::PayoutWork;
use crate::payments::objects::{BalanceTransactionFacts, BalanceTransactionRef, ChargeRef};

/// A claimed batch, planned and fetched: each payment with what was fetched for it and its
/// events' outcomes, each payout with its listing, and the outcomes of the events tied to
/// neither (ignored, unreadable, or left for later).
pub struct Batch<'a> {
    pub payments: Vec<(&'a Payment, Option<&'a Fetched>, Outcomes)>,
    pub payouts: Vec<PayoutWork>,
    pub general: Outcomes,
}

impl<'a> Batch<'a> {
    /// Sorts `plan`'s events by what became of the Stripe calls made for them.
    pub fn sort(
        plan: &'a Plan,
        fetched: &'a HashMap<String, Fetch>,
        listed: &HashMap<String, Fetch<Vec<BalanceTransactionFacts>>>,
    ) -> Self {
        // Outcomes not tied to a payment we apply.
        let mut general = Outcomes {
            ignored: plan.ignored.clone(),
            ..Outcomes::default()
        };
        let mut payouts: Vec<PayoutWork> = Vec::new();
        for (id, payout) in &plan.payouts {
            let ids = payout.events.iter().cloned();
            match listed.get(id) {
                None => {
                    payouts.push(payout.clone());
                    general.applied.extend(ids);
                }
                Some(Fetch::Done(Ok(listing))) => {
                    payouts.push(PayoutWork {
                        listing: Some(listing.clone()),
                        ..payout.clone()
                    });
                    general.applied.extend(ids);
                }
                Some(Fetch::Done(Err(error))) => general.failed.extend(ids.map(|id| Failure {
                    id,
                    error: error.message.clone(),
                    poison: error.poison,
                    wait: error.wait,
                })),
                Some(Fetch::Deferred) => general.released.extend(ids),
            }
        }
        for (id, error) in &plan.unreadable {
            tracing::warn!(event_id = %id, %error, "an event cannot be read");
            general.failed.push(Failure {
                id: id.clone(),
                error: error.clone(),
                poison: true,
                wait: Duration::ZERO,
            });
        }
        // Each payment, with what was fetched for it and its events' outcomes.
        let mut payments = Vec::new();
        for (key, payment) in &plan.payments {
            match fetched.get(key) {
                Some(Fetch::Deferred) => general
                    .released
                    .extend(payment.events.iter().map(|e| e.id.clone())),
                found => {
                    let result = match found {
                        Some(Fetch::Done(result)) => Some(result),
                        _ => None,
                    };
                    let outcomes = outcomes_of(payment, result);
                    let fetched = result.and_then(|r| r.as_ref().ok());
                    payments.push((payment, fetched, outcomes));
                }
            }
        }
        Self {
            payments,
            payouts,
            general,
        }
    }

    /// Whether the batch is one payment's and nothing else: if it fails, that payment is at
    /// fault.
    pub fn is_one_payment(&self) -> bool {
        self.payments.len() <= 1 && self.payouts.is_empty() && self.general.is_empty()
    }
}

/// Each event's outcome, given the payment's fetch (`None` if it needed none).
pub fn outcomes_of(payment: &Payment, fetched: Option<&Result<Fetched, FetchError>>) -> Outcomes {
    let mut outcomes = Outcomes::default();
    for event in &payment.events {
        let needs: Vec<&Need> = payment
            .needs
            .iter()
            .filter(|(id, _)| *id == event.id)
            .map(|(_, need)| need)
            .collect();
        let unmet = needs.iter().find_map(|need| match (fetched, need) {
            (Some(Err(error)), _) => Some((error.message.clone(), error.poison, error.wait)),
            (Some(Ok(fetched)), Need::Transaction(bt)) if !shows_transaction(fetched, bt) => {
                Some((
                    format!("Stripe does not show {need} on {} yet", fetched.intent.id),
                    true,
                    Duration::ZERO,
                ))
            }
            _ => None,
        });
        match unmet {
            // What the event says on its own is applied all the same; only the part it
            // lacks is tried again.
            Some((error, poison, wait)) => outcomes.failed.push(Failure {
                id: event.id.clone(),
                error,
                poison,
                wait,
            }),
            None => outcomes.applied.push(event.id.clone()),
        }
    }
    outcomes
}

/// Whether the fetched payment holds balance transaction `bt` whole: its charge's, or one of
/// its refunds'.
fn shows_transaction(fetched: &Fetched, bt: &str) -> bool {
    let Some(ChargeRef::Object(charge)) = &fetched.intent.latest_charge else {
        return false;
    };
    let whole = |t: &Option<BalanceTransactionRef>| matches!(t, Some(BalanceTransactionRef::Object(t)) if t.id == bt);
    whole(&charge.balance_transaction)
        || charge
            .refunds
            .iter()
            .flat_map(|l| &l.refunds)
            .any(|r| whole(&r.balance_transaction) || whole(&r.failure_balance_transaction))
}

/// Every event `outcomes` holds, whatever became of it.
pub fn outcome_ids(outcomes: &Outcomes) -> impl Iterator<Item = String> + '_ {
    outcomes
        .applied
        .iter()
        .cloned()
        .chain(outcomes.ignored.iter().map(|(id, _)| id.clone()))
        .chain(outcomes.failed.iter().map(|f| f.id.clone()))
        .chain(outcomes.released.iter().cloned())
}
