//! The housekeeping every instance does in the background, whether or not it applies events.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;

use crate::db::Instance;
use crate::metrics::Metrics;
use crate::receipts::sender::Sender;
use crate::webhooks::worker::Worker;

/// Upkeep: every minute, the card-testing counts no window counts any more go, stored events
/// applied more than `payload_retention` ago lose their personal data (in batches) and the
/// metrics' recent samples are folded in; every ten minutes (from the first), the books are
/// checked for the metric; every hour, expired Idempotency-Keys and instances long gone.
pub(super) async fn housekeeping(
    db: PgPool,
    reads: crate::db::Reads,
    attempts_kept: Duration,
    payload_retention: Duration,
    metrics: Metrics,
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
        minutes += 1;
        if minutes % 10 == 1 {
            check_books(&reads, &metrics).await;
        }
        if minutes % 60 != 1 {
            continue;
        }
        match crate::idempotency::expire(&db).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "expired idempotency keys deleted"),
            Err(error) => tracing::warn!(%error, "could not delete expired idempotency keys"),
        }
        if let Err(error) = crate::db::forget_gone(&db).await {
            tracing::warn!(%error, "could not forget instances long gone");
        }
    }
}

/// Checks the books (`books::verify`) and sets `quickdonate_books_differences` per check.
pub(super) async fn check_books(reads: &crate::db::Reads, metrics: &Metrics) {
    use crate::books::verify;
    let report = async {
        let mut snapshot = crate::db::reading(reads).await?;
        verify::verify(&mut snapshot, verify::SETTLE).await
    };
    match report.await {
        Ok(report) => {
            let counts: Vec<(&'static str, usize)> = report
                .checks
                .iter()
                .map(|c| (c.check, c.differences.len()))
                .collect();
            metrics.books(&counts);
            if !report.ok {
                tracing::warn!(
                    differences = report.differences(),
                    "the books differ: run `quickdonate verify` to see where"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "could not check the books"),
    }
}

/// The instance's heartbeat: its lease renewed every [`Instance::heartbeat`], and, where this
/// instance applies events, the claims of instances whose lease has run out released to the
/// living (`claims`: the event worker and the receipt sender).
pub(super) async fn heartbeat(
    db: PgPool,
    instance: Instance,
    claims: Option<(Worker, Sender)>,
    mut stop: watch::Receiver<bool>,
) {
    let mut beat = tokio::time::interval(instance.heartbeat());
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = beat.tick() => {}
            _ = stop.changed() => return,
        }
        if let Err(error) = instance.renew(&db).await {
            tracing::warn!(%error, "could not renew this instance's lease");
        }
        if let Some((worker, receipts)) = &claims {
            worker.release_orphaned_claims().await;
            receipts.release_orphaned_claims().await;
        }
    }
}
