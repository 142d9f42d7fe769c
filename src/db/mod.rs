//! The database: a pool on `DATABASE_URL`, or on a local Postgres of our own when it is unset.

mod failure;
mod instances;
pub mod local;

pub use failure::Failure;
pub use instances::{Instance, forget_gone};

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config;
use local::{Durability, LocalPostgres};
use secrecy::ExposeSecret;

/// Every migration in `migrations/`, compiled in.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The database the local Postgres keeps the service's data in.
const LOCAL_DATABASE: &str = "quickdonate";

/// The migrations this database has applied (none if it has never been migrated).
async fn applied_migrations(db: &PgPool) -> Vec<i64> {
    let exists: Option<bool> =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(db)
            .await
            .ok();
    if exists != Some(true) {
        return Vec::new();
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(db)
        .await
        .unwrap_or_default()
}

/// `DATABASE_URL` as connection options; the error never repeats the URL (it may hold a
/// password).
fn parse_url(url: &str) -> anyhow::Result<PgConnectOptions> {
    url.parse()
        .map_err(|_| anyhow::anyhow!("DATABASE_URL: not a valid Postgres URL"))
}

/// Which database, where: its name and host and port (or Unix socket), never the user's
/// password.
pub fn describe(options: &PgConnectOptions) -> String {
    let database = options.get_database().unwrap_or(options.get_username());
    match options.get_socket() {
        Some(socket) => format!(
            "the database {database} on the Unix socket in {} (port {})",
            socket.display(),
            options.get_port()
        ),
        None => format!(
            "the database {database} at {}:{}",
            options.get_host(),
            options.get_port()
        ),
    }
}

/// The database the service uses, and the local server behind it if we started one.
pub struct Database {
    pub pool: PgPool,
    /// Finance's reads and exports: a pool of their own, on the replica if there is one.
    pub reads: Reads,
    pub local: Option<LocalPostgres>,
    /// This process, as the claims it makes name it.
    pub instance: Instance,
}

impl Database {
    /// Connects to `DATABASE_URL`, or starts the local Postgres under `DATA_DIR` (creating it
    /// first if need be).
    pub async fn open(settings: &config::Database) -> anyhow::Result<Self> {
        let (options, local) = match &settings.url {
            Some(url) => (parse_url(url.expose_secret())?, None),
            None => {
                let data_dir = settings.data_dir.clone();
                let pg_bin = settings.pg_bin.clone();
                let local = tokio::task::spawn_blocking(move || {
                    LocalPostgres::start(&data_dir, pg_bin.as_deref(), Durability::Durable)
                })
                .await??;
                local.ensure_database(LOCAL_DATABASE).await?;
                if local.started_here() {
                    tracing::info!(
                        data_dir = %local.data_dir().display(),
                        url = %local.url(LOCAL_DATABASE),
                        "using the local Postgres (no DATABASE_URL); it stops when the service does"
                    );
                } else {
                    tracing::info!(
                        data_dir = %local.data_dir().display(),
                        url = %local.url(LOCAL_DATABASE),
                        "using the local Postgres (no DATABASE_URL), found running (another \
                         process's, or one a crash left); it is left running"
                    );
                }
                (local.connect_options(LOCAL_DATABASE), Some(local))
            }
        };
        Self::connect(settings, options, local).await
    }

    /// For a command that only reads (`events list`, `events show`): connects to
    /// `DATABASE_URL`, or to the local Postgres only if it is running. Never creates, starts or
    /// migrates anything. Says once which database it reads.
    pub async fn open_existing(settings: &config::Database) -> anyhow::Result<Self> {
        let (options, local) = match &settings.url {
            Some(url) => (parse_url(url.expose_secret())?, None),
            None => {
                let data_dir = settings.data_dir.clone();
                let pg_bin = settings.pg_bin.clone();
                let found = tokio::task::spawn_blocking(move || {
                    LocalPostgres::find_running(&data_dir, pg_bin.as_deref())
                })
                .await??;
                let Some(local) = found else {
                    anyhow::bail!(
                        "DATABASE_URL is not set and no local Postgres is running under {}: \
                         start the service (`quickdonate`, or `cargo run` in a checkout) so that \
                         it starts its own, or set DATABASE_URL",
                        settings.data_dir.display()
                    );
                };
                (local.connect_options(LOCAL_DATABASE), Some(local))
            }
        };
        tracing::info!("reading {}", describe(&options));
        Self::connect(settings, options, local).await
    }

    async fn connect(
        settings: &config::Database,
        options: PgConnectOptions,
        local: Option<LocalPostgres>,
    ) -> anyhow::Result<Self> {
        // Every connection names this process, for whoever reads pg_stat_activity; what tells a
        // live instance from a dead one is its lease (`instances`), never its sessions.
        let instance = Instance::new(settings.instance_lease);
        // No JIT: it pays off only for long analytic queries, and compiling one costs 100 ms
        // or more on a query the planner merely estimates as large (a finance page at a million
        // donations spent 155 ms compiling a 5 s query). Set per session, for both pools.
        let options = options
            .application_name(instance.name())
            .options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .with_context(|| format!("Failed to connect to {}", describe(&options)))?;
        let finance = &settings.finance;
        let read_options = match &finance.read_url {
            Some(url) => parse_url(url.expose_secret())
                .context("DATABASE_READ_URL")?
                .application_name(instance.name())
                .options([("jit", "off")]),
            None => options.clone(),
        };
        if finance.read_url.is_some() {
            tracing::info!("finance reads from {}", describe(&read_options));
        }
        // Connected when first used: a replica that is away fails finance's reads, not the start.
        let reads = Reads {
            pool: PgPoolOptions::new()
                .max_connections(finance.max_connections)
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy_with(read_options),
            stall: finance.stall,
            deadline: finance.deadline,
        };
        Ok(Self {
            pool,
            reads,
            local,
            instance,
        })
    }

    /// Applies every pending migration, and says which (or that there were none).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let before = applied_migrations(&self.pool).await;
        MIGRATOR
            .run(&self.pool)
            .await
            .context("Failed to run the database migrations")?;
        let after = applied_migrations(&self.pool).await;
        let new: Vec<String> = MIGRATOR
            .iter()
            .filter(|m| !before.contains(&m.version) && after.contains(&m.version))
            .map(|m| format!("{} {}", m.version, m.description))
            .collect();
        if new.is_empty() {
            tracing::info!("the database schema is up to date");
        } else {
            tracing::info!(count = new.len(), "migrations applied: {}", new.join(", "));
        }
        Ok(())
    }

    /// Closes the pool, then stops the local Postgres if this process started it (one found
    /// running may be serving another process: `quickdonate events` beside the service).
    pub async fn close(self) {
        // Bounded: a request abandoned at shutdown may still hold a connection.
        let closed = async { tokio::join!(self.pool.close(), self.reads.pool.close()) };
        if tokio::time::timeout(Duration::from_secs(2), closed)
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

/// Finance's reads and exports (the finance API, Gift Aid's schedule, the audit log, the
/// books' checks): a small pool of their own (`FINANCE_MAX_CONNECTIONS`), on the read replica
/// when `DATABASE_READ_URL` is set, so that however many downloads are open, or however slowly
/// their clients read, webhook ingest and the worker keep the main pool; and how long a
/// streamed export may wait for its client (`stall`) and take in all (`deadline`) before it is
/// cut off and its snapshot released.
#[derive(Debug, Clone)]
pub struct Reads {
    pub pool: PgPool,
    pub stall: Duration,
    pub deadline: Duration,
}

impl Reads {
    /// Reads on `pool` itself, with the default limits (the command line, the tests).
    pub fn on(pool: PgPool) -> Self {
        Self {
            pool,
            stall: Duration::from_secs(30),
            deadline: Duration::from_secs(1800),
        }
    }
}

/// A read-only transaction on one snapshot of `reads` (an export's count and rows agree),
/// whose statements are planned for their own parameters: a list's optional filters (`$1 IS
/// NULL OR ...`) under a plan cached for all would scan from the first row on every page.
pub async fn reading(reads: &Reads) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = reads
        .pool
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    sqlx::query!("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)")
        .fetch_one(&mut *tx)
        .await?;
    Ok(tx)
}
