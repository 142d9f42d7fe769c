//! The worker: applies stored events in the background, in batches, each event in a savepoint
//! of its own so that one failure does not hold up the rest. Failures are retried with
//! back-off, and the last error is kept on the event. Several instances may share a database:
//! events are claimed with `FOR UPDATE SKIP LOCKED`, so each is applied once.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Acquire, PgConnection, PgPool};
use tokio::sync::{Notify, watch};

use super::apply::{self, Outcome};
use crate::payments::Payments;

/// Events claimed in one transaction.
const BATCH: i64 = 200;
/// How often an idle worker looks for events another instance stored.
const POLL: Duration = Duration::from_millis(250);
/// The longest wait between two attempts at a failing event.
const MAX_BACKOFF_SECS: f64 = 3600.0;

#[derive(Clone)]
pub struct Worker {
    db: PgPool,
    payments: Payments,
    wake: Arc<Notify>,
}

impl Worker {
    pub fn new(db: PgPool, payments: Payments, wake: Arc<Notify>) -> Self {
        Self { db, payments, wake }
    }

    /// Applies events until `stop` turns true, finishing the batch in hand.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!("the event worker started");
        while !*stop.borrow() {
            match self.apply_due().await {
                Ok(0) => {}
                Ok(_) => continue,
                Err(error) => {
                    tracing::warn!(%error, "the event worker could not take a batch; it will retry")
                }
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
        }
        tracing::info!("the event worker stopped");
    }

    /// Applies one batch of due events; returns how many it took.
    pub async fn apply_due(&self) -> sqlx::Result<usize> {
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
        for event in &due {
            let object = &event.payload["data"]["object"];
            let mut savepoint = tx.begin().await?;
            let result = apply::apply(
                &mut savepoint,
                &self.payments,
                &event.kind,
                event.created,
                object,
            )
            .await;
            match result {
                Ok(outcome) => {
                    savepoint.commit().await?;
                    let (state, note) = match &outcome {
                        Outcome::Applied => ("applied", None),
                        Outcome::Ignored(reason) => ("ignored", Some(reason.as_str())),
                    };
                    finish(&mut tx, &event.id, state, note).await?;
                    tracing::debug!(event_id = %event.id, kind = %event.kind, state, "event done");
                }
                Err(error) => {
                    savepoint.rollback().await?;
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
        tx.commit().await?;
        Ok(due.len())
    }
}

async fn finish(
    tx: &mut PgConnection,
    id: &str,
    state: &str,
    note: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"UPDATE stripe_events
           SET state = $2, last_error = $3, attempts = attempts + 1,
               applied_at = CASE WHEN $2 = 'applied' THEN now() END
           WHERE id = $1"#,
        id,
        state,
        note
    )
    .execute(tx)
    .await?;
    Ok(())
}
