//! Abandoned payments. A donation still waiting for its payment (`pending`, or `failed` after
//! a decline and never retried) after `ABANDONED_AFTER`, or declined `DECLINES_PER_PAYMENT`
//! times (card testing through its client secret), has its PaymentIntent cancelled at Stripe
//! and becomes `canceled`: a client secret left in an old browser tab, or held by a bot with a
//! list of stolen cards, can then never take money, and finance lists hold no stale intents.
//!
//! Each pass claims a batch in one short statement (another instance skips it), calls Stripe
//! with nothing held, then records each answer in one statement of its own.

use std::time::Duration;

use futures_util::StreamExt;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::watch;
use uuid::Uuid;

use crate::payments::{Cancellation, PaymentError, Payments};

/// Donations taken per pass, and Stripe calls in flight at once.
const BATCH: i64 = 50;
const IN_FLIGHT: usize = 4;
/// How often a pass runs, and how long before a PaymentIntent Stripe would not cancel (it
/// succeeded or is processing, and its events will say so) is asked about again.
const EVERY: Duration = Duration::from_secs(60);
const RECHECK_AFTER: Duration = Duration::from_secs(3600);

/// The sweep, with what it needs.
#[derive(Clone)]
pub struct Abandoned {
    db: PgPool,
    payments: Payments,
    after: Duration,
    /// `DECLINES_PER_PAYMENT`: a donation with this many declined attempts is given up at once.
    declines: i32,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Donations now `canceled`.
    pub canceled: u64,
    /// PaymentIntents Stripe would not cancel, left for their events.
    pub not_cancelable: u64,
    /// Donations left for a later pass because Stripe could not be reached or refused.
    pub left: u64,
}

impl Abandoned {
    pub fn new(db: PgPool, payments: Payments, after: Duration, declines: i32) -> Self {
        Self {
            db,
            payments,
            after,
            declines,
        }
    }

    /// Sweeps every minute until `stop` changes.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.changed() => return,
            }
            // A pass takes a batch; a long backlog (after an outage) takes a pass per batch.
            loop {
                match self.sweep().await {
                    Ok(swept) if swept == Swept::default() => break,
                    Ok(swept) => {
                        tracing::info!(
                            canceled = swept.canceled,
                            not_cancelable = swept.not_cancelable,
                            left = swept.left,
                            "abandoned donations swept"
                        );
                        if swept.canceled + swept.not_cancelable == 0 || *stop.borrow() {
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not sweep abandoned donations");
                        break;
                    }
                }
            }
        }
    }

    /// One pass over at most [`BATCH`] donations waiting longer than `ABANDONED_AFTER`, or
    /// declined `DECLINES_PER_PAYMENT` times (the worker starts a pass as soon as one is).
    pub async fn sweep(&self) -> sqlx::Result<Swept> {
        let claimed = sqlx::query!(
            r#"UPDATE donations d SET abandon_checked_at = now()
               WHERE d.id IN (
                   SELECT id FROM donations
                   WHERE status IN ('pending', 'failed')
                     AND (created_at < now() - make_interval(secs => $1) OR declines >= $4)
                     AND (abandon_checked_at IS NULL
                          OR abandon_checked_at < now() - make_interval(secs => $2))
                   ORDER BY created_at
                   LIMIT $3
                   FOR UPDATE SKIP LOCKED)
               RETURNING d.id, d.payment_intent_id"#,
            self.after.as_secs_f64(),
            RECHECK_AFTER.as_secs_f64(),
            BATCH,
            self.declines
        )
        .fetch_all(&self.db)
        .await?;

        let answers: Vec<(Uuid, Option<String>, Result<Cancellation, PaymentError>)> =
            futures_util::stream::iter(claimed)
                .map(|row| async move {
                    let answer = match &row.payment_intent_id {
                        Some(intent) => self.payments.cancel_payment_intent(intent, row.id).await,
                        // No PaymentIntent was recorded: Stripe failed while the donation was
                        // made, so there is nothing to cancel at Stripe. Given up as ours
                        // alone (see `cancel`): should Stripe ever report it paid, that wins.
                        None => Ok(Cancellation::Missing),
                    };
                    (row.id, row.payment_intent_id, answer)
                })
                .buffer_unordered(IN_FLIGHT)
                .collect()
                .await;

        let mut swept = Swept::default();
        for (donation, intent, answer) in answers {
            match answer {
                Ok(Cancellation::Canceled { at }) => {
                    // Stripe's word: final.
                    let at = at
                        .and_then(|at| OffsetDateTime::from_unix_timestamp(at).ok())
                        .unwrap_or_else(OffsetDateTime::now_utc);
                    swept.canceled +=
                        cancel(&self.db, donation, intent.as_deref(), Some(at)).await?;
                }
                Ok(Cancellation::Missing) => {
                    // Ours alone: any word from Stripe about this donation overrides it.
                    swept.canceled += cancel(&self.db, donation, intent.as_deref(), None).await?;
                }
                Ok(Cancellation::NotCancelable { status }) => {
                    tracing::warn!(
                        %donation, stripe_status = %status,
                        "an old donation still waits here but its PaymentIntent is {status} at \
                         Stripe; its events will bring it up to date (or run `quickdonate events backfill`, \
                         `cargo run -- events backfill` in a checkout)"
                    );
                    swept.not_cancelable += 1;
                }
                Err(error) => {
                    tracing::warn!(%donation, %error, "could not cancel an abandoned PaymentIntent; trying again later");
                    if matches!(error, PaymentError::Unavailable(_)) {
                        // Stripe was away: the next pass tries again, not the next hour.
                        sqlx::query!(
                            "UPDATE donations SET abandon_checked_at = NULL WHERE id = $1",
                            donation
                        )
                        .execute(&self.db)
                        .await?;
                    }
                    swept.left += 1;
                }
            }
        }
        Ok(swept)
    }
}

/// The donation is `canceled`, unless its events moved it on meanwhile or it was given an
/// intent other than the one it was claimed with (a retry of its creation made one).
///
/// Cancelled `at` Stripe's time, it is final, as Stripe's cancellation is. Cancelled by us
/// alone (`at` is `None`: it had no intent to cancel), it carries no Stripe time, so any event
/// Stripe sends about it later wins: if the intent's id was lost in a crash after its client
/// secret was handed out and the donor paid, the payment still counts.
async fn cancel(
    db: &PgPool,
    donation: Uuid,
    intent: Option<&str>,
    at: Option<OffsetDateTime>,
) -> sqlx::Result<u64> {
    let done = sqlx::query!(
        r#"UPDATE donations
           SET status = 'canceled', payment_status = 'canceled', payment_status_at = $2,
               updated_at = now()
           WHERE id = $1 AND status IN ('pending', 'failed')
             AND payment_intent_id IS NOT DISTINCT FROM $3"#,
        donation,
        at,
        intent
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
