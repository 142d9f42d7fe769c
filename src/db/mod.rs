//! The database: a pool on `DATABASE_URL`, or on a local Postgres of our own when it is unset.

pub mod local;

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::Settings;
use local::{Durability, LocalPostgres};

/// Every migration in `migrations/`, compiled in.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The database the service uses, and the local server behind it if we started one.
pub struct Database {
    pub pool: PgPool,
    pub local: Option<LocalPostgres>,
}

impl Database {
    /// Connects to `DATABASE_URL`, or starts the local Postgres under `DATA_DIR`.
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let (options, local) = match settings.database_url() {
            Some(url) => {
                let options: PgConnectOptions = url
                    .parse()
                    .context("DATABASE_URL: not a valid Postgres URL")?;
                (options, None)
            }
            None => {
                let data_dir = settings.data_dir.clone();
                let pg_bin = settings.pg_bin.clone();
                let local = tokio::task::spawn_blocking(move || {
                    LocalPostgres::start(&data_dir, pg_bin.as_deref(), Durability::Durable)
                })
                .await??;
                local.ensure_database("quickdonate").await?;
                tracing::info!(
                    data_dir = %local.data_dir().display(),
                    url = %local.url("quickdonate"),
                    "using the local Postgres (no DATABASE_URL); it stops when the service does"
                );
                (local.connect_options("quickdonate"), Some(local))
            }
        };
        // Every connection names this process, so that the events it claimed can be told
        // from those of an instance that died (`webhooks::queue::release_orphaned`).
        let options =
            options.application_name(&format!("quickdonate {}", uuid::Uuid::new_v4().simple()));
        let pool = PgPoolOptions::new()
            .max_connections(settings.database_max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .context("Failed to connect to the database")?;
        Ok(Self { pool, local })
    }

    /// Applies every pending migration.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR
            .run(&self.pool)
            .await
            .context("Failed to run the database migrations")
    }

    /// Closes the pool, then stops the local Postgres if this process started it (one found
    /// running may be serving another process: `quickdonate events` beside the service).
    pub async fn close(self) {
        // Bounded: a request abandoned at shutdown may still hold a connection.
        if tokio::time::timeout(Duration::from_secs(2), self.pool.close())
            .await
            .is_err()
        {
            tracing::warn!("connections still in use at shutdown; closing the database anyway");
        }
        if let Some(local) = self.local.filter(LocalPostgres::started_here) {
            match tokio::task::spawn_blocking(move || local.stop()).await {
                Ok(Ok(())) => tracing::info!("the local Postgres stopped"),
                Ok(Err(error)) => tracing::warn!(
                    error = format!("{error:#}"),
                    "the local Postgres did not stop cleanly"
                ),
                Err(error) => tracing::warn!(%error, "the local Postgres did not stop cleanly"),
            }
        }
    }
}
