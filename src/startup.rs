//! Builds the application from its settings, exactly as production and the tests run it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::campaigns::catalogue;
use crate::config::{PaymentsMode, Settings};
use crate::db::Database;
use crate::donations::fees::FeeModel;
use crate::payments::Payments;
use crate::payments::simulator::{self, SimulatedStripe};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub payments: Payments,
    pub fees: FeeModel,
    /// How long a request may hold its Idempotency-Key before another may take it over.
    pub idempotency_lease: Duration,
}

/// The service, bound to its address and ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    database: Database,
}

impl Application {
    /// Opens the database, runs the migrations, loads the campaign catalogue, sets up payments
    /// and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let campaigns = catalogue::read(&settings.campaigns_file)?;
        let payments = payments_for(&settings).await?;
        let database = Database::open(&settings).await?;
        database.migrate().await?;
        catalogue::sync(&database.pool, &campaigns).await?;

        let state = AppState {
            db: database.pool.clone(),
            payments,
            fees: settings.fee_model(),
            // Longer than the slowest Stripe call with its retries, so a live request keeps its key.
            idempotency_lease: settings.stripe_timeout() * 4 + Duration::from_secs(30),
        };
        let router = crate::http::router(state, settings.allowed_origins()?);
        let listener = TcpListener::bind(settings.listen_addr)
            .await
            .with_context(|| format!("LISTEN_ADDR: cannot bind {}", settings.listen_addr))?;
        Ok(Self {
            listener,
            router,
            database,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn db(&self) -> &PgPool {
        &self.database.pool
    }

    /// Serves until `shutdown` completes, lets requests in flight finish, then closes the
    /// database (stopping the local Postgres if we started it).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let address = self.address();
        tracing::info!("listening on http://{address}");
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await;
        tracing::info!("shutting down");
        self.database.close().await;
        served.context("the HTTP server failed")
    }
}

async fn payments_for(settings: &Settings) -> anyhow::Result<Payments> {
    match settings.payments_mode()? {
        PaymentsMode::Stripe {
            secret_key,
            publishable_key,
            ..
        } => {
            let live = publishable_key.starts_with("pk_live_");
            tracing::info!(live, "payments go to Stripe");
            Payments::new(
                &secret_key,
                publishable_key,
                &settings.stripe_api_base,
                settings.stripe_timeout(),
                settings.statement_descriptor_suffix.clone(),
                false,
            )
        }
        PaymentsMode::Simulated => {
            let base = SimulatedStripe::default().start().await?;
            tracing::warn!(
                "SIMULATED PAYMENTS: no STRIPE_SECRET_KEY is set, so a Stripe look-alike inside \
                 this process answers. No money moves."
            );
            Payments::new(
                &SecretString::from(simulator::SECRET_KEY),
                simulator::PUBLISHABLE_KEY.to_owned(),
                &base,
                settings.stripe_timeout(),
                settings.statement_descriptor_suffix.clone(),
                true,
            )
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
