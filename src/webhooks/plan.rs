//! Planning a batch before anything is locked, in four steps: read each event's facts
//! (`read_events`), find the donations they could be about (`find_donations`), group them by
//! the payment they are about and tie each payment to its donation (`tie_payments`), and
//! decide what, if anything, each payment needs from Stripe (`needs`).
//!
//! An event is someone else's when nothing in it and nothing we stored ties it to a donation:
//! that is decided here from the event alone, with no Stripe call. A payment needs a fetch only
//! when an event refers to something we lack and cannot settle from its own content: a balance
//! transaction (a charge's, a refund's) the ledger has not recorded, or refunds the charge
//! counts that we have never heard of (a refund from the dashboard). An older snapshot of a
//! payment needs nothing: the merge settles it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use super::kind::EventKind;
use super::queue::{Claimed, NOT_OURS};
use crate::finance::payouts::PayoutWork;
use crate::payments::objects::{
    self, BalanceTransactionRef, ChargeFacts, ChargeRef, DisputeFacts, PaymentIntentFacts,
    RefundFacts, RefundStatus,
};

/// How far our clock and Stripe's may differ: a snapshot this close to our last fetch may
/// still be newer than it.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// What one event says.
#[derive(Debug, Clone)]
pub enum Facts {
    PaymentIntent(PaymentIntentFacts),
    Charge(ChargeFacts),
    Refund(RefundFacts),
    Dispute(DisputeFacts),
}

/// What ties an event to a donation, strongest first: the donation's id in the metadata, the
/// PaymentIntent, the charge.
#[derive(Debug, Clone, Copy, Default)]
struct Ties<'a> {
    donation: Option<Uuid>,
    payment_intent: Option<&'a str>,
    charge: Option<&'a str>,
}

impl Facts {
    /// The facts of an event of `kind` about `object`; `None` for a kind that is not a
    /// payment's.
    pub fn read(kind: EventKind, object: &Value) -> Result<Option<Self>, String> {
        let facts = match kind {
            EventKind::PaymentIntent => Self::PaymentIntent(
                objects::payment_intent(object)
                    .map_err(|e| format!("unreadable PaymentIntent: {e}"))?,
            ),
            EventKind::Dispute => Self::Dispute(
                objects::dispute(object).map_err(|e| format!("unreadable dispute: {e}"))?,
            ),
            EventKind::Refund => Self::Refund(
                objects::refund(object).map_err(|e| format!("unreadable refund: {e}"))?,
            ),
            EventKind::Charge => Self::Charge(
                objects::charge(object).map_err(|e| format!("unreadable charge: {e}"))?,
            ),
            EventKind::Payout | EventKind::Other => return Ok(None),
        };
        Ok(Some(facts))
    }

    fn ties(&self) -> Ties<'_> {
        match self {
            Self::PaymentIntent(pi) => Ties {
                donation: pi.donation_id,
                payment_intent: Some(&pi.id),
                charge: pi.paid_by(),
            },
            Self::Charge(charge) => Ties {
                donation: charge.donation_id,
                payment_intent: charge.payment_intent.as_deref(),
                charge: Some(&charge.id),
            },
            Self::Refund(refund) => Ties {
                donation: None,
                payment_intent: refund.payment_intent.as_deref(),
                charge: refund.charge.as_deref(),
            },
            Self::Dispute(dispute) => Ties {
                donation: None,
                payment_intent: dispute.payment_intent.as_deref(),
                charge: dispute.charge.as_deref(),
            },
        }
    }
}

/// An event of a payment's, read for applying.
#[derive(Debug, Clone)]
pub struct EventFacts {
    pub id: String,
    pub created: OffsetDateTime,
    pub facts: Facts,
}

/// A batch, planned.
#[derive(Debug, Default)]
pub struct Plan {
    /// Each payment's events, with its donation, by the payment's key.
    pub payments: BTreeMap<String, Payment>,
    /// Each payout's events, merged, by the payout's id.
    pub payouts: BTreeMap<String, PayoutWork>,
    /// Events that are not ours, or of a type we do not apply, with the reason.
    pub ignored: Vec<(String, String)>,
    /// Events that cannot be read, with the reason: applying them again cannot help.
    pub unreadable: Vec<(String, String)>,
}

/// One payment's events in this batch and what they need.
#[derive(Debug)]
pub struct Payment {
    pub donation: Uuid,
    /// The PaymentIntent, if any event names it.
    pub payment_intent: Option<String>,
    /// Its donor's personal data was erased: its events are stripped as they are applied.
    pub erased: bool,
    pub events: Vec<EventFacts>,
    /// Events that need the payment as Stripe has it now, and why.
    pub needs: Vec<(String, Need)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// A balance transaction of the payment's (its fee, a refund's money) that the ledger has
    /// not recorded and no event carried.
    Transaction(String),
    /// Refunds: the charge counts this much refunded, more than every refund we know of.
    Refunds(i64),
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transaction(bt) => write!(f, "balance transaction {bt}"),
            Self::Refunds(amount) => write!(f, "the refunds making up {amount} refunded"),
        }
    }
}

/// A donation an event could be about, as we hold it, read without a lock: only this worker
/// touches a payment's Stripe facts while it holds its events, so nothing read here moves
/// under it.
#[derive(Debug, Clone)]
struct KnownDonation {
    id: Uuid,
    payment_intent_id: Option<String>,
    charge_id: Option<String>,
    synced_at: Option<OffsetDateTime>,
    erased: bool,
}

/// The donations a batch's payment events could be about, and what we hold of their refunds
/// and their ledger.
#[derive(Debug, Default)]
struct Known {
    donations: Vec<KnownDonation>,
    /// Each donation's refunds: id, amount and status.
    refunds: HashMap<Uuid, Vec<(String, i64, RefundStatus)>>,
    /// Each donation's balance transactions the ledger holds.
    recorded: HashMap<Uuid, HashSet<String>>,
}

/// Reads the claimed events and plans them.
pub async fn plan(db: &mut PgConnection, events: &[Claimed]) -> sqlx::Result<Plan> {
    let mut plan = Plan::default();
    let read = read_events(&mut plan, events);
    if read.is_empty() {
        return Ok(plan);
    }
    let known = find_donations(db, &read).await?;
    tie_payments(&mut plan, read, &known);
    Ok(plan)
}

/// Each payment's event with its facts and its payment's key, in the batch's order; a payout's
/// event, one of a type we do not apply and one that cannot be read go to `plan` at once.
fn read_events(plan: &mut Plan, events: &[Claimed]) -> Vec<(String, EventFacts)> {
    let mut read = Vec::new();
    for event in events {
        let kind = EventKind::of(&event.kind);
        if kind == EventKind::Payout {
            read_payout(plan, event);
            continue;
        }
        let object = serde_json::from_str::<Value>(&event.payload)
            .map_err(|e| e.to_string())
            .and_then(|payload| Facts::read(kind, &payload["data"]["object"]));
        match object {
            Ok(Some(facts)) => {
                let key = event.object_key.clone().unwrap_or_else(|| event.id.clone());
                read.push((
                    key,
                    EventFacts {
                        id: event.id.clone(),
                        created: event.created,
                        facts,
                    },
                ));
            }
            Ok(None) => plan.ignored.push((
                event.id.clone(),
                format!("{} is not a type we apply", event.kind),
            )),
            Err(error) => plan.unreadable.push((event.id.clone(), error)),
        }
    }
    read
}

/// Everything that could tie the batch to our donations: donation ids and PaymentIntents at
/// once; then charges, only for the payments neither tied to a donation (a charge is looked at
/// only then, see [`locate`]). Apart, because `charge_id` is not unique: with the three in one
/// `OR`, a table whose statistics lag its growth (a new deployment's first storm) was planned
/// as a scan of every donation, 137 ms a batch instead of 1 ms (BENCHMARKS.md); the ids and
/// PaymentIntents are unique, so each is an index probe whatever the statistics say, and
/// charges are looked up one probe each.
async fn find_donations(
    db: &mut PgConnection,
    read: &[(String, EventFacts)],
) -> sqlx::Result<Known> {
    let (mut ids, mut intents) = (Vec::new(), Vec::new());
    for (_, event) in read {
        let ties = event.facts.ties();
        ids.extend(ties.donation);
        intents.extend(ties.payment_intent.map(str::to_owned));
    }
    let mut donations = sqlx::query_as!(
        KnownDonation,
        r#"SELECT id, payment_intent_id, charge_id, stripe_synced_at AS synced_at,
                  personal_data_erased_at IS NOT NULL AS "erased!"
           FROM donations
           WHERE id = ANY($1) OR payment_intent_id = ANY($2)"#,
        &ids,
        &intents
    )
    .fetch_all(&mut *db)
    .await?;
    let charges: Vec<String> = {
        let found_ids: HashSet<Uuid> = donations.iter().map(|d| d.id).collect();
        let found_intents: HashSet<&str> = donations
            .iter()
            .filter_map(|d| d.payment_intent_id.as_deref())
            .collect();
        let mut untied: HashMap<&str, bool> = HashMap::new();
        for (key, event) in read {
            let ties = event.facts.ties();
            let tied = ties.donation.is_some_and(|id| found_ids.contains(&id))
                || ties
                    .payment_intent
                    .is_some_and(|i| found_intents.contains(i));
            *untied.entry(key.as_str()).or_insert(true) &= !tied;
        }
        read.iter()
            .filter(|(key, _)| untied[key.as_str()])
            .filter_map(|(_, event)| event.facts.ties().charge.map(str::to_owned))
            .collect()
    };
    if !charges.is_empty() {
        donations.extend(
            sqlx::query_as!(
                KnownDonation,
                // One index probe per charge, whatever the statistics (the subquery is kept
                // apart, by `OFFSET 0`, so that it is never turned into a scan joined whole).
                r#"SELECT d.id AS "id!", d.payment_intent_id, d.charge_id, d.synced_at,
                          d.erased AS "erased!"
                   FROM unnest($1::text[]) AS c(charge)
                   CROSS JOIN LATERAL (
                       SELECT id, payment_intent_id, charge_id, stripe_synced_at AS synced_at,
                              personal_data_erased_at IS NOT NULL AS erased
                       FROM donations WHERE charge_id = c.charge OFFSET 0) d"#,
                &charges
            )
            .fetch_all(&mut *db)
            .await?,
        );
        donations.sort_by_key(|d| d.id);
        donations.dedup_by_key(|d| d.id);
    }
    let donation_ids: Vec<Uuid> = donations.iter().map(|d| d.id).collect();
    let mut known = Known {
        donations,
        ..Known::default()
    };
    let refunds = sqlx::query!(
        r#"SELECT donation_id, id, amount, status FROM refunds WHERE donation_id = ANY($1)"#,
        &donation_ids
    )
    .fetch_all(&mut *db)
    .await?;
    for refund in refunds {
        known.refunds.entry(refund.donation_id).or_default().push((
            refund.id,
            refund.amount,
            RefundStatus::parse(&refund.status),
        ));
    }
    // Read on their own: as a subquery of the lookup above, this made the worker's plan for
    // it several times slower under a storm (BENCHMARKS.md).
    let recorded = sqlx::query!(
        r#"SELECT DISTINCT donation_id AS "donation_id!", balance_transaction_id
           FROM ledger_entries WHERE donation_id = ANY($1)"#,
        &donation_ids
    )
    .fetch_all(&mut *db)
    .await?;
    for row in recorded {
        known
            .recorded
            .entry(row.donation_id)
            .or_default()
            .insert(row.balance_transaction_id);
    }
    Ok(known)
}

/// Groups the events by payment, ties each payment to the donation it belongs to (an event
/// that is not really about it is set aside as not ours), and says what each payment needs.
fn tie_payments(plan: &mut Plan, read: Vec<(String, EventFacts)>, known: &Known) {
    let by_id: HashMap<Uuid, &KnownDonation> = known.donations.iter().map(|d| (d.id, d)).collect();
    let by_intent: HashMap<&str, &KnownDonation> = known
        .donations
        .iter()
        .filter_map(|d| Some((d.payment_intent_id.as_deref()?, d)))
        .collect();
    let by_charge: HashMap<&str, &KnownDonation> = known
        .donations
        .iter()
        .filter_map(|d| Some((d.charge_id.as_deref()?, d)))
        .collect();

    let mut groups: BTreeMap<String, Vec<EventFacts>> = BTreeMap::new();
    for (key, event) in read {
        groups.entry(key).or_default().push(event);
    }
    for (key, events) in groups {
        let Some(donation) = locate(&events, &by_id, &by_intent, &by_charge) else {
            for event in events {
                plan.ignored.push((
                    event.id,
                    format!(
                        "{NOT_OURS}no donation_id in its metadata, and no payment of ours is {key}"
                    ),
                ));
            }
            continue;
        };
        // An event of an older API version (a refund, a dispute) may name only its charge;
        // the donation it was found by knows its PaymentIntent.
        let payment_intent = events
            .iter()
            .find_map(|e| e.facts.ties().payment_intent.map(str::to_owned))
            .or_else(|| donation.payment_intent_id.clone());
        let mut ours = Vec::new();
        for event in events {
            match belongs(&event, donation) {
                Ok(()) => ours.push(event),
                Err(reason) => plan.ignored.push((event.id, reason)),
            }
        }
        if ours.is_empty() {
            continue;
        }
        let refunds = known
            .refunds
            .get(&donation.id)
            .map_or(&[][..], Vec::as_slice);
        let empty = HashSet::new();
        let recorded = known.recorded.get(&donation.id).unwrap_or(&empty);
        let needs = needs(donation, &ours, refunds, recorded);
        plan.payments.insert(
            key,
            Payment {
                donation: donation.id,
                payment_intent,
                erased: donation.erased,
                events: ours,
                needs,
            },
        );
    }
}

/// Adds a payout event to the plan: every payout of the account is the charity's business,
/// since every payout takes money from the one balance donations are paid into.
fn read_payout(plan: &mut Plan, event: &Claimed) {
    let payout = serde_json::from_str::<Value>(&event.payload)
        .map_err(|e| e.to_string())
        .and_then(|payload| {
            objects::payout(&payload["data"]["object"])
                .map_err(|e| format!("unreadable payout: {e}"))
        });
    match payout {
        Ok(facts) => match plan.payouts.get_mut(&facts.id) {
            Some(work) => {
                work.merge(facts, event.created);
                work.events.push(event.id.clone());
            }
            None => {
                plan.payouts.insert(
                    facts.id.clone(),
                    PayoutWork {
                        facts,
                        at: event.created,
                        events: vec![event.id.clone()],
                        listing: None,
                    },
                );
            }
        },
        Err(error) => plan.unreadable.push((event.id.clone(), error)),
    }
}

/// The donation a payment's events belong to: named in metadata, or found by the
/// PaymentIntent or charge we stored.
fn locate<'a>(
    events: &[EventFacts],
    by_id: &HashMap<Uuid, &'a KnownDonation>,
    by_intent: &HashMap<&str, &'a KnownDonation>,
    by_charge: &HashMap<&str, &'a KnownDonation>,
) -> Option<&'a KnownDonation> {
    let ties: Vec<Ties<'_>> = events.iter().map(|e| e.facts.ties()).collect();
    ties.iter()
        .find_map(|t| t.donation.and_then(|id| by_id.get(&id).copied()))
        .or_else(|| {
            ties.iter()
                .find_map(|t| t.payment_intent.and_then(|i| by_intent.get(i).copied()))
        })
        .or_else(|| {
            ties.iter()
                .find_map(|t| t.charge.and_then(|c| by_charge.get(c).copied()))
        })
}

/// Whether `event`, grouped with the payment of `donation`, really is about it: its metadata
/// names no other donation, and it names no other PaymentIntent than the donation's.
fn belongs(event: &EventFacts, donation: &KnownDonation) -> Result<(), String> {
    let ties = event.facts.ties();
    if let Some(id) = ties.donation
        && id != donation.id
    {
        return Err(format!(
            "{NOT_OURS}it names donation {id}, but its payment is donation {}'s",
            donation.id
        ));
    }
    if let (Some(ours), Some(theirs)) = (donation.payment_intent_id.as_deref(), ties.payment_intent)
        && ours != theirs
    {
        return Err(format!(
            "{NOT_OURS}donation {} belongs to PaymentIntent {ours}, not {theirs}",
            donation.id
        ));
    }
    Ok(())
}

/// What the payment's events refer to that we lack and they do not carry, given the refunds
/// we hold of it (`known`) and the balance transactions its ledger holds (`recorded`).
fn needs(
    donation: &KnownDonation,
    events: &[EventFacts],
    known: &[(String, i64, RefundStatus)],
    recorded: &HashSet<String>,
) -> Vec<(String, Need)> {
    // Refunds as the batch leaves them: what we stored, moved on by the batch's own events.
    let mut refunds: HashMap<String, (i64, RefundStatus)> = known
        .iter()
        .map(|(id, amount, status)| (id.clone(), (*amount, status.clone())))
        .collect();
    let mut moved = |refund: &RefundFacts| {
        let held = refunds
            .entry(refund.id.clone())
            .or_insert((refund.amount, refund.status.clone()));
        if refund.status.rank() > held.1.rank() {
            held.1 = refund.status.clone();
        }
    };
    // Balance transactions the batch's events carry whole, or the ledger already holds.
    let mut carried: HashSet<&str> = recorded.iter().map(String::as_str).collect();
    for event in events {
        let charge = match &event.facts {
            Facts::Refund(refund) => {
                moved(refund);
                continue;
            }
            Facts::Charge(charge) => Some(charge),
            Facts::PaymentIntent(pi) => match &pi.latest_charge {
                Some(ChargeRef::Object(charge)) => Some(charge.as_ref()),
                _ => None,
            },
            Facts::Dispute(_) => None,
        };
        if let Some(charge) = charge {
            if let Some(BalanceTransactionRef::Object(bt)) = &charge.balance_transaction {
                carried.insert(&bt.id);
            }
            for refund in charge.refunds.iter().flat_map(|list| &list.refunds) {
                moved(refund);
            }
        }
    }
    let refunded: i64 = refunds
        .values()
        .filter(|(_, status)| status.counts())
        .map(|(amount, _)| amount)
        .sum();

    let mut needs = Vec::new();
    for event in events {
        let named: Vec<&Option<BalanceTransactionRef>> = match &event.facts {
            Facts::Charge(charge) if charge.succeeded => vec![&charge.balance_transaction],
            Facts::Refund(refund) => vec![
                &refund.balance_transaction,
                &refund.failure_balance_transaction,
            ],
            _ => Vec::new(),
        };
        for bt in named {
            if let Some(BalanceTransactionRef::Id(bt)) = bt
                && !carried.contains(bt.as_str())
            {
                needs.push((event.id.clone(), Need::Transaction(bt.clone())));
            }
        }
        let Facts::Charge(charge) = &event.facts else {
            continue;
        };
        if !charge.succeeded {
            continue;
        }
        // A snapshot older than our last look at Stripe cannot show a refund that look missed.
        let newer_than_our_look = donation
            .synced_at
            .is_none_or(|synced| event.created + CLOCK_SKEW > synced);
        if charge.amount_refunded > refunded && newer_than_our_look {
            needs.push((event.id.clone(), Need::Refunds(charge.amount_refunded)));
        }
    }
    needs
}
