//! `cargo run` on a machine with Postgres installed and nothing configured: the binary starts
//! its own Postgres, simulates payments, serves the flow, and keeps donations across a restart.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::donation_body;

const BINARY: &str = env!("CARGO_BIN_EXE_quickdonate");

/// The binary, run in `dir` with none of the settings a developer might have exported.
pub fn quickdonate(dir: &Path) -> Command {
    let mut cmd = Command::new(BINARY);
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env(
            "CAMPAIGNS_FILE",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/campaigns.toml"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A running service and the log lines it wrote before it said where it listens.
pub struct Service {
    pub child: Child,
    pub address: String,
    pub startup_log: String,
    /// What it logs after that, as it logs it.
    pub log: Arc<Mutex<String>>,
}

/// A test that fails before stopping its service must not leave it running.
impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Service {
    /// Waits up to five seconds for a line of the log that contains every one of `parts`.
    pub async fn wait_for_log_line(&self, parts: &[&str]) -> String {
        for _ in 0..100 {
            let found = self
                .log
                .lock()
                .unwrap()
                .lines()
                .find(|line| parts.iter().all(|part| line.contains(part)))
                .map(str::to_owned);
            if let Some(line) = found {
                return line;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no log line with {parts:?}:\n{}", self.log.lock().unwrap());
    }
}

pub fn start(dir: &Path) -> Service {
    start_with(dir, &[])
}

pub fn start_with(dir: &Path, env: &[(&str, &str)]) -> Service {
    let mut child = quickdonate(dir)
        .envs(env.iter().copied())
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut startup_log = String::new();
    let mut address = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        startup_log.push_str(&line);
        startup_log.push('\n');
        if let Some(rest) = line.split("listening on http://").nth(1) {
            address = Some(format!(
                "http://{}",
                // Up to the end of the text line's word, or of the JSON line's string.
                rest.split(|c: char| c.is_whitespace() || c == '"')
                    .next()
                    .unwrap()
            ));
            break;
        }
    }
    let Some(address) = address else {
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).ok();
        panic!("the service never listened:\n{startup_log}\n{stderr}");
    };
    // Keep reading, so the rest of the log can be checked (and the service never blocks on
    // a full pipe).
    let log = Arc::new(Mutex::new(String::new()));
    std::thread::spawn({
        let log = log.clone();
        move || {
            for line in lines.map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
    Service {
        child,
        address,
        startup_log,
        log,
    }
}

/// SIGTERM, then the exit: graceful shutdown stops the local Postgres too.
pub fn stop(mut service: Service) {
    let pid = service.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    for _ in 0..200 {
        if let Some(status) = service.child.try_wait().unwrap() {
            assert!(status.success(), "the service exited with {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    service.child.kill().ok();
    panic!("the service did not stop on SIGTERM");
}

#[tokio::test]
async fn cargo_run_serves_the_flow_on_its_defaults_and_keeps_donations_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();

    let service = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || start(&dir)
    })
    .await
    .unwrap();
    assert!(
        service.startup_log.contains("SIMULATED PAYMENTS"),
        "{}",
        service.startup_log
    );
    assert!(
        service.startup_log.contains("No money moves"),
        "{}",
        service.startup_log
    );
    assert!(
        service
            .startup_log
            .contains("the simulated Stripe answers Stripe's API at http://127.0.0.1:"),
        "{}",
        service.startup_log
    );
    assert!(
        service.startup_log.contains(".quickdonate"),
        "it says where its data is"
    );
    assert!(dir.path().join(".quickdonate/pgdata/PG_VERSION").exists());
    // Trying it locally is never refused by a card-testing cap no one set, and it says so.
    assert!(
        service.startup_log.contains("CARD-TESTING CAPS OFF"),
        "{}",
        service.startup_log
    );
    for attempt in 0..7 {
        let response = http
            .post(format!(
                "{}/v1/campaigns/kashmir/donations",
                service.address
            ))
            .json(&donation_body())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            201,
            "attempt {attempt}, from one address and email"
        );
    }

    let campaign: Value = http
        .get(format!("{}/v1/campaigns/kashmir", service.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(campaign["title"], "Kashmir Campaign");

    let response = http
        .post(format!(
            "{}/v1/campaigns/kashmir/donations",
            service.address
        ))
        .header("Idempotency-Key", "first-run")
        .json(&donation_body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    assert!(
        created["payment_intent_id"]
            .as_str()
            .unwrap()
            .starts_with("pi_sim_")
    );
    assert!(
        created["client_secret"]
            .as_str()
            .unwrap()
            .contains("_secret_")
    );
    assert_eq!(created["publishable_key"], "pk_test_simulated");
    let id = created["id"].as_str().unwrap().to_owned();

    // An operator's command beside the running service shares its Postgres and leaves it up.
    let listed = quickdonate(dir.path())
        .args(["events", "list"])
        .output()
        .unwrap();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    // It says once which database it reads, and nothing about starting or stopping one.
    let said = String::from_utf8_lossy(&listed.stderr);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.contains("reading the database quickdonate"), "{said}");
    let ready = http
        .get(format!("{}/readyz", service.address))
        .send()
        .await
        .unwrap();
    assert_eq!(
        ready.status(),
        200,
        "the service lost its database to the command"
    );

    tokio::task::spawn_blocking(move || stop(service))
        .await
        .unwrap();
    assert!(
        !dir.path()
            .join(".quickdonate/pgdata/postmaster.pid")
            .exists(),
        "the local Postgres stopped with the service"
    );

    let service = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || start(&dir)
    })
    .await
    .unwrap();
    let donation: Value = http
        .get(format!("{}/v1/donations/{id}", service.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(donation["id"], id.as_str());
    assert_eq!(donation["status"], "pending");
    assert_eq!(donation["total_amount"], 2500);

    // The simulated Stripe still knows the PaymentIntent made before the restart: the gift
    // can be paid, and the fee comes from its balance transaction.
    let pi = created["payment_intent_id"].as_str().unwrap();
    succeed(&http, &service.address, pi).await;
    // Each use of a control is a warning that names it and the PaymentIntent, nothing more.
    let warning = service
        .wait_for_log_line(&["WARN", "SIMULATED", "succeed", pi])
        .await;
    assert!(!warning.contains("amina"), "{warning}");
    wait_for_status(&http, &service.address, &id, "succeeded").await;
    let db = service_database(dir.path()).await;
    assert_eq!(wait_for_fee(&db, &id).await, Some(58));
    db.close().await;
    tokio::task::spawn_blocking(move || stop(service))
        .await
        .unwrap();
}

#[tokio::test]
async fn simulated_events_stored_before_a_restart_are_applied_after_it_and_can_be_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let path = dir.path().to_owned();

    // The first run stores the payment's events but does not apply them.
    let service = tokio::task::spawn_blocking({
        let path = path.clone();
        move || start_with(&path, &[("APPLY_EVENTS", "false")])
    })
    .await
    .unwrap();
    let (id, pi) = create_donation(&http, &service.address).await;
    succeed(&http, &service.address, &pi).await;
    tokio::task::spawn_blocking(move || stop(service))
        .await
        .unwrap();

    // The next run applies them, reading what they lack (the fee) from the simulated Stripe.
    let service = tokio::task::spawn_blocking({
        let path = path.clone();
        move || start(&path)
    })
    .await
    .unwrap();
    wait_for_status(&http, &service.address, &id, "succeeded").await;
    let db = service_database(&path).await;
    assert_eq!(wait_for_fee(&db, &id).await, Some(58));
    let mut events: Vec<(String, String, String, Option<String>)> = Vec::new();
    for _ in 0..200 {
        events =
            sqlx::query_as("SELECT id, type, state, last_error FROM stripe_events ORDER BY type")
                .fetch_all(&db)
                .await
                .unwrap();
        if events.iter().all(|e| e.2 == "applied") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kinds: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(kinds, ["charge.succeeded", "payment_intent.succeeded"]);
    for (event, _, state, error) in &events {
        assert_eq!((state.as_str(), error), ("applied", &None), "{event}");
    }

    // An operator replays the charge's event beside the running service: it is applied again.
    let replayed = events[0].0.clone();
    let applied_before: time::OffsetDateTime =
        sqlx::query_scalar("SELECT applied_at FROM stripe_events WHERE id = $1")
            .bind(&replayed)
            .fetch_one(&db)
            .await
            .unwrap();
    let output = quickdonate(&path)
        .args(["events", "replay", &replayed])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut after = (String::new(), None, applied_before);
    for _ in 0..200 {
        after =
            sqlx::query_as("SELECT state, last_error, applied_at FROM stripe_events WHERE id = $1")
                .bind(&replayed)
                .fetch_one(&db)
                .await
                .unwrap();
        if after.0 == "applied" && after.2 > applied_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!((after.0.as_str(), after.1), ("applied", None::<String>));
    assert!(after.2 > applied_before, "the replay was never applied");
    assert_eq!(fee_of(&db, &id).await, Some(58));
    db.close().await;
    tokio::task::spawn_blocking(move || stop(service))
        .await
        .unwrap();
}

/// Pays `pi` through the simulator's control; asserts each event reached our webhook.
/// A £25 donation through the running service's API; returns its id and PaymentIntent id.
pub async fn create_donation(http: &reqwest::Client, address: &str) -> (String, String) {
    let created: Value = http
        .post(format!("{address}/v1/campaigns/kashmir/donations"))
        .json(&donation_body())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        created["id"].as_str().unwrap().to_owned(),
        created["payment_intent_id"].as_str().unwrap().to_owned(),
    )
}

async fn succeed(http: &reqwest::Client, address: &str, pi: &str) {
    let response = http
        .post(format!(
            "{address}/v1/simulator/payment_intents/{pi}/succeed"
        ))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{body}");
    for event in events {
        assert_eq!(event["delivery_status"], 200, "{body}");
    }
}

/// Polls the donation until it has `status`; fails with the last one seen.
async fn wait_for_status(http: &reqwest::Client, address: &str, id: &str, status: &str) {
    let mut seen = Value::Null;
    for _ in 0..200 {
        let donation: Value = http
            .get(format!("{address}/v1/donations/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen = donation["status"].clone();
        if seen == status {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("donation {id} stayed {seen}, never {status}");
}

/// The running service's database, on the local Postgres it started (found running, so this
/// leaves it running). Close the pool before stopping the service.
pub async fn service_database(dir: &Path) -> sqlx::PgPool {
    let root = dir.join(".quickdonate");
    let pg = tokio::task::spawn_blocking(move || {
        quickdonate::db::local::LocalPostgres::start(
            &root,
            None,
            quickdonate::db::local::Durability::Durable,
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert!(!pg.started_here(), "the service's Postgres was not running");
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(pg.connect_options("quickdonate"))
        .await
        .unwrap()
}

/// The donation's fee once one is recorded (the charge's event may be applied after the
/// PaymentIntent's); `None` if none comes within ten seconds.
async fn wait_for_fee(db: &sqlx::PgPool, id: &str) -> Option<i64> {
    for _ in 0..200 {
        if let Some(fee) = fee_of(db, id).await {
            return Some(fee);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

async fn fee_of(db: &sqlx::PgPool, id: &str) -> Option<i64> {
    sqlx::query_scalar("SELECT fee FROM donations WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(db)
        .await
        .unwrap()
}

#[test]
fn a_bad_setting_stops_start_up_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (key, value, expected) in [
        ("LISTEN_ADDR", "not-an-address", "LISTEN_ADDR"),
        ("APP_ENV", "production", "STRIPE_SECRET_KEY"),
        ("STRIPE_SECRET_KEY", "pk_test_wrong", "STRIPE_SECRET_KEY"),
        ("FEE_PERCENT_BPS", "lots", "FEE_PERCENT_BPS"),
    ] {
        let output = quickdonate(dir.path()).env(key, value).output().unwrap();
        assert!(!output.status.success(), "{key}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{key}={value}: {stderr}");
    }
    assert!(!dir.path().join(".quickdonate").exists(), "nothing started");
}

#[test]
fn production_refuses_to_start_with_the_placeholder_charity_details() {
    let dir = tempfile::tempdir().unwrap();
    let production = [
        ("APP_ENV", "production"),
        ("STRIPE_SECRET_KEY", "sk_live_quickdonate"),
        ("STRIPE_PUBLISHABLE_KEY", "pk_live_quickdonate"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_quickdonate"),
        // Never reached: the settings are refused first.
        (
            "DATABASE_URL",
            "postgres://quickdonate@127.0.0.1:1/quickdonate",
        ),
    ];
    for (set, expected) in [
        (vec![], "CHARITY_NAME"),
        (
            vec![("CHARITY_NAME", "Kashmir Relief Trust")],
            "CHARITY_NUMBER",
        ),
        (
            vec![
                ("CHARITY_NAME", "Kashmir Relief Trust"),
                ("CHARITY_NUMBER", "12345"),
            ],
            "CHARITY_NUMBER",
        ),
    ] {
        let output = quickdonate(dir.path())
            .envs(production)
            .envs(set.iter().copied())
            .output()
            .unwrap();
        assert!(!output.status.success(), "{set:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("{expected}:")),
            "{set:?}: {stderr}"
        );
    }
    assert!(!dir.path().join(".quickdonate").exists(), "nothing started");
}

#[test]
fn migrate_runs_the_migrations_alone_and_stops_its_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let output = quickdonate(dir.path()).arg("migrate").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let first = String::from_utf8_lossy(&output.stdout);
    assert!(
        first.contains("migrations applied: 20261127000001 campaigns and donations"),
        "{first}"
    );
    assert!(
        !dir.path()
            .join(".quickdonate/pgdata/postmaster.pid")
            .exists()
    );
    // Again: nothing to apply, and it says so, without Postgres's notices at info.
    let again = quickdonate(dir.path()).arg("migrate").output().unwrap();
    assert!(again.status.success());
    let again = String::from_utf8_lossy(&again.stdout);
    assert!(
        again.contains("the database schema is up to date"),
        "{again}"
    );
    assert!(!again.contains("migrations applied"), "{again}");
    assert!(!again.contains("already exists"), "{again}");
}

#[test]
fn reading_the_event_log_with_no_database_running_starts_none_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    for args in [["events", "list"].as_slice(), &["events", "show", "evt_1"]] {
        let output = quickdonate(dir.path()).args(args).output().unwrap();
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("start the service") && stderr.contains("DATABASE_URL"),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("`cargo run` in a checkout"),
            "it says how a checkout starts it: {stderr}"
        );
        assert!(
            !dir.path().join(".quickdonate").exists(),
            "{args:?} made a Postgres"
        );
    }
}

#[tokio::test]
async fn an_event_stored_before_the_process_is_killed_is_applied_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let path = dir.path().to_owned();

    // An instance that takes webhooks but does not apply them, killed outright after the 2xx.
    let mut service = tokio::task::spawn_blocking({
        let path = path.clone();
        move || start_with(&path, &[("APPLY_EVENTS", "false")])
    })
    .await
    .unwrap();
    let (id, pi) = create_donation(&http, &service.address).await;
    let paid: Value = http
        .post(format!(
            "{}/v1/simulator/payment_intents/{pi}/succeed",
            service.address
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paid["events"][0]["delivery_status"], 200, "{paid}");
    service.child.kill().unwrap(); // SIGKILL: no shutdown of any kind
    service.child.wait().unwrap();

    // The next start finds the stored event and applies it.
    let service = tokio::task::spawn_blocking({
        let path = path.clone();
        move || start(&path)
    })
    .await
    .unwrap();
    let mut status = Value::Null;
    for _ in 0..200 {
        let donation: Value = http
            .get(format!("{}/v1/donations/{id}", service.address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        status = donation["status"].clone();
        if status == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "succeeded");
    tokio::task::spawn_blocking(move || stop(service))
        .await
        .unwrap();

    // The killed instance's Postgres was adopted, not started, by the second: stop it here.
    let pg = quickdonate::db::local::LocalPostgres::start(
        &path.join(".quickdonate"),
        None,
        quickdonate::db::local::Durability::Durable,
    )
    .unwrap();
    pg.stop().unwrap();
}

#[test]
fn a_sigterm_while_starting_up_is_a_clean_shutdown_not_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = quickdonate(dir.path()).spawn().expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The first line is logged while the service is still starting its Postgres, long before
    // it listens: a SIGTERM now must be handled, not kill the process.
    let first = lines.next().expect("a first log line").unwrap();
    assert!(!first.contains("listening on"), "{first}");
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the service exited with {status}");
            assert!(
                !dir.path()
                    .join(".quickdonate/pgdata/postmaster.pid")
                    .exists(),
                "its Postgres stopped with it"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().ok();
    panic!("the service did not stop on SIGTERM");
}

#[tokio::test]
async fn json_logs_name_each_requests_id_on_its_lines() {
    let dir = tempfile::tempdir().unwrap();
    let service = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || start_with(&dir, &[("LOG_FORMAT", "json")])
    })
    .await
    .unwrap();
    for line in service.startup_log.lines() {
        let parsed: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(parsed["level"].is_string(), "{line}");
    }
    let response = reqwest::Client::new()
        .get(format!("{}/v1/campaigns/kashmir", service.address))
        .header("x-request-id", "operator-trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "operator-trace-42");
    let line = service.wait_for_log_line(&["operator-trace-42"]).await;
    let logged: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(logged["span"]["request_id"], "operator-trace-42", "{line}");
    assert_eq!(logged["span"]["route"], "/v1/campaigns/{slug}", "{line}");
    assert!(!line.contains('\u{1b}'), "{line}");
    tokio::task::spawn_blocking(move || stop(service))
        .await
        .unwrap();
}
