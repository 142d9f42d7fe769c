//! The command line: `quickdonate` serves; `quickdonate migrate` only migrates.

use anyhow::bail;
use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use sqlx::PgPool;

use crate::config::{PaymentsMode, Settings};
use crate::db::Database;
use crate::payments::Payments;
use crate::startup::{Application, shutdown_signal};
use crate::webhooks::admin;

/// quickdonate: donations on Stripe, recorded in Postgres.
///
/// Configuration comes from config/default.toml (built in), the file named by
/// QUICKDONATE_CONFIG, and environment variables; see the README.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (what running with no command does).
    Serve,
    /// Apply the database migrations, then exit.
    Migrate,
    /// Look after the log of Stripe events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
}

#[derive(Debug, Subcommand)]
enum EventsCommand {
    /// The latest events, newest first.
    List {
        /// Only events set aside as failed, and those being retried after an error.
        #[arg(long)]
        failed: bool,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One event in full, with its payload.
    Show { id: String },
    /// Apply an event again now (applying is idempotent), or with --failed every event set aside
    /// as failed or being retried.
    Replay {
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        id: Option<String>,
        #[arg(long)]
        failed: bool,
    },
    /// Fetch from Stripe's events API the events we missed (Stripe keeps 30 days).
    Backfill {
        /// How far back: 90s, 30m, 12h, 2d.
        #[arg(long, default_value = "2d")]
        since: String,
    },
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        let settings = Settings::load()?;
        let command = self.command.unwrap_or(Command::Serve);
        let output = match command {
            Command::Events { .. } => crate::telemetry::Output::Stderr,
            Command::Serve | Command::Migrate => crate::telemetry::Output::Stdout,
        };
        crate::telemetry::init(settings.log_format, output);
        match command {
            Command::Serve => {
                // Before the listener is bound, so no signal finds the process unprepared.
                let shutdown = shutdown_signal();
                let app = Application::build(settings).await?;
                app.run_until_stopped(shutdown).await
            }
            Command::Migrate => {
                let database = Database::open(&settings).await?;
                let result = database.migrate().await;
                database.close().await;
                result?;
                tracing::info!("migrations applied");
                Ok(())
            }
            Command::Events { command } => {
                let database = Database::open(&settings).await?;
                let result = match database.migrate().await {
                    Ok(()) => events(&settings, &database.pool, command).await,
                    Err(error) => Err(error),
                };
                database.close().await;
                result
            }
        }
    }
}

async fn events(settings: &Settings, db: &PgPool, command: EventsCommand) -> anyhow::Result<()> {
    let mode = settings.payments_mode()?;
    let livemode = matches!(&mode, PaymentsMode::Stripe { secret_key, .. }
        if secret_key.expose_secret().contains("_live_"));
    match command {
        EventsCommand::List { failed, limit } => {
            println!("{}", admin::list(db, failed, limit).await?)
        }
        EventsCommand::Show { id } => println!("{}", admin::show(db, &id).await?),
        EventsCommand::Replay { id: Some(id), .. } => {
            admin::replay(db, &id, livemode).await?;
            println!("{id} is queued; the service's worker applies it within a second");
        }
        EventsCommand::Replay { id: None, .. } => {
            let queued = admin::replay_failed(db).await?;
            println!("{queued} failed or failing event(s) queued to be retried now");
        }
        EventsCommand::Backfill { since } => {
            let since = admin::parse_since(&since)?;
            let PaymentsMode::Stripe {
                secret_key,
                publishable_key,
                ..
            } = mode
            else {
                bail!(
                    "STRIPE_SECRET_KEY: backfill reads Stripe's events API; simulated payments have none outside the running service"
                );
            };
            let payments = Payments::for_stripe(settings, &secret_key, publishable_key)?;
            let found = admin::backfill(db, &payments, since, livemode).await?;
            println!(
                "{} event(s) listed by Stripe, {} new to the log",
                found.seen, found.new
            );
        }
    }
    Ok(())
}
