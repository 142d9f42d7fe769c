//! The test harness: a real Postgres (a throwaway cluster this process starts, unless
//! `DATABASE_URL` names a server), a fresh migrated database per test, a wiremock server
//! standing in for Stripe, and the application built exactly as production builds it.
//! Set `TEST_LOG=1` to see the application's logs.

use std::process::ChildStdin;
use std::sync::{Mutex, OnceLock};

use quickdonate::config::Settings;
use quickdonate::db::local::{Durability, LocalPostgres};
use quickdonate::startup::Application;
use reqwest::Response;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const PUBLISHABLE_KEY: &str = "pk_test_quickdonate";

/// Where the tests' databases are made.
struct TestServer {
    /// Creates a database and says how to reach it.
    admin: PgConnectOptions,
    /// Builds the URL of a database on this server.
    url_for: Box<dyn Fn(&str) -> String + Send + Sync>,
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
    TestServer {
        admin: pg.connect_options("postgres"),
        url_for: Box::new(move |db| pg.url(db)),
        _watchdog: Some(Mutex::new(watchdog)),
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

/// The running application and what a test needs around it.
pub struct TestApp {
    pub address: String,
    pub db: PgPool,
    pub stripe: MockServer,
    pub http: reqwest::Client,
    db_name: String,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the app with the test settings, changed by `customize` first.
pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        quickdonate::telemetry::init(quickdonate::config::LogFormat::Text);
    }
    let stripe = MockServer::start().await;
    let db_name = fresh_database().await;

    let mut settings = Settings::defaults().expect("the default settings load");
    settings.listen_addr = "127.0.0.1:0".parse().unwrap();
    settings.database_url = Some(SecretString::from((server().url_for)(&db_name)));
    settings.database_max_connections = 5;
    settings.campaigns_file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/campaigns.toml").into();
    settings.stripe_secret_key = Some(SecretString::from("sk_test_quickdonate"));
    settings.stripe_publishable_key = Some(PUBLISHABLE_KEY.to_owned());
    settings.stripe_webhook_secret = Some(SecretString::from("whsec_quickdonate"));
    settings.stripe_api_base = stripe.uri();
    settings.stripe_timeout_secs = 2;
    customize(&mut settings);
    settings.validate().expect("the test settings are valid");

    let app = Application::build(settings).await.expect("the app builds");
    let address = format!("http://{}", app.address());
    let db = app.db().clone();
    tokio::spawn(app.run_until_stopped(std::future::pending()));

    TestApp {
        address,
        db,
        stripe,
        http: reqwest::Client::new(),
        db_name,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
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
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], format!("/problems/{kind}"), "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
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
