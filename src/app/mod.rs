//! The application: built from its configuration exactly as production and the tests run it.
//! This is the one place that knows every feature: it builds each feature's state from the
//! configuration ([`state`]), merges their routes ([`routes`]), and starts the background work.
//!
//! - [`state`]: what the handlers can reach, one state per feature;
//! - [`routes`]: every route, the layers they share, the OpenAPI document;
//! - `payments`: the real Stripe, or the simulated one;
//! - `serve`: serving until a signal, and the bounded shutdown;
//! - `upkeep`: the minute-by-minute housekeeping.

mod payments;
pub mod routes;
mod serve;
pub mod state;
mod upkeep;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use serve::{SHUTDOWN_GRACE, shutdown_signal};

use crate::campaigns::cache::CampaignCache;
use crate::campaigns::{CampaignsState, catalogue};
use crate::config::{AppEnv, Config};
use crate::db::Database;
use crate::donate_page::PageState;
use crate::donations::DonationsState;
use crate::donations::abandoned::Abandoned;
use crate::donations::limits::Limits;
use crate::finance::FinanceState;
use crate::metrics::Metrics;
use crate::operations::metrics::{Exposure, Scrape};
use crate::receipts::message::Charity;
use crate::receipts::sender::{Sender, Transport};
use crate::webhooks::IntakeState;
use crate::webhooks::ingest::Ingest;
use crate::webhooks::signature::Verifier;
use crate::webhooks::worker::Worker;
use state::AppState;

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
    receipts: Sender,
    run_worker: bool,
    /// How long a donation attempt counts for a card-testing cap.
    attempts_kept: Duration,
    /// How long a stored event keeps its personal data once applied.
    payload_retention: Duration,
}

impl Application {
    /// Binds the listener, opens the database, runs the migrations, sets up payments (the
    /// simulated Stripe keeps its objects in the database) and loads the campaign catalogue.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let campaigns = catalogue::read(&config.campaigns_file)?;
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .with_context(|| format!("LISTEN_ADDR: cannot bind {}", config.listen_addr))?;
        let address = listener.local_addr()?;
        let metrics_listener = match config.metrics_addr {
            Some(metrics_addr) => Some(
                TcpListener::bind(metrics_addr)
                    .await
                    .with_context(|| format!("METRICS_ADDR: cannot bind {metrics_addr}"))?,
            ),
            None => None,
        };
        let database = Database::open(&config.database).await?;
        let set_up = async {
            database.migrate().await?;
            let payments = payments::set_up(&config, address, &database.pool).await?;
            catalogue::sync(&database.pool, &campaigns).await?;
            anyhow::Ok(payments)
        }
        .await;
        // A failed start leaves no local Postgres of ours running behind it.
        let payments::PaymentsSetUp {
            payments,
            simulator,
            webhook_secrets,
        } = match set_up {
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

        let db = database.pool.clone();
        let metrics = Metrics::new();
        let payments = payments.with_metrics(metrics.clone());
        let wake_worker = Arc::new(Notify::new());
        let campaign_cache = Arc::new(CampaignCache::new(config.campaign_cache));
        let state = AppState {
            db: db.clone(),
            reads: database.reads.clone(),
            campaigns: CampaignsState {
                db: db.clone(),
                cache: campaign_cache.clone(),
            },
            donations: DonationsState::new(db.clone(), payments.clone(), &config, metrics.clone()),
            intake: IntakeState {
                verifier: Verifier::new(webhook_secrets, config.webhook_tolerance),
                livemode: config.livemode(),
                ingest: Ingest::start(db.clone(), metrics.clone()),
                wake_worker: wake_worker.clone(),
                metrics: metrics.clone(),
            },
            finance: FinanceState {
                db: db.clone(),
                reads: database.reads.clone(),
                payout_overdue_days: config.payout_overdue_days,
            },
            page: PageState::new(
                db.clone(),
                &config,
                payments.publishable_key(),
                simulator.is_some(),
            ),
            gift_aid: crate::gift_aid::Rules::from_config(&config.gift_aid),
            staff: crate::staff::StaffState::new(db.clone(), &config)?,
        };
        let abandoned = Abandoned::new(
            db.clone(),
            payments.clone(),
            config.abandoned_after,
            config.card_testing.declines_per_payment,
        );
        let receipts = Sender::new(
            db.clone(),
            database.instance.clone(),
            Transport::new(&config.receipts),
            Charity::new(&config.receipts),
        );
        let worker = Worker::new(
            db.clone(),
            database.instance.clone(),
            payments,
            wake_worker,
            campaign_cache,
            config.event_max_attempts,
        )
        .with_metrics(metrics.clone())
        .giving_up_declined(abandoned.clone(), config.card_testing.declines_per_payment)
        .looking_up_fees_after(config.fee_lookup_after);
        let attempts_kept = Limits::new(&config.card_testing).longest_window();
        let scrape = Scrape {
            metrics: metrics.clone(),
            db,
            exposure: match (&metrics_listener, config.app_env) {
                (Some(_), _) => Exposure::Elsewhere,
                (None, AppEnv::Production) => Exposure::LoopbackOnly,
                (None, AppEnv::Development) => Exposure::Anyone,
            },
        };
        let metrics_listener = metrics_listener.map(|listener| {
            let scrape = Scrape {
                exposure: Exposure::Anyone,
                ..scrape.clone()
            };
            (listener, routes::metrics_router(scrape))
        });
        let router = routes::router(
            state,
            routes::Served {
                allowed_origins: config.allowed_origins.clone(),
                scrape,
                simulator,
                metrics: metrics.clone(),
            },
        );
        Ok(Self {
            listener,
            router,
            metrics_listener,
            metrics,
            database,
            worker,
            abandoned,
            receipts,
            run_worker: config.apply_events,
            attempts_kept,
            payload_retention: config.event_payload_retention,
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
}
