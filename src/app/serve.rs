//! Serving: the listeners, the worker's loops and the background tasks, until a signal; then a
//! shutdown bounded by [`SHUTDOWN_GRACE`].

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use super::Application;
use super::upkeep::{heartbeat, housekeeping};

/// Event worker loops per instance. Applying is mostly waiting on the database, so several
/// loops (each on its own batch) keep both it and the service busy; see BENCHMARKS.md.
const WORKERS: usize = 4;

/// How long, after SIGTERM, requests in flight and the worker's batches have to finish: short
/// enough that the whole shutdown (then closing the pool, at most 2 s, and stopping the
/// built-in Postgres) ends within the ten seconds an orchestrator gives before it kills, even on
/// a busy machine.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Application {
    /// Serves until `shutdown` completes; then stops accepting at once, and gives requests in
    /// flight and the worker's batches [`SHUTDOWN_GRACE`] to finish before closing the
    /// database (stopping the local Postgres if we started it). Whatever has not finished by
    /// then is dropped: a request not answered is the client's to retry, and a batch not
    /// applied leaves its events stored and claimed, to be applied again.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let address = self.address();
        let (stop_worker, stopped) = watch::channel(false);
        let mut workers = tokio::task::JoinSet::new();
        // The lease is taken before the first claim names this instance.
        let instance = self.database.instance.clone();
        if let Err(error) = instance.renew(&self.database.pool).await {
            tracing::warn!(%error, "could not take this instance's lease");
        }
        if self.run_worker {
            // What a killed predecessor held is applied now, not when its claims run out.
            self.worker.release_orphaned_claims().await;
            self.receipts.release_orphaned_claims().await;
            for _ in 0..WORKERS {
                workers.spawn(self.worker.clone().run(stopped.clone()));
            }
            tracing::info!(loops = WORKERS, "the event worker started");
            workers.spawn(self.abandoned.clone().run(stopped.clone()));
            workers.spawn(self.worker.clone().run_fee_lookups(stopped.clone()));
            workers.spawn(self.receipts.clone().run(stopped.clone()));
        }
        let housekeeping = tokio::spawn(housekeeping(
            self.database.pool.clone(),
            self.database.reads.clone(),
            self.attempts_kept,
            self.payload_retention,
            self.metrics.clone(),
            stopped.clone(),
        ));
        let heartbeat = tokio::spawn(heartbeat(
            self.database.pool.clone(),
            instance.clone(),
            self.run_worker
                .then(|| (self.worker.clone(), self.receipts.clone())),
            stopped.clone(),
        ));
        let metrics_server = self.metrics_listener.map(|(listener, router)| {
            if let Ok(metrics_address) = listener.local_addr() {
                tracing::info!("serving /metrics on http://{metrics_address}/metrics");
            }
            let mut stop = stopped.clone();
            tokio::spawn(async move {
                let served = axum::serve(
                    listener,
                    router.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await;
                if let Err(error) = served {
                    tracing::error!(%error, "the /metrics listener failed");
                }
            })
        });
        tracing::info!("listening on http://{address}");
        let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
        let mut server = tokio::spawn(
            axum::serve(
                self.listener,
                self.router
                    .into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = signalled.send(());
            })
            .into_future(),
        );
        // Until the signal (or the server failing on its own).
        let mut served = tokio::select! {
            _ = on_signal => None,
            done = &mut server => Some(done),
        };
        tracing::info!("shutting down");
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        // The worker finishes its batches while the last requests are answered.
        let _ = stop_worker.send(true);
        if served.is_none() {
            served = match tokio::time::timeout_at(deadline, &mut server).await {
                Ok(done) => Some(done),
                Err(_) => {
                    tracing::warn!(
                        grace_secs = SHUTDOWN_GRACE.as_secs(),
                        "requests still open after the shutdown grace; closing them"
                    );
                    server.abort();
                    None
                }
            };
        }
        let running = !workers.is_empty();
        let finished = tokio::time::timeout_at(deadline, async {
            while workers.join_next().await.is_some() {}
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                grace_secs = SHUTDOWN_GRACE.as_secs(),
                "the event worker's batch did not finish within the shutdown grace; its events \
                 are applied again later"
            );
            workers.abort_all();
            while workers.join_next().await.is_some() {}
        } else if running {
            tracing::info!("the event worker stopped");
        }
        // Upkeep and the metrics listener get what is left of the grace, and no more: a pass
        // of upkeep waiting on a database that is away, or a scraper that never finishes its
        // request, must not hold the exit.
        let mut rest = vec![housekeeping, heartbeat];
        rest.extend(metrics_server);
        for task in rest {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
            }
        }
        // Its claims (a batch cut short) are the others' at once, not when the lease runs out.
        let left = tokio::time::timeout_at(deadline, instance.leave(&self.database.pool)).await;
        if !matches!(left, Ok(Ok(()))) {
            tracing::warn!("could not give up this instance's lease; it runs out on its own");
        }
        self.database.close().await;
        match served {
            Some(Ok(result)) => result.context("the HTTP server failed"),
            Some(Err(panicked)) => Err(anyhow::anyhow!("the HTTP server failed: {panicked}")),
            None => Ok(()),
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled: a SIGTERM that arrives the moment the service says it listens
/// must already be ours to handle, or it would kill the process outright.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        let terminate = async {
            match terminate {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        let interrupt = async {
            match interrupt {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            () = terminate => {}
            () = interrupt => {}
        }
    }
}
