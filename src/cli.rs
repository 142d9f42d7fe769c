//! The command line: `quickdonate` serves; `quickdonate migrate` only migrates.

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::db::Database;
use crate::startup::{Application, shutdown_signal};

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
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        let settings = Settings::load()?;
        crate::telemetry::init(settings.log_format);
        match self.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                let app = Application::build(settings).await?;
                app.run_until_stopped(shutdown_signal()).await
            }
            Command::Migrate => {
                let database = Database::open(&settings).await?;
                let result = database.migrate().await;
                database.close().await;
                result?;
                tracing::info!("migrations applied");
                Ok(())
            }
        }
    }
}
