//! A claim's life after it is made: submitted to HMRC (with their reference), paid (the amount
//! and the day), rejected (why), or void before it was sent; a rejected or void claim releases
//! its donations and the adjustments it carried. Each move is audited in its transaction.

use serde_json::{Map, Value};
use sqlx::PgPool;
use time::Date;
use uuid::Uuid;

use super::{Claim, find};
use crate::operators::access::Caller;
use crate::operators::audit;

/// Where a claim is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Made here, not yet sent to HMRC.
    Prepared,
    /// Sent to HMRC, with their reference.
    Submitted,
    /// HMRC paid it.
    Paid,
    /// HMRC refused it: its donations and adjustments are free for the next claim.
    Rejected,
    /// Withdrawn before it was sent: the same.
    Void,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Prepared,
        Status::Submitted,
        Status::Paid,
        Status::Rejected,
        Status::Void,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Prepared => "prepared",
            Status::Submitted => "submitted",
            Status::Paid => "paid",
            Status::Rejected => "rejected",
            Status::Void => "void",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether a claim may move from `self` to `to`: prepared to submitted or void; submitted
    /// to paid or rejected; nothing after paid, rejected or void.
    pub fn may_become(self, to: Status) -> bool {
        matches!(
            (self, to),
            (Status::Prepared, Status::Submitted | Status::Void)
                | (Status::Submitted, Status::Paid | Status::Rejected)
        )
    }
}

/// A move of a claim, with what HMRC said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    Submitted { hmrc_reference: String },
    Paid { amount_paid: i64, paid_on: Date },
    Rejected { reason: String },
    Void,
}

impl Move {
    pub fn status(&self) -> Status {
        match self {
            Move::Submitted { .. } => Status::Submitted,
            Move::Paid { .. } => Status::Paid,
            Move::Rejected { .. } => Status::Rejected,
            Move::Void => Status::Void,
        }
    }
}

/// Why a claim did not move.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("no such claim")]
    NotFound,
    #[error("a {from} claim cannot become {to}")]
    Illegal {
        from: &'static str,
        to: &'static str,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Moves claim `id` as `change` says, audited by `by` in the same transaction. A rejected or
/// void claim releases its donations and the adjustments it carried. The same move again (a
/// retried request) changes nothing and answers the claim.
pub async fn change(db: &PgPool, id: Uuid, change: &Move, by: &Caller) -> Result<Claim, MoveError> {
    let mut tx = db.begin().await?;
    let current = sqlx::query!(
        r#"SELECT status, hmrc_reference, amount_paid, paid_on, rejection_reason
           FROM gift_aid_claims WHERE id = $1 FOR UPDATE"#,
        id
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(MoveError::NotFound)?;
    let from = Status::parse(&current.status).expect("the database checks a claim's status");
    let to = change.status();
    let same = from == to
        && match change {
            Move::Submitted { hmrc_reference } => {
                current.hmrc_reference.as_ref() == Some(hmrc_reference)
            }
            Move::Paid {
                amount_paid,
                paid_on,
            } => current.amount_paid == Some(*amount_paid) && current.paid_on == Some(*paid_on),
            Move::Rejected { reason } => current.rejection_reason.as_ref() == Some(reason),
            Move::Void => true,
        };
    if !same {
        if !from.may_become(to) {
            return Err(MoveError::Illegal {
                from: from.as_str(),
                to: to.as_str(),
            });
        }
        let (reference, amount_paid, paid_on, reason) = match change {
            Move::Submitted { hmrc_reference } => (Some(hmrc_reference.as_str()), None, None, None),
            Move::Paid {
                amount_paid,
                paid_on,
            } => (None, Some(*amount_paid), Some(*paid_on), None),
            Move::Rejected { reason } => (None, None, None, Some(reason.as_str())),
            Move::Void => (None, None, None, None),
        };
        sqlx::query!(
            r#"UPDATE gift_aid_claims
               SET status = $2, status_at = now(),
                   hmrc_reference = coalesce($3, hmrc_reference),
                   amount_paid = $4, paid_on = $5, rejection_reason = $6
               WHERE id = $1"#,
            id,
            to.as_str(),
            reference,
            amount_paid,
            paid_on,
            reason
        )
        .execute(&mut *tx)
        .await?;
        if matches!(to, Status::Rejected | Status::Void) {
            sqlx::query!(
                "UPDATE gift_aid_claimed_donations SET released = true WHERE claim_id = $1",
                id
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query!(
                "UPDATE gift_aid_adjustments SET released = true WHERE carried_by = $1",
                id
            )
            .execute(&mut *tx)
            .await?;
        }
    }
    let mut filters = Map::new();
    filters.insert("id".into(), id.to_string().into());
    filters.insert("from".into(), from.as_str().into());
    filters.insert("status".into(), to.as_str().into());
    audit::record(
        &mut *tx,
        by,
        "PATCH /v1/finance/gift-aid/claims/{id}",
        &Value::Object(filters),
        if same { 0 } else { 1 },
    )
    .await?;
    let claim = find(&mut tx, id).await?.expect("the claim exists");
    tx.commit().await?;
    Ok(claim)
}
