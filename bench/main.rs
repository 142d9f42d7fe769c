//! The benchmark: `cargo run --release --bin bench [-- --seconds 20 --connections 64
//! --storm-payments 400]`.
//!
//! Starts a durable local Postgres, a fake Stripe that answers at once, and the release build
//! of the service against them; then measures, in one run on this machine:
//! 1. the baseline: pgbench doing one durable single-row INSERT of an event-sized jsonb row;
//! 2. donation creation through the whole path (validation, row, PaymentIntent, answer);
//! 3. webhook ingest of unique, correctly signed `payment_intent.succeeded` events for existing
//!    donations, and how long the worker takes to apply them all;
//! 4. reads of the Kashmir campaign;
//! 5. webhook ingest again with the worker off;
//! 6. a storm: 25 distinct events for each of a few hundred paid donations, created over ten
//!    minutes and delivered shuffled, until every one is applied; deadlocks and Stripe reads
//!    counted, every payment checked;
//!
//! and the service's peak RSS.
//!
//! Load stays on loopback; every loop is bounded in time and in count.

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
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        seconds: 20,
        connections: 64,
        requests: MAX_REQUESTS,
        storm_payments: 400,
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
            _ => bail!("unknown option {arg}; try --seconds N --connections N --storm-payments N"),
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
    pg.ensure_database("quickdonate").await?;
    pg.ensure_database("baseline").await?;

    let (stripe, stripe_reads) = fake_stripe().await?;
    let mut service = Service::start(&pg, &stripe, true)?;
    let base = service.wait_ready().await?;
    let db = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(pg.connect_options("quickdonate"))
        .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.connections)
        .build()?;
    let event = sample_event();
    let template = Arc::new(serde_json::to_string(&event)?);

    eprintln!(
        "1/7 baseline: pgbench, {} clients, {} s",
        options.connections, options.seconds
    );
    let baseline = pgbench(&pg, &event, &options)?;

    eprintln!(
        "2/7 donation creation, {} connections, {} s",
        options.connections, options.seconds
    );
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

    eprintln!(
        "3/7 webhook ingest, {} connections, {} s",
        options.connections, options.seconds
    );
    let donations = seed_donations(&db, 400_000, "pi_bench_").await?;
    let donations = Arc::new(donations);
    let started = Instant::now();
    let ingest = send_events(&options, &http, &base, &donations, &template, 0).await;
    let ingest_done = started.elapsed();
    let drained = drain(&db, Duration::from_secs(600)).await?;
    let drained_after = started.elapsed();
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE state = 'applied'")
            .fetch_one(&db)
            .await?;
    ensure!(drained, "the worker did not drain its backlog within 600 s");
    let (raised, count): (i64, i64) = sqlx::query_as(
        "SELECT raised_amount, donation_count FROM campaigns WHERE slug = 'kashmir'",
    )
    .fetch_one(&db)
    .await?;
    ensure!(
        count == applied && raised == applied * 2500,
        "the campaign total is off: {count} gifts, {raised} raised, {applied} events applied"
    );

    eprintln!(
        "4/7 campaign reads, {} connections, {} s",
        options.connections,
        options.seconds.min(10)
    );
    let read_options = Options {
        seconds: options.seconds.min(10),
        ..options
    };
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

    let peak_rss = service.peak_rss_kib()?;
    service.stop()?;

    // Ingest alone: the same path with no worker competing for the two cores, to tell the
    // cost of taking a webhook from the cost of applying it.
    eprintln!(
        "5/7 webhook ingest with the worker off, {} connections, {} s",
        options.connections, options.seconds
    );
    let mut ingest_only_service = Service::start(&pg, &stripe, false)?;
    let ingest_only_base = ingest_only_service.wait_ready().await?;
    let used = ingest.ok + ingest.failed;
    let ingest_only = send_events(
        &options,
        &http,
        &ingest_only_base,
        &donations,
        &template,
        used,
    )
    .await;
    let peak_rss = peak_rss.max(ingest_only_service.peak_rss_kib()?);
    ingest_only_service.stop()?;

    eprintln!(
        "6/7 storm: 25 distinct events for each of {} payments, shuffled, {} connections",
        options.storm_payments, options.connections
    );
    // What the ingest-alone phase left unapplied is not the storm's to drain.
    sqlx::query(
        "UPDATE stripe_events SET state = 'ignored', last_error = 'bench: left by ingest alone'
         WHERE state = 'pending'",
    )
    .execute(&db)
    .await?;
    let mut storm_service = Service::start(&pg, &stripe, true)?;
    let storm_base = storm_service.wait_ready().await?;
    let storm = storm(&options, &http, &storm_base, &db, &stripe_reads).await?;
    let peak_rss = peak_rss.max(storm_service.peak_rss_kib()?);
    storm_service.stop()?;

    eprintln!("7/7 finance export: every donation as CSV, streamed");
    let mut export_service = Service::start(&pg, &stripe, false)?;
    let export_base = export_service.wait_ready().await?;
    let export = export(&http, &export_base, &db, &export_service).await?;
    let peak_rss = peak_rss.max(export_service.peak_rss_kib()?);
    export_service.stop()?;
    db.close().await;
    let pg = tokio::task::spawn_blocking(move || {
        let _ = pg.stop();
    });
    let _ = pg.await;

    let ingest_rate = ingest.ok as f64 / ingest.elapsed.as_secs_f64();
    let apply_rate = applied as f64 / drained_after.as_secs_f64();
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
        "| events applied | {applied} in {:.1} s from the start of ingest ({:.0} /s; ingest ended at {:.1} s, backlog empty {:.1} s later) |",
        drained_after.as_secs_f64(),
        apply_rate,
        ingest_done.as_secs_f64(),
        (drained_after - ingest_done).as_secs_f64()
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
        "| storm: {} events ({} payments x 25), shuffled | ingest {:.0} /s, p50 {:.1} ms, p99 {:.1} ms ({} ok, {} failed); all applied {:.1} s from the start ({:.0} /s; ingest ended at {:.1} s, backlog empty {:.1} s later); {} deadlocks; {} Stripe reads, at most {} per payment; every payment exact |",
        storm.events,
        options.storm_payments,
        storm.ingest.rate(),
        storm.ingest.percentile(50.0),
        storm.ingest.percentile(99.0),
        storm.ingest.ok,
        storm.ingest.failed,
        storm.drained_after.as_secs_f64(),
        storm.events as f64 / storm.drained_after.as_secs_f64(),
        storm.ingest_done.as_secs_f64(),
        (storm.drained_after - storm.ingest_done).as_secs_f64(),
        storm.deadlocks,
        storm.stripe_reads,
        storm.most_reads_per_payment,
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
    println!("| service peak RSS | {:.1} MiB |", peak_rss as f64 / 1024.0);
    println!();
    println!("ingest / baseline:   {:.2}", ingest_rate / baseline);
    println!(
        "ingest alone / baseline: {:.2}",
        ingest_only.rate() / baseline
    );
    println!("creation / baseline: {:.2}", creation.rate() / baseline);
    println!("apply / ingest:      {:.2}", apply_rate / ingest_rate);
    println!(
        "storm apply / storm ingest: {:.2}",
        (storm.events as f64 / storm.drained_after.as_secs_f64()) / storm.ingest.rate()
    );
    Ok(())
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
    let token = quickdonate::finance::access::create(
        db,
        &format!("bench-{}", std::process::id()),
        quickdonate::finance::access::Role::Finance,
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
    ensure!(
        drain(db, Duration::from_secs(600)).await?,
        "the storm's backlog did not drain within 600 s"
    );
    let drained_after = started.elapsed();

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
        ingest_done,
        drained_after,
        deadlocks: deadlocks(db).await? - deadlocks_before,
        stripe_reads,
        most_reads_per_payment,
    })
}

/// Signed `payment_intent.succeeded` events for donations `offset..`, one per request.
async fn send_events(
    options: &Options,
    http: &reqwest::Client,
    base: &str,
    donations: &Arc<Vec<(String, String)>>,
    template: &Arc<String>,
    offset: u64,
) -> Measured {
    let (http, url) = (http.clone(), format!("{base}/v1/webhooks/stripe"));
    let (donations, template) = (donations.clone(), template.clone());
    load(options, move |i| {
        let (http, url) = (http.clone(), url.clone());
        let (donations, template) = (donations.clone(), template.clone());
        async move {
            let i = i + offset;
            let Some((donation, intent)) = donations.get(i as usize) else {
                return false;
            };
            deliver(&http, url, event_for(&template, i, donation, intent)).await
        }
    })
    .await
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

/// The event for donation `i`, from the template's text (cheaper than building JSON per event).
fn event_for(template: &str, i: u64, donation: &str, intent: &str) -> Vec<u8> {
    template
        .replacen("evt_TEMPLATE", &format!("evt_bench_{i}"), 1)
        .replacen(
            "\"created\":0",
            &format!(
                "\"created\":{}",
                time::OffsetDateTime::now_utc().unix_timestamp()
            ),
            1,
        )
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
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE state = 'pending'")
                .fetch_one(db)
                .await?;
        if pending == 0 {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(false)
}

/// pgbench: one durable INSERT of an event-sized jsonb row per transaction.
fn pgbench(pg: &LocalPostgres, event: &Value, options: &Options) -> anyhow::Result<f64> {
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
    stdout
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("tps = ")?;
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
        .with_context(|| format!("no tps in pgbench's output: {stdout}"))
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

/// The service under test: the release binary beside this one.
struct Service {
    child: Child,
    address: String,
}

impl Service {
    fn start(pg: &LocalPostgres, stripe: &str, apply_events: bool) -> anyhow::Result<Self> {
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
            .env("DATABASE_MAX_CONNECTIONS", "16")
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

    fn terminate(&mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
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
