//! The worker: applies stored events in the background, in batches, each event in a savepoint
//! of its own so that one failure does not hold up the rest. Failures are retried with
//! back-off, and the last error is kept on the event. Several instances may share a database:
//! events are claimed with `FOR UPDATE SKIP LOCKED`, so each is applied once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::{Acquire, PgPool};
use tokio::sync::{Notify, watch};

use super::apply::{self, Outcome};
use crate::campaigns::cache::CampaignCache;
use crate::payments::Payments;

/// Events claimed in one transaction.
const BATCH: i64 = 200;
/// How often an idle worker looks for events another instance stored.
const POLL: Duration = Duration::from_millis(250);
/// The longest an idle worker waits while the database is unreachable.
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// The longest wait between two attempts at a failing event.
const MAX_BACKOFF_SECS: f64 = 3600.0;

#[derive(Clone)]
pub struct Worker {
    db: PgPool,
    payments: Payments,
    wake: Arc<Notify>,
    campaigns: Arc<CampaignCache>,
}

impl Worker {
    pub fn new(
        db: PgPool,
        payments: Payments,
        wake: Arc<Notify>,
        campaigns: Arc<CampaignCache>,
    ) -> Self {
        Self {
            db,
            payments,
            wake,
            campaigns,
        }
    }

    /// Applies events until `stop` turns true, finishing the batch in hand.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!("the event worker started");
        let mut failures = 0u32;
        while !*stop.borrow() {
            let mut pause = POLL;
            match self.apply_due().await {
                Ok(0) => failures = 0,
                Ok(_) => {
                    failures = 0;
                    continue;
                }
                Err(error) => {
                    // The database is away: wait longer each time, up to half a minute.
                    failures += 1;
                    pause = (POLL * 2u32.pow(failures.min(7))).min(MAX_PAUSE);
                    tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "the event worker could not take a batch");
                }
            }
            tokio::select! {
                () = self.wake.notified(), if failures == 0 => {}
                () = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {}
            }
        }
        tracing::info!("the event worker stopped");
    }

    /// Applies one batch of due events; returns how many it took. The batch is first applied
    /// in one plain transaction; if any event fails, that is rolled back and the batch applied
    /// again with each event in a savepoint of its own, so the failure is kept to its event.
    pub async fn apply_due(&self) -> sqlx::Result<usize> {
        match self.apply_batch(false).await {
            Ok(taken) => Ok(taken),
            Err(BatchError::EventFailed) => match self.apply_batch(true).await {
                Ok(taken) => Ok(taken),
                Err(BatchError::Database(error)) => Err(error),
                Err(BatchError::EventFailed) => unreachable!("isolated failures are recorded"),
            },
            Err(BatchError::Database(error)) => Err(error),
        }
    }

    async fn apply_batch(&self, isolate: bool) -> Result<usize, BatchError> {
        let mut tx = self.db.begin().await?;
        let due = sqlx::query!(
            r#"SELECT id, type AS kind, created, payload, attempts FROM stripe_events
               WHERE state = 'pending' AND next_attempt_at <= now()
               ORDER BY next_attempt_at, created, id
               LIMIT $1
               FOR UPDATE SKIP LOCKED"#,
            BATCH
        )
        .fetch_all(&mut *tx)
        .await?;

        let mut applied = Vec::new();
        let mut ignored = Vec::new();
        let mut totals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for event in &due {
            let object = &event.payload["data"]["object"];
            let result = if isolate {
                let mut savepoint = tx.begin().await?;
                let result = apply::apply(
                    &mut savepoint,
                    &self.payments,
                    &event.kind,
                    event.created,
                    object,
                )
                .await;
                if result.is_ok() {
                    savepoint.commit().await?;
                } else {
                    savepoint.rollback().await?;
                }
                result
            } else {
                apply::apply(&mut tx, &self.payments, &event.kind, event.created, object).await
            };
            match result {
                Ok(Outcome::Applied(delta)) => {
                    applied.push(event.id.clone());
                    if let Some(delta) = delta {
                        let total = totals.entry(delta.campaign).or_default();
                        total.0 += delta.raised;
                        total.1 += delta.count;
                    }
                }
                Ok(Outcome::Ignored(reason)) => ignored.push((event.id.clone(), reason)),
                Err(_) if !isolate => {
                    tx.rollback().await?;
                    return Err(BatchError::EventFailed);
                }
                Err(error) => {
                    let backoff = 2f64.powi(event.attempts.min(12)).min(MAX_BACKOFF_SECS);
                    tracing::warn!(event_id = %event.id, kind = %event.kind, attempts = event.attempts + 1,
                        retry_in_secs = backoff, error = %error, "could not apply an event");
                    sqlx::query!(
                        r#"UPDATE stripe_events
                           SET attempts = attempts + 1, last_error = $2,
                               next_attempt_at = now() + make_interval(secs => $3)
                           WHERE id = $1"#,
                        event.id,
                        error.to_string(),
                        backoff
                    )
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }

        sqlx::query!(
            r#"UPDATE stripe_events
               SET state = 'applied', applied_at = now(), attempts = attempts + 1, last_error = NULL
               WHERE id = ANY($1)"#,
            &applied
        )
        .execute(&mut *tx)
        .await?;
        for (id, reason) in &ignored {
            sqlx::query!(
                r#"UPDATE stripe_events
                   SET state = 'ignored', attempts = attempts + 1, last_error = $2
                   WHERE id = $1"#,
                id,
                reason
            )
            .execute(&mut *tx)
            .await?;
        }
        // Each campaign's total moves once per batch, in slug order, last of all: the hot
        // campaign row stays locked only while the batch commits.
        for (campaign, (raised, count)) in &totals {
            sqlx::query!(
                r#"UPDATE campaigns
                   SET raised_amount = raised_amount + $2, donation_count = donation_count + $3
                   WHERE slug = $1"#,
                campaign,
                raised,
                count
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        for campaign in totals.keys() {
            self.campaigns.forget(campaign);
        }
        Ok(due.len())
    }
}

enum BatchError {
    /// An event failed in a batch applied without savepoints.
    EventFailed,
    Database(sqlx::Error),
}

impl From<sqlx::Error> for BatchError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error)
    }
}
