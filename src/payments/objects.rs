//! The facts we take from Stripe's objects, whether an event carried them or we fetched them.
//! Read from JSON by hand, field by field, so that a field Stripe adds in a later API version
//! never stops an event from applying.

use serde_json::Value;
use uuid::Uuid;

/// A donation's payment status, as the PaymentIntent says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PaymentStatus {
    Pending,
    Failed,
    Processing,
    Succeeded,
    Canceled,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Failed => "failed",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "failed" => Self::Failed,
            "processing" => Self::Processing,
            "succeeded" => Self::Succeeded,
            "canceled" => Self::Canceled,
            _ => return None,
        })
    }

    /// Breaks ties between two states seen at the same second: a payment only moves up.
    /// A failed attempt can be followed by processing or success (the donor tries another
    /// card); success and cancellation are final.
    pub fn rank(self) -> i16 {
        match self {
            Self::Pending => 0,
            Self::Failed => 1,
            Self::Processing => 2,
            Self::Succeeded | Self::Canceled => 3,
        }
    }
}

/// What a PaymentIntent tells us.
#[derive(Debug, Clone)]
pub struct PaymentIntentFacts {
    pub id: String,
    pub donation_id: Option<Uuid>,
    pub status: PaymentStatus,
    pub amount_received: i64,
    pub latest_charge: Option<ChargeRef>,
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
    pub succeeded: bool,
    pub amount_captured: i64,
    pub amount_refunded: i64,
    pub balance_transaction: Option<BalanceTransactionRef>,
    /// Refunds the charge carried, when Stripe included them.
    pub refunds: Vec<RefundFacts>,
}

#[derive(Debug, Clone)]
pub enum BalanceTransactionRef {
    Id(String),
    Object(BalanceTransactionFacts),
}

/// The fee Stripe took and what the charity receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceTransactionFacts {
    pub id: String,
    pub fee: i64,
    pub net: i64,
}

#[derive(Debug, Clone)]
pub struct RefundFacts {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub charge: Option<String>,
    pub payment_intent: Option<String>,
}

impl RefundFacts {
    /// Refund statuses only move up: pending (1), succeeded (2), failed or canceled (3).
    /// A succeeded refund can still fail later; a failed one never comes back.
    pub fn rank(&self) -> i16 {
        match self.status.as_str() {
            "succeeded" => 2,
            "failed" | "canceled" => 3,
            _ => 1,
        }
    }

    /// Money that has left, or is leaving, the charity.
    pub fn counts(&self) -> bool {
        self.rank() < 3
    }
}

#[derive(Debug, Clone)]
pub struct DisputeFacts {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub charge: Option<String>,
    pub payment_intent: Option<String>,
    pub balance_transaction_count: i32,
    /// Stripe's dispute fees, net of any returned.
    pub fee: i64,
}

impl DisputeFacts {
    pub fn rank(&self) -> i16 {
        match self.status.as_str() {
            "warning_needs_response" | "needs_response" => 1,
            "warning_under_review" | "under_review" => 2,
            _ => 3,
        }
    }
}

/// A Stripe dispute status in our four words. An inquiry (`warning_*`) reads as the dispute it
/// may become; one closed without escalation, or prevented, as won.
pub fn dispute_status_word(status: &str) -> &'static str {
    match status {
        "warning_needs_response" | "needs_response" => "needs_response",
        "warning_under_review" | "under_review" => "under_review",
        "lost" => "lost",
        _ => "won",
    }
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
        latest_charge,
    })
}

pub fn charge(v: &Value) -> Result<ChargeFacts, String> {
    let balance_transaction = match v.get("balance_transaction") {
        Some(Value::String(id)) => Some(BalanceTransactionRef::Id(id.clone())),
        Some(object @ Value::Object(_)) => {
            Some(BalanceTransactionRef::Object(balance_transaction(object)?))
        }
        _ => None,
    };
    let refunds = v
        .get("refunds")
        .and_then(|r| r.get("data"))
        .and_then(Value::as_array)
        .map(|list| list.iter().map(refund).collect::<Result<Vec<_>, _>>())
        .transpose()?
        .unwrap_or_default();
    Ok(ChargeFacts {
        id: required_id(v)?,
        payment_intent: id_of(v, "payment_intent"),
        donation_id: donation_id_of(v),
        succeeded: v["status"] == "succeeded" && v["captured"] != Value::Bool(false),
        amount_captured: int_of(v, "amount_captured"),
        amount_refunded: int_of(v, "amount_refunded"),
        balance_transaction,
        refunds,
    })
}

pub fn balance_transaction(v: &Value) -> Result<BalanceTransactionFacts, String> {
    Ok(BalanceTransactionFacts {
        id: required_id(v)?,
        fee: int_of(v, "fee"),
        net: int_of(v, "net"),
    })
}

pub fn refund(v: &Value) -> Result<RefundFacts, String> {
    Ok(RefundFacts {
        id: required_id(v)?,
        amount: int_of(v, "amount"),
        currency: str_of(v, "currency").unwrap_or_default(),
        status: str_of(v, "status").unwrap_or_else(|| "pending".to_owned()),
        charge: id_of(v, "charge"),
        payment_intent: id_of(v, "payment_intent"),
    })
}

pub fn dispute(v: &Value) -> Result<DisputeFacts, String> {
    let transactions = v
        .get("balance_transactions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    Ok(DisputeFacts {
        id: required_id(v)?,
        amount: int_of(v, "amount"),
        currency: str_of(v, "currency").unwrap_or_default(),
        status: str_of(v, "status").ok_or("the dispute has no status")?,
        charge: id_of(v, "charge"),
        payment_intent: id_of(v, "payment_intent"),
        balance_transaction_count: i32::try_from(transactions.len()).unwrap_or(i32::MAX),
        fee: transactions.iter().map(|t| int_of(t, "fee")).sum(),
    })
}
