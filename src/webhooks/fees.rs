//! No fee left unknown. A gift's fee and net come with its charge's balance transaction, which
//! only `charge.*` events carry: an endpoint that receives only `payment_intent.*` events (a
//! common set-up) would never learn them, and its payouts would never reconcile. So a donation
//! that succeeded more than `FEE_LOOKUP_AFTER` ago (10 minutes by default: time for the charge's
//! events to come) and whose fee is still unknown is fetched from Stripe once (the
//! PaymentIntent with its latest charge and that charge's balance transaction, in one call,
//! with nothing held in the database) and merged as the worker merges a fetched payment.

use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use super::plan::Payment;
use super::queue::Outcomes;
use super::worker::Worker;

/// Donations looked up per pass.
const PER_PASS: i64 = 50;
/// How often an instance that applies events looks.
const EVERY: Duration = Duration::from_secs(60);

impl Worker {
    /// The same worker, looking up unknown fees `after` a donation succeeded.
    pub fn looking_up_fees_after(mut self, after: Duration) -> Self {
        self.fee_lookup_after = after;
        self
    }

    /// Looks up unknown fees every minute until `stop` turns true.
    pub async fn run_fee_lookups(self, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.changed() => return,
            }
            if let Err(error) = self.look_up_fees().await {
                tracing::warn!(%error, "could not look up unknown fees");
            }
        }
    }

    /// Looks up, once each, the fees of donations that succeeded more than `FEE_LOOKUP_AFTER`
    /// ago with no fee known; returns how many it looked up. One Stripe call per donation,
    /// outside any transaction; a donation Stripe refuses (no such PaymentIntent) is not asked
    /// for again, one Stripe could not be reached for is, on the next pass.
    pub async fn look_up_fees(&self) -> sqlx::Result<usize> {
        let before = time::OffsetDateTime::now_utc()
            - time::Duration::try_from(self.fee_lookup_after)
                .unwrap_or(time::Duration::MINUTE * 10);
        let due = sqlx::query!(
            r#"SELECT id, payment_intent_id AS "payment_intent_id!",
                      personal_data_erased_at IS NOT NULL AS "erased!"
               FROM donations
               WHERE payment_status = 'succeeded' AND fee IS NULL AND fee_looked_up_at IS NULL
                 AND payment_intent_id IS NOT NULL
                 AND payment_status_at < $1
               ORDER BY payment_status_at, id
               LIMIT $2"#,
            before,
            PER_PASS
        )
        .fetch_all(&self.db)
        .await?;
        let mut looked_up = 0;
        for donation in due {
            let fetched = match self.fetcher.payment(&donation.payment_intent_id).await {
                Ok(fetched) => Some(fetched),
                Err(error) if error.poison => {
                    tracing::warn!(donation_id = %donation.id, error = %error.message, "Stripe refused a fee lookup; not asking again");
                    None
                }
                Err(error) => {
                    tracing::info!(donation_id = %donation.id, error = %error.message, "a fee lookup waits for Stripe");
                    continue;
                }
            };
            let payment = Payment {
                donation: donation.id,
                payment_intent: Some(donation.payment_intent_id),
                erased: donation.erased,
                events: Vec::new(),
                needs: Vec::new(),
            };
            let mut tx = self.db.begin().await?;
            let applied = match &fetched {
                Some(fetched) => {
                    self.apply_in(
                        &mut tx,
                        None,
                        &[(&payment, Some(fetched))],
                        &[],
                        &Outcomes::default(),
                    )
                    .await?
                }
                None => Default::default(),
            };
            looked_up_now(&mut tx, donation.id).await?;
            tx.commit().await?;
            self.committed(&applied);
            looked_up += 1;
        }
        if looked_up > 0 {
            tracing::info!(
                looked_up,
                "fees no event brought were looked up from Stripe"
            );
        }
        Ok(looked_up)
    }
}

async fn looked_up_now(tx: &mut sqlx::PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE donations SET fee_looked_up_at = now() WHERE id = $1",
        id
    )
    .execute(tx)
    .await?;
    Ok(())
}
