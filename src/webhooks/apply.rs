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
    self, BalanceTransactionRef, ChargeFacts, ChargeRef, DisputeFacts, PaymentStatus, RefundFacts,
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
    // What the merge leaves of the payment, if it ran; and whether refunds or disputes
    // changed, so that their sums must be counted again.
    let mut merged: Option<Merged> = None;
    let mut recount = false;
    let located = if kind.starts_with("payment_intent.") {
        let intent = objects::payment_intent(object).map_err(unreadable("PaymentIntent"))?;
        let place = Place {
            donation_id: intent.donation_id,
            payment_intent: Some(&intent.id),
            charge: None,
        };
        let located = locate(tx, payments, place).await?;
        if let Located::Donation(current) = &located {
            let (intent, at) = if current.payment_status_at.is_some_and(|at| created < at) {
                // An older picture than ours: take Stripe's current one instead.
                let fetched = payments.retrieve_payment_intent(&intent.id).await?;
                let fetched =
                    objects::payment_intent(&fetched).map_err(unreadable("PaymentIntent"))?;
                (fetched, OffsetDateTime::now_utc())
            } else {
                (intent, created)
            };
            let charge = intent.latest_charge.as_ref().map(ChargeRef::id);
            let row = merge_payment(
                tx,
                current,
                Some(intent.status),
                at,
                intent.amount_received,
                charge,
            )
            .await?;
            if let Some(ChargeRef::Object(charge)) = &intent.latest_charge {
                let (row, refunds) = merge_charge(tx, payments, &row.current(), charge, at).await?;
                recount |= refunds;
                merged = Some(row);
            } else {
                merged = Some(row);
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
        if let Located::Donation(current) = &located {
            upsert_dispute(tx, current.id, &dispute).await?;
            recount = true;
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
        if let Located::Donation(current) = &located {
            upsert_refund(tx, current.id, &refund).await?;
            recount = true;
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
        if let Located::Donation(current) = &located {
            let (row, refunds) = merge_charge(tx, payments, current, &charge, created).await?;
            recount |= refunds;
            merged = Some(row);
        }
        located
    } else {
        return Ok(Outcome::Ignored(format!("{kind} is not a type we apply")));
    };

    match located {
        Located::Donation(current) => {
            let delta = match merged {
                Some(row) if !recount => settle_payment(tx, current.id, row).await?,
                _ => settle(tx, current.id).await?,
            };
            Ok(Outcome::Applied(delta))
        }
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
    Donation(Current),
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
        let row = sqlx::query_as!(
            Current,
            r#"SELECT id, payment_intent_id, payment_status, payment_status_at, fee
               FROM donations WHERE id = $1 FOR UPDATE"#,
            id
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            return match (&row.payment_intent_id, place.payment_intent) {
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
                    Ok(Located::Donation(row))
                }
                _ => Ok(Located::Donation(row)),
            };
        }
    }
    if let Some(intent) = place.payment_intent {
        let row = sqlx::query_as!(
            Current,
            r#"SELECT id, payment_intent_id, payment_status, payment_status_at, fee
               FROM donations WHERE payment_intent_id = $1 FOR UPDATE"#,
            intent
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            return Ok(Located::Donation(row));
        }
    }
    if let Some(charge) = place.charge {
        let row = sqlx::query_as!(
            Current,
            r#"SELECT id, payment_intent_id, payment_status, payment_status_at, fee
               FROM donations WHERE charge_id = $1 FOR UPDATE"#,
            charge
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = row {
            return Ok(Located::Donation(row));
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

/// The Stripe facts of a donation that merging compares against, read as its row is locked.
struct Current {
    id: Uuid,
    payment_intent_id: Option<String>,
    payment_status: String,
    payment_status_at: Option<OffsetDateTime>,
    fee: Option<i64>,
}

impl Current {
    fn status(&self) -> PaymentStatus {
        PaymentStatus::parse(&self.payment_status).unwrap_or(PaymentStatus::Pending)
    }
}

/// The donation as a merge leaves it: what settling it needs.
struct Merged {
    id: Uuid,
    campaign: String,
    amount: i64,
    total_amount: i64,
    status: String,
    payment_status: String,
    payment_status_at: Option<OffsetDateTime>,
    fee: Option<i64>,
    counted_amount: i64,
    refunded_amount: i64,
    dispute_lost_amount: i64,
}

impl Merged {
    fn current(&self) -> Current {
        Current {
            id: self.id,
            payment_intent_id: None,
            payment_status: self.payment_status.clone(),
            payment_status_at: self.payment_status_at,
            fee: self.fee,
        }
    }
}

/// Whether `status` as of `at` is later than the payment status we hold. Success and
/// cancellation are final: nothing Stripe sends afterwards undoes them.
fn is_later(current: &Current, status: PaymentStatus, at: OffsetDateTime) -> bool {
    let Some(held_at) = current.payment_status_at else {
        return true;
    };
    let held = current.status();
    let final_already = held.rank() == PaymentStatus::Succeeded.rank();
    !final_already && (at, status.rank()) > (held_at, held.rank())
}

/// Merges what a PaymentIntent or charge says of the payment, in one statement: the status
/// (if later than ours), the amount received (the most seen), the charge (the first seen).
async fn merge_payment(
    tx: &mut PgConnection,
    current: &Current,
    status: Option<PaymentStatus>,
    at: OffsetDateTime,
    amount_received: i64,
    charge_id: Option<&str>,
) -> sqlx::Result<Merged> {
    let status = status.filter(|s| is_later(current, *s, at));
    sqlx::query_as!(
        Merged,
        r#"UPDATE donations
           SET payment_status = COALESCE($2, payment_status),
               payment_status_at = CASE WHEN $2::text IS NULL THEN payment_status_at ELSE $3 END,
               amount_received = GREATEST(amount_received, $4),
               charge_id = COALESCE(charge_id, $5),
               updated_at = now()
           WHERE id = $1
           RETURNING id, campaign, amount, total_amount, status, payment_status,
                     payment_status_at, fee, counted_amount, refunded_amount, dispute_lost_amount"#,
        current.id,
        status.map(PaymentStatus::as_str),
        at,
        amount_received,
        charge_id
    )
    .fetch_one(&mut *tx)
    .await
}

/// Merges a charge: the payment, the fee once it exists, and refunds. Returns the merged row
/// and whether refunds were written.
async fn merge_charge(
    tx: &mut PgConnection,
    payments: &Payments,
    current: &Current,
    charge: &ChargeFacts,
    at: OffsetDateTime,
) -> Result<(Merged, bool), ApplyError> {
    let id = current.id;
    let status = charge.succeeded.then_some(PaymentStatus::Succeeded);
    let received = if charge.succeeded {
        charge.amount_captured
    } else {
        0
    };
    let merged = merge_payment(tx, current, status, at, received, Some(&charge.id)).await?;

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
    let mut refunds = false;
    for refund in &charge.refunds {
        upsert_refund(tx, id, refund).await?;
        refunds = true;
    }
    if charge.amount_refunded > 0 && charge.amount_refunded > refunded_amount(tx, id).await? {
        for refund in payments.list_refunds(&charge.id).await? {
            let refund = objects::refund(&refund).map_err(unreadable("refund"))?;
            upsert_refund(tx, id, &refund).await?;
            refunds = true;
        }
    }
    Ok((merged, refunds))
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

/// After a change to the payment alone: the refunds and disputes are as stored, so derive the
/// status and the counted amount from the merged row, and write them if they moved.
async fn settle_payment(
    tx: &mut PgConnection,
    id: Uuid,
    row: Merged,
) -> sqlx::Result<Option<CampaignDelta>> {
    let (status, counted) = derive(
        &row.payment_status,
        row.amount,
        row.total_amount,
        row.refunded_amount,
        row.dispute_lost_amount,
    );
    if status != row.status || counted != row.counted_amount {
        sqlx::query!(
            "UPDATE donations SET status = $2, counted_amount = $3 WHERE id = $1",
            id,
            status,
            counted
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(delta(row.campaign, row.counted_amount, counted))
}

/// After a change to refunds or disputes: count them again, then derive as above.
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
    let (status, counted) = derive(
        &row.payment_status,
        row.amount,
        row.total_amount,
        row.refunded,
        row.lost,
    );
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
    Ok(delta(row.campaign, row.counted_amount, counted))
}

/// A donation's status and what it adds to its campaign, from its payment status and sums.
fn derive(
    payment_status: &str,
    amount: i64,
    total_amount: i64,
    refunded: i64,
    lost: i64,
) -> (&str, i64) {
    let succeeded = payment_status == PaymentStatus::Succeeded.as_str();
    let status = if succeeded && refunded >= total_amount {
        "refunded"
    } else {
        payment_status
    };
    let counted = if succeeded {
        counted_amount(amount, total_amount, refunded, lost)
    } else {
        0
    };
    (status, counted)
}

fn delta(campaign: String, before: i64, after: i64) -> Option<CampaignDelta> {
    (after != before).then(|| CampaignDelta {
        campaign,
        raised: after - before,
        count: i64::from(after > 0) - i64::from(before > 0),
    })
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
