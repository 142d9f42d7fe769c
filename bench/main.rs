//! The benchmark: `cargo run --release --bin bench [-- --seconds 20 --connections 64
//! --storm-payments 400]`.
//!
//! Starts a durable local Postgres, a fake Stripe that answers at once, and the release build
//! of the service against them (a fresh instance for each phase, so that each phase's peak RSS
//! and Postgres's counts are its own); then measures, in one run on this machine:
//! 1. the baseline: pgbench doing one durable single-row INSERT of an event-sized jsonb row;
//! 2. donation creation through the whole path (validation, row, PaymentIntent, answer);
//! 3. webhook ingest of unique, correctly signed `payment_intent.succeeded` events for existing
//!    donations, and how long the worker takes to apply them all;
//! 4. reads of the Kashmir campaign;
//! 5. webhook ingest again with the worker off;
//! 6. a storm: 25 distinct events for each of a few hundred paid donations, created over ten
//!    minutes and delivered shuffled, until every one is applied; deadlocks and Stripe reads
//!    counted, every payment checked;
//! 7. two instances sharing the database, each with its worker, taking unique events and
//!    duplicates of them sent to the other instance; then checked that nothing was applied
//!    twice;
//! 8. a finance export of every donation, streamed;
//! 9. the staff console at a million donations (`console.rs`; alone: `--only console`).
//!
//! For each phase: the rate, p50 and p99, the ratio to the baseline, and what the phase cost
//! Postgres (transactions a second, write transactions, WAL bytes and WAL fsyncs per event)
//! and the service's peak RSS; then the overall table. Any failed check exits non-zero.
//!
//! Load stays on loopback; every loop is bounded in time and in count.

mod console;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use quickdonate::db::local::{Durability, LocalPostgres};
use quickdonate::webhooks::signature::sign;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const WEBHOOK_SECRET: &str = "whsec_bench";
/// The service's database.
const DATABASE: &str = "quickdonate";
/// The `application_name` of the bench's own sessions.
const BENCH_SESSION: &str = "quickdonate-bench";
/// An upper bound on requests per phase, whatever the clock says.
const MAX_REQUESTS: u64 = 5_000_000;

#[derive(Clone, Copy)]
struct Options {
    seconds: u64,
    connections: usize,
    /// Requests in a phase at most.
    requests: u64,
    /// Payments in the storm phase (25 events each).
    storm_payments: usize,
    /// `--only console`: the console phase alone.
    console_only: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        seconds: 20,
        connections: 64,
        requests: MAX_REQUESTS,
        storm_payments: 400,
        console_only: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--seconds" => options.seconds = value.parse()?,
            "--connections" => options.connections = value.parse()?,
            "--storm-payments" => options.storm_payments = value.parse()?,
            "--only" if value == "console" => options.console_only = true,
            _ => bail!(
                "unknown option {arg} {value}; try --seconds N --connections N --storm-payments N --only console"
            ),
        }
    }
    ensure!((1..=600).contains(&options.seconds), "--seconds: 1 to 600");
    ensure!(
        (1..=512).contains(&options.connections),
        "--connections: 1 to 512"
    );
    ensure!(
        (1..=20_000).contains(&options.storm_payments),
        "--storm-payments: 1 to 20000"
    );
    Ok(options)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
    let root = std::env::temp_dir().join(format!("quickdonate-bench-{}", std::process::id()));
    eprintln!("starting a durable Postgres under {}", root.display());
    let pg = {
        let root = root.clone();
        tokio::task::spawn_blocking(move || LocalPostgres::start(&root, None, Durability::Durable))
            .await??
    };
    let _cleanup = pg.remove_when_this_process_exits(&root)?;
    // Not under `root`: the Postgres account removes that, and the service writes here as
    // this process's user.
    let service_dir = OwnDir::create(
        std::env::temp_dir().join(format!("quickdonate-bench-{}-service", std::process::id())),
    )?;
    let data_dir = service_dir.0.clone();
    pg.ensure_database(DATABASE).await?;
    pg.ensure_database("baseline").await?;

    let (stripe, stripe_reads) = fake_stripe().await?;
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(pg.connect_options(DATABASE).application_name(BENCH_SESSION))
        .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.connections)
        .build()?;
    let event = sample_event();
    let template = Arc::new(serde_json::to_string(&event)?);
    let mut rows = Vec::new();
    if options.console_only {
        return console::run(&pg, &stripe, &data_dir, &db).await;
    }

    eprintln!(
        "1/8 baseline: pgbench, {} clients, {} s",
        options.connections, options.seconds
    );
    let start = PgCounters::read(&db, "baseline").await?;
    let started = Instant::now();
    let (baseline, baseline_xacts) = pgbench(&pg, &event, &options)?;
    let window = started.elapsed();
    let now = PgCounters::read(&db, "baseline").await?;
    settle(&db).await?;
    let settled = PgCounters::read(&db, "baseline").await?;
    rows.push(Row {
        phase: "baseline: pgbench INSERT of an event-sized jsonb row".into(),
        rate: baseline,
        latency_ms: None,
        events: baseline_xacts,
        pg: PgWork::between(&start, &now, Some(&settled), window),
        rss_kib: Vec::new(),
    });

    eprintln!(
        "2/8 donation creation, {} connections, {} s",
        options.connections, options.seconds
    );
    let mut service = Service::start(&pg, &stripe, &data_dir, true, 16)?;
    let base = service.wait_ready().await?;
    let start = PgCounters::read(&db, DATABASE).await?;
    let creation = load(&options, {
        let (http, url) = (http.clone(), format!("{base}/v1/campaigns/kashmir/donations"));
        move |i| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let response = http
                .post(url)
                .header("idempotency-key", format!("bench-{i}"))
                .json(&json!({
                    "amount": 2500, "frequency": "one_off", "cover_fees": true,
                    "donor": {"email": "donor@example.org", "first_name": "Bench", "last_name": "Donor"}
                }))
                .send()
                .await;
            matches!(response, Ok(r) if r.status() == 201)
        }
    }})
    .await;
    let now = PgCounters::read(&db, DATABASE).await?;
    let (rss, settled) = finish(vec![service], &db).await?;
    rows.push(Row::load(
        "donation creation",
        &creation,
        PgWork::between(&start, &now, Some(&settled), creation.elapsed),
        rss,
    ));

    eprintln!(
        "3/8 webhook ingest, worker on, {} connections, {} s",
        options.connections, options.seconds
    );
    let donations = Arc::new(seed_donations(&db, seeds(&options), "pi_bench_").await?);
    let mut service = Service::start(&pg, &stripe, &data_dir, true, 16)?;
    let base = service.wait_ready().await?;
    let start = PgCounters::read(&db, DATABASE).await?;
    let started = Instant::now();
    let ingest = send_events(&options, &http, &base, &donations, &template, "evt_bench_").await;
    let ingest_done = started.elapsed();
    let ingested = PgCounters::read(&db, DATABASE).await?;
    let drained = drain(&db, Duration::from_secs(600)).await?;
    let drained_after = started.elapsed();
    let drained_pg = PgCounters::read(&db, DATABASE).await?;
    ensure!(drained, "the worker did not drain its backlog within 600 s");
    receipts_written(&db).await?;
    let done_after = started.elapsed();
    let done_pg = PgCounters::read(&db, DATABASE).await?;
    let (rss, settled) = finish(vec![service], &db).await?;
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE state = 'applied'")
            .fetch_one(&db)
            .await?;
    let (raised, count): (i64, i64) = sqlx::query_as(
        "SELECT raised_amount, donation_count FROM campaigns WHERE slug = 'kashmir'",
    )
    .fetch_one(&db)
    .await?;
    ensure!(
        count == applied && raised == applied * 2500,
        "the campaign total is off: {count} gifts, {raised} raised, {applied} events applied"
    );
    let ingest_rate = ingest.rate();
    let apply_rate = applied as f64 / drained_after.as_secs_f64();
    rows.push(Row::load(
        "webhook ingest, worker on",
        &ingest,
        PgWork::between(&start, &ingested, None, ingest.elapsed),
        rss.clone(),
    ));
    rows.push(Row {
        phase: "the same, until the backlog is empty (every event applied)".into(),
        rate: apply_rate,
        latency_ms: None,
        events: u64::try_from(applied)?,
        pg: PgWork::between(&start, &drained_pg, None, drained_after),
        rss_kib: rss.clone(),
    });
    rows.push(Row {
        phase: "the same, until every event is applied and every receipt written".into(),
        rate: applied as f64 / done_after.as_secs_f64(),
        latency_ms: None,
        events: u64::try_from(applied)?,
        pg: PgWork::between(&start, &done_pg, Some(&settled), done_after),
        rss_kib: rss,
    });

    let read_options = Options {
        seconds: options.seconds.min(10),
        ..options
    };
    eprintln!(
        "4/8 campaign reads, {} connections, {} s",
        options.connections, read_options.seconds
    );
    // Worker off: reads alone (a worker would have no event to apply, and nothing to do but
    // receipts the earlier phases owed).
    let mut service = Service::start(&pg, &stripe, &data_dir, false, 16)?;
    let base = service.wait_ready().await?;
    let start = PgCounters::read(&db, DATABASE).await?;
    let reads = load(&read_options, {
        let (http, url) = (http.clone(), format!("{base}/v1/campaigns/kashmir"));
        move |_| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                match http.get(url).send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                    _ => false,
                }
            }
        }
    })
    .await;
    let now = PgCounters::read(&db, DATABASE).await?;
    let (rss, settled) = finish(vec![service], &db).await?;
    rows.push(Row::load(
        "campaign read",
        &reads,
        PgWork::between(&start, &now, Some(&settled), reads.elapsed),
        rss,
    ));

    // Ingest alone: the same path with no worker competing for the two cores, to tell the
    // cost of taking a webhook from the cost of applying it.
    eprintln!(
        "5/8 webhook ingest with the worker off, {} connections, {} s",
        options.connections, options.seconds
    );
    let donations = Arc::new(seed_donations(&db, seeds(&options), "pi_alone_").await?);
    let mut service = Service::start(&pg, &stripe, &data_dir, false, 16)?;
    let base = service.wait_ready().await?;
    let start = PgCounters::read(&db, DATABASE).await?;
    let ingest_only =
        send_events(&options, &http, &base, &donations, &template, "evt_alone_").await;
    let now = PgCounters::read(&db, DATABASE).await?;
    let (rss, settled) = finish(vec![service], &db).await?;
    rows.push(Row::load(
        "webhook ingest, worker off",
        &ingest_only,
        PgWork::between(&start, &now, Some(&settled), ingest_only.elapsed),
        rss,
    ));
    // What the ingest-alone phase left unapplied is no later phase's to drain.
    sqlx::query(
        "UPDATE stripe_events SET state = 'ignored', last_error = 'bench: left by ingest alone'
         WHERE state = 'pending'",
    )
    .execute(&db)
    .await?;

    eprintln!(
        "6/8 storm: 25 distinct events for each of {} payments, shuffled, {} connections",
        options.storm_payments, options.connections
    );
    let mut service = Service::start(&pg, &stripe, &data_dir, true, 16)?;
    let base = service.wait_ready().await?;
    let storm = storm(&options, &http, &base, &db, &stripe_reads).await;
    let (rss, settled) = finish(vec![service], &db).await?;
    let storm = storm?;
    let storm_apply_rate = storm.events as f64 / storm.drained_after.as_secs_f64();
    rows.push(Row::load(
        "storm: ingest",
        &storm.ingest,
        PgWork::between(&storm.start, &storm.ingested, None, storm.ingest.elapsed),
        rss.clone(),
    ));
    rows.push(Row {
        phase: "storm: until the backlog is empty".into(),
        rate: storm_apply_rate,
        latency_ms: None,
        events: storm.events as u64,
        pg: PgWork::between(&storm.start, &storm.drained, None, storm.drained_after),
        rss_kib: rss.clone(),
    });
    rows.push(Row {
        phase: "storm: until every event is applied and every receipt written".into(),
        rate: storm.events as f64 / storm.done_after.as_secs_f64(),
        latency_ms: None,
        events: storm.events as u64,
        pg: PgWork::between(&storm.start, &storm.done, Some(&settled), storm.done_after),
        rss_kib: rss,
    });

    eprintln!(
        "7/8 two instances, worker on in both, 8 database connections each; {} connections, {} s; every 10th request a duplicate sent to the other instance",
        options.connections, options.seconds
    );
    let two = two_instances(&options, &pg, &stripe, &data_dir, &http, &db, &template).await?;
    rows.push(Row::load(
        "two instances: ingest (duplicates included)",
        &two.ingest,
        PgWork::between(&two.start, &two.ingested, None, two.ingest.elapsed),
        two.rss_kib.clone(),
    ));
    rows.push(Row {
        phase: "two instances: until the backlog is empty, per unique event".into(),
        rate: two.unique as f64 / two.drained_after.as_secs_f64(),
        latency_ms: None,
        events: two.unique,
        pg: PgWork::between(&two.start, &two.drained, None, two.drained_after),
        rss_kib: two.rss_kib.clone(),
    });
    rows.push(Row {
        phase: "two instances: until every event is applied and every receipt written, per unique event".into(),
        rate: two.unique as f64 / two.done_after.as_secs_f64(),
        latency_ms: None,
        events: two.unique,
        pg: PgWork::between(&two.start, &two.done, Some(&two.settled), two.done_after),
        rss_kib: two.rss_kib.clone(),
    });

    eprintln!("8/8 finance export: every donation as CSV, streamed");
    let mut service = Service::start(&pg, &stripe, &data_dir, false, 16)?;
    let base = service.wait_ready().await?;
    let start = PgCounters::read(&db, DATABASE).await?;
    let export = export(&http, &base, &db, &service).await;
    let now = PgCounters::read(&db, DATABASE).await?;
    let (rss, settled) = finish(vec![service], &db).await?;
    let export = export?;
    rows.push(Row {
        phase: "finance export (per row)".into(),
        rate: export.rows as f64 / export.elapsed.as_secs_f64(),
        latency_ms: None,
        events: export.rows,
        pg: PgWork::between(&start, &now, Some(&settled), export.elapsed),
        rss_kib: rss,
    });
    console::run(&pg, &stripe, &data_dir, &db).await?;

    db.close().await;
    let pg = tokio::task::spawn_blocking(move || {
        let _ = pg.stop();
    });
    let _ = pg.await;

    let peak_rss = rows
        .iter()
        .flat_map(|row| row.rss_kib.iter().copied())
        .max()
        .unwrap_or(0);
    println!();
    print_phases(&rows, baseline);
    println!();
    println!("| measure | result |");
    println!("|---|---|");
    println!("| baseline: pgbench INSERT of an event-sized jsonb row | {baseline:.0} tps |");
    println!(
        "| donation creation | {:.0} /s, p50 {:.1} ms, p99 {:.1} ms ({} ok, {} failed) |",
        creation.rate(),
        creation.percentile(50.0),
        creation.percentile(99.0),
        creation.ok,
        creation.failed
    );
    println!(
        "| webhook ingest | {:.0} /s, p50 {:.1} ms, p99 {:.1} ms ({} ok, {} failed) |",
        ingest_rate,
        ingest.percentile(50.0),
        ingest.percentile(99.0),
        ingest.ok,
        ingest.failed
    );
    println!(
        "| events applied | {applied} in {:.1} s from the start of ingest ({:.0} /s; ingest ended at {:.1} s, backlog empty {:.1} s later; every receipt written {:.1} s after that) |",
        drained_after.as_secs_f64(),
        apply_rate,
        ingest_done.as_secs_f64(),
        (drained_after - ingest_done).as_secs_f64(),
        (done_after - drained_after).as_secs_f64()
    );
    println!(
        "| webhook ingest, worker off | {:.0} /s, p50 {:.1} ms, p99 {:.1} ms ({} ok, {} failed) |",
        ingest_only.rate(),
        ingest_only.percentile(50.0),
        ingest_only.percentile(99.0),
        ingest_only.ok,
        ingest_only.failed
    );
    println!(
        "| campaign read | {:.0} /s, p50 {:.2} ms, p99 {:.2} ms ({} failed) |",
        reads.rate(),
        reads.percentile(50.0),
        reads.percentile(99.0),
        reads.failed
    );
    println!(
        "| storm: {} events ({} payments x 25), shuffled | ingest {:.0} /s, p50 {:.1} ms, p99 {:.1} ms ({} ok, {} failed); all applied {:.1} s from the start ({:.0} /s; ingest ended at {:.1} s, backlog empty {:.1} s later; every receipt written {:.1} s after that); {} deadlocks; {} Stripe reads, at most {} per payment; every payment exact |",
        storm.events,
        options.storm_payments,
        storm.ingest.rate(),
        storm.ingest.percentile(50.0),
        storm.ingest.percentile(99.0),
        storm.ingest.ok,
        storm.ingest.failed,
        storm.drained_after.as_secs_f64(),
        storm_apply_rate,
        storm.ingest_done.as_secs_f64(),
        (storm.drained_after - storm.ingest_done).as_secs_f64(),
        (storm.done_after - storm.drained_after).as_secs_f64(),
        storm.deadlocks,
        storm.stripe_reads,
        storm.most_reads_per_payment,
    );
    println!(
        "| two instances, worker on in both, 8 database connections each | ingest {:.0} /s, p50 {:.1} ms, p99 {:.1} ms ({} ok, {} failed: {} unique events, {} duplicates sent to the other instance); all applied {:.1} s from the start ({:.0} unique /s; ingest ended at {:.1} s, backlog empty {:.1} s later; every receipt written {:.1} s after that); {} deadlocks; every event applied once, at its first attempt; every duplicate counted; the campaign moved by exactly the unique events; peak RSS {} MiB |",
        two.ingest.rate(),
        two.ingest.percentile(50.0),
        two.ingest.percentile(99.0),
        two.ingest.ok,
        two.ingest.failed,
        two.unique,
        two.duplicates,
        two.drained_after.as_secs_f64(),
        two.unique as f64 / two.drained_after.as_secs_f64(),
        two.ingest_done.as_secs_f64(),
        (two.drained_after - two.ingest_done).as_secs_f64(),
        (two.done_after - two.drained_after).as_secs_f64(),
        two.deadlocks,
        mib_list(&two.rss_kib),
    );
    println!(
        "| finance export: every donation as CSV | {} rows, {:.1} MiB in {:.1} s ({:.0} rows/s); the service's peak RSS {:.1} MiB before, {:.1} MiB after |",
        export.rows,
        export.bytes as f64 / (1024.0 * 1024.0),
        export.elapsed.as_secs_f64(),
        export.rows as f64 / export.elapsed.as_secs_f64(),
        export.rss_before_kib as f64 / 1024.0,
        export.rss_after_kib as f64 / 1024.0,
    );
    println!(
        "| service peak RSS | {:.1} MiB (the most any one instance held) |",
        peak_rss as f64 / 1024.0
    );
    println!();
    println!("ingest / baseline:   {:.2}", ingest_rate / baseline);
    println!(
        "ingest alone / baseline: {:.2}",
        ingest_only.rate() / baseline
    );
    println!("creation / baseline: {:.2}", creation.rate() / baseline);
    println!(
        "two instances / baseline: {:.2}",
        two.ingest.rate() / baseline
    );
    println!("apply / ingest:      {:.2}", apply_rate / ingest_rate);
    println!(
        "storm apply / storm ingest: {:.2}",
        storm_apply_rate / storm.ingest.rate()
    );
    println!(
        "two instances: unique applied / unique ingested: {:.2}",
        (two.unique as f64 / two.drained_after.as_secs_f64())
            / (two.unique as f64 / two.ingest.elapsed.as_secs_f64())
    );
    Ok(())
}

/// Postgres's own counters at one moment, to tell what a phase cost the database.
///
/// The WAL position and the transaction ids are exact at once. The transaction and fsync
/// counts are not: each backend reports its own to the shared statistics at the end of a
/// transaction at most once a second, and an idle backend may keep a last second's worth to
/// itself until its next transaction or until it exits. So those two are only read once the
/// phase's service has stopped and every one of its sessions has ended (`settle`), and a
/// window that ends while the service still runs (ingest, before the drain) shows none.
#[derive(Clone, Copy)]
struct PgCounters {
    /// Transactions committed or rolled back in the database (`pg_stat_database`); the
    /// bench's own few queries (a backlog poll every 50 ms) are among them.
    xacts: i64,
    /// Transaction ids handed out, cluster-wide: the transactions that wrote (exact, to
    /// within the transactions still open).
    xids: i64,
    /// The WAL's insert position in bytes, cluster-wide (`pg_current_wal_lsn()`).
    wal_lsn: i64,
    /// WAL fsyncs, cluster-wide (`pg_stat_wal.wal_sync`): one per durable commit unless
    /// commits share a flush.
    wal_syncs: i64,
}

impl PgCounters {
    async fn read(db: &PgPool, database: &str) -> anyhow::Result<Self> {
        let (xacts, xids, wal_lsn, wal_syncs): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database
                     WHERE datname = $1),
                    pg_snapshot_xmax(pg_current_snapshot())::text::bigint,
                    pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint,
                    (SELECT wal_sync FROM pg_stat_wal)",
        )
        .bind(database)
        .fetch_one(db)
        .await?;
        Ok(Self {
            xacts,
            xids,
            wal_lsn,
            wal_syncs,
        })
    }
}

/// What Postgres did over one window of a phase.
struct PgWork {
    seconds: f64,
    /// None when the window ended while the service still ran: see `PgCounters`.
    xacts: Option<i64>,
    xids: i64,
    wal_bytes: i64,
    wal_syncs: Option<i64>,
}

impl PgWork {
    /// From `start` to `end` (read as the window closed), with the reported counts from
    /// `settled` (read once the window's sessions ended), if the window ended with them.
    fn between(
        start: &PgCounters,
        end: &PgCounters,
        settled: Option<&PgCounters>,
        window: Duration,
    ) -> Self {
        Self {
            seconds: window.as_secs_f64(),
            xacts: settled.map(|s| s.xacts - start.xacts),
            xids: end.xids - start.xids,
            wal_bytes: end.wal_lsn - start.wal_lsn,
            wal_syncs: settled.map(|s| s.wal_syncs - start.wal_syncs),
        }
    }
}

/// Waits until no session but the bench's own is left on the server (a backend hands in its
/// statistics as it exits), then a second more for the WAL writer's.
async fn settle(db: &PgPool) -> anyhow::Result<()> {
    for _ in 0..300 {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE backend_type = 'client backend' AND application_name <> $1",
        )
        .bind(BENCH_SESSION)
        .fetch_one(db)
        .await?;
        if others == 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("sessions were still open 30 s after their service stopped")
}

/// Ends a phase: the services' peak RSS, then each stopped, then Postgres's counters once
/// their sessions have ended.
async fn finish(services: Vec<Service>, db: &PgPool) -> anyhow::Result<(Vec<u64>, PgCounters)> {
    let mut rss = Vec::new();
    for service in &services {
        rss.push(service.peak_rss_kib()?);
    }
    // All asked to stop at once: each may take its shutdown grace.
    for service in &services {
        service.signal_stop()?;
    }
    for service in services {
        service.stop()?;
    }
    settle(db).await?;
    Ok((rss, PgCounters::read(db, DATABASE).await?))
}

/// Donations to seed for one ingest phase: more than it can use at 15,000 events a second.
fn seeds(options: &Options) -> i64 {
    i64::try_from(options.seconds * 15_000)
        .unwrap_or(i64::MAX)
        .max(50_000)
}

/// One row of the per-phase table.
struct Row {
    phase: String,
    /// Per second: requests answered well, or (through a drain) events applied.
    rate: f64,
    /// p50 and p99, when the row is a load of requests.
    latency_ms: Option<(f64, f64)>,
    /// What the per-event figures divide by.
    events: u64,
    pg: PgWork,
    /// The peak RSS of each service process in the phase.
    rss_kib: Vec<u64>,
}

impl Row {
    fn load(phase: &str, measured: &Measured, pg: PgWork, rss_kib: Vec<u64>) -> Self {
        Self {
            phase: phase.into(),
            rate: measured.rate(),
            latency_ms: Some((measured.percentile(50.0), measured.percentile(99.0))),
            events: measured.ok,
            pg,
            rss_kib,
        }
    }
}

/// The per-phase table, as Markdown.
fn print_phases(rows: &[Row], baseline: f64) {
    println!(
        "| phase | rate /s | p50 ms | p99 ms | x baseline | Postgres xacts/s | xacts/event | write xacts/event | WAL bytes/event | WAL fsyncs/event | peak RSS MiB |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for row in rows {
        let per = |n: i64| n as f64 / row.events.max(1) as f64;
        println!(
            "| {} | {:.0} | {} | {} | {:.2} | {} | {} | {:.2} | {:.0} | {} | {} |",
            row.phase,
            row.rate,
            or_dash(row.latency_ms.map(|(p50, _)| format!("{p50:.1}"))),
            or_dash(row.latency_ms.map(|(_, p99)| format!("{p99:.1}"))),
            row.rate / baseline,
            or_dash(
                row.pg
                    .xacts
                    .map(|x| format!("{:.0}", x as f64 / row.pg.seconds))
            ),
            or_dash(row.pg.xacts.map(|x| format!("{:.2}", per(x)))),
            per(row.pg.xids),
            per(row.pg.wal_bytes),
            or_dash(row.pg.wal_syncs.map(|x| format!("{:.3}", per(x)))),
            or_dash((!row.rss_kib.is_empty()).then(|| mib_list(&row.rss_kib))),
        );
    }
    println!();
    println!(
        "Per event: per donation created, read, webhook request answered, event applied or row exported, as the row says. \
         A paid donation owes its donor a receipt, which the service's worker writes after the event (here as a file, there being no SMTP server); \
         the last row of each applying phase runs until every receipt is written, so that no phase leaves work to the next. \
         Postgres's transactions and WAL fsyncs are counted once the phase's service has stopped (its sessions hand in their statistics as they end, plus 1 s for the WAL writer's), \
         so a row whose window ends while the service still works (ingest; until the backlog is empty) has none; \
         the bench's own polls (20 a second while it waits) are among them. \
         Write transactions (transaction ids handed out) and WAL bytes (`pg_current_wal_lsn()`) are exact at once; both, and the fsyncs, are cluster-wide."
    );
}

/// `a / b` MiB, for one or more processes' peak RSS in KiB.
fn mib_list(kib: &[u64]) -> String {
    kib.iter()
        .map(|k| format!("{:.1}", *k as f64 / 1024.0))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// What the two-instance phase measured.
struct TwoInstances {
    ingest: Measured,
    /// Distinct events sent, and the requests that re-sent one to the other instance.
    unique: u64,
    duplicates: u64,
    ingest_done: Duration,
    drained_after: Duration,
    /// Every event applied and every receipt written.
    done_after: Duration,
    deadlocks: i64,
    start: PgCounters,
    ingested: PgCounters,
    drained: PgCounters,
    done: PgCounters,
    settled: PgCounters,
    rss_kib: Vec<u64>,
}

/// Two instances, each with its worker on and half the database connections, sharing the
/// database: unique `payment_intent.succeeded` events for fresh donations, request `i` to
/// instance `i % 2`, and every 10th request a duplicate of an event already sent, to the
/// other instance than the first copy. Then the backlog drains and the outcome is checked:
/// every event applied once (at its first attempt), every duplicate counted, every donation
/// paid, and the campaign moved by exactly the unique events.
async fn two_instances(
    options: &Options,
    pg: &LocalPostgres,
    stripe: &str,
    data_dir: &Path,
    http: &reqwest::Client,
    db: &PgPool,
    template: &Arc<String>,
) -> anyhow::Result<TwoInstances> {
    let donations = Arc::new(seed_donations(db, seeds(options), "pi_two_").await?);
    let (raised_before, count_before): (i64, i64) = sqlx::query_as(
        "SELECT raised_amount, donation_count FROM campaigns WHERE slug = 'kashmir'",
    )
    .fetch_one(db)
    .await?;
    let deadlocks_before = deadlocks(db).await?;
    let mut services = vec![
        Service::start(pg, stripe, data_dir, true, 8)?,
        Service::start(pg, stripe, data_dir, true, 8)?,
    ];
    let mut urls = Vec::new();
    for service in &mut services {
        urls.push(format!(
            "{}/v1/webhooks/stripe",
            service.wait_ready().await?
        ));
    }
    let urls = Arc::new(urls);
    // Request 10g + r (r < 9) sends event 9g + r; request 10g + 9 re-sends an earlier one.
    let phase = Options {
        requests: options.requests.min(donations.len() as u64 / 9 * 10),
        ..*options
    };
    // One `created` for the phase, so that a duplicate is byte for byte the first copy.
    let created = now();
    let start = PgCounters::read(db, DATABASE).await?;
    let started = Instant::now();
    let ingest = load(&phase, {
        let (http, donations, template) = (http.clone(), donations.clone(), template.clone());
        move |i| {
            let (http, donations, template, urls) = (
                http.clone(),
                donations.clone(),
                template.clone(),
                urls.clone(),
            );
            async move {
                let (group, r) = (i / 10, i % 10);
                let (k, instance) = if r < 9 {
                    (9 * group + r, (9 * group + r) % 2)
                } else {
                    // From ten groups back (sent, most likely answered), or for the first
                    // ten groups from the first (perhaps still in flight: a concurrent
                    // duplicate).
                    let k = 9 * group.saturating_sub(10) + group % 9;
                    (k, (k + 1) % 2)
                };
                let (donation, intent) = &donations[k as usize];
                let body = event_for(
                    &template,
                    &format!("evt_two_{k}"),
                    donation,
                    intent,
                    created,
                );
                deliver(&http, urls[instance as usize].clone(), body).await
            }
        }
    })
    .await;
    let ingest_done = started.elapsed();
    let ingested = PgCounters::read(db, DATABASE).await?;
    warn_if_exhausted(&ingest, phase.requests);
    let drained_ok = drain(db, Duration::from_secs(600)).await;
    let drained_after = started.elapsed();
    let drained = PgCounters::read(db, DATABASE).await?;
    let receipts = match drained_ok {
        Ok(true) => receipts_written(db).await,
        _ => Ok(()),
    };
    let done_after = started.elapsed();
    let done = PgCounters::read(db, DATABASE).await?;
    let (rss_kib, settled) = finish(services, db).await?;
    ensure!(
        drained_ok?,
        "the two instances did not drain their backlog within 600 s"
    );
    receipts?;

    let sent = ingest.ok + ingest.failed;
    let (duplicates, unique) = (sent / 10, sent - sent / 10);
    let (stored, applied_once, deliveries, paid): (i64, i64, i64, i64) = sqlx::query_as(
        r#"SELECT count(*),
                  count(*) FILTER (WHERE state = 'applied' AND attempts = 1),
                  coalesce(sum(delivery_count), 0)::bigint,
                  count(*) FILTER (WHERE EXISTS (
                      SELECT 1 FROM donations d
                      WHERE d.payment_intent_id = e.object_id AND d.status = 'succeeded'))
           FROM stripe_events e WHERE id LIKE 'evt_two_%'"#,
    )
    .fetch_one(db)
    .await?;
    let touched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM donations
         WHERE payment_intent_id LIKE 'pi_two_%' AND status <> 'pending'",
    )
    .fetch_one(db)
    .await?;
    let (raised, count): (i64, i64) = sqlx::query_as(
        "SELECT raised_amount, donation_count FROM campaigns WHERE slug = 'kashmir'",
    )
    .fetch_one(db)
    .await?;
    let (stored, deliveries) = (u64::try_from(stored)?, u64::try_from(deliveries)?);
    // A request that failed may or may not have stored its event; with none failed, every
    // event sent is stored and every delivery counted.
    ensure!(
        stored <= unique && (ingest.failed > 0 || stored == unique),
        "{stored} events stored for {unique} sent ({} requests failed)",
        ingest.failed
    );
    ensure!(
        deliveries >= ingest.ok && deliveries <= sent && (ingest.failed > 0 || deliveries == sent),
        "{deliveries} deliveries counted for {} answered 200 of {sent} sent",
        ingest.ok
    );
    ensure!(
        u64::try_from(applied_once)? == stored,
        "only {applied_once} of {stored} events applied at their first attempt"
    );
    ensure!(
        u64::try_from(paid)? == stored && u64::try_from(touched)? == stored,
        "{paid} events' donations paid, {touched} donations changed, for {stored} events"
    );
    let stored = i64::try_from(stored)?;
    ensure!(
        count - count_before == stored && raised - raised_before == 2500 * stored,
        "the campaign moved by {} gifts and {} raised for {stored} events",
        count - count_before,
        raised - raised_before
    );
    Ok(TwoInstances {
        ingest,
        unique,
        duplicates,
        ingest_done,
        drained_after,
        done_after,
        deadlocks: deadlocks(db).await? - deadlocks_before,
        start,
        ingested,
        drained,
        done,
        settled,
        rss_kib,
    })
}

/// What the export phase measured.
struct Export {
    rows: u64,
    bytes: u64,
    elapsed: Duration,
    rss_before_kib: u64,
    rss_after_kib: u64,
}

/// Exports every donation as CSV through the finance API, reading the body as it streams
/// (never holding it), and the service's peak RSS before and after: a streamed export costs
/// the service a chunk at a time, not the export's size.
async fn export(
    http: &reqwest::Client,
    base: &str,
    db: &PgPool,
    service: &Service,
) -> anyhow::Result<Export> {
    let token = quickdonate::operators::access::create(
        db,
        &format!("bench-{}", std::process::id()),
        quickdonate::operators::access::Role::Finance,
    )
    .await?;
    let expected: i64 = sqlx::query_scalar("SELECT count(*) FROM donations")
        .fetch_one(db)
        .await?;
    let rss_before_kib = service.peak_rss_kib()?;
    let started = Instant::now();
    let mut response = http
        .get(format!("{base}/v1/finance/donations"))
        .bearer_auth(token)
        .header("accept", "text/csv")
        .send()
        .await?;
    ensure!(
        response.status() == 200,
        "the export answered {}",
        response.status()
    );
    let (mut bytes, mut lines) = (0u64, 0u64);
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    let elapsed = started.elapsed();
    // A header line, then one line per donation (no donor field here holds a newline).
    let rows = lines.saturating_sub(1);
    ensure!(
        rows == expected as u64,
        "the export gave {rows} rows for {expected} donations"
    );
    Ok(Export {
        rows,
        bytes,
        elapsed,
        rss_before_kib,
        rss_after_kib: service.peak_rss_kib()?,
    })
}

/// What the storm phase measured.
struct StormResult {
    events: usize,
    ingest: Measured,
    /// Postgres's counters as the storm's delivery started, as it ended, as its backlog
    /// emptied, and once every receipt was written (`done_after`).
    start: PgCounters,
    ingested: PgCounters,
    drained: PgCounters,
    done: PgCounters,
    done_after: Duration,
    ingest_done: Duration,
    drained_after: Duration,
    deadlocks: i64,
    stripe_reads: u64,
    most_reads_per_payment: u32,
}

/// Seeds the storm's payments, delivers their events shuffled, waits for the backlog to
/// empty, and checks every payment came out exact.
async fn storm(
    options: &Options,
    http: &reqwest::Client,
    base: &str,
    db: &PgPool,
    reads: &StripeReads,
) -> anyhow::Result<StormResult> {
    let payments = seed_donations(db, i64::try_from(options.storm_payments)?, "pi_storm_").await?;
    let t0 = time::OffsetDateTime::now_utc().unix_timestamp() - 600;
    let mut n = 0;
    let mut events: Vec<String> = payments
        .iter()
        .flat_map(|(donation, pi)| Storm::events(&mut n, pi, donation, t0))
        .collect();
    // Shuffled deterministically, so runs compare.
    let mut seed = 42u64;
    for i in (1..events.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        events.swap(i, (seed >> 33) as usize % (i + 1));
    }
    let count = events.len();
    let events = Arc::new(events);
    let (raised_before,): (i64,) =
        sqlx::query_as("SELECT raised_amount FROM campaigns WHERE slug = 'kashmir'")
            .fetch_one(db)
            .await?;
    let deadlocks_before = deadlocks(db).await?;

    let phase = Options {
        seconds: 600,
        requests: count as u64,
        ..*options
    };
    let start = PgCounters::read(db, DATABASE).await?;
    let started = Instant::now();
    let ingest = load(&phase, {
        let (http, url) = (http.clone(), format!("{base}/v1/webhooks/stripe"));
        move |i| {
            let (http, url, events) = (http.clone(), url.clone(), events.clone());
            async move { deliver(&http, url, events[i as usize].clone().into_bytes()).await }
        }
    })
    .await;
    let ingest_done = started.elapsed();
    let ingested = PgCounters::read(db, DATABASE).await?;
    ensure!(
        drain(db, Duration::from_secs(600)).await?,
        "the storm's backlog did not drain within 600 s"
    );
    let drained_after = started.elapsed();
    let drained = PgCounters::read(db, DATABASE).await?;
    receipts_written(db).await?;
    let done_after = started.elapsed();
    let done = PgCounters::read(db, DATABASE).await?;

    let (exact, applied, errors): (i64, i64, i64) = sqlx::query_as(
        r#"SELECT (SELECT count(*) FROM donations
                   WHERE payment_intent_id LIKE 'pi_storm_%' AND status = 'succeeded'
                     AND charge_id = 'ch_storm_' || substr(payment_intent_id, 10)
                     AND fee = $1 AND refunded_amount = $2 AND counted_amount = $3),
                  (SELECT count(*) FROM stripe_events
                   WHERE id LIKE 'evt_storm_%' AND state = 'applied'),
                  (SELECT count(*) FROM stripe_events
                   WHERE id LIKE 'evt_storm_%' AND last_error IS NOT NULL)"#,
    )
    .bind(Storm::FEE)
    .bind(Storm::REFUND)
    .bind(Storm::AMOUNT - Storm::REFUND)
    .fetch_one(db)
    .await?;
    ensure!(
        usize::try_from(exact)? == payments.len(),
        "only {exact} of {} storm payments came out exact",
        payments.len()
    );
    ensure!(
        usize::try_from(applied)? == count && errors == 0,
        "{applied} of {count} storm events applied, {errors} with errors"
    );
    let (raised_after,): (i64,) =
        sqlx::query_as("SELECT raised_amount FROM campaigns WHERE slug = 'kashmir'")
            .fetch_one(db)
            .await?;
    ensure!(
        raised_after - raised_before == exact * (Storm::AMOUNT - Storm::REFUND),
        "the campaign total moved by {} for {exact} payments",
        raised_after - raised_before
    );
    let (stripe_reads, most_reads_per_payment) = reads.counts();
    Ok(StormResult {
        events: count,
        ingest,
        start,
        ingested,
        drained,
        done,
        done_after,
        ingest_done,
        drained_after,
        deadlocks: deadlocks(db).await? - deadlocks_before,
        stripe_reads,
        most_reads_per_payment,
    })
}

/// Signed `payment_intent.succeeded` events, `{id_prefix}{i}` for the `i`th of `donations`,
/// one per request, until the time is up or every donation has had its event.
async fn send_events(
    options: &Options,
    http: &reqwest::Client,
    base: &str,
    donations: &Arc<Vec<(String, String)>>,
    template: &Arc<String>,
    id_prefix: &'static str,
) -> Measured {
    let (http, url) = (http.clone(), format!("{base}/v1/webhooks/stripe"));
    let (donations, template) = (donations.clone(), template.clone());
    let phase = Options {
        requests: options.requests.min(donations.len() as u64),
        ..*options
    };
    let measured = load(&phase, move |i| {
        let (http, url) = (http.clone(), url.clone());
        let (donations, template) = (donations.clone(), template.clone());
        async move {
            let Some((donation, intent)) = donations.get(i as usize) else {
                return false;
            };
            let body = event_for(
                &template,
                &format!("{id_prefix}{i}"),
                donation,
                intent,
                now(),
            );
            deliver(&http, url, body).await
        }
    })
    .await;
    warn_if_exhausted(&measured, phase.requests);
    measured
}

/// Says so when a phase ran out of seeded donations before its time was up: its rate is
/// still right (it divides by the time it took), but it ran for less than asked.
fn warn_if_exhausted(measured: &Measured, requests: u64) {
    if measured.ok + measured.failed >= requests {
        eprintln!(
            "note: every one of the phase's {requests} seeded donations was used in {:.1} s",
            measured.elapsed.as_secs_f64()
        );
    }
}

/// The time now, as Stripe writes `created`.
fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Posts `body` to the webhook endpoint `url`, signed now as Stripe signs; true if stored.
async fn deliver(http: &reqwest::Client, url: String, body: Vec<u8>) -> bool {
    let header = sign(
        &SecretString::from(WEBHOOK_SECRET),
        &body,
        time::OffsetDateTime::now_utc().unix_timestamp(),
    );
    let response = http
        .post(url)
        .header("stripe-signature", header)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    matches!(response, Ok(r) if r.status() == 200)
}

/// What one phase of load measured.
struct Measured {
    ok: u64,
    failed: u64,
    elapsed: Duration,
    /// Latencies of successful requests, in microseconds, sorted.
    latencies: Vec<u32>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * (self.latencies.len() - 1) as f64).round() as usize;
        f64::from(self.latencies[rank]) / 1000.0
    }
}

/// Runs `request(i)` from `connections` tasks for `seconds`, `i` counting up from 0 across all.
async fn load<F, Fut>(options: &Options, request: F) -> Measured
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(options.seconds);
    let limit = options.requests;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..options.connections {
        let (next, request) = (next.clone(), request.clone());
        tasks.spawn(async move {
            let (mut ok, mut failed, mut latencies) = (0u64, 0u64, Vec::new());
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                let sent = Instant::now();
                if request(i).await {
                    ok += 1;
                    latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                } else {
                    failed += 1;
                }
            }
            (ok, failed, latencies)
        });
    }
    let mut measured = Measured {
        ok: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    while let Some(Ok((ok, failed, latencies))) = tasks.join_next().await {
        measured.ok += ok;
        measured.failed += failed;
        measured.latencies.extend(latencies);
    }
    measured.elapsed = started.elapsed();
    measured.latencies.sort_unstable();
    measured
}

/// A realistic `payment_intent.succeeded` event, from Stripe's own fixture object.
fn sample_event() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/stripe/payment_intent.json"
    );
    let mut intent: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the fixture")).expect("JSON");
    intent["status"] = json!("succeeded");
    intent["amount"] = json!(2500);
    intent["amount_received"] = json!(2500);
    intent["currency"] = json!("gbp");
    intent["last_payment_error"] = Value::Null;
    intent["latest_charge"] = Value::Null;
    intent["id"] = json!("pi_TEMPLATE");
    intent["metadata"] = json!({"donation_id": "DONATION_TEMPLATE", "campaign": "kashmir"});
    json!({
        "id": "evt_TEMPLATE", "object": "event", "api_version": "2026-09-30.clover", "created": 0,
        "livemode": false, "pending_webhooks": 1, "type": "payment_intent.succeeded",
        "request": {"id": null, "idempotency_key": null},
        "data": {"object": intent}
    })
}

/// The event `id` for `donation`, from the template's text (cheaper than building JSON per
/// event).
fn event_for(template: &str, id: &str, donation: &str, intent: &str, created: i64) -> Vec<u8> {
    template
        .replacen("evt_TEMPLATE", id, 1)
        .replacen("\"created\":0", &format!("\"created\":{created}"), 1)
        .replacen("pi_TEMPLATE", intent, 1)
        .replacen("DONATION_TEMPLATE", donation, 1)
        .into_bytes()
}

/// `n` pending £25 donations, written straight into the database, their PaymentIntents named
/// `{prefix}1` to `{prefix}{n}`; returns (donation id, PaymentIntent id) of each.
async fn seed_donations(
    db: &PgPool,
    n: i64,
    prefix: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        r#"INSERT INTO donations (id, campaign, frequency, amount, cover_fees_amount, total_amount,
                                  currency, donor_email, donor_first_name, donor_last_name,
                                  payment_intent_id)
           SELECT gen_random_uuid(), 'kashmir', 'one_off', 2500, 0, 2500, 'gbp',
                  'donor@example.org', 'Bench', 'Donor', $2 || g
           FROM generate_series(1, $1) AS g
           RETURNING id::text, payment_intent_id"#,
    )
    .bind(n)
    .bind(prefix)
    .fetch_all(db)
    .await?;
    Ok(rows)
}

/// Waits until no event is pending; false if `limit` passes first.
async fn drain(db: &PgPool, limit: Duration) -> anyhow::Result<bool> {
    until_none(
        db,
        "SELECT count(*) FROM stripe_events WHERE state = 'pending'",
        limit,
    )
    .await
}

/// Waits until every receipt the applied events owe donors is written: the rest of a paid
/// donation's work, which would otherwise spill into the next phase.
async fn receipts_written(db: &PgPool) -> anyhow::Result<()> {
    ensure!(
        until_none(
            db,
            "SELECT count(*) FROM receipts WHERE status = 'pending'",
            Duration::from_secs(600),
        )
        .await?,
        "receipts were still owed 600 s after the backlog emptied"
    );
    Ok(())
}

/// Waits until `count` (a `SELECT count(*)`) is 0, polling every 50 ms; false if `limit`
/// passes first.
async fn until_none(db: &PgPool, count: &'static str, limit: Duration) -> anyhow::Result<bool> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let pending: i64 = sqlx::query_scalar(count).fetch_one(db).await?;
        if pending == 0 {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(false)
}

/// pgbench: one durable INSERT of an event-sized jsonb row per transaction; returns (tps,
/// transactions).
fn pgbench(pg: &LocalPostgres, event: &Value, options: &Options) -> anyhow::Result<(f64, u64)> {
    let psql = |sql: &str| -> anyhow::Result<()> {
        let status = Command::new(pg.bin_dir().join("psql"))
            .args(["-q", "-X", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(pg.socket_dir())
            .args(["-U", "quickdonate", "-d", "baseline", "-c", sql])
            .status()?;
        ensure!(status.success(), "psql failed");
        Ok(())
    };
    psql(
        "CREATE TABLE IF NOT EXISTS events (id text PRIMARY KEY, payload jsonb NOT NULL, \
         received_at timestamptz NOT NULL DEFAULT now())",
    )?;
    let payload = serde_json::to_string(event)?.replace('\'', "''");
    let script = std::env::temp_dir().join(format!("quickdonate-bench-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        format!(
            "INSERT INTO events (id, payload) VALUES ('evt_' || gen_random_uuid(), '{payload}');\n"
        ),
    )?;
    let output = Command::new(pg.bin_dir().join("pgbench"))
        .args(["-n", "-j", "2", "-c"])
        .arg(options.connections.to_string())
        .arg("-T")
        .arg(options.seconds.to_string())
        .arg("-f")
        .arg(&script)
        .arg("-h")
        .arg(pg.socket_dir())
        .args(["-U", "quickdonate", "baseline"])
        .output()
        .context("Failed to run pgbench")?;
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "pgbench failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tps = stdout
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("tps = ")?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .with_context(|| format!("no tps in pgbench's output: {stdout}"))?;
    let transactions = stdout
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("number of transactions actually processed: ")?;
            rest.split(['/', ' ']).next()?.parse::<u64>().ok()
        })
        .with_context(|| format!("no transaction count in pgbench's output: {stdout}"))?;
    Ok((tps, transactions))
}

/// What the fake Stripe was asked to read, for the storm's "at most one call per payment".
#[derive(Default)]
struct StripeReads {
    by_payment: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

impl StripeReads {
    /// (all reads, the most for one payment)
    fn counts(&self) -> (u64, u32) {
        let reads = self.by_payment.lock().unwrap();
        (
            reads.values().map(|n| u64::from(*n)).sum(),
            reads.values().copied().max().unwrap_or(0),
        )
    }
}

/// A Stripe that answers at once: PaymentIntent creation, and reads of a storm's payment as
/// the worker asks for them (the PaymentIntent, its charge, fee and refund expanded).
#[expect(
    clippy::disallowed_methods,
    reason = "a fake Stripe for the benchmark, not the service's API"
)]
async fn fake_stripe() -> anyhow::Result<(String, Arc<StripeReads>)> {
    use axum::extract::Path;
    use axum::routing::{get, post};
    let counter = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(StripeReads::default());
    let app = axum::Router::new()
        .route(
            "/v1/payment_intents",
            post(move || {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                async move {
                    axum::Json(json!({
                        "id": format!("pi_fake_{n}"), "object": "payment_intent", "amount": 2559,
                        "amount_capturable": 0, "amount_received": 0, "capture_method": "automatic",
                        "client_secret": format!("pi_fake_{n}_secret_x"),
                        "confirmation_method": "automatic", "created": 1_700_000_000,
                        "currency": "gbp", "livemode": false, "metadata": {},
                        "payment_method_types": ["card"], "status": "requires_payment_method"
                    }))
                }
            }),
        )
        .route(
            "/v1/payment_intents/{id}",
            get({
                let reads = reads.clone();
                move |Path(id): Path<String>| {
                    *reads
                        .by_payment
                        .lock()
                        .unwrap()
                        .entry(id.clone())
                        .or_default() += 1;
                    async move { axum::Json(Storm::paid_now(&id)) }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{address}/"), reads))
}

/// The storm: for each of many paid donations, 25 distinct events as Stripe sends them over
/// ten minutes (snapshots of the PaymentIntent, a declined charge, the charge that paid and
/// its many updates, a partial refund), shuffled together.
struct Storm;

impl Storm {
    const AMOUNT: i64 = 2500;
    const FEE: i64 = 58;
    const REFUND: i64 = 500;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/stripe/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).expect("the fixture")).expect("JSON")
    }

    fn ids(pi: &str) -> (String, String, String, String) {
        let n = pi.trim_start_matches("pi_storm_");
        (
            format!("ch_storm_{n}"),
            format!("ch_declined_{n}"),
            format!("txn_storm_{n}"),
            format!("re_storm_{n}"),
        )
    }

    fn intent(pi: &str, donation: &str, status: &str) -> Value {
        let mut intent = Self::fixture("payment_intent");
        intent["id"] = json!(pi);
        intent["amount"] = json!(Self::AMOUNT);
        intent["currency"] = json!("gbp");
        intent["status"] = json!(status);
        intent["amount_received"] = json!(if status == "succeeded" {
            Self::AMOUNT
        } else {
            0
        });
        intent["last_payment_error"] = Value::Null;
        intent["latest_charge"] = Value::Null;
        intent["metadata"] = json!({"donation_id": donation, "campaign": "kashmir"});
        intent
    }

    fn charge(pi: &str, id: &str, succeeded: bool, refunded: i64) -> Value {
        let (_, _, txn, _) = Self::ids(pi);
        let mut charge = Self::fixture("charge");
        charge["id"] = json!(id);
        charge["payment_intent"] = json!(pi);
        charge["amount"] = json!(Self::AMOUNT);
        charge["currency"] = json!("gbp");
        charge["status"] = json!(if succeeded { "succeeded" } else { "failed" });
        charge["paid"] = json!(succeeded);
        charge["captured"] = json!(succeeded);
        charge["amount_captured"] = json!(if succeeded { Self::AMOUNT } else { 0 });
        charge["amount_refunded"] = json!(refunded);
        charge["refunded"] = json!(false);
        charge["balance_transaction"] = if succeeded { json!(txn) } else { Value::Null };
        charge["metadata"] = json!({});
        charge
    }

    fn refund(pi: &str, status: &str) -> Value {
        let (charge, _, _, refund_id) = Self::ids(pi);
        let mut refund = Self::fixture("refund");
        refund["id"] = json!(refund_id);
        refund["charge"] = json!(charge);
        refund["payment_intent"] = json!(pi);
        refund["amount"] = json!(Self::REFUND);
        refund["currency"] = json!("gbp");
        refund["status"] = json!(status);
        refund
    }

    /// The payment as a fetch sees it now: paid, its fee known, partly refunded.
    fn paid_now(pi: &str) -> Value {
        let (charge_id, _, txn, _) = Self::ids(pi);
        let mut intent = Self::intent(pi, "", "succeeded");
        intent["metadata"] = json!({});
        let mut charge = Self::charge(pi, &charge_id, true, Self::REFUND);
        charge["balance_transaction"] = json!({
            "id": txn, "object": "balance_transaction", "amount": Self::AMOUNT, "fee": Self::FEE,
            "net": Self::AMOUNT - Self::FEE, "currency": "gbp", "reporting_category": "charge",
            "type": "charge", "created": 1_700_000_000
        });
        charge["refunds"] = json!({
            "object": "list", "data": [Self::refund(pi, "succeeded")], "has_more": false,
            "url": format!("/v1/charges/{charge_id}/refunds")
        });
        intent["latest_charge"] = charge;
        intent
    }

    fn event(n: &mut u64, kind: &str, object: Value, created: i64) -> String {
        *n += 1;
        serde_json::to_string(&json!({
            "id": format!("evt_storm_{n}"), "object": "event",
            "api_version": "2026-09-30.clover", "created": created, "livemode": false,
            "pending_webhooks": 1, "type": kind,
            "request": {"id": null, "idempotency_key": null},
            "data": {"object": object}
        }))
        .expect("an event serialises")
    }

    /// The 25 events of one payment, `created` from `t0` over ten minutes.
    fn events(n: &mut u64, pi: &str, donation: &str, t0: i64) -> Vec<String> {
        let (charge, declined, _, _) = Self::ids(pi);
        let mut failed = Self::intent(pi, donation, "requires_payment_method");
        failed["last_payment_error"] = json!({"type": "card_error", "code": "card_declined"});
        failed["latest_charge"] = json!(declined);
        let mut succeeded = Self::intent(pi, donation, "succeeded");
        succeeded["latest_charge"] = json!(charge);
        let paid = |refunded| Self::charge(pi, &charge, true, refunded);
        let mut events = vec![
            Self::event(
                n,
                "payment_intent.created",
                Self::intent(pi, donation, "requires_payment_method"),
                t0,
            ),
            Self::event(
                n,
                "payment_intent.requires_action",
                Self::intent(pi, donation, "requires_action"),
                t0 + 10,
            ),
            Self::event(
                n,
                "charge.failed",
                Self::charge(pi, &declined, false, 0),
                t0 + 20,
            ),
            Self::event(n, "payment_intent.payment_failed", failed, t0 + 20),
            Self::event(
                n,
                "payment_intent.processing",
                Self::intent(pi, donation, "processing"),
                t0 + 30,
            ),
            Self::event(n, "charge.succeeded", paid(0), t0 + 40),
            Self::event(n, "payment_intent.succeeded", succeeded, t0 + 40),
            Self::event(n, "charge.captured", paid(0), t0 + 40),
            Self::event(n, "charge.updated", paid(0), t0 + 60),
            Self::event(n, "refund.created", Self::refund(pi, "pending"), t0 + 100),
            Self::event(n, "charge.refunded", paid(Self::REFUND), t0 + 100),
            Self::event(n, "refund.updated", Self::refund(pi, "succeeded"), t0 + 110),
            Self::event(
                n,
                "charge.refund.updated",
                Self::refund(pi, "succeeded"),
                t0 + 110,
            ),
            Self::event(n, "charge.updated", paid(Self::REFUND), t0 + 120),
        ];
        for k in 0..11 {
            events.push(Self::event(
                n,
                "charge.updated",
                paid(Self::REFUND),
                t0 + 150 + k * 40,
            ));
        }
        events
    }
}

/// Deadlocks Postgres has detected in the bench's database so far.
async fn deadlocks(db: &PgPool) -> anyhow::Result<i64> {
    // Statistics reach pg_stat_database within a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    Ok(sqlx::query_scalar(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(db)
    .await?)
}

/// A directory of the bench's own, removed when dropped.
struct OwnDir(PathBuf);

impl OwnDir {
    fn create(path: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&path)
            .with_context(|| format!("Failed to create {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for OwnDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The service under test: the release binary beside this one.
struct Service {
    child: Child,
    address: String,
}

impl Service {
    fn start(
        pg: &LocalPostgres,
        stripe: &str,
        data_dir: &Path,
        apply_events: bool,
        max_connections: u32,
    ) -> anyhow::Result<Self> {
        let binary = sibling("quickdonate")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(&binary)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", pg.url("quickdonate"))
            .env("DATABASE_MAX_CONNECTIONS", max_connections.to_string())
            // Receipts (written as files, with no SMTP_URL) go where the bench's Postgres
            // is, removed at exit.
            .env("DATA_DIR", data_dir)
            .env("APPLY_EVENTS", apply_events.to_string())
            // The load comes from one address with one email: the card-testing caps would
            // (rightly) stop it after a few.
            .env("DONATION_LIMIT_PER_IP", "off")
            .env("DONATION_LIMIT_PER_EMAIL", "off")
            .env("DONATION_LIMIT_PER_CAMPAIGN", "off")
            .env(
                "CAMPAIGNS_FILE",
                concat!(env!("CARGO_MANIFEST_DIR"), "/config/campaigns.toml"),
            )
            .env("STRIPE_SECRET_KEY", "sk_test_bench")
            .env("STRIPE_PUBLISHABLE_KEY", "pk_test_bench")
            .env("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .env("STRIPE_API_BASE", stripe)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("Failed to start {}", binary.display()))?;
        Ok(Self {
            child,
            address: format!("http://127.0.0.1:{port}"),
        })
    }

    async fn wait_ready(&mut self) -> anyhow::Result<String> {
        for _ in 0..600 {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.address)).await
                && r.status() == 200
            {
                return Ok(self.address.clone());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("the service exited: {status}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the service never became ready")
    }

    /// The most memory the process has held at once (VmHWM), in KiB.
    fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmHWM in /proc")
    }

    fn stop(mut self) -> anyhow::Result<()> {
        self.terminate()
    }

    fn signal_stop(&self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        Ok(())
    }

    fn terminate(&mut self) -> anyhow::Result<()> {
        self.signal_stop()?;
        for _ in 0..100 {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.child.kill()?;
        Ok(())
    }
}

/// However the bench ends, the service does not outlive it.
impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.terminate();
        }
    }
}

/// A binary built beside this one.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join(name);
    ensure!(
        path.is_file(),
        "{} is missing: run the bench with `cargo run --release --bin bench`, which builds it",
        path.display()
    );
    Ok(path)
}
