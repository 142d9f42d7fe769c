//! Builds the application from its settings, exactly as production and the tests run it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::campaigns::cache::CampaignCache;
use crate::campaigns::catalogue;
use crate::config::{Config, PaymentsMode};
use crate::db::Database;
use crate::donations::abandoned::Abandoned;
use crate::donations::fees::FeeModel;
use crate::metrics::Metrics;
use crate::operations::metrics::{Exposure, Scrape};
use crate::payments::Payments;
use crate::simulator::routes::Simulator;
use crate::simulator::{self, SimulatedStripe};
use crate::webhooks::signature::Verifier;
use crate::webhooks::worker::Worker;

/// Event worker loops per instance. Applying is mostly waiting on the database, so several
/// loops (each on its own batch) keep both it and the service busy; see BENCHMARKS.md.
const WORKERS: usize = 4;

/// How long, after SIGTERM, requests in flight and the worker's batches have to finish: short
/// enough that the whole shutdown (then closing the pool, at most 2 s, and stopping the
/// built-in Postgres) ends within the ten seconds an orchestrator gives before it kills, even on
/// a busy machine.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub payments: Payments,
    pub fees: FeeModel,
    /// How long a request may hold its Idempotency-Key before another may take it over.
    pub idempotency_lease: Duration,
    /// Checks Stripe's webhook signatures.
    pub webhooks: Verifier,
    /// Whether our Stripe key is a live one; events of the other mode are not applied.
    pub livemode: bool,
    /// Stores verified webhook events, a group per commit.
    pub ingest: crate::webhooks::ingest::Ingest,
    /// Wakes the event worker when a new event is stored.
    pub wake_worker: Arc<Notify>,
    /// The simulated Stripe's controls, when payments are simulated.
    pub simulator: Option<Simulator>,
    /// Campaigns as the API shows them, kept for a second.
    pub campaigns: Arc<CampaignCache>,
    /// After how many days a succeeded donation in no paid payout is overdue.
    pub payout_overdue_days: i64,
    /// Card-testing caps on new donations.
    pub donation_limits: Arc<crate::donations::limits::Limits>,
    /// The captcha those a cap refused must solve, if one is configured.
    pub captcha: Option<crate::donations::limits::Captcha>,
    /// What `/metrics` shows.
    pub metrics: Metrics,
    /// What the quick-donate page needs beyond the campaign.
    pub page: Arc<crate::donate_page::PageSettings>,
}

/// The service, bound to its address and ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    /// `METRICS_ADDR`'s listener and its router, when `/metrics` is served apart.
    metrics_listener: Option<(TcpListener, Router)>,
    metrics: Metrics,
    database: Database,
    worker: Worker,
    abandoned: Abandoned,
    /// Delivers the receipts owed.
    receipts: crate::receipts::sender::Sender,
    run_worker: bool,
    /// How long a donation attempt counts for a card-testing cap.
    attempts_kept: Duration,
    /// How long a stored event keeps its personal data once applied.
    payload_retention: Duration,
}

impl Application {
    /// Binds the listener, opens the database, runs the migrations, sets up payments (the
    /// simulated Stripe keeps its objects in the database) and loads the campaign catalogue.
    pub async fn build(settings: Config) -> anyhow::Result<Self> {
        let campaigns = catalogue::read(&settings.campaigns_file)?;
        let payload_retention = settings.event_payload_retention;
        let listener = TcpListener::bind(settings.listen_addr)
            .await
            .with_context(|| format!("LISTEN_ADDR: cannot bind {}", settings.listen_addr))?;
        let address = listener.local_addr()?;
        let metrics_listener = match settings.metrics_addr {
            Some(metrics_addr) => Some(
                TcpListener::bind(metrics_addr)
                    .await
                    .with_context(|| format!("METRICS_ADDR: cannot bind {metrics_addr}"))?,
            ),
            None => None,
        };
        let database = Database::open(&settings.database).await?;
        let set_up = async {
            database.migrate().await?;
            let payments = payments_for(&settings, address, &database.pool).await?;
            catalogue::sync(&database.pool, &campaigns).await?;
            anyhow::Ok(payments)
        }
        .await;
        // A failed start leaves no local Postgres of ours running behind it.
        let (payments, simulator, secrets, livemode) = match set_up {
            Ok(set_up) => set_up,
            Err(error) => {
                database.close().await;
                return Err(error);
            }
        };
        if simulator.is_some() && !crate::config::is_loopback(address) {
            tracing::warn!(
                %address,
                "SIMULATED PAYMENTS on {address}, beyond loopback (PAYMENTS=simulated): anyone \
                 who can reach it can mark donations paid through /v1/simulator. No money moves."
            );
        }

        let metrics = Metrics::new();
        let payments = payments.with_metrics(metrics.clone());
        let wake_worker = Arc::new(Notify::new());
        let campaigns = Arc::new(CampaignCache::new(settings.campaign_cache));
        let stripe = simulator.is_none();
        let state = AppState {
            db: database.pool.clone(),
            payments: payments.clone(),
            fees: FeeModel::new(settings.fees),
            // Longer than the slowest Stripe call with its retries, so a live request keeps its key.
            idempotency_lease: settings.stripe.timeout * 4 + Duration::from_secs(30),
            webhooks: Verifier::new(secrets, settings.webhook_tolerance),
            livemode,
            ingest: crate::webhooks::ingest::Ingest::start(database.pool.clone(), metrics.clone()),
            wake_worker: wake_worker.clone(),
            simulator,
            campaigns: campaigns.clone(),
            payout_overdue_days: settings.payout_overdue_days,
            donation_limits: Arc::new(crate::donations::limits::Limits::new(
                &settings.card_testing,
            )),
            captcha: settings
                .card_testing
                .captcha
                .as_ref()
                .map(crate::donations::limits::Captcha::new),
            metrics: metrics.clone(),
            page: Arc::new(crate::donate_page::PageSettings::new(
                settings.receipts.charity_name.clone(),
                &settings.allowed_origins,
                stripe,
            )),
        };
        let abandoned = Abandoned::new(
            database.pool.clone(),
            payments.clone(),
            settings.abandoned_after,
        );
        let receipts = crate::receipts::sender::Sender::new(
            database.pool.clone(),
            crate::receipts::sender::Transport::new(&settings.receipts),
            crate::receipts::message::Charity::new(&settings.receipts),
        );
        let worker = Worker::new(
            database.pool.clone(),
            payments,
            wake_worker,
            campaigns,
            settings.event_max_attempts,
        )
        .with_metrics(metrics.clone());
        let attempts_kept = state.donation_limits.longest_window();
        let scrape = Scrape {
            metrics: metrics.clone(),
            db: database.pool.clone(),
            exposure: match (&metrics_listener, settings.app_env) {
                (Some(_), _) => Exposure::Elsewhere,
                (None, crate::config::AppEnv::Production) => Exposure::LoopbackOnly,
                (None, crate::config::AppEnv::Development) => Exposure::Anyone,
            },
        };
        let metrics_listener = metrics_listener.map(|listener| {
            let scrape = Scrape {
                exposure: Exposure::Anyone,
                ..scrape.clone()
            };
            (listener, crate::http::metrics_router(scrape))
        });
        let router = crate::http::router(state, settings.allowed_origins.clone(), scrape);
        Ok(Self {
            listener,
            router,
            metrics_listener,
            metrics,
            database,
            worker,
            abandoned,
            receipts,
            run_worker: settings.apply_events,
            attempts_kept,
            payload_retention,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Where `/metrics` is served on a listener of its own (`METRICS_ADDR`), if it is.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    pub fn db(&self) -> &PgPool {
        &self.database.pool
    }

    /// The event worker, to drive by hand (as the tests do with `APPLY_EVENTS=false`).
    pub fn worker(&self) -> Worker {
        self.worker.clone()
    }

    /// The sweep of abandoned payments, to run by hand (as the tests do).
    pub fn abandoned(&self) -> Abandoned {
        self.abandoned.clone()
    }

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
        if self.run_worker {
            // What a killed predecessor held is applied now, not when its claims run out.
            self.worker.release_orphaned_claims().await;
            for _ in 0..WORKERS {
                workers.spawn(self.worker.clone().run(stopped.clone()));
            }
            tracing::info!(loops = WORKERS, "the event worker started");
            workers.spawn(self.abandoned.clone().run(stopped.clone()));
            workers.spawn(self.receipts.clone().run(stopped.clone()));
        }
        let housekeeping = tokio::spawn(housekeeping(
            self.database.pool.clone(),
            self.attempts_kept,
            self.payload_retention,
            self.metrics.clone(),
            self.run_worker.then(|| self.worker.clone()),
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
        let mut rest = vec![housekeeping];
        rest.extend(metrics_server);
        for task in rest {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                abort.abort();
            }
        }
        self.database.close().await;
        match served {
            Some(Ok(result)) => result.context("the HTTP server failed"),
            Some(Err(panicked)) => Err(anyhow::anyhow!("the HTTP server failed: {panicked}")),
            None => Ok(()),
        }
    }
}

/// Upkeep: every minute, the card-testing counts no window counts any more go, stored events
/// applied more than `payload_retention` ago lose their personal data (in batches), the
/// metrics' recent samples are folded in and the claims of instances gone are released; every
/// hour, expired Idempotency-Keys.
async fn housekeeping(
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
        let batch = crate::privacy::payloads::BATCH;
        match crate::privacy::payloads::strip_expired(&db, payload_retention, batch).await {
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

/// The Stripe client (real, or pointed at the simulated Stripe), the simulator's controls if
/// simulated, the webhook secrets, and whether the key is live.
async fn payments_for(
    settings: &Config,
    address: SocketAddr,
    db: &PgPool,
) -> anyhow::Result<(Payments, Option<Simulator>, Vec<SecretString>, bool)> {
    match settings.payments.clone() {
        PaymentsMode::Stripe {
            secret_key,
            publishable_key,
            webhook_secrets,
        } => {
            let live = secret_key.expose_secret().contains("_live_");
            tracing::info!(live, "payments go to Stripe");
            let payments = Payments::for_stripe(&settings.stripe, &secret_key, publishable_key)?;
            Ok((payments, None, webhook_secrets, live))
        }
        PaymentsMode::Simulated { webhook_secret } => {
            let stripe = SimulatedStripe::new(db.clone());
            let base = stripe.start().await?;
            tracing::warn!(
                "SIMULATED PAYMENTS: no STRIPE_SECRET_KEY is set, so a Stripe look-alike inside \
                 this process answers. No money moves."
            );
            let payments = Payments::new(
                &SecretString::from(simulator::SECRET_KEY),
                simulator::PUBLISHABLE_KEY.to_owned(),
                &base,
                settings.stripe.timeout,
                settings.stripe.statement_descriptor_suffix.clone(),
            )?;
            // Sign the simulator's events with the configured secret, or one made for this run.
            let secret = webhook_secret.unwrap_or_else(|| {
                SecretString::from(format!("whsec_sim_{}", uuid::Uuid::new_v4().simple()))
            });
            let own = SocketAddr::new(
                if address.ip().is_unspecified() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    address.ip()
                },
                address.port(),
            );
            let simulator = Simulator::new(
                stripe,
                format!("http://{own}/v1/webhooks/stripe"),
                secret.clone(),
            );
            Ok((payments, Some(simulator), vec![secret], false))
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
