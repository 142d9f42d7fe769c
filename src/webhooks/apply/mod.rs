//! Applying a batch's payments to their donations, in one short transaction.
//!
//! Every Stripe object adds facts to a donation, and every fact only moves one way: a payment
//! status moves to a later Stripe time (ties broken by rank; success and cancellation are
//! final), the amount received only grows, the charge is the one that paid, the fee is set
//! once known, each refund and dispute moves up its own status rank, and a balance
//! transaction, once seen, is kept. So a donation ends the same whatever order its events
//! come in, however often each comes, and however they are split into batches.
//!
//! A payment's events are merged together, in memory, against its donation's row locked as
//! it is now; then each changed row is written once. Donations are locked in id order, so two
//! transactions never wait on each other in a circle. Nothing here calls Stripe: whatever a
//! payment needed from Stripe was fetched before the transaction began.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

mod store;

pub use store::move_totals;

use super::plan::{Facts, Payment};
use crate::donations::DonationStatus;
use crate::finance::ledger::{self, Entry, Source};
use crate::payments::objects::{
    BalanceTransactionRef, ChargeFacts, ChargeRef, DisputeFacts, PaymentIntentFacts, RefundFacts,
};
use crate::payments::status::{DisputeStatus, PaymentStatus, RefundStatus};

/// A payment as Stripe had it when we fetched it, and when that was (our clock).
#[derive(Debug, Clone)]
pub struct Fetched {
    pub intent: PaymentIntentFacts,
    pub at: OffsetDateTime,
}

/// What a batch's transaction changed beyond the donations.
#[derive(Debug, Default)]
pub struct Applied {
    /// How much each campaign's total and count move, by slug (written last, in slug order).
    pub campaigns: BTreeMap<String, (i64, i64)>,
    /// Payments whose PaymentIntent was linked to its donation by this batch.
    pub linked: Vec<String>,
    /// Donations newly flagged for an operator, and why.
    pub flagged: Vec<(Uuid, String)>,
    /// Donations whose declined attempts reached the limit with this batch: their
    /// PaymentIntents are to be cancelled (after the commit, with nothing held).
    pub declined_out: Vec<Uuid>,
}

/// A donation's Stripe facts and what derives from them, as its row holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    id: Uuid,
    campaign: String,
    amount: i64,
    total_amount: i64,
    currency: String,
    status: DonationStatus,
    payment_intent_id: Option<String>,
    payment_status: PaymentStatus,
    payment_status_at: Option<OffsetDateTime>,
    charge_id: Option<String>,
    amount_received: i64,
    received_currency: Option<String>,
    balance_transaction_id: Option<String>,
    fee: Option<i64>,
    net: Option<i64>,
    settlement_currency: Option<String>,
    refunded_amount: i64,
    dispute_status: Option<String>,
    dispute_lost_amount: i64,
    dispute_fee: i64,
    counted_amount: i64,
    flag: Option<String>,
    stripe_synced_at: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Refund {
    donation_id: Uuid,
    amount: i64,
    currency: String,
    status: RefundStatus,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Dispute {
    donation_id: Uuid,
    amount: i64,
    currency: String,
    status: DisputeStatus,
    at: Option<OffsetDateTime>,
}

/// Everything the batch's donations hold, and what the merge adds.
struct State {
    rows: BTreeMap<Uuid, Row>,
    refunds: BTreeMap<String, Refund>,
    disputes: BTreeMap<String, Dispute>,
    /// The donations' ledger rows: those written before, then those this batch adds.
    ledger: Vec<Entry>,
    recorded: HashSet<(String, &'static str)>,
    /// How many of `ledger` were written before this batch.
    held_entries: usize,
    changed_refunds: HashSet<String>,
    changed_disputes: HashSet<String>,
    linked: Vec<String>,
    /// Declined attempts seen: (donation, the declined charge).
    declines: BTreeSet<(Uuid, String)>,
}

/// Merges `payments` (each with what was fetched for it) into their donations inside `tx`;
/// `declines_per_payment` is when a donation's declined attempts give it up.
pub async fn apply(
    tx: &mut PgConnection,
    payments: &[(&Payment, Option<&Fetched>)],
    declines_per_payment: i32,
) -> sqlx::Result<Applied> {
    let mut ids: Vec<Uuid> = payments.iter().map(|(p, _)| p.donation).collect();
    ids.sort();
    ids.dedup();
    let mut state = State::load(tx, &ids).await?;
    let before = state.rows.clone();

    for (payment, fetched) in payments {
        for event in &payment.events {
            state.merge(payment.donation, &event.facts, event.created, false);
        }
        if let Some(fetched) = fetched {
            let facts = Facts::PaymentIntent(fetched.intent.clone());
            state.merge(payment.donation, &facts, fetched.at, true);
            if let Some(row) = state.rows.get_mut(&payment.donation) {
                row.stripe_synced_at = Some(fetched.at);
            }
        }
    }

    let mut applied = Applied {
        linked: std::mem::take(&mut state.linked),
        ..Applied::default()
    };
    let settled: Vec<Row> = before
        .values()
        .map(|old| {
            let mut row = state.rows[&old.id].clone();
            state.settle(&mut row);
            if row.flag.is_some() && old.flag.is_none() {
                applied
                    .flagged
                    .push((row.id, row.flag.clone().unwrap_or_default()));
            }
            if row.counted_amount != old.counted_amount {
                let total = applied.campaigns.entry(row.campaign.clone()).or_default();
                total.0 += row.counted_amount - old.counted_amount;
                total.1 += i64::from(row.counted_amount > 0) - i64::from(old.counted_amount > 0);
            }
            row
        })
        .filter(|row| *row != before[&row.id])
        .collect();

    store::write_rows(tx, &settled).await?;
    state.write_children(tx).await?;
    // The receipts these moves owe, queued with them: a thank-you as a donation first
    // succeeds, a notice as its succeeded refunds come to cover it (at most once per donation and kind).
    let succeeded = PaymentStatus::Succeeded;
    let thanked: Vec<Uuid> = settled
        .iter()
        .filter(|row| row.payment_status == succeeded)
        .filter(|row| before[&row.id].payment_status != succeeded)
        .map(|row| row.id)
        .collect();
    let refunded = DonationStatus::Refunded;
    let refunded: Vec<Uuid> = settled
        .iter()
        .filter(|row| row.status == refunded && before[&row.id].status != refunded)
        .map(|row| row.id)
        .collect();
    crate::receipts::queue(tx, &thanked, &refunded).await?;
    applied.declined_out = store::count_declines(tx, &state.declines, declines_per_payment).await?;
    applied
        .campaigns
        .retain(|_, (raised, count)| *raised != 0 || *count != 0);
    Ok(applied)
}

impl State {
    /// Adds what `facts` (as of `at`) say to donation `id`. A fetched snapshot is Stripe's
    /// current one, but its time is our clock's, so only a final payment status is taken
    /// from it; everything else it says only ever moves forward anyway.
    fn merge(&mut self, id: Uuid, facts: &Facts, at: OffsetDateTime, fetched: bool) {
        match facts {
            Facts::PaymentIntent(intent) => {
                let Some(row) = self.rows.get_mut(&id) else {
                    return;
                };
                if !fetched || intent.status.is_final() {
                    merge_status(row, intent.status, at);
                }
                if intent.status == PaymentStatus::Failed
                    && let Some(charge) = &intent.latest_charge
                {
                    self.declines.insert((id, charge.id().to_owned()));
                }
                if intent.status == PaymentStatus::Succeeded {
                    merge_received(row, intent.amount_received, &intent.currency);
                }
                if let Some(charge) = intent.paid_by() {
                    row.charge_id = Some(charge.to_owned());
                }
                self.link(id, &intent.id);
                if let Some(ChargeRef::Object(charge)) = &intent.latest_charge {
                    self.merge_charge(id, charge, at);
                }
            }
            Facts::Charge(charge) => self.merge_charge(id, charge, at),
            Facts::Refund(refund) => self.merge_refund(id, refund),
            Facts::Dispute(dispute) => self.merge_dispute(id, dispute, at),
        }
    }

    fn merge_charge(&mut self, id: Uuid, charge: &ChargeFacts, at: OffsetDateTime) {
        let Some(row) = self.rows.get_mut(&id) else {
            return;
        };
        // A declined attempt's charge says nothing about the payment: the PaymentIntent's
        // own events do. Only the charge that paid is recorded; a declined one is counted.
        if charge.failed {
            self.declines.insert((id, charge.id.clone()));
        }
        if charge.succeeded {
            merge_status(row, PaymentStatus::Succeeded, at);
            merge_received(row, charge.amount_captured, &charge.currency);
            row.charge_id = Some(charge.id.clone());
            if let Some(BalanceTransactionRef::Object(bt)) = &charge.balance_transaction {
                row.balance_transaction_id = Some(bt.id.clone());
                self.record(id, &charge.balance_transaction, Source::Charge, &charge.id);
            }
        }
        if let Some(intent) = &charge.payment_intent {
            self.link(id, intent);
        }
        for refund in charge.refunds.iter().flat_map(|list| &list.refunds) {
            self.merge_refund(id, refund);
        }
    }

    /// Records the PaymentIntent of a donation that had none: the create flow's own write of
    /// it was lost, and an event named the donation.
    fn link(&mut self, id: Uuid, intent: &str) {
        if let Some(row) = self.rows.get_mut(&id)
            && row.payment_intent_id.is_none()
        {
            row.payment_intent_id = Some(intent.to_owned());
            self.linked.push(intent.to_owned());
        }
    }

    /// Adds the ledger rows of a balance transaction of donation `id`, if it is expanded and
    /// not yet recorded.
    fn record(
        &mut self,
        id: Uuid,
        bt: &Option<BalanceTransactionRef>,
        source: Source,
        source_id: &str,
    ) {
        let (Some(BalanceTransactionRef::Object(bt)), Some(row)) = (bt, self.rows.get(&id)) else {
            return;
        };
        for entry in ledger::entries(bt, source, source_id, Some((id, &row.campaign))) {
            if self.recorded.insert(entry.key()) {
                self.ledger.push(entry);
            }
        }
    }

    fn merge_refund(&mut self, id: Uuid, refund: &RefundFacts) {
        self.record(id, &refund.balance_transaction, Source::Refund, &refund.id);
        self.record(
            id,
            &refund.failure_balance_transaction,
            Source::RefundFailure,
            &refund.id,
        );
        match self.refunds.get_mut(&refund.id) {
            Some(held) if held.status.rank() >= refund.status.rank() => return,
            Some(held) => held.status = refund.status.clone(),
            None => {
                self.refunds.insert(
                    refund.id.clone(),
                    Refund {
                        donation_id: id,
                        amount: refund.amount,
                        currency: refund.currency.clone(),
                        status: refund.status.clone(),
                    },
                );
            }
        }
        self.changed_refunds.insert(refund.id.clone());
    }

    fn merge_dispute(&mut self, id: Uuid, dispute: &DisputeFacts, at: OffsetDateTime) {
        for bt in &dispute.balance_transactions {
            let bt = Some(BalanceTransactionRef::Object(bt.clone()));
            self.record(id, &bt, Source::Dispute, &dispute.id);
        }
        let newer = match self.disputes.get(&dispute.id) {
            Some(held) => (dispute.status.rank(), Some(at)) > (held.status.rank(), held.at),
            None => true,
        };
        if newer {
            self.disputes.insert(
                dispute.id.clone(),
                Dispute {
                    donation_id: id,
                    amount: dispute.amount,
                    currency: dispute.currency.clone(),
                    status: dispute.status.clone(),
                    at: Some(at),
                },
            );
            self.changed_disputes.insert(dispute.id.clone());
        }
    }

    /// Derives the donation's status, sums and what it counts for its campaign from its
    /// payment, refunds and disputes.
    fn settle(&self, row: &mut Row) {
        row.refunded_amount = self
            .refunds
            .values()
            .filter(|r| r.donation_id == row.id && r.status.counts())
            .map(|r| r.amount)
            .sum();
        let disputes: Vec<&Dispute> = self
            .disputes
            .values()
            .filter(|d| d.donation_id == row.id)
            .collect();
        row.dispute_status = disputes
            .iter()
            .max_by_key(|d| (d.status.rank(), d.at))
            .map(|d| d.status.word().to_owned());
        row.dispute_lost_amount = disputes
            .iter()
            .filter(|d| d.status == DisputeStatus::Lost)
            .map(|d| d.amount)
            .sum();
        // What the bank has taken back for now or for good: an open chargeback's money is
        // withdrawn until it is won.
        let withdrawn: i64 = disputes
            .iter()
            .filter(|d| d.status.withdraws())
            .map(|d| d.amount)
            .sum();
        // The money Stripe moved is the ledger's: fee, net and dispute fees are its sums.
        let entries: Vec<&Entry> = self
            .ledger
            .iter()
            .filter(|e| e.donation.as_ref().is_some_and(|(d, _)| *d == row.id))
            .collect();
        let sum = |kinds: &[&str]| -> i64 {
            entries
                .iter()
                .filter(|e| kinds.contains(&e.kind))
                .map(|e| e.amount)
                .sum()
        };
        if let Some(gift) = entries.iter().find(|e| e.kind == ledger::GIFT) {
            row.fee = Some(-sum(&[ledger::STRIPE_FEE]));
            row.net = Some(sum(&[ledger::GIFT, ledger::STRIPE_FEE]));
            row.settlement_currency = Some(gift.currency.clone());
        }
        row.dispute_fee = -sum(&[ledger::DISPUTE_FEE]);

        let succeeded = row.payment_status == PaymentStatus::Succeeded;
        let received = if row.received_currency.as_deref() == Some(row.currency.as_str()) {
            row.amount_received
        } else {
            0
        };
        row.counted_amount = if succeeded {
            counted_amount(
                row.amount,
                row.total_amount,
                received,
                row.refunded_amount,
                withdrawn,
            )
        } else {
            0
        };
        let paid = if row.amount_received > 0 {
            row.amount_received
        } else {
            row.total_amount
        };
        // Refunded only once refunds that have succeeded cover it: a pending refund can still
        // fail, and the donor is then told of money that never comes.
        let refunded_for_sure: i64 = self
            .refunds
            .values()
            .filter(|r| r.donation_id == row.id && r.status == RefundStatus::Succeeded)
            .map(|r| r.amount)
            .sum();
        row.status = if succeeded && refunded_for_sure >= paid {
            DonationStatus::Refunded
        } else {
            DonationStatus::from(row.payment_status)
        };
        // Said anew each time: the amount received only grows, so a shortfall that a later
        // snapshot makes good stops being one.
        row.flag = (succeeded && received != row.total_amount).then(|| {
            format!(
                "Stripe received {} {} for a donation of {} {}; the campaign counts only what was received",
                row.amount_received,
                row.received_currency.as_deref().unwrap_or("(no currency)"),
                row.total_amount,
                row.currency
            )
        });
    }
}

/// Takes `status` as of `at` if it is later than the payment status the row holds. Success
/// and cancellation are final: nothing Stripe sends afterwards undoes them, and nothing sent
/// before can outrank them, whatever the clocks say.
fn merge_status(row: &mut Row, status: PaymentStatus, at: OffsetDateTime) {
    let held = row.payment_status;
    let later = match row.payment_status_at {
        None => true,
        Some(held_at) => {
            !held.is_final() && (status.is_final() || (at, status.rank()) > (held_at, held.rank()))
        }
    };
    if later {
        row.payment_status = status;
        row.payment_status_at = Some(at);
    }
}

/// The most Stripe says it received, in the currency it says.
fn merge_received(row: &mut Row, amount: i64, currency: &str) {
    if amount > row.amount_received {
        row.amount_received = amount;
        row.received_currency = Some(currency.to_owned());
    } else if row.received_currency.is_none() && !currency.is_empty() {
        row.received_currency = Some(currency.to_owned());
    }
}

/// What a succeeded gift adds to its campaign: what Stripe received of it (in the gift's
/// currency), less what was refunded or withdrawn by a dispute (open or lost; a won dispute
/// gives it back), and never more than the gift
/// itself or below zero. The fee cover pays Stripe, so it is never counted, and a refund or a
/// shortfall takes from it first.
pub fn counted_amount(
    amount: i64,
    total_amount: i64,
    received: i64,
    refunded: i64,
    withdrawn: i64,
) -> i64 {
    (received.min(total_amount) - refunded - withdrawn)
        .min(amount)
        .max(0)
}

#[cfg(test)]
mod tests {
    use super::counted_amount;

    #[test]
    fn the_campaign_counts_the_gift_not_the_fee_cover() {
        assert_eq!(counted_amount(1000, 1036, 1036, 0, 0), 1000);
        assert_eq!(counted_amount(1000, 1000, 1000, 0, 0), 1000);
    }

    #[test]
    fn refunds_and_lost_disputes_come_off_the_fee_cover_first() {
        assert_eq!(counted_amount(1000, 1036, 1036, 36, 0), 1000);
        assert_eq!(counted_amount(1000, 1036, 1036, 536, 0), 500);
        assert_eq!(counted_amount(1000, 1036, 1036, 0, 1036), 0);
        assert_eq!(counted_amount(1000, 1036, 1036, 500, 536), 0);
        assert_eq!(
            counted_amount(1000, 1036, 1036, 2000, 0),
            0,
            "never below zero"
        );
    }

    #[test]
    fn only_what_stripe_received_counts() {
        assert_eq!(counted_amount(1000, 1036, 800, 0, 0), 800);
        assert_eq!(counted_amount(1000, 1036, 0, 0, 0), 0);
        assert_eq!(
            counted_amount(1000, 1036, 5000, 0, 0),
            1000,
            "never more than the gift"
        );
    }
}
