//! Applying a Stripe event to its donation.
//!
//! Every Stripe object adds facts to a donation, and every fact only moves one way: a payment
//! status moves to a later Stripe time (ties broken by rank), the amount received and the fee
//! are set once known, each refund and dispute moves up its own status rank. So the donation
//! ends the same whatever order the events come in and however often each comes. Where an
//! event refers to something we lack (a PaymentIntent we cannot place, a fee we have not seen,
//! refunds we have not heard of) or carries an older picture than ours, we fetch the current
//! object from Stripe.
//!
//! The donation's row is locked while its event is applied, so two events for the same
//! payment never apply at once, on this instance or any other.

use serde_json::Value;
use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::payments::objects::{
    self, BalanceTransactionRef, ChargeFacts, ChargeRef, DisputeFacts, PaymentIntentFacts,
    PaymentStatus, RefundFacts,
};
use crate::payments::{PaymentError, Payments};

/// What became of an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Applied; the campaign's total moves by this much when the transaction commits.
    Applied(Option<CampaignDelta>),
    /// Not for us: the reason is kept on the event.
    Ignored(String),
}

/// How much a campaign's total and count move. The worker adds up a batch's changes and
/// writes each campaign once, so the hot campaign row is locked only briefly at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignDelta {
    pub campaign: String,
    pub raised: i64,
    pub count: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("unreadable {0}")]
    Unreadable(String),
    #[error("fetching from Stripe: {error}: {}", source_text(error))]
    Stripe {
        #[from]
        error: PaymentError,
    },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

fn source_text(error: &PaymentError) -> String {
    std::error::Error::source(error)
        .map(ToString::to_string)
        .unwrap_or_default()
}

fn unreadable(what: &str) -> impl FnOnce(String) -> ApplyError + '_ {
    move |e| ApplyError::Unreadable(format!("{what}: {e}"))
}

/// Applies one event (`kind`, created at `created`, describing `object`) inside `tx`.
pub async fn apply(
    tx: &mut PgConnection,
    payments: &Payments,
    kind: &str,
    created: OffsetDateTime,
    object: &Value,
) -> Result<Outcome, ApplyError> {
    let located = if kind.starts_with("payment_intent.") {
        let intent = objects::payment_intent(object).map_err(unreadable("PaymentIntent"))?;
        let place = Place {
            donation_id: intent.donation_id,
            payment_intent: Some(&intent.id),
            charge: None,
        };
        let located = locate(tx, payments, place).await?;
        if let Located::Donation(id) = located {
            let current = load(tx, id).await?;
            if current.payment_status_at.is_some_and(|at| created < at) {
                // An older picture than ours: take Stripe's current one instead.
                let fetched = payments.retrieve_payment_intent(&intent.id).await?;
                let fetched =
                    objects::payment_intent(&fetched).map_err(unreadable("PaymentIntent"))?;
                merge_payment_intent(
                    tx,
                    payments,
                    id,
                    &current,
                    &fetched,
                    OffsetDateTime::now_utc(),
                )
                .await?;
            } else {
                merge_payment_intent(tx, payments, id, &current, &intent, created).await?;
            }
        }
        located
    } else if kind.starts_with("charge.dispute.") {
        let dispute = objects::dispute(object).map_err(unreadable("dispute"))?;
        let place = Place {
            donation_id: None,
            payment_intent: dispute.payment_intent.as_deref(),
            charge: dispute.charge.as_deref(),
        };
        let located = locate(tx, payments, place).await?;
        if let Located::Donation(id) = located {
            upsert_dispute(tx, id, &dispute).await?;
        }
        located
    } else if kind.starts_with("refund.") || kind == "charge.refund.updated" {
        let refund = objects::refund(object).map_err(unreadable("refund"))?;
        let place = Place {
            donation_id: None,
            payment_intent: refund.payment_intent.as_deref(),
            charge: refund.charge.as_deref(),
        };
        let located = locate(tx, payments, place).await?;
        if let Located::Donation(id) = located {
            upsert_refund(tx, id, &refund).await?;
        }
        located
    } else if kind.starts_with("charge.") {
        let charge = objects::charge(object).map_err(unreadable("charge"))?;
        let place = Place {
            donation_id: charge.donation_id,
            payment_intent: charge.payment_intent.as_deref(),
            charge: Some(&charge.id),
        };
        let located = locate(tx, payments, place).await?;
        if let Located::Donation(id) = located {
            merge_charge(tx, payments, id, &charge, created).await?;
        }
        located
    } else {
        return Ok(Outcome::Ignored(format!("{kind} is not a type we apply")));
    };

    match located {
        Located::Donation(id) => Ok(Outcome::Applied(settle(tx, id).await?)),
        Located::NotOurs(reason) => Ok(Outcome::Ignored(reason)),
    }
}

/// What an object says about which donation it belongs to.
#[derive(Debug, Clone, Copy)]
struct Place<'a> {
    donation_id: Option<Uuid>,
    payment_intent: Option<&'a str>,
    charge: Option<&'a str>,
}

enum Located {
    /// Found, and its row locked for the rest of the transaction.
    Donation(Uuid),
    NotOurs(String),
}

/// Finds and locks the donation an object belongs to: by the donation id in its metadata, by
/// its PaymentIntent, by its charge; failing those, by the metadata of the PaymentIntent as
/// Stripe has it now.
async fn locate(
    tx: &mut PgConnection,
    payments: &Payments,
    place: Place<'_>,
) -> Result<Located, ApplyError> {
    if let Some(id) = place.donation_id {
        let row = sqlx::query!(
            "SELECT payment_intent_id FROM donations WHERE id = $1 FOR UPDATE",
            id
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            return match (row.payment_intent_id, place.payment_intent) {
                (Some(ours), Some(theirs)) if ours != theirs => Ok(Located::NotOurs(format!(
                    "donation {id} belongs to PaymentIntent {ours}, not {theirs}"
                ))),
                (None, Some(theirs)) => {
                    // The webhook beat the create flow's own update; record the link now.
                    sqlx::query!(
                        "UPDATE donations SET payment_intent_id = $2 WHERE id = $1",
                        id,
                        theirs
                    )
                    .execute(&mut *tx)
                    .await?;
                    Ok(Located::Donation(id))
                }
                _ => Ok(Located::Donation(id)),
            };
        }
    }
    if let Some(intent) = place.payment_intent {
        let id = sqlx::query_scalar!(
            "SELECT id FROM donations WHERE payment_intent_id = $1 FOR UPDATE",
            intent
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = id {
            return Ok(Located::Donation(id));
        }
    }
    if let Some(charge) = place.charge {
        let id = sqlx::query_scalar!(
            "SELECT id FROM donations WHERE charge_id = $1 FOR UPDATE",
            charge
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = id {
            return Ok(Located::Donation(id));
        }
    }
    if let (Some(intent), None) = (place.payment_intent, place.donation_id) {
        let current = payments.retrieve_payment_intent(intent).await?;
        let current = objects::payment_intent(&current).map_err(unreadable("PaymentIntent"))?;
        if let Some(donation_id) = current.donation_id {
            let place = Place {
                donation_id: Some(donation_id),
                ..place
            };
            return Box::pin(locate(tx, payments, place)).await;
        }
    }
    Ok(Located::NotOurs(
        "not a quickdonate payment (no donation of ours matches)".to_owned(),
    ))
}

/// The Stripe facts of a donation that merging compares against.
struct Current {
    payment_status: PaymentStatus,
    payment_status_at: Option<OffsetDateTime>,
    fee: Option<i64>,
}

async fn load(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<Current> {
    let row = sqlx::query!(
        "SELECT payment_status, payment_status_at, fee FROM donations WHERE id = $1",
        id
    )
    .fetch_one(&mut *tx)
    .await?;
    Ok(Current {
        payment_status: PaymentStatus::parse(&row.payment_status).unwrap_or(PaymentStatus::Pending),
        payment_status_at: row.payment_status_at,
        fee: row.fee,
    })
}

/// Whether `status` as of `at` is later than the payment status we hold. Success and
/// cancellation are final: nothing Stripe sends afterwards undoes them.
fn is_later(current: &Current, status: PaymentStatus, at: OffsetDateTime) -> bool {
    let Some(held_at) = current.payment_status_at else {
        return true;
    };
    let final_already = current.payment_status.rank() == PaymentStatus::Succeeded.rank();
    !final_already && (at, status.rank()) > (held_at, current.payment_status.rank())
}

/// Merges what a PaymentIntent or charge says of the payment, in one statement: the status
/// (if later than ours), the amount received (the most seen), the charge (the first seen).
async fn merge_payment(
    tx: &mut PgConnection,
    id: Uuid,
    current: &Current,
    status: Option<PaymentStatus>,
    at: OffsetDateTime,
    amount_received: i64,
    charge_id: Option<&str>,
) -> sqlx::Result<()> {
    let status = status.filter(|s| is_later(current, *s, at));
    sqlx::query!(
        r#"UPDATE donations
           SET payment_status = COALESCE($2, payment_status),
               payment_status_at = CASE WHEN $2::text IS NULL THEN payment_status_at ELSE $3 END,
               amount_received = GREATEST(amount_received, $4),
               charge_id = COALESCE(charge_id, $5),
               updated_at = now()
           WHERE id = $1"#,
        id,
        status.map(PaymentStatus::as_str),
        at,
        amount_received,
        charge_id
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn merge_payment_intent(
    tx: &mut PgConnection,
    payments: &Payments,
    id: Uuid,
    current: &Current,
    intent: &PaymentIntentFacts,
    at: OffsetDateTime,
) -> Result<(), ApplyError> {
    let charge = intent.latest_charge.as_ref().map(ChargeRef::id);
    merge_payment(
        tx,
        id,
        current,
        Some(intent.status),
        at,
        intent.amount_received,
        charge,
    )
    .await?;
    if let Some(ChargeRef::Object(charge)) = &intent.latest_charge {
        merge_charge(tx, payments, id, charge, at).await?;
    }
    Ok(())
}

async fn merge_charge(
    tx: &mut PgConnection,
    payments: &Payments,
    id: Uuid,
    charge: &ChargeFacts,
    at: OffsetDateTime,
) -> Result<(), ApplyError> {
    let current = load(tx, id).await?;
    let status = charge.succeeded.then_some(PaymentStatus::Succeeded);
    let received = if charge.succeeded {
        charge.amount_captured
    } else {
        0
    };
    merge_payment(tx, id, &current, status, at, received, Some(&charge.id)).await?;

    // The fee: from the balance transaction, once it exists.
    if current.fee.is_none() {
        let transaction = match &charge.balance_transaction {
            Some(BalanceTransactionRef::Object(bt)) => Some(bt.clone()),
            Some(BalanceTransactionRef::Id(bt)) => {
                let fetched = payments.retrieve_balance_transaction(bt).await?;
                Some(
                    objects::balance_transaction(&fetched)
                        .map_err(unreadable("balance transaction"))?,
                )
            }
            None => None,
        };
        if let Some(bt) = transaction {
            sqlx::query!(
                r#"UPDATE donations SET balance_transaction_id = $2, fee = $3, net = $4
                   WHERE id = $1"#,
                id,
                bt.id,
                bt.fee,
                bt.net
            )
            .execute(&mut *tx)
            .await?;
        }
    }

    // Refunds: those the charge carries, then, if it says more was refunded than we know of
    // (a refund from the dashboard, or its events still to come), all of them from Stripe.
    for refund in &charge.refunds {
        upsert_refund(tx, id, refund).await?;
    }
    if charge.amount_refunded > 0 && charge.amount_refunded > refunded_amount(tx, id).await? {
        for refund in payments.list_refunds(&charge.id).await? {
            let refund = objects::refund(&refund).map_err(unreadable("refund"))?;
            upsert_refund(tx, id, &refund).await?;
        }
    }
    Ok(())
}

async fn refunded_amount(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"SELECT coalesce(sum(amount), 0)::bigint AS "sum!" FROM refunds
           WHERE donation_id = $1 AND status_rank < 3"#,
        id
    )
    .fetch_one(&mut *tx)
    .await
}

async fn upsert_refund(
    tx: &mut PgConnection,
    donation_id: Uuid,
    refund: &RefundFacts,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO refunds (id, donation_id, amount, currency, status, status_rank)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (id) DO UPDATE
               SET status = EXCLUDED.status, status_rank = EXCLUDED.status_rank, updated_at = now()
               WHERE refunds.status_rank < EXCLUDED.status_rank"#,
        refund.id,
        donation_id,
        refund.amount,
        refund.currency,
        refund.status,
        refund.rank()
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn upsert_dispute(
    tx: &mut PgConnection,
    donation_id: Uuid,
    dispute: &DisputeFacts,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO disputes (id, donation_id, amount, currency, status, status_rank,
                                 balance_transaction_count, fee)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (id) DO UPDATE
               SET amount = EXCLUDED.amount, status = EXCLUDED.status,
                   status_rank = EXCLUDED.status_rank,
                   balance_transaction_count = EXCLUDED.balance_transaction_count,
                   fee = EXCLUDED.fee, updated_at = now()
               WHERE (disputes.status_rank, disputes.balance_transaction_count)
                   < (EXCLUDED.status_rank, EXCLUDED.balance_transaction_count)"#,
        dispute.id,
        donation_id,
        dispute.amount,
        dispute.currency,
        dispute.status,
        dispute.rank(),
        dispute.balance_transaction_count,
        dispute.fee
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Derives the donation's status, refunded amount, dispute and counted amount from its facts;
/// returns how its campaign's total moves, if it does.
async fn settle(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<CampaignDelta>> {
    let row = sqlx::query!(
        r#"SELECT d.campaign, d.amount, d.total_amount, d.payment_status, d.counted_amount,
                  coalesce((SELECT sum(r.amount) FROM refunds r
                            WHERE r.donation_id = d.id AND r.status_rank < 3), 0)::bigint
                      AS "refunded!",
                  (SELECT x.status FROM disputes x WHERE x.donation_id = d.id
                   ORDER BY x.status_rank DESC, x.updated_at DESC LIMIT 1) AS dispute,
                  coalesce((SELECT sum(x.amount) FROM disputes x
                            WHERE x.donation_id = d.id AND x.status = 'lost'), 0)::bigint
                      AS "lost!",
                  coalesce((SELECT sum(x.fee) FROM disputes x WHERE x.donation_id = d.id), 0)::bigint
                      AS "dispute_fee!"
           FROM donations d WHERE d.id = $1"#,
        id
    )
    .fetch_one(&mut *tx)
    .await?;

    let succeeded = row.payment_status == PaymentStatus::Succeeded.as_str();
    let status = if succeeded && row.refunded >= row.total_amount {
        "refunded"
    } else {
        row.payment_status.as_str()
    };
    let counted = if succeeded {
        counted_amount(row.amount, row.total_amount, row.refunded, row.lost)
    } else {
        0
    };
    sqlx::query!(
        r#"UPDATE donations
           SET status = $2, refunded_amount = $3, dispute_status = $4, dispute_lost_amount = $5,
               dispute_fee = $6, counted_amount = $7, updated_at = now()
           WHERE id = $1"#,
        id,
        status,
        row.refunded,
        row.dispute.as_deref().map(objects::dispute_status_word),
        row.lost,
        row.dispute_fee,
        counted
    )
    .execute(&mut *tx)
    .await?;
    Ok((counted != row.counted_amount).then(|| CampaignDelta {
        campaign: row.campaign,
        raised: counted - row.counted_amount,
        count: i64::from(counted > 0) - i64::from(row.counted_amount > 0),
    }))
}

/// What a succeeded gift adds to its campaign: the gift itself, less what was refunded or lost
/// to a dispute beyond the donor's fee cover, never below zero. The fee cover pays Stripe, so
/// it is never counted, and a refund takes from it first.
pub fn counted_amount(amount: i64, total_amount: i64, refunded: i64, lost: i64) -> i64 {
    (total_amount - refunded - lost).min(amount).max(0)
}

#[cfg(test)]
mod tests {
    use super::counted_amount;

    #[test]
    fn the_campaign_counts_the_gift_not_the_fee_cover() {
        assert_eq!(counted_amount(1000, 1036, 0, 0), 1000);
        assert_eq!(counted_amount(1000, 1000, 0, 0), 1000);
    }

    #[test]
    fn refunds_and_lost_disputes_come_off_the_fee_cover_first() {
        assert_eq!(counted_amount(1000, 1036, 36, 0), 1000);
        assert_eq!(counted_amount(1000, 1036, 536, 0), 500);
        assert_eq!(counted_amount(1000, 1036, 0, 1036), 0);
        assert_eq!(counted_amount(1000, 1036, 500, 536), 0);
        assert_eq!(counted_amount(1000, 1036, 2000, 0), 0, "never below zero");
    }
}
