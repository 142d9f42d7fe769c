//! The test harness: a real Postgres (a throwaway cluster this process starts, unless
//! `DATABASE_URL` names a server), a fresh migrated database per test, a wiremock server
//! standing in for Stripe, and the application built exactly as production builds it.
//! Set `TEST_LOG=1` to see the application's logs.

use std::process::ChildStdin;
use std::sync::{Mutex, OnceLock};

use quickdonate::app::Application;
use quickdonate::config::{Config, Settings};
use quickdonate::db::local::{Durability, LocalPostgres};
use quickdonate::http::problem::ProblemType;
use reqwest::Response;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const PUBLISHABLE_KEY: &str = "pk_test_quickdonate";
pub const WEBHOOK_SECRET: &str = "whsec_quickdonate";

/// Where the tests' databases are made.
struct TestServer {
    /// Creates a database and says how to reach it.
    admin: PgConnectOptions,
    /// Builds the URL of a database on this server.
    url_for: Box<dyn Fn(&str) -> String + Send + Sync>,
    /// The cluster, when the tests started their own (not with `DATABASE_URL`).
    local: Option<std::sync::Arc<LocalPostgres>>,
    /// Held open for as long as this process lives; see `remove_when_this_process_exits`.
    _watchdog: Option<Mutex<ChildStdin>>,
}

fn server() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        // Starting Postgres blocks; do it off the test's async runtime.
        std::thread::spawn(start_server)
            .join()
            .expect("the test Postgres started")
    })
}

fn start_server() -> TestServer {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let admin: PgConnectOptions = url.parse().expect("DATABASE_URL is a Postgres URL");
        let base = url::Url::parse(&url).expect("DATABASE_URL is a URL");
        return TestServer {
            admin,
            url_for: Box::new(move |db| {
                let mut url = base.clone();
                url.set_path(db);
                url.to_string()
            }),
            local: None,
            _watchdog: None,
        };
    }
    let root = std::env::temp_dir().join(format!(
        "quickdonate-test-{}-{}",
        std::process::id(),
        Uuid::new_v4().simple()
    ));
    let pg = LocalPostgres::start(&root, None, Durability::Throwaway)
        .expect("a throwaway Postgres starts from the machine's binaries");
    let watchdog = pg
        .remove_when_this_process_exits(&root)
        .expect("the watchdog starts");
    let pg = std::sync::Arc::new(pg);
    let local = pg.clone();
    TestServer {
        admin: pg.connect_options("postgres"),
        url_for: Box::new(move |db| pg.url(db)),
        local: Some(local),
        _watchdog: Some(Mutex::new(watchdog)),
    }
}

/// A streaming standby of the tests' cluster, stopped and removed when dropped (or when this
/// process exits).
pub struct Standby {
    pub pg: LocalPostgres,
    _watchdog: ChildStdin,
}

/// Starts a streaming standby of the tests' cluster (`pg_basebackup -R`) under `root`. The
/// tests must have started their own cluster (no `DATABASE_URL`).
pub fn start_standby(root: &std::path::Path) -> Standby {
    let primary = server()
        .local
        .as_ref()
        .expect("a standby needs the tests' own Postgres: unset DATABASE_URL");
    let pg = primary
        .start_standby(root)
        .expect("a standby starts from a base backup");
    let watchdog = pg
        .remove_when_this_process_exits(root)
        .expect("the watchdog starts");
    Standby {
        pg,
        _watchdog: watchdog,
    }
}

/// A fresh, empty database of its own for one test.
async fn fresh_database() -> String {
    let name = format!("test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect_with(&server().admin)
        .await
        .expect("the test Postgres accepts connections");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&mut admin)
        .await
        .expect("a test database is created");
    admin.close().await.ok();
    name
}

/// A fresh, empty database of its own (its name and URL), for a test that prepares it before
/// the app starts on it (`spawn_app_on`).
pub async fn fresh_database_url() -> (String, String) {
    let name = fresh_database().await;
    let url = (server().url_for)(&name);
    (name, url)
}

/// The running application and what a test needs around it.
pub struct TestApp {
    pub address: String,
    pub db: PgPool,
    pub stripe: MockServer,
    pub http: reqwest::Client,
    pub worker: quickdonate::webhooks::worker::Worker,
    /// The sweep of abandoned payments, run by hand.
    pub abandoned: quickdonate::donations::abandoned::Abandoned,
    /// `METRICS_ADDR`'s listener, when the test set one.
    pub metrics_address: Option<String>,
    pub database_url: String,
    pub db_name: String,
    /// Whether dropping this app drops its database (not when another app takes it over).
    pub owns_db: bool,
    /// The app's DATA_DIR (receipts are written under it when no SMTP is set), removed on drop.
    pub data_dir: tempfile::TempDir,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the app with the test settings, changed by `customize` first.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let db_name = fresh_database().await;
    spawn_app_on(db_name, customize).await
}

/// Starts the app on an existing test database `db_name` (which it then owns).
pub async fn spawn_app_on(db_name: String, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let url = (server().url_for)(&db_name);
    let mut app = spawn_app_at(url, customize).await;
    app.db_name = db_name;
    app.owns_db = true;
    app
}

/// Starts the app on the database at `url`, which the test looks after itself.
pub async fn spawn_app_at(url: String, customize: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_until(url, customize, std::future::pending())
        .await
        .0
}

/// Starts the app on a fresh database until `shutdown` completes; the task serving it ends
/// once the app has shut down.
pub async fn spawn_stoppable_app(
    customize: impl FnOnce(&mut Settings),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (TestApp, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let db_name = fresh_database().await;
    let url = (server().url_for)(&db_name);
    let (mut app, served) = spawn_app_until(url, customize, shutdown).await;
    app.db_name = db_name;
    app.owns_db = true;
    (app, served)
}

async fn spawn_app_until(
    url: String,
    customize: impl FnOnce(&mut Settings),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (TestApp, tokio::task::JoinHandle<anyhow::Result<()>>) {
    if std::env::var_os("TEST_LOG").is_some() {
        quickdonate::telemetry::init(
            quickdonate::config::LogFormat::Text,
            quickdonate::telemetry::Output::Stdout,
        );
    }
    let stripe = MockServer::start().await;

    let mut settings = Settings::defaults().expect("the default settings load");
    settings.listen_addr = "127.0.0.1:0".parse().unwrap();
    settings.database_url = Some(SecretString::from(url.clone()));
    settings.database_max_connections = 5;
    settings.campaigns_file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/campaigns.toml").into();
    settings.stripe_secret_key = Some(SecretString::from("sk_test_quickdonate"));
    settings.stripe_publishable_key = Some(PUBLISHABLE_KEY.to_owned());
    settings.stripe_webhook_secret = Some(SecretString::from(WEBHOOK_SECRET));
    settings.stripe_api_base = stripe.uri();
    settings.stripe_timeout_secs = 2;
    // Tests make many donations from one address and one email; the card-testing caps have
    // tests of their own (tests/api/card_testing.rs), which turn them on.
    settings.donation_limit_per_ip = Some("off".to_owned());
    settings.donation_limit_per_email = Some("off".to_owned());
    settings.donation_limit_per_campaign = Some("off".to_owned());
    let data_dir = tempfile::tempdir().expect("a temporary data directory");
    settings.data_dir = data_dir.path().to_owned();
    customize(&mut settings);
    let config = Config::from_settings(&settings).expect("the test settings are valid");

    let app = Application::build(config).await.expect("the app builds");
    let address = format!("http://{}", app.address());
    let db = app.db().clone();
    let worker = app.worker();
    let abandoned = app.abandoned();
    let metrics_address = app.metrics_address().map(|a| format!("http://{a}"));
    let served = tokio::spawn(app.run_until_stopped(shutdown));

    let app = TestApp {
        address,
        db,
        stripe,
        http: reqwest::Client::new(),
        worker,
        abandoned,
        metrics_address,
        database_url: url,
        db_name: String::new(),
        owns_db: false,
        data_dir,
    };
    (app, served)
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if !self.owns_db {
            return;
        }
        let name = self.db_name.clone();
        // Dropping needs async calls; make them on a runtime of their own.
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if let Ok(mut admin) = PgConnection::connect_with(&server().admin).await {
                        let drop = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                            .execute(&mut admin)
                            .await;
                    }
                });
        })
        .join()
        .ok();
    }
}

/// A valid donation request for the Kashmir campaign.
pub fn donation_body() -> Value {
    json!({
        "amount": 2500,
        "frequency": "one_off",
        "donor": {"email": "amina@example.org", "first_name": "Amina", "last_name": "Khan"}
    })
}

impl TestApp {
    pub async fn get(&self, path: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("the request is sent")
    }

    pub async fn post_donation(&self, slug: &str, body: &Value, key: Option<&str>) -> Response {
        let mut request = self
            .http
            .post(format!("{}/v1/campaigns/{slug}/donations", self.address))
            .json(body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        request.send().await.expect("the request is sent")
    }

    pub async fn donation_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM donations")
            .fetch_one(&self.db)
            .await
            .unwrap()
    }

    /// Every request the fake Stripe received for `path`.
    pub async fn stripe_requests(&self, path: &str) -> Vec<Request> {
        self.stripe
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == path)
            .collect()
    }
}

impl TestApp {
    /// Delivers `event` as Stripe does: signed with our secret, now.
    pub async fn deliver(&self, event: &Value) -> Response {
        let body = serde_json::to_vec(event).unwrap();
        let header = quickdonate::webhooks::signature::sign(
            &SecretString::from(WEBHOOK_SECRET),
            &body,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        );
        self.deliver_raw(body, Some(&header)).await
    }

    /// Posts `body` to the webhook endpoint with `signature` as the Stripe-Signature header.
    pub async fn deliver_raw(&self, body: Vec<u8>, signature: Option<&str>) -> Response {
        let mut request = self
            .http
            .post(format!("{}/v1/webhooks/stripe", self.address))
            .header("content-type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        request.send().await.expect("the request is sent")
    }

    /// Applies every due event now (for apps started with `apply_events = false`).
    pub async fn apply_events(&self) {
        while self.worker.apply_due().await.expect("the worker applies") > 0 {}
    }

    /// Waits until no event is left pending (for as long as a slow machine may need); fails
    /// with the events' errors if one stays.
    pub async fn wait_until_applied(&self) {
        for _ in 0..3000 {
            let pending: i64 =
                sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE state = 'pending'")
                    .fetch_one(&self.db)
                    .await
                    .unwrap();
            if pending == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let stuck: Vec<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT id, type, last_error FROM stripe_events WHERE state = 'pending'",
        )
        .fetch_all(&self.db)
        .await
        .unwrap();
        panic!("events never applied: {stuck:?}");
    }

    /// Delivers `events`, signed, from `tasks` connections at once; each must be answered 200.
    pub async fn deliver_concurrently(&self, events: Vec<Value>, tasks: usize) {
        let events = std::sync::Arc::new(Mutex::new(events));
        let mut running = tokio::task::JoinSet::new();
        for _ in 0..tasks {
            let events = events.clone();
            let (http, address) = (self.http.clone(), self.address.clone());
            running.spawn(async move {
                loop {
                    let next = events.lock().unwrap().pop();
                    let Some(event) = next else { break };
                    let body = serde_json::to_vec(&event).unwrap();
                    let header = quickdonate::webhooks::signature::sign(
                        &SecretString::from(WEBHOOK_SECRET),
                        &body,
                        time::OffsetDateTime::now_utc().unix_timestamp(),
                    );
                    let status = http
                        .post(format!("{address}/v1/webhooks/stripe"))
                        .header("stripe-signature", header)
                        .body(body)
                        .send()
                        .await
                        .unwrap()
                        .status();
                    assert_eq!(status, 200);
                }
            });
        }
        while let Some(task) = running.join_next().await {
            task.unwrap();
        }
    }

    /// Creates a donation through the API; returns its id and PaymentIntent id.
    pub async fn create_donation(&self, amount: i64) -> (Uuid, String) {
        let mut body = donation_body();
        body["amount"] = json!(amount);
        let response = self.post_donation("kashmir", &body, None).await;
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.unwrap();
        (
            Uuid::parse_str(created["id"].as_str().unwrap()).unwrap(),
            created["payment_intent_id"].as_str().unwrap().to_owned(),
        )
    }

    /// The campaign as the API shows it.
    pub async fn campaign(&self) -> Value {
        self.get("/v1/campaigns/kashmir")
            .await
            .json()
            .await
            .unwrap()
    }

    /// Asserts that every campaign's stored total equals a recomputation from the rows:
    /// refunds, lost disputes and payment status, read afresh.
    /// Asserts that every check of `quickdonate verify` holds, each succeeded gift's ledger
    /// row expected at once.
    pub async fn assert_books_hold(&self) {
        assert_books_hold_in(&self.db, std::time::Duration::ZERO).await;
    }

    pub async fn assert_totals_match_rows(&self) {
        assert_totals_match_rows_in(&self.db).await;
    }

    /// A donation's Stripe-derived columns.
    pub async fn donation_facts(&self, id: Uuid) -> DonationFacts {
        sqlx::query_as(
            r#"SELECT status, payment_status, amount_received, fee, net, refunded_amount,
                      dispute_status, dispute_lost_amount, dispute_fee, counted_amount, charge_id,
                      flag
               FROM donations WHERE id = $1"#,
        )
        .bind(id)
        .fetch_one(&self.db)
        .await
        .unwrap()
    }
}

/// Asserts that every campaign's stored total in `db` equals a recomputation from the rows:
/// refunds, lost disputes and payment status, read afresh.
/// Asserts that `quickdonate verify`'s checks all hold on `db`, a succeeded gift's ledger row
/// expected once it succeeded `settle` ago (zero: at once).
pub async fn assert_books_hold_in(db: &PgPool, settle: std::time::Duration) {
    let reads = quickdonate::db::Reads::on(db.clone());
    let mut snapshot = quickdonate::db::reading(&reads).await.unwrap();
    let report = quickdonate::books::verify::verify(&mut snapshot, settle)
        .await
        .unwrap();
    drop(snapshot);
    let differences: Vec<_> = report
        .checks
        .iter()
        .filter(|c| !c.differences.is_empty())
        .collect();
    assert!(report.ok, "the books differ: {differences:#?}");
}

pub async fn assert_totals_match_rows_in(db: &PgPool) {
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        r#"WITH facts AS (
               SELECT d.campaign, d.payment_status, d.amount, d.total_amount,
                      CASE WHEN d.received_currency = d.currency
                           THEN d.amount_received ELSE 0 END AS received,
                      coalesce((SELECT sum(r.amount) FROM refunds r WHERE r.donation_id = d.id
                                AND r.status NOT IN ('failed', 'canceled')), 0) AS refunded,
                      coalesce((SELECT sum(x.amount) FROM disputes x WHERE x.donation_id = d.id
                                AND x.status NOT IN ('warning_needs_response',
                                    'warning_under_review', 'warning_closed', 'prevented',
                                    'won')), 0) AS lost
               FROM donations d),
           parts AS (
               SELECT campaign,
                      CASE WHEN payment_status = 'succeeded'
                           THEN GREATEST(0, LEAST(amount,
                                    LEAST(received, total_amount) - refunded - lost))
                           ELSE 0 END AS part
               FROM facts)
           SELECT c.slug, c.raised_amount, c.donation_count,
                  coalesce(sum(p.part), 0)::bigint, count(p.part) FILTER (WHERE p.part > 0)
           FROM campaigns c LEFT JOIN parts p ON p.campaign = c.slug
           GROUP BY c.slug, c.raised_amount, c.donation_count"#,
    )
    .fetch_all(db)
    .await
    .unwrap();
    for (slug, raised, count, recomputed_raised, recomputed_count) in rows {
        assert_eq!(
            (raised, count),
            (recomputed_raised, recomputed_count),
            "campaign {slug}: stored (raised, count) differ from the rows"
        );
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DonationFacts {
    pub status: String,
    pub payment_status: String,
    pub amount_received: i64,
    pub fee: Option<i64>,
    pub net: Option<i64>,
    pub refunded_amount: i64,
    pub dispute_status: Option<String>,
    pub dispute_lost_amount: i64,
    pub dispute_fee: i64,
    pub counted_amount: i64,
    pub charge_id: Option<String>,
    pub flag: Option<String>,
}

/// Shuffles `items` deterministically, so a failing order can be run again.
pub fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        items.swap(i, (seed >> 33) as usize % (i + 1));
    }
}

/// Every order of `0..n`.
pub fn orders(n: usize) -> Vec<Vec<usize>> {
    fn permute(items: &mut Vec<usize>, k: usize, out: &mut Vec<Vec<usize>>) {
        if k == items.len() {
            out.push(items.clone());
            return;
        }
        for i in k..items.len() {
            items.swap(k, i);
            permute(items, k + 1, out);
            items.swap(k, i);
        }
    }
    let mut out = Vec::new();
    permute(&mut (0..n).collect(), 0, &mut out);
    out
}

/// A Stripe event around `object`, built from the fixture.
pub fn event(kind: &str, object: Value, created: i64) -> Value {
    let mut event = fixture("event");
    event["id"] = json!(format!("evt_{}", Uuid::new_v4().simple()));
    event["type"] = json!(kind);
    event["created"] = json!(created);
    event["livemode"] = json!(false);
    event["api_version"] = json!("2026-09-30.clover");
    event["data"] = json!({"object": object});
    event
}

/// Stripe objects built from the fixtures, with the fields the tests are about.
pub mod objects {
    use super::*;

    pub fn payment_intent(id: &str, donation: Option<Uuid>, status: &str, amount: i64) -> Value {
        let mut pi = fixture("payment_intent");
        pi["id"] = json!(id);
        pi["amount"] = json!(amount);
        pi["currency"] = json!("gbp");
        pi["status"] = json!(status);
        pi["amount_received"] = json!(if status == "succeeded" { amount } else { 0 });
        pi["last_payment_error"] = Value::Null;
        pi["latest_charge"] = Value::Null;
        pi["metadata"] = match donation {
            Some(d) => json!({"donation_id": d.to_string(), "campaign": "kashmir"}),
            None => json!({}),
        };
        pi
    }

    /// A PaymentIntent whose card was declined: back to waiting for a payment method, its
    /// latest charge the failed one.
    pub fn failed_payment_intent(id: &str, donation: Uuid, amount: i64) -> Value {
        let mut pi = payment_intent(id, Some(donation), "requires_payment_method", amount);
        pi["last_payment_error"] = json!({"type": "card_error", "code": "card_declined"});
        pi
    }

    /// A declined attempt's charge: failed, nothing captured, no balance transaction.
    pub fn failed_charge(id: &str, pi: &str, amount: i64) -> Value {
        let mut charge = charge(id, pi, amount, 0, None);
        charge["status"] = json!("failed");
        charge["paid"] = json!(false);
        charge["captured"] = json!(false);
        charge["amount_captured"] = json!(0);
        charge["failure_code"] = json!("card_declined");
        charge
    }

    pub fn charge(id: &str, pi: &str, amount: i64, refunded: i64, txn: Option<&str>) -> Value {
        let mut charge = fixture("charge");
        charge["id"] = json!(id);
        charge["payment_intent"] = json!(pi);
        charge["amount"] = json!(amount);
        charge["amount_captured"] = json!(amount);
        charge["amount_refunded"] = json!(refunded);
        charge["currency"] = json!("gbp");
        charge["status"] = json!("succeeded");
        charge["captured"] = json!(true);
        charge["paid"] = json!(true);
        charge["refunded"] = json!(refunded == amount);
        charge["balance_transaction"] = json!(txn);
        charge["metadata"] = json!({});
        charge
    }

    pub fn balance_transaction(id: &str, amount: i64, fee: i64) -> Value {
        let mut txn = fixture("balance_transaction");
        txn["id"] = json!(id);
        txn["amount"] = json!(amount);
        txn["fee"] = json!(fee);
        txn["net"] = json!(amount - fee);
        txn["currency"] = json!("gbp");
        txn
    }

    pub fn refund(id: &str, charge: &str, pi: &str, amount: i64, status: &str) -> Value {
        let mut refund = fixture("refund");
        refund["id"] = json!(id);
        refund["charge"] = json!(charge);
        refund["payment_intent"] = json!(pi);
        refund["amount"] = json!(amount);
        refund["currency"] = json!("gbp");
        refund["status"] = json!(status);
        refund
    }

    /// A dispute with one balance transaction per entry of `fees`: the withdrawal of `amount`
    /// with its dispute fee, then a reinstatement. Ids are stable, as Stripe's are, so every
    /// snapshot of one dispute names the same transactions.
    pub fn dispute(
        id: &str,
        charge: &str,
        pi: &str,
        amount: i64,
        status: &str,
        fees: &[i64],
    ) -> Value {
        let mut dispute = fixture("dispute");
        dispute["id"] = json!(id);
        dispute["charge"] = json!(charge);
        dispute["payment_intent"] = json!(pi);
        dispute["amount"] = json!(amount);
        dispute["currency"] = json!("gbp");
        dispute["status"] = json!(status);
        dispute["balance_transactions"] = fees
            .iter()
            .enumerate()
            .map(|(i, fee)| {
                let moved = if i == 0 { -amount } else { amount };
                json!({
                    "id": format!("txn_{id}_{i}"), "object": "balance_transaction",
                    "amount": moved, "fee": fee, "net": moved - fee, "currency": "gbp",
                    "reporting_category": if i == 0 { "dispute" } else { "dispute_reversal" },
                    "type": "adjustment", "created": 1_700_000_000 + i as i64
                })
            })
            .collect::<Vec<_>>()
            .into();
        dispute
    }
}

/// How many of a payout's balance transactions the fake Stripe lists per page.
pub const PAYOUT_PAGE: usize = 2;

/// Stripe's current objects, as a test sets them, served to the app's fetches: PaymentIntents
/// (with their latest charge, its balance transaction and refunds, and theirs, expanded when
/// asked), balance transactions, refunds by charge, and a payout's balance transactions (those
/// whose `payouts` field, the tests' own, names it).
#[derive(Clone, Default)]
pub struct StripeObjects(std::sync::Arc<Mutex<std::collections::HashMap<String, Value>>>);

impl StripeObjects {
    pub fn put(&self, object: Value) {
        let id = object["id"].as_str().unwrap().to_owned();
        self.0.lock().unwrap().insert(id, object);
    }

    /// Mounts the fetch endpoints on `app`'s fake Stripe.
    pub async fn serve(&self, app: &TestApp) {
        Mock::given(method("GET"))
            .respond_with(self.clone())
            .mount(&app.stripe)
            .await;
    }
}

impl Respond for StripeObjects {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let objects = self.0.lock().unwrap();
        let path = request.url.path();
        let param = |name: &str| {
            request
                .url
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let expand: Vec<String> = request
            .url
            .query_pairs()
            .filter(|(k, _)| k == "expand[]")
            .map(|(_, v)| v.into_owned())
            .collect();
        let expands = |what: &str| {
            expand
                .iter()
                .any(|e| e == what || e.starts_with(&format!("{what}.")))
        };
        // A refund with its balance transactions embedded when `prefix` asks for them.
        let refund_as_asked = |refund: &Value, prefix: &str| {
            let mut refund = refund.clone();
            for field in ["balance_transaction", "failure_balance_transaction"] {
                if expands(&format!("{prefix}{field}"))
                    && let Some(txn) = refund[field].as_str().and_then(|t| objects.get(t))
                {
                    refund[field] = txn.clone();
                }
            }
            refund
        };
        if path == "/v1/refunds" {
            let charge = param("charge").unwrap_or_default();
            let refunds: Vec<Value> = objects
                .values()
                .filter(|o| o["object"] == "refund" && o["charge"] == charge.as_str())
                .map(|r| refund_as_asked(r, "data."))
                .collect();
            return ResponseTemplate::new(200)
                .set_body_json(json!({"object": "list", "data": refunds, "has_more": false}));
        }
        if path == "/v1/balance_transactions" {
            // A payout's transactions, `PAYOUT_PAGE` at a time whatever the limit asked, so
            // that every listing spans pages; in a stable order, as Stripe's cursor needs.
            let payout = param("payout").unwrap_or_default();
            let mut listed: Vec<&Value> = objects
                .values()
                .filter(|o| {
                    o["object"] == "balance_transaction"
                        && o["payouts"]
                            .as_array()
                            .is_some_and(|p| p.iter().any(|p| *p == payout.as_str()))
                })
                .collect();
            listed.sort_by_key(|t| t["id"].as_str().unwrap_or_default().to_owned());
            let start = match param("starting_after") {
                Some(after) => listed
                    .iter()
                    .position(|t| t["id"] == after.as_str())
                    .map_or(listed.len(), |i| i + 1),
                None => 0,
            };
            let page: Vec<Value> = listed
                .iter()
                .skip(start)
                .take(PAYOUT_PAGE)
                .map(|t| {
                    let mut t = (*t).clone();
                    t.as_object_mut().unwrap().remove("payouts");
                    t
                })
                .collect();
            let has_more = start + page.len() < listed.len();
            return ResponseTemplate::new(200)
                .set_body_json(json!({"object": "list", "data": page, "has_more": has_more}));
        }
        let id = path.rsplit('/').next().unwrap_or_default();
        let Some(mut object) = objects.get(id).cloned() else {
            return stripe_error(404, "invalid_request_error", "No such object");
        };
        if expands("latest_charge")
            && let Some(charge) = object["latest_charge"]
                .as_str()
                .and_then(|c| objects.get(c))
        {
            let mut charge = charge.clone();
            if expands("latest_charge.balance_transaction")
                && let Some(txn) = charge["balance_transaction"]
                    .as_str()
                    .and_then(|t| objects.get(t))
            {
                charge["balance_transaction"] = txn.clone();
            }
            if expands("latest_charge.refunds") {
                let refunds: Vec<Value> = objects
                    .values()
                    .filter(|o| o["object"] == "refund" && o["charge"] == charge["id"])
                    .map(|r| refund_as_asked(r, "latest_charge.refunds.data."))
                    .collect();
                charge["refunds"] = json!({"object": "list", "data": refunds, "has_more": false});
            }
            object["latest_charge"] = charge;
        }
        ResponseTemplate::new(200).set_body_json(object)
    }
}

/// A fake Stripe answering PaymentIntent creation as Stripe does: the fixture object, with the
/// amount, currency and metadata the request carried, and one object per Idempotency-Key.
pub struct CreatesPaymentIntents {
    by_key: Mutex<std::collections::HashMap<String, Value>>,
}

impl CreatesPaymentIntents {
    pub fn new() -> Self {
        Self {
            by_key: Mutex::new(Default::default()),
        }
    }

    /// How many PaymentIntents it has made: one per Idempotency-Key, as Stripe does.
    pub fn made(&self) -> usize {
        self.by_key.lock().unwrap().len()
    }
}

impl Respond for CreatesPaymentIntents {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let form = form_params(request);
        let key = request
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut by_key = self.by_key.lock().unwrap();
        let intent = by_key
            .entry(key)
            .or_insert_with(|| {
                let id = format!("pi_{}", Uuid::new_v4().simple());
                let mut intent = fixture("payment_intent");
                intent["id"] = json!(id);
                intent["client_secret"] = json!(format!("{id}_secret_{}", Uuid::new_v4().simple()));
                intent["amount"] = json!(form["amount"].parse::<i64>().unwrap());
                intent["currency"] = json!(form["currency"]);
                intent["status"] = json!("requires_payment_method");
                intent["metadata"] = form
                    .iter()
                    .filter_map(|(k, v)| {
                        let name = k.strip_prefix("metadata[")?.strip_suffix(']')?;
                        Some((name.to_owned(), json!(v)))
                    })
                    .collect::<serde_json::Map<_, _>>()
                    .into();
                intent
            })
            .clone();
        ResponseTemplate::new(200).set_body_json(intent)
    }
}

/// Mounts the PaymentIntent-creating fake on the app's Stripe.
pub async fn stripe_creates_payment_intents(app: &TestApp) {
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(CreatesPaymentIntents::new())
        .mount(&app.stripe)
        .await;
}

/// A Stripe error body, as Stripe sends it.
pub fn stripe_error(status: u16, kind: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"error": {"type": kind, "message": message}}))
}

/// A request's form-encoded body as a map.
pub fn form_params(request: &Request) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

/// A Stripe object from `tests/fixtures/stripe/`.
pub fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/stripe/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Asserts an RFC 9457 problem with `status` and `type`, and returns its body.
pub async fn assert_problem(response: Response, status: u16, kind: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "content type"
    );
    if status == 503 {
        // Every "try again later" says when.
        let retry_after = response.headers().get("retry-after");
        assert!(
            retry_after.is_some_and(|v| v.to_str().unwrap().parse::<u32>().is_ok()),
            "a 503 without a Retry-After in seconds: {retry_after:?}"
        );
    }
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], format!("/problems/{kind}"), "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    // Every problem answered is one of the catalogue's, with the catalogue's status and title.
    let listed = ProblemType::from_uri(body["type"].as_str().unwrap_or_default())
        .unwrap_or_else(|| panic!("a problem type the catalogue lacks: {body}"));
    assert_eq!(
        listed.status().as_u16(),
        status,
        "the catalogue's status: {body}"
    );
    assert_eq!(
        body["title"],
        listed.title(),
        "the catalogue's title: {body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    body
}

/// The fields a validation problem names, sorted.
pub fn problem_fields(problem: &Value) -> Vec<String> {
    let mut fields: Vec<String> = problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    fields.sort();
    fields
}
