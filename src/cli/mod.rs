//! The command line: `quickdonate` serves; `quickdonate migrate` only migrates; `events`,
//! `receipts`, `tokens`, `staff`, `export` and `donors` are for operators, and answer on stdout alone (their log goes to
//! stderr).

mod staff;
mod table;

use std::io::IsTerminal;

use anyhow::bail;
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sqlx::PgPool;
use tokio::io::AsyncWriteExt;

use crate::app::{Application, shutdown_signal};
use crate::config::{Config, PaymentsMode};
use crate::db::Database;
use crate::finance::donations::{self, Progress};
use crate::http::export::{Format, Sink};
use crate::http::query::Params;
use crate::operators::access::{self, Caller, Role};
use crate::payments::Payments;
use crate::webhooks::admin;

/// quickdonate: donations on Stripe, recorded in Postgres.
///
/// Configuration comes from config/default.toml (built in), the file named by
/// QUICKDONATE_CONFIG, and environment variables; see the README. The service and `migrate` log
/// to stdout; the other commands answer on stdout and log to stderr.
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
    /// Look after the receipts owed to donors: list them, retry those set aside as failed.
    Receipts {
        #[command(subcommand)]
        command: ReceiptsCommand,
    },
    /// Finance exports to stdout, streamed from the database (audited as run by `cli:$USER`).
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// Finance API tokens: make, list and revoke them.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// The staff console's accounts: invite (a one-time passkey enrolment link), list, revoke.
    Staff {
        #[command(subcommand)]
        command: staff::StaffCommand,
    },
    /// Donors' personal data.
    Donors {
        #[command(subcommand)]
        command: DonorsCommand,
    },
    /// Check the books, read-only: every invariant the design promises, each difference with
    /// its ids; exits 1 if any differs.
    Verify {
        /// How long a succeeded gift may wait for its ledger row (Stripe reports its fee
        /// within seconds).
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        settle: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
enum ReceiptsCommand {
    /// The latest receipts, newest first: id, donation, kind, state, attempts, next attempt,
    /// last error. Never the donor's address or name.
    List {
        /// Only receipts set aside as failed, and those being retried after an error.
        #[arg(long)]
        failed: bool,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Put a receipt set aside as failed back in the queue, due now, its attempts reset to 0;
    /// or with --all-failed every failed receipt. A receipt whose donor was erased is never
    /// retried (it is marked canceled). Recorded in the audit log as run by `cli:$USER`.
    Retry {
        /// The receipt's id (from `receipts list`).
        #[arg(required_unless_present = "all_failed", conflicts_with = "all_failed")]
        id: Option<uuid::Uuid>,
        #[arg(long)]
        all_failed: bool,
    },
}

#[derive(Debug, Subcommand)]
enum DonorsCommand {
    /// Erase a donor's personal data (names, email, address) from their donations,
    /// declarations and stored events, keeping the amounts and ids finance needs and, for
    /// gifts already claimed in a Gift Aid claim, the name and address HMRC requires. Recorded
    /// in the audit log as run by `cli:$USER`, without the email. Running it again is harmless.
    Erase {
        /// The donor's email address, whatever its case.
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Subcommand)]
enum ExportCommand {
    /// Donations with their donor, money and Stripe ids, the rows of GET /v1/finance/donations:
    /// `quickdonate export donations --from 2026-11-01T00:00:00Z --format csv > donations.csv`.
    Donations {
        /// Only this campaign's (its slug).
        #[arg(long)]
        campaign: Option<String>,
        /// Only donations in this status: pending, processing, succeeded, failed, canceled,
        /// refunded.
        #[arg(long)]
        status: Option<String>,
        /// Created at or after this time (RFC 3339 with an offset: 2026-11-01T00:00:00Z).
        #[arg(long)]
        from: Option<String>,
        /// Created before this time (RFC 3339 with an offset).
        #[arg(long)]
        to: Option<String>,
        /// csv (text cells made safe for spreadsheets), or json: one array, a row to a line.
        #[arg(long, value_enum)]
        format: ExportFormat,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ExportFormat {
    Csv,
    Json,
}

#[derive(Debug, Subcommand)]
enum TokensCommand {
    /// Make a token. It is printed once, alone on the last line of stdout, and stored only as
    /// its hash: keep it somewhere safe now.
    Create {
        /// Who or what uses it (letters, digits, '.', '_', '-'); never reused.
        #[arg(long)]
        name: String,
        /// finance: read finance data; admin: that and the audit log.
        #[arg(long, value_enum)]
        role: Role,
    },
    /// Every token: name, role, when made, when revoked. Never a token or its hash.
    List,
    /// Revoke the token named NAME: it stops working at once.
    Revoke { name: String },
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
        let settings = Config::load()?;
        let command = self.command.unwrap_or(Command::Serve);
        let output = match command {
            Command::Events { .. }
            | Command::Receipts { .. }
            | Command::Tokens { .. }
            | Command::Staff { .. }
            | Command::Export { .. }
            | Command::Donors { .. }
            | Command::Verify { .. } => crate::telemetry::Output::Stderr,
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
                let database = Database::open(&settings.database).await?;
                let result = database.migrate().await;
                database.close().await;
                result
            }
            // Reading the log neither starts a Postgres nor migrates: it reads what is there.
            Command::Events {
                command: command @ (EventsCommand::List { .. } | EventsCommand::Show { .. }),
            } => {
                let database = Database::open_existing(&settings.database).await?;
                let result = events(&settings, &database.pool, command).await;
                database.close().await;
                result
            }
            Command::Events { command } => {
                let database = Database::open(&settings.database).await?;
                let result = match database.migrate().await {
                    Ok(()) => events(&settings, &database.pool, command).await,
                    Err(error) => Err(error),
                };
                database.close().await;
                result
            }
            // Listing only reads, as `events list` does.
            Command::Receipts {
                command: command @ ReceiptsCommand::List { .. },
            } => {
                let database = Database::open_existing(&settings.database).await?;
                let result = receipts(&database.pool, command).await;
                database.close().await;
                result
            }
            Command::Receipts { command } => {
                let database = Database::open(&settings.database).await?;
                let result = match database.migrate().await {
                    Ok(()) => receipts(&database.pool, command).await,
                    Err(error) => Err(error),
                };
                database.close().await;
                result
            }
            Command::Tokens { command } => {
                let database = Database::open(&settings.database).await?;
                let result = match database.migrate().await {
                    Ok(()) => tokens(&database.pool, command).await,
                    Err(error) => Err(error),
                };
                database.close().await;
                result
            }
            Command::Staff { command } => {
                let database = Database::open(&settings.database).await?;
                let result = match database.migrate().await {
                    Ok(()) => {
                        staff::run(&settings, &database.pool, command, &cli_caller().name).await
                    }
                    Err(error) => Err(error),
                };
                database.close().await;
                result
            }
            Command::Export { command } => {
                let database = Database::open(&settings.database).await?;
                let result = match database.migrate().await {
                    Ok(()) => export(&database.pool, command).await,
                    Err(error) => Err(error),
                };
                database.close().await;
                result
            }
            // Only reads, as `events list` does.
            Command::Verify { settle } => {
                let database = Database::open_existing(&settings.database).await?;
                let result = verify(&database.pool, settle).await;
                database.close().await;
                result
            }
            Command::Donors { command } => {
                let database = Database::open(&settings.database).await?;
                let result = match database.migrate().await {
                    Ok(()) => donors(&database.pool, command, &settings.receipts.files_dir).await,
                    Err(error) => Err(error),
                };
                database.close().await;
                result
            }
        }
    }
}

async fn tokens(db: &PgPool, command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create { name, role } => {
            let token = access::create(db, &name, role).await?;
            eprintln!(
                "Token {name:?} ({role}) made. It is shown once, below, and only its hash is \
                 kept: store it now. Send it as `Authorization: Bearer <token>`."
            );
            println!("{token}");
        }
        TokensCommand::List => {
            println!("{}", table::tokens(&access::list(db).await?));
        }
        TokensCommand::Revoke { name } => match access::revoke(db, &name).await? {
            access::Revoked::Now => println!("{name} is revoked; it no longer works"),
            access::Revoked::Already(at) => {
                println!("{name} was already revoked at {}", table::time(at))
            }
        },
    }
    Ok(())
}

async fn receipts(db: &PgPool, command: ReceiptsCommand) -> anyhow::Result<()> {
    use crate::receipts::admin::{self as receipts, Retry};
    match command {
        ReceiptsCommand::List { failed, limit } => {
            println!(
                "{}",
                table::receipts(&receipts::list(db, failed, limit).await?)
            )
        }
        ReceiptsCommand::Retry { id, .. } => {
            let which = id.map_or(Retry::AllFailed, Retry::One);
            let done = receipts::retry(db, which, &cli_caller()).await?;
            match which {
                Retry::One(id) => println!(
                    "{id} is queued again, its attempts reset; the service's sender tries it \
                     within a second. Recorded in the audit log."
                ),
                Retry::AllFailed => println!(
                    "{} failed receipt(s) queued again, their attempts reset; {} not retried \
                     because their donor's data was erased (marked canceled). Recorded in the \
                     audit log.",
                    done.queued.len(),
                    done.canceled.len()
                ),
            }
        }
    }
    Ok(())
}

async fn verify(db: &PgPool, settle: std::time::Duration) -> anyhow::Result<()> {
    let mut snapshot = crate::db::reading(&crate::db::Reads::on(db.clone())).await?;
    let report = crate::books::verify::verify(&mut snapshot, settle).await?;
    drop(snapshot);
    print!("{}", table::books(&report));
    match report.differences() {
        0 => Ok(()),
        n => bail!("the books differ in {n} place(s)"),
    }
}

async fn donors(
    db: &PgPool,
    command: DonorsCommand,
    receipt_files: &std::path::Path,
) -> anyhow::Result<()> {
    let DonorsCommand::Erase { email } = command;
    let done = crate::privacy::erasure::erase(db, &email, &cli_caller(), receipt_files).await?;
    if done.donations == 0 && done.declarations == 0 && done.declarations_kept == 0 {
        println!("Nothing to erase: no donation or declaration has that email (any more).");
    } else {
        println!(
            "Erased the donor's data from {} donation(s) ({} claimed for Gift Aid: name kept for \
             HMRC), {} declaration(s), {} stored event(s); {} declaration(s) backing a claim keep \
             name and address for HMRC, without the email; {} receipt(s) still owed will not be \
             sent; {} receipt file(s) deleted. Recorded in the audit log.",
            done.donations,
            done.donations_claimed,
            done.declarations,
            done.events,
            done.declarations_kept,
            done.receipts_canceled,
            done.receipt_files
        );
    }
    Ok(())
}

async fn events(settings: &Config, db: &PgPool, command: EventsCommand) -> anyhow::Result<()> {
    let livemode = settings.livemode();
    match command {
        EventsCommand::List { failed, limit } => {
            println!("{}", table::events(&admin::list(db, failed, limit).await?))
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
            } = settings.payments.clone()
            else {
                bail!(
                    "STRIPE_SECRET_KEY: backfill reads Stripe's events API; simulated payments have none outside the running service"
                );
            };
            let payments = Payments::for_stripe(&settings.stripe, &secret_key, publishable_key)?;
            let found = admin::backfill(db, &payments, since, livemode).await?;
            println!(
                "{} event(s) listed by Stripe, {} new to the log",
                found.seen, found.new
            );
            if !found.recovered.is_empty() {
                println!(
                    "{} donation(s) recovered from Stripe (their rows were gone), with no donor \
                     details and no receipt:",
                    found.recovered.len()
                );
                for (donation, intent) in &found.recovered {
                    println!("  {donation}  {intent}");
                }
            }
            if !found.unrecoverable.is_empty() {
                println!(
                    "{} PaymentIntent(s) name a donation that could not be recovered:",
                    found.unrecoverable.len()
                );
                for (intent, why) in &found.unrecoverable {
                    println!("  {intent}: {why}");
                }
            }
        }
    }
    Ok(())
}

async fn export(db: &PgPool, command: ExportCommand) -> anyhow::Result<()> {
    let ExportCommand::Donations {
        campaign,
        status,
        from,
        to,
        format,
    } = command;
    let given = [
        ("campaign", campaign),
        ("status", status),
        ("from", from),
        ("to", to),
    ];
    let params = Params::from_pairs(
        given
            .into_iter()
            .filter_map(|(name, value)| value.map(|value| (name, value))),
    );
    let format = match format {
        ExportFormat::Csv => Format::Csv,
        ExportFormat::Json => Format::Json,
    };
    // A progress bar only for someone watching: none when stderr is piped or a file.
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{wide_bar} {human_pos}/{human_len} donations, {per_sec}, {elapsed}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let progress = |progress: Progress| {
        if let Some(bar) = &bar {
            match progress {
                Progress::Total(total) => bar.set_length(u64::try_from(total).unwrap_or(0)),
                Progress::Written(rows) => bar.set_position(u64::try_from(rows).unwrap_or(0)),
            }
        }
    };
    let mut out = Stdout(tokio::io::stdout());
    let written = donations::export(
        db,
        &cli_caller(),
        &params,
        format,
        &mut out,
        bar.is_some()
            .then_some(&progress as &(dyn Fn(Progress) + Sync)),
    )
    .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    out.0.flush().await?;
    eprintln!("{} donation(s) exported", written?);
    Ok(())
}

/// Who the audit log says ran a command-line export: `cli:` and the operating system's user.
fn cli_caller() -> Caller {
    let user: Option<String> = ["USER", "LOGNAME"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .map(|user| {
            user.chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>()
        })
        .find(|user| !user.is_empty());
    Caller {
        name: user.map_or_else(|| "cli".to_owned(), |user| format!("cli:{user}")),
        // Whoever can reach the database can read everything already.
        role: Role::Admin,
    }
}

/// Exports go to stdout as they are read.
struct Stdout(tokio::io::Stdout);

impl Sink for Stdout {
    async fn send(&mut self, chunk: axum::body::Bytes) -> std::io::Result<()> {
        self.0.write_all(&chunk).await
    }
}
