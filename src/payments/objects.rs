//! The facts we take from Stripe's objects, whether an event carried them or we fetched them.
//! Read from JSON by hand, field by field, so that a field Stripe adds in a later API version
//! never stops an event from applying.

use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

pub use super::status::{DisputeStatus, PaymentStatus, PayoutStatus, RefundStatus};

/// What a PaymentIntent tells us.
#[derive(Debug, Clone)]
pub struct PaymentIntentFacts {
    pub id: String,
    pub donation_id: Option<Uuid>,
    pub status: PaymentStatus,
    pub amount_received: i64,
    pub currency: String,
    pub latest_charge: Option<ChargeRef>,
}

impl PaymentIntentFacts {
    /// The charge that paid, when the PaymentIntent says it succeeded: its latest charge is
    /// then the successful one. Before that, the latest charge may be a declined attempt.
    pub fn paid_by(&self) -> Option<&str> {
        (self.status == PaymentStatus::Succeeded)
            .then(|| self.latest_charge.as_ref().map(ChargeRef::id))
            .flatten()
    }
}

/// A charge as an id, or expanded.
#[derive(Debug, Clone)]
pub enum ChargeRef {
    Id(String),
    Object(Box<ChargeFacts>),
}

impl ChargeRef {
    pub fn id(&self) -> &str {
        match self {
            Self::Id(id) => id,
            Self::Object(charge) => &charge.id,
        }
    }
}

/// What a charge tells us.
#[derive(Debug, Clone)]
pub struct ChargeFacts {
    pub id: String,
    pub payment_intent: Option<String>,
    pub donation_id: Option<Uuid>,
    /// Paid and captured: this charge is the one that took the donor's money.
    pub succeeded: bool,
    /// A declined attempt.
    pub failed: bool,
    pub amount_captured: i64,
    pub amount_refunded: i64,
    pub currency: String,
    pub balance_transaction: Option<BalanceTransactionRef>,
    /// Refunds the charge carried (only when expanded, as our fetch asks), and whether that
    /// list is all of them.
    pub refunds: Option<RefundList>,
}

#[derive(Debug, Clone)]
pub struct RefundList {
    pub refunds: Vec<RefundFacts>,
    pub complete: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BalanceTransactionRef {
    Id(String),
    Object(BalanceTransactionFacts),
}

impl BalanceTransactionRef {
    pub fn id(&self) -> &str {
        match self {
            Self::Id(id) => id,
            Self::Object(bt) => &bt.id,
        }
    }
}

/// A movement of money in our Stripe balance: a gift received, a refund, a dispute's
/// withdrawal or reinstatement, a payout. `amount` and `fee` are in `currency`, the currency
/// Stripe settled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceTransactionFacts {
    pub id: String,
    pub amount: i64,
    pub fee: i64,
    pub net: i64,
    pub currency: String,
    /// Stripe's `type`: charge, payment, refund, refund_failure, adjustment, payout, ...
    pub kind: Option<String>,
    pub reporting_category: Option<String>,
    /// The object that moved the money (a charge, refund, dispute or payout id).
    pub source: Option<String>,
    pub created: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundFacts {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: RefundStatus,
    pub charge: Option<String>,
    pub payment_intent: Option<String>,
    /// The money it took from the balance, and, if it failed, the money that came back.
    pub balance_transaction: Option<BalanceTransactionRef>,
    pub failure_balance_transaction: Option<BalanceTransactionRef>,
}

#[derive(Debug, Clone)]
pub struct DisputeFacts {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: DisputeStatus,
    pub charge: Option<String>,
    pub payment_intent: Option<String>,
    /// The money it moved so far: a withdrawal, then perhaps a reinstatement.
    pub balance_transactions: Vec<BalanceTransactionFacts>,
}

/// What a payout tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutFacts {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: PayoutStatus,
    pub arrival_date: Option<OffsetDateTime>,
    pub created: Option<OffsetDateTime>,
    pub balance_transaction: Option<BalanceTransactionRef>,
    pub failure_balance_transaction: Option<BalanceTransactionRef>,
    /// `completed` once Stripe knows every transaction the payout contains.
    pub reconciliation_status: Option<String>,
    /// Made by Stripe's payout schedule. Stripe lists the transactions of these only.
    pub automatic: bool,
    /// What the bank can find it by (`trace_id.value`), once Stripe has it, and its status
    /// (`supported`, `pending`, `unsupported`, `not_applicable`).
    pub trace_id: Option<String>,
    pub trace_status: Option<String>,
    /// What the charity's bank statement shows.
    pub statement_descriptor: Option<String>,
    /// `standard` or `instant` (an instant payout's fee is on its own balance transaction).
    pub method: Option<String>,
}

impl PayoutFacts {
    /// Whether the money has left, or came back: the moment to list what it contained.
    pub fn settled(&self) -> bool {
        self.status.rank() >= 3 || self.reconciliation_status.as_deref() == Some("completed")
    }
}

pub fn payout(v: &Value) -> Result<PayoutFacts, String> {
    Ok(PayoutFacts {
        id: required_id(v)?,
        amount: int_of(v, "amount"),
        currency: currency_of(v),
        status: PayoutStatus::parse(&str_of(v, "status").ok_or("the payout has no status")?),
        arrival_date: time_of(v, "arrival_date"),
        created: time_of(v, "created"),
        balance_transaction: balance_transaction_of(v, "balance_transaction")?,
        failure_balance_transaction: balance_transaction_of(v, "failure_balance_transaction")?,
        reconciliation_status: str_of(v, "reconciliation_status"),
        automatic: v["automatic"].as_bool().unwrap_or(true),
        trace_id: str_of(&v["trace_id"], "value"),
        trace_status: str_of(&v["trace_id"], "status"),
        statement_descriptor: str_of(v, "statement_descriptor"),
        method: str_of(v, "method"),
    })
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn int_of(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// An id, or the id of an expanded object.
fn id_of(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(id) => Some(id.clone()),
        Value::Object(object) => object.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn donation_id_of(v: &Value) -> Option<Uuid> {
    v.get("metadata")
        .and_then(|m| m.get("donation_id"))
        .and_then(Value::as_str)
        .and_then(|id| Uuid::parse_str(id).ok())
}

fn required_id(v: &Value) -> Result<String, String> {
    str_of(v, "id").ok_or_else(|| "the object has no id".to_owned())
}

fn currency_of(v: &Value) -> String {
    str_of(v, "currency")
        .unwrap_or_default()
        .to_ascii_lowercase()
}

pub fn payment_intent(v: &Value) -> Result<PaymentIntentFacts, String> {
    let status = match v.get("status").and_then(Value::as_str) {
        Some("succeeded") => PaymentStatus::Succeeded,
        Some("processing") => PaymentStatus::Processing,
        Some("canceled") => PaymentStatus::Canceled,
        // Back to waiting for a payment method after an attempt failed.
        Some("requires_payment_method") if !v["last_payment_error"].is_null() => {
            PaymentStatus::Failed
        }
        Some(_) => PaymentStatus::Pending,
        None => return Err("the PaymentIntent has no status".to_owned()),
    };
    let latest_charge = match v.get("latest_charge") {
        Some(Value::String(id)) => Some(ChargeRef::Id(id.clone())),
        Some(object @ Value::Object(_)) => Some(ChargeRef::Object(Box::new(charge(object)?))),
        _ => None,
    };
    Ok(PaymentIntentFacts {
        id: required_id(v)?,
        donation_id: donation_id_of(v),
        status,
        amount_received: int_of(v, "amount_received"),
        currency: currency_of(v),
        latest_charge,
    })
}

/// A balance transaction named by `key`: its id, or the object when expanded.
fn balance_transaction_of(v: &Value, key: &str) -> Result<Option<BalanceTransactionRef>, String> {
    Ok(match v.get(key) {
        Some(Value::String(id)) => Some(BalanceTransactionRef::Id(id.clone())),
        Some(object @ Value::Object(_)) => {
            Some(BalanceTransactionRef::Object(balance_transaction(object)?))
        }
        _ => None,
    })
}

pub fn charge(v: &Value) -> Result<ChargeFacts, String> {
    let balance_transaction = balance_transaction_of(v, "balance_transaction")?;
    let refunds = match v.get("refunds") {
        Some(list @ Value::Object(_)) => {
            let refunds = list
                .get("data")
                .and_then(Value::as_array)
                .map(|items| items.iter().map(refund).collect::<Result<Vec<_>, _>>())
                .transpose()?
                .unwrap_or_default();
            Some(RefundList {
                refunds,
                complete: !list["has_more"].as_bool().unwrap_or(false),
            })
        }
        _ => None,
    };
    Ok(ChargeFacts {
        id: required_id(v)?,
        payment_intent: id_of(v, "payment_intent"),
        donation_id: donation_id_of(v),
        succeeded: v["status"] == "succeeded" && v["captured"] != Value::Bool(false),
        failed: v["status"] == "failed",
        amount_captured: int_of(v, "amount_captured"),
        amount_refunded: int_of(v, "amount_refunded"),
        currency: currency_of(v),
        balance_transaction,
        refunds,
    })
}

pub fn balance_transaction(v: &Value) -> Result<BalanceTransactionFacts, String> {
    Ok(BalanceTransactionFacts {
        id: required_id(v)?,
        amount: int_of(v, "amount"),
        fee: int_of(v, "fee"),
        net: int_of(v, "net"),
        currency: currency_of(v),
        kind: str_of(v, "type"),
        reporting_category: str_of(v, "reporting_category"),
        source: id_of(v, "source"),
        created: time_of(v, "created"),
    })
}

/// A time Stripe gives in unix seconds.
fn time_of(v: &Value, key: &str) -> Option<OffsetDateTime> {
    v.get(key)
        .and_then(Value::as_i64)
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
}

pub fn refund(v: &Value) -> Result<RefundFacts, String> {
    Ok(RefundFacts {
        id: required_id(v)?,
        amount: int_of(v, "amount"),
        currency: currency_of(v),
        status: RefundStatus::parse(&str_of(v, "status").unwrap_or_else(|| "pending".to_owned())),
        charge: id_of(v, "charge"),
        payment_intent: id_of(v, "payment_intent"),
        balance_transaction: balance_transaction_of(v, "balance_transaction")?,
        failure_balance_transaction: balance_transaction_of(v, "failure_balance_transaction")?,
    })
}

pub fn dispute(v: &Value) -> Result<DisputeFacts, String> {
    let balance_transactions = v
        .get("balance_transactions")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter(|t| t.is_object())
                .map(balance_transaction)
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    Ok(DisputeFacts {
        id: required_id(v)?,
        amount: int_of(v, "amount"),
        currency: currency_of(v),
        status: DisputeStatus::parse(
            v.get("status")
                .and_then(Value::as_str)
                .ok_or("the dispute has no status")?,
        ),
        charge: id_of(v, "charge"),
        payment_intent: id_of(v, "payment_intent"),
        balance_transactions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_succeeded_payment_intent_names_the_charge_that_paid() {
        let failed = payment_intent(&serde_json::json!({
            "id": "pi_1", "status": "requires_payment_method", "latest_charge": "ch_declined",
            "last_payment_error": {"code": "card_declined"}, "amount_received": 0, "currency": "gbp"
        }))
        .unwrap();
        assert_eq!(failed.status, PaymentStatus::Failed);
        assert_eq!(failed.paid_by(), None);
        let paid = payment_intent(&serde_json::json!({
            "id": "pi_1", "status": "succeeded", "latest_charge": "ch_paid",
            "amount_received": 2500, "currency": "GBP"
        }))
        .unwrap();
        assert_eq!(paid.paid_by(), Some("ch_paid"));
        assert_eq!(paid.currency, "gbp");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn fixture(text: &str) -> Value {
            serde_json::from_str(text).unwrap()
        }

        proptest! {
        #![proptest_config(crate::arbitrary::config())]
                    /// What a signed event carries is read field by field: any shape is a fact or a
                    /// refusal (the event is then set aside), never a panic in the worker.
                    #[test]
                    fn every_stripe_object_reader_takes_any_json_without_a_panic(
                        object in prop_oneof![
                            crate::arbitrary::object(),
                            crate::arbitrary::variant_of(fixture(include_str!("../../tests/fixtures/stripe/payment_intent.json"))),
                            crate::arbitrary::variant_of(fixture(include_str!("../../tests/fixtures/stripe/charge.json"))),
                            crate::arbitrary::variant_of(fixture(include_str!("../../tests/fixtures/stripe/refund.json"))),
                            crate::arbitrary::variant_of(fixture(include_str!("../../tests/fixtures/stripe/dispute.json"))),
                            crate::arbitrary::variant_of(serde_json::json!({
                                "id": "po_1", "object": "payout", "amount": 1000, "currency": "gbp",
                                "status": "paid", "automatic": true, "created": 1_700_000_000,
                                "arrival_date": 1_700_086_400, "reconciliation_status": "completed",
                                "balance_transaction": "txn_1", "failure_balance_transaction": null
                            })),
                            crate::arbitrary::variant_of(fixture(include_str!("../../tests/fixtures/stripe/balance_transaction.json"))),
                        ],
                    ) {
                        let _ = payment_intent(&object);
                        let _ = charge(&object);
                        let _ = balance_transaction(&object);
                        let _ = refund(&object);
                        let _ = dispute(&object);
                        let _ = payout(&object);
                        if let Ok(intent) = payment_intent(&object) {
                            let _ = intent.paid_by();
                        }
                    }
                }
    }
}
