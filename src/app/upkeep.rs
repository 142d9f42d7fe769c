//! The housekeeping every instance does in the background, whether or not it applies events.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::webhooks::worker::Worker;

/// Upkeep: every minute, the card-testing counts no window counts any more go, stored events
/// applied more than `payload_retention` ago lose their personal data (in batches), the
/// metrics' recent samples are folded in and the claims of instances gone are released; every
/// hour, expired Idempotency-Keys.
pub(super) async fn housekeeping(
    db: PgPool,
    attempts_kept: Duration,
    payload_retention: Duration,
    metrics: Metrics,
    worker: Option<Worker>,
    mut stop: watch::Receiver<bool>,
) {
    let mut every_minute = tokio::time::interval(Duration::from_secs(60));
    let mut minutes = 0u64;
    loop {
        tokio::select! {
            _ = every_minute.tick() => {}
            _ = stop.changed() => return,
        }
        metrics.upkeep();
        if let Err(error) = crate::donations::limits::prune(&db, attempts_kept).await {
            tracing::warn!(%error, "could not delete old donation attempts");
        }
        let batch = crate::webhooks::payloads::BATCH;
        match crate::webhooks::payloads::strip_expired(&db, payload_retention, batch).await {
            Ok(0) => {}
            Ok(stripped) => {
                tracing::info!(stripped, "old event payloads stripped of personal data")
            }
            Err(error) => tracing::warn!(%error, "could not strip old event payloads"),
        }
        if let Some(worker) = &worker {
            worker.release_orphaned_claims().await;
        }
        minutes += 1;
        if minutes % 60 != 1 {
            continue;
        }
        match crate::idempotency::expire(&db).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "expired idempotency keys deleted"),
            Err(error) => tracing::warn!(%error, "could not delete expired idempotency keys"),
        }
    }
}
