//! Faults survived, nothing lost: Postgres stopped and restarted under load, Stripe away while
//! a donation is created and while an event is applied, the process killed in the middle of a
//! burst, and SIGTERM under load. Each test ends by recomputing the totals from the rows.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quickdonate::db::local::{Durability, LocalPostgres};
use quickdonate::payments::ATTEMPTS;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::helpers::{
    CreatesPaymentIntents, StripeObjects, WEBHOOK_SECRET, assert_books_hold_in, assert_problem,
    assert_totals_match_rows_in, donation_body, event, objects, spawn_app_at, spawn_app_with,
    stripe_creates_payment_intents, stripe_error,
};
use crate::out_of_the_box::{Service, start_with, stop};

const AMOUNT: i64 = 2500;
const FEE: i64 = 58;

/// Most events here are a PaymentIntent's alone, with no balance transaction: the gifts' ledger
/// rows are not expected yet, as `quickdonate verify` expects them only once Stripe had time.
const UNSETTLED: Duration = quickdonate::books::verify::SETTLE;

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Polls `check` every 50 ms until it holds; fails with `what` after `deadline`.
async fn eventually<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    while !check().await {
        assert!(Instant::now() < until, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `event` as Stripe sends it: signed with our secret, now. Returns the status, or `None` if
/// no answer came (the process was gone).
async fn deliver(http: &reqwest::Client, address: &str, event: &Value) -> Option<u16> {
    let body = serde_json::to_vec(event).unwrap();
    let signature =
        quickdonate::webhooks::signature::sign(&SecretString::from(WEBHOOK_SECRET), &body, now());
    let response = http
        .post(format!("{address}/v1/webhooks/stripe"))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body)
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

/// The event that pays a donation in full, carrying all it needs (no fetch from Stripe).
fn paid(donation: Uuid, pi: &str, amount: i64) -> Value {
    event(
        "payment_intent.succeeded",
        objects::payment_intent(pi, Some(donation), "succeeded", amount),
        now(),
    )
}

/// A donation of `amount` with `key`; the status, and the donation and PaymentIntent on 201.
/// `None` if no answer came.
async fn create(
    http: &reqwest::Client,
    address: &str,
    amount: i64,
    key: &str,
) -> Option<(u16, Value)> {
    let mut body = donation_body();
    body["amount"] = json!(amount);
    let response = http
        .post(format!("{address}/v1/campaigns/kashmir/donations"))
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or(Value::Null)))
}

/// What a campaign row says, and the events' states, read from the database.
async fn campaign_row(db: &PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT raised_amount, donation_count FROM campaigns WHERE slug = 'kashmir'")
        .fetch_one(db)
        .await
        .unwrap()
}

async fn event_state(db: &PgPool, id: &str) -> Option<(String, i32)> {
    sqlx::query_as("SELECT state, attempts FROM stripe_events WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
        .unwrap()
}

/// What a client saw of a burst: each 201 (donation, PaymentIntent, amount), and each event
/// with the answer to its delivery.
#[derive(Default)]
struct Seen {
    created: Vec<(Uuid, String, i64)>,
    events: Vec<(Value, Uuid, i64, Option<u16>)>,
    /// Requests both sent and answered while Postgres was down: (what, status, problem type).
    while_down: Vec<(&'static str, u16, String)>,
    /// Every answer that was neither 2xx nor 503 (there must be none).
    unexpected: Vec<(&'static str, u16, Value)>,
}

/// A client making donations and paying each by webhook, as fast as it is answered, until
/// `stop`. `phase` is 1 while Postgres is down; a request sent and answered in phase 1 is
/// recorded as such.
async fn burst(
    task: usize,
    http: reqwest::Client,
    address: String,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
) {
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        // Distinct amounts: a gift counted twice, or another's, shows in the totals.
        let amount = 1000 + (task * 10_000 + i) as i64;
        let key = format!("burst-{task}-{i}-{}", Uuid::new_v4().simple());
        let before = phase.load(Ordering::SeqCst);
        let Some((status, body)) = create(&http, &address, amount, &key).await else {
            break; // the process is gone
        };
        let down = before == 1 && phase.load(Ordering::SeqCst) == 1;
        if status != 201 {
            {
                let mut seen = seen.lock().unwrap();
                if down {
                    let kind = body["type"].as_str().unwrap_or_default().to_owned();
                    seen.while_down.push(("creation", status, kind));
                }
                if status != 503 {
                    seen.unexpected.push(("creation", status, body));
                }
            }
            // Stripe goes on delivering meanwhile: an event sent before, again.
            let again = {
                let seen = seen.lock().unwrap();
                (!seen.events.is_empty()).then(|| seen.events[i % seen.events.len()].0.clone())
            };
            if let Some(event) = again {
                let before = phase.load(Ordering::SeqCst);
                let Some(status) = deliver(&http, &address, &event).await else {
                    break;
                };
                let down = before == 1 && phase.load(Ordering::SeqCst) == 1;
                let mut seen = seen.lock().unwrap();
                if down {
                    seen.while_down.push(("webhook", status, String::new()));
                }
                if !(200..300).contains(&status) && status != 503 {
                    seen.unexpected.push(("webhook", status, Value::Null));
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let id = Uuid::parse_str(body["id"].as_str().unwrap()).unwrap();
        let pi = body["payment_intent_id"].as_str().unwrap().to_owned();
        seen.lock().unwrap().created.push((id, pi.clone(), amount));
        let event = paid(id, &pi, amount);
        let before = phase.load(Ordering::SeqCst);
        let answer = deliver(&http, &address, &event).await;
        let down = before == 1 && phase.load(Ordering::SeqCst) == 1;
        let mut seen = seen.lock().unwrap();
        if let Some(status) = answer {
            if down {
                seen.while_down.push(("webhook", status, String::new()));
            }
            if !(200..300).contains(&status) && status != 503 {
                seen.unexpected.push(("webhook", status, Value::Null));
            }
        }
        seen.events.push((event, id, amount, answer));
        let gone = answer.is_none();
        drop(seen);
        if gone {
            break;
        }
    }
}

/// A Postgres of the test's own (the harness's is shared by every test), to stop and start
/// again. Dropping it stops it and deletes its files.
struct OwnPostgres {
    root: PathBuf,
    _watchdog: ChildStdin,
}

impl OwnPostgres {
    fn start() -> (Self, LocalPostgres) {
        let root =
            std::env::temp_dir().join(format!("quickdonate-faults-{}", Uuid::new_v4().simple()));
        let pg = LocalPostgres::start(&root, None, Durability::Durable).expect("Postgres starts");
        let watchdog = pg
            .remove_when_this_process_exits(&root)
            .expect("the watchdog starts");
        (
            Self {
                root,
                _watchdog: watchdog,
            },
            pg,
        )
    }

    /// Starts the stopped server again on the same files.
    async fn restart(&self) -> LocalPostgres {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || LocalPostgres::start(&root, None, Durability::Durable))
            .await
            .unwrap()
            .expect("Postgres starts again")
    }
}

#[tokio::test]
async fn postgres_stopped_and_restarted_under_load_loses_and_doubles_nothing() {
    let (own, pg) = tokio::task::spawn_blocking(OwnPostgres::start)
        .await
        .unwrap();
    pg.ensure_database("faults").await.unwrap();
    let app = spawn_app_at(pg.url("faults"), |_| {}).await;
    stripe_creates_payment_intents(&app).await;

    let phase = Arc::new(AtomicU8::new(0));
    let stop_burst = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut clients = tokio::task::JoinSet::new();
    for task in 0..3 {
        clients.spawn(burst(
            task,
            app.http.clone(),
            app.address.clone(),
            phase.clone(),
            stop_burst.clone(),
            seen.clone(),
        ));
    }
    let created = || seen.lock().unwrap().created.len();
    eventually(Duration::from_secs(60), "ten donations made", || async {
        created() >= 10
    })
    .await;

    // Postgres goes away under the load.
    tokio::task::spawn_blocking(move || pg.stop().expect("Postgres stops"))
        .await
        .unwrap();
    phase.store(1, Ordering::SeqCst);
    let down_since = Instant::now();
    assert_problem(app.get("/readyz").await, 503, "service-unavailable").await;
    let (id, pi, amount) = seen.lock().unwrap().created[0].clone();
    let late = paid(id, &pi, amount);
    assert_eq!(deliver(&app.http, &app.address, &late).await, Some(503));
    let refused = app
        .post_donation("kashmir", &donation_body(), Some("made-while-down"))
        .await;
    assert_problem(refused, 503, "service-unavailable").await;
    // Let the load meet the outage for a while.
    eventually(
        Duration::from_secs(60),
        "the load met the outage",
        || async {
            down_since.elapsed() > Duration::from_secs(2)
                && seen.lock().unwrap().while_down.len() >= 6
        },
    )
    .await;
    phase.store(2, Ordering::SeqCst);

    // It comes back; the service recovers by itself.
    let _pg = own.restart().await;
    eventually(
        Duration::from_secs(60),
        "/readyz says ready again",
        || async { app.get("/readyz").await.status() == 200 },
    )
    .await;
    let after = created();
    eventually(Duration::from_secs(60), "donations made again", || async {
        created() >= after + 5
    })
    .await;
    stop_burst.store(true, Ordering::SeqCst);
    while let Some(client) = clients.join_next().await {
        client.unwrap();
    }

    let mut seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.unexpected.is_empty(), "{:?}", seen.unexpected);
    // While it was down, every webhook and every creation was a 503: never a 2xx for an event
    // not stored, and a problem that says the service is unavailable.
    assert!(
        seen.while_down.iter().any(|(what, ..)| *what == "webhook"),
        "no webhook met the outage: {:?}",
        seen.while_down
    );
    for (what, status, kind) in &seen.while_down {
        assert_eq!(*status, 503, "{what} while Postgres was down");
        if *what == "creation" {
            assert_eq!(kind, "/problems/service-unavailable");
        }
    }

    // Stripe delivers again every event not acknowledged.
    seen.events.push((late, id, amount, Some(503)));
    for (event, _, _, answer) in &mut seen.events {
        if answer.is_some_and(|s| (200..300).contains(&s)) {
            continue;
        }
        let until = Instant::now() + Duration::from_secs(30);
        while deliver(&app.http, &app.address, event).await != Some(200) {
            assert!(Instant::now() < until, "a redelivery never stored");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        *answer = Some(200);
    }
    app.wait_until_applied().await;

    // Every 201 donation exists with its PaymentIntent, paid once.
    for (id, pi, amount) in &seen.created {
        let row: (Option<String>, i64, String, i64) = sqlx::query_as(
            "SELECT payment_intent_id, total_amount, payment_status, amount_received \
             FROM donations WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert_eq!(
            row,
            (Some(pi.clone()), *amount, "succeeded".into(), *amount)
        );
    }
    // Every event acknowledged is stored and applied exactly once.
    for (event, ..) in &seen.events {
        let id = event["id"].as_str().unwrap();
        assert_eq!(
            event_state(&app.db, id).await,
            Some(("applied".into(), 1)),
            "{id}"
        );
    }
    // The totals are the paid gifts', and what the rows say.
    let raised: i64 = seen.created.iter().map(|(_, _, amount)| amount).sum();
    assert_eq!(
        campaign_row(&app.db).await,
        (raised, seen.created.len() as i64)
    );
    assert_totals_match_rows_in(&app.db).await;
    assert_books_hold_in(&app.db, UNSETTLED).await;
    drop(app);
    drop(own);
}

/// How Stripe fails a call.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Nothing listens at its address.
    Refused,
    /// It answers, but only after the client's timeout.
    Slow,
    /// It answers this status.
    Answers(u16),
}

/// A Stripe making PaymentIntents, failing with `fault` while `down`.
struct Flaky {
    down: Arc<AtomicBool>,
    fault: Fault,
    intents: Arc<CreatesPaymentIntents>,
}

impl Respond for Flaky {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if !self.down.load(Ordering::SeqCst) {
            return self.intents.respond(request);
        }
        match self.fault {
            // Stripe makes it, but the answer comes too late.
            Fault::Slow => self
                .intents
                .respond(request)
                .set_delay(Duration::from_secs(3)),
            Fault::Answers(429) => stripe_error(429, "invalid_request_error", "Too many requests")
                .insert_header("retry-after", "10"),
            Fault::Answers(status) => stripe_error(status, "api_error", "Something went wrong"),
            Fault::Refused => unreachable!("nothing listens"),
        }
    }
}

async fn mount_flaky(
    server: &MockServer,
    down: &Arc<AtomicBool>,
    fault: Fault,
) -> Arc<CreatesPaymentIntents> {
    let intents = Arc::new(CreatesPaymentIntents::new());
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(Flaky {
            down: down.clone(),
            fault,
            intents: intents.clone(),
        })
        .mount(server)
        .await;
    intents
}

async fn creations_at(server: Option<&MockServer>) -> Vec<Request> {
    let Some(server) = server else {
        return Vec::new();
    };
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path() == "/v1/payment_intents")
        .collect()
}

/// A donation made while Stripe fails with `fault`: a 503 problem that says to retry with the
/// same key, and that retry, once Stripe is back, finishes the same donation with one
/// PaymentIntent.
async fn a_creation_meets(fault: Fault) {
    let refused_port = matches!(fault, Fault::Refused).then(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    });
    let app = spawn_app_with(|s| {
        s.stripe_timeout_secs = 1;
        if let Some(port) = refused_port {
            s.stripe_api_base = format!("http://127.0.0.1:{port}");
        }
    })
    .await;
    let down = Arc::new(AtomicBool::new(true));
    let mut intents = match fault {
        Fault::Refused => None,
        _ => Some(mount_flaky(&app.stripe, &down, fault).await),
    };
    let key = format!("fault-{}", Uuid::new_v4().simple());

    let answer = app
        .post_donation("kashmir", &donation_body(), Some(&key))
        .await;
    let problem = assert_problem(answer, 503, "payment-provider-unavailable").await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("Nothing was charged"), "{detail}");
    assert!(detail.contains("same Idempotency-Key"), "{detail}");
    let stripe = match fault {
        Fault::Refused => None,
        _ => Some(&app.stripe),
    };
    let tried = creations_at(stripe).await.len();
    let expected = match fault {
        Fault::Refused => 0,
        _ => ATTEMPTS as usize,
    };
    assert_eq!(tried, expected, "{fault:?}: attempts at Stripe");
    let (donation, linked): (Uuid, Option<String>) =
        sqlx::query_as("SELECT id, payment_intent_id FROM donations")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(linked, None);

    // Stripe is back; the website retries with the same key.
    down.store(false, Ordering::SeqCst);
    let back = match refused_port {
        Some(port) => {
            let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
            let server = MockServer::builder().listener(listener).start().await;
            intents = Some(mount_flaky(&server, &down, fault).await);
            Some(server)
        }
        None => None,
    };
    let stripe = back.as_ref().unwrap_or(&app.stripe);
    let answer = app
        .post_donation("kashmir", &donation_body(), Some(&key))
        .await;
    assert_eq!(answer.status(), 201, "{fault:?}");
    let created: Value = answer.json().await.unwrap();
    assert_eq!(created["id"], donation.to_string(), "the same donation");
    let pi = created["payment_intent_id"].as_str().unwrap();

    // One PaymentIntent: every call carried the donation's key, so Stripe made one.
    let calls = creations_at(Some(stripe)).await;
    assert_eq!(calls.len(), expected + 1, "{fault:?}");
    for call in &calls {
        assert_eq!(
            call.headers["idempotency-key"],
            format!("quickdonate-pi-{donation}").as_str()
        );
    }
    assert_eq!(intents.unwrap().made(), 1, "{fault:?}: PaymentIntents made");
    let rows: Vec<(Uuid, Option<String>)> =
        sqlx::query_as("SELECT id, payment_intent_id FROM donations")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(rows, vec![(donation, Some(pi.to_owned()))]);
    assert_totals_match_rows_in(&app.db).await;
    assert_books_hold_in(&app.db, UNSETTLED).await;
}

#[tokio::test]
async fn stripe_unreachable_during_creation_is_a_503_and_the_retry_makes_one_payment_intent() {
    a_creation_meets(Fault::Refused).await;
}

#[tokio::test]
async fn stripe_slower_than_the_timeout_during_creation_is_a_503_and_the_retry_makes_one_payment_intent()
 {
    a_creation_meets(Fault::Slow).await;
}

#[tokio::test]
async fn stripe_answering_500_during_creation_is_a_503_and_the_retry_makes_one_payment_intent() {
    a_creation_meets(Fault::Answers(500)).await;
}

#[tokio::test]
async fn stripe_answering_429_during_creation_is_a_503_and_the_retry_makes_one_payment_intent() {
    a_creation_meets(Fault::Answers(429)).await;
}

/// What the fake Stripe's 429 asks for; our client cannot read it (see
/// `payments::AWAY_PAUSE`), so the worker's own pause must be at least this.
const RETRY_AFTER: f64 = 10.0;

/// Stripe's objects, or `status` while `down`.
struct Away {
    down: Arc<AtomicBool>,
    status: u16,
    objects: StripeObjects,
}

impl Respond for Away {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if !self.down.load(Ordering::SeqCst) {
            return self.objects.respond(request);
        }
        match self.status {
            429 => stripe_error(429, "invalid_request_error", "Too many requests")
                .insert_header("retry-after", format!("{RETRY_AFTER}").as_str()),
            status => stripe_error(status, "api_error", "Something went wrong"),
        }
    }
}

/// An event whose fee must be fetched, while Stripe answers `status`: the worker backs off
/// for longer than Retry-After and leaves Stripe alone meanwhile, the event is not set aside
/// (even with one attempt allowed), and it applies once Stripe is back.
async fn an_event_meets_stripe_answering(status: u16) {
    let app = spawn_app_with(|s| s.event_max_attempts = 1).await;
    stripe_creates_payment_intents(&app).await;
    let (donation, pi) = app.create_donation(AMOUNT).await;
    let s = Uuid::new_v4().simple().to_string();
    let (charge, txn) = (format!("ch_{s}"), format!("txn_{s}"));
    let stripe = StripeObjects::default();
    let mut intent = objects::payment_intent(&pi, Some(donation), "succeeded", AMOUNT);
    intent["latest_charge"] = json!(charge);
    stripe.put(intent);
    stripe.put(objects::charge(&charge, &pi, AMOUNT, 0, Some(&txn)));
    stripe.put(objects::balance_transaction(&txn, AMOUNT, FEE));
    let down = Arc::new(AtomicBool::new(true));
    Mock::given(method("GET"))
        .respond_with(Away {
            down: down.clone(),
            status,
            objects: stripe,
        })
        .mount(&app.stripe)
        .await;
    let fetches = || async {
        app.stripe_requests(&format!("/v1/payment_intents/{pi}"))
            .await
            .len()
    };

    // The charge's event names its fee's balance transaction without it: a fetch is needed.
    let charged = event(
        "charge.succeeded",
        objects::charge(&charge, &pi, AMOUNT, 0, Some(&txn)),
        now(),
    );
    let id = charged["id"].as_str().unwrap().to_owned();
    assert_eq!(app.deliver(&charged).await.status(), 200);
    let until = Instant::now() + Duration::from_secs(30);
    let (state, attempts, error, next_in) = loop {
        let tried: (String, i32, Option<String>, f64) = sqlx::query_as(
            "SELECT state, attempts, last_error, \
                    extract(epoch FROM next_attempt_at - now())::float8 \
             FROM stripe_events WHERE id = $1",
        )
        .bind(&id)
        .fetch_one(&app.db)
        .await
        .unwrap();
        if tried.1 >= 1 {
            break tried;
        }
        assert!(Instant::now() < until, "the worker never tried the event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((state.as_str(), attempts), ("pending", 1), "not set aside");
    let error = error.unwrap();
    assert!(error.contains("Stripe could not be reached"), "{error}");
    assert!(next_in >= RETRY_AFTER, "next attempt in {next_in} s");
    assert_eq!(fetches().await, ATTEMPTS as usize);

    // A while later, Stripe has been left alone.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        fetches().await,
        ATTEMPTS as usize,
        "the worker hammers Stripe"
    );
    assert_eq!(event_state(&app.db, &id).await, Some(("pending".into(), 1)));

    // Stripe is back and the pause runs out (as time passing would): the event applies.
    down.store(false, Ordering::SeqCst);
    sqlx::query("UPDATE stripe_events SET next_attempt_at = now() WHERE id = $1")
        .bind(&id)
        .execute(&app.db)
        .await
        .unwrap();
    app.wait_until_applied().await;
    assert_eq!(event_state(&app.db, &id).await, Some(("applied".into(), 2)));
    assert_eq!(fetches().await, ATTEMPTS as usize + 1);
    let facts = app.donation_facts(donation).await;
    assert_eq!(
        (
            facts.payment_status.as_str(),
            facts.fee,
            facts.amount_received
        ),
        ("succeeded", Some(FEE), AMOUNT)
    );
    assert_eq!(campaign_row(&app.db).await, (AMOUNT, 1));
    app.assert_totals_match_rows().await;
    assert_books_hold_in(&app.db, UNSETTLED).await;
}

#[tokio::test]
async fn stripe_answering_429_while_an_event_is_applied_is_waited_out_not_hammered() {
    an_event_meets_stripe_answering(429).await;
}

#[tokio::test]
async fn stripe_answering_500_while_an_event_is_applied_is_waited_out_not_hammered() {
    an_event_meets_stripe_answering(500).await;
}

/// The settings of a real binary that takes our signed webhooks, with no card-testing caps
/// (the burst comes from one address), written in `dir`.
fn burst_env(dir: &Path) -> Vec<(&'static str, String)> {
    let file = dir.join("no-caps.toml");
    std::fs::write(
        &file,
        "donation_limit_per_ip = \"off\"\ndonation_limit_per_email = \"off\"\n\
         donation_limit_per_campaign = \"off\"\n",
    )
    .unwrap();
    vec![
        ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET.to_owned()),
        ("QUICKDONATE_CONFIG", file.display().to_string()),
    ]
}

/// The settings of a real binary whose Stripe is `stripe`.
fn stripe_env(stripe: &MockServer) -> [(&'static str, String); 4] {
    [
        ("STRIPE_SECRET_KEY", "sk_test_quickdonate".to_owned()),
        ("STRIPE_PUBLISHABLE_KEY", "pk_test_quickdonate".to_owned()),
        ("STRIPE_API_BASE", stripe.uri()),
        ("STRIPE_TIMEOUT_SECS", "10".to_owned()),
    ]
}

/// A fake Stripe that makes PaymentIntents at once.
async fn stripe_making_payment_intents() -> MockServer {
    let stripe = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(CreatesPaymentIntents::new())
        .mount(&stripe)
        .await;
    stripe
}

/// The settings of a real binary that takes our signed webhooks (no card-testing caps) and
/// whose Stripe is `stripe`.
fn killable_env(dir: &Path, stripe: &MockServer) -> Vec<(&'static str, String)> {
    let mut env = burst_env(dir);
    env.extend(stripe_env(stripe));
    env
}

async fn start_service(dir: &Path, env: Vec<(&'static str, String)>) -> Service {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        start_with(&dir, &env)
    })
    .await
    .unwrap()
}

/// The local Postgres under `dir`, started if it is not running; and a pool on the service's
/// database.
pub async fn local_database(dir: &Path) -> (LocalPostgres, PgPool) {
    let root = dir.join(".quickdonate");
    let pg =
        tokio::task::spawn_blocking(move || LocalPostgres::start(&root, None, Durability::Durable))
            .await
            .unwrap()
            .unwrap();
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(pg.connect_options("quickdonate"))
        .await
        .unwrap();
    (pg, db)
}

#[tokio::test]
async fn a_process_killed_mid_burst_loses_no_acknowledged_event_or_donation() {
    let dir = tempfile::tempdir().unwrap();
    // Stripe makes PaymentIntents at once and answers fetches slowly, so that a batch of the
    // worker's is in flight when the process dies.
    let stripe = stripe_making_payment_intents().await;
    let at_stripe = StripeObjects::default();
    Mock::given(method("GET"))
        .respond_with(Late(at_stripe.clone(), Duration::from_secs(2)))
        .mount(&stripe)
        .await;
    let env = killable_env(dir.path(), &stripe);
    let mut service = start_service(dir.path(), env.clone()).await;
    let http = reqwest::Client::new();

    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop_burst = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for task in 0..4 {
        clients.spawn(burst(
            task,
            http.clone(),
            service.address.clone(),
            Arc::new(AtomicU8::new(0)),
            stop_burst.clone(),
            seen.clone(),
        ));
    }
    let acknowledged = || {
        seen.lock()
            .unwrap()
            .events
            .iter()
            .filter(|e| e.3 == Some(200))
            .count()
    };
    let until = Instant::now() + Duration::from_secs(60);
    while acknowledged() < 20 {
        if Instant::now() > until {
            let seen = seen.lock().unwrap();
            panic!(
                "no burst: {} made, {:?} answers to events, unexpected {:?}",
                seen.created.len(),
                seen.events.iter().map(|e| e.3).collect::<Vec<_>>(),
                seen.unexpected
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An event whose fee must be fetched: the worker claims it and waits on Stripe.
    let (donation, pi, amount) = seen.lock().unwrap().created[0].clone();
    let (charge, txn) = ("ch_killed", "txn_killed");
    let mut intent = objects::payment_intent(&pi, Some(donation), "succeeded", amount);
    intent["latest_charge"] = json!(charge);
    at_stripe.put(intent);
    at_stripe.put(objects::charge(charge, &pi, amount, 0, Some(txn)));
    at_stripe.put(objects::balance_transaction(txn, amount, FEE));
    let charged = event(
        "charge.succeeded",
        objects::charge(charge, &pi, amount, 0, Some(txn)),
        now(),
    );
    assert_eq!(deliver(&http, &service.address, &charged).await, Some(200));
    let fetch = format!("/v1/payment_intents/{pi}");
    eventually(Duration::from_secs(30), "the worker fetching", || async {
        stripe
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .any(|r| r.url.path() == fetch)
    })
    .await;
    // SIGKILL in the middle of it all: no shutdown of any kind.
    service.child.kill().unwrap();
    service.child.wait().unwrap();
    // Each client stops at its first request left unanswered.
    stop_burst.store(true, Ordering::SeqCst);
    while let Some(client) = clients.join_next().await {
        client.unwrap();
    }
    let mut seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.unexpected.is_empty(), "{:?}", seen.unexpected);
    seen.events
        .push((charged.clone(), donation, amount, Some(200)));

    // The next start, on the same data, applies every event it had acknowledged, the one
    // claimed by the killed process included (long before its claim would run out).
    let service = start_service(dir.path(), env).await;
    let (pg, db) = local_database(dir.path()).await;
    assert!(
        !pg.started_here(),
        "the killed service's Postgres kept running"
    );
    every_event_applied(&db).await;
    for (id, pi, amount) in &seen.created {
        let row: Option<(Option<String>, i64)> =
            sqlx::query_as("SELECT payment_intent_id, total_amount FROM donations WHERE id = $1")
                .bind(id)
                .fetch_optional(&db)
                .await
                .unwrap();
        assert_eq!(row, Some((Some(pi.clone()), *amount)), "donation {id}");
    }
    let mut paid_acknowledged = std::collections::HashMap::new();
    for (event, donation, amount, answer) in &seen.events {
        if *answer != Some(200) {
            continue;
        }
        let id = event["id"].as_str().unwrap();
        assert_eq!(
            event_state(&db, id).await,
            Some(("applied".into(), 1)),
            "{id}"
        );
        let (status, received): (String, i64) =
            sqlx::query_as("SELECT payment_status, amount_received FROM donations WHERE id = $1")
                .bind(donation)
                .fetch_one(&db)
                .await
                .unwrap();
        assert_eq!((status.as_str(), received), ("succeeded", *amount));
        paid_acknowledged.insert(*donation, *amount);
    }
    // An event delivered as the process died may have been stored without its 2xx reaching
    // the client: it counts too, once. The totals are exactly the paid rows'.
    let (raised, count) = campaign_row(&db).await;
    let (paid, paid_count): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(amount), 0)::bigint, count(*) FROM donations \
         WHERE payment_status = 'succeeded'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((raised, count), (paid, paid_count));
    assert!(raised >= paid_acknowledged.values().sum::<i64>());
    let fee: Option<i64> = sqlx::query_scalar("SELECT fee FROM donations WHERE id = $1")
        .bind(donation)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(fee, Some(FEE), "the fee fetched after the restart");
    assert_totals_match_rows_in(&db).await;
    assert_books_hold_in(&db, UNSETTLED).await;
    let doubled: i64 =
        sqlx::query_scalar("SELECT count(*) FROM donations WHERE amount_received > total_amount")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(doubled, 0);
    db.close().await;
    tokio::task::spawn_blocking(move || stop(service))
        .await
        .unwrap();
    // Adopted, not started, by the second run: stop it here.
    pg.stop().unwrap();
}

/// A fake Stripe answering after `delay`.
struct Late<R>(R, Duration);

impl<R: Respond> Respond for Late<R> {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.0.respond(request).set_delay(self.1)
    }
}

#[tokio::test]
async fn sigterm_under_load_finishes_what_is_in_flight_refuses_the_rest_and_exits_0_in_10_s() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = MockServer::start().await;
    let slow = Duration::from_secs(3);
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(Late(CreatesPaymentIntents::new(), slow))
        .mount(&stripe)
        .await;
    let at_stripe = StripeObjects::default();
    Mock::given(method("GET"))
        .respond_with(Late(at_stripe.clone(), slow))
        .mount(&stripe)
        .await;
    let env = killable_env(dir.path(), &stripe);
    let mut service = start_service(dir.path(), env).await;
    let address = service.address.clone();
    let http = reqwest::Client::new();

    // A paid donation whose charge's event needs its fee fetched from a slow Stripe.
    let (_, first) = create(&http, &address, AMOUNT, "first").await.unwrap();
    let donation = Uuid::parse_str(first["id"].as_str().unwrap()).unwrap();
    let pi = first["payment_intent_id"].as_str().unwrap().to_owned();
    let (charge, txn) = ("ch_sigterm", "txn_sigterm");
    let mut intent = objects::payment_intent(&pi, Some(donation), "succeeded", AMOUNT);
    intent["latest_charge"] = json!(charge);
    at_stripe.put(intent);
    at_stripe.put(objects::charge(charge, &pi, AMOUNT, 0, Some(txn)));
    at_stripe.put(objects::balance_transaction(txn, AMOUNT, FEE));
    let charged = event(
        "charge.succeeded",
        objects::charge(charge, &pi, AMOUNT, 0, Some(txn)),
        now(),
    );
    assert_eq!(deliver(&http, &address, &charged).await, Some(200));
    let received = |method: &'static str, path: String| {
        let stripe = &stripe;
        async move {
            stripe
                .received_requests()
                .await
                .unwrap_or_default()
                .iter()
                .filter(|r| r.method.as_str() == method && r.url.path() == path)
                .count()
        }
    };
    // The worker's batch is in flight: it waits on Stripe.
    let fetch = format!("/v1/payment_intents/{pi}");
    eventually(Duration::from_secs(30), "the worker fetching", || async {
        received("GET", fetch.clone()).await >= 1
    })
    .await;
    // So is a donor's request.
    let in_flight = tokio::spawn({
        let (http, address) = (http.clone(), address.clone());
        async move { create(&http, &address, 3000, "in-flight").await }
    });
    eventually(
        Duration::from_secs(30),
        "the donation at Stripe",
        || async { received("POST", "/v1/payment_intents".to_owned()).await >= 2 },
    )
    .await;
    // And a client that never finishes its request.
    let host = address.trim_start_matches("http://").to_owned();
    let mut stalled = std::net::TcpStream::connect(&host).unwrap();
    stalled
        .write_all(
            b"POST /v1/webhooks/stripe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"id\"",
        )
        .unwrap();

    let signalled = Instant::now();
    let pid = service.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // New connections are refused at once.
    eventually(Duration::from_secs(3), "new connections refused", || {
        let host = host.clone();
        async move { std::net::TcpStream::connect(&host).is_err() }
    })
    .await;
    // The request in flight is answered in full.
    let (status, body) = in_flight.await.unwrap().expect("an answer");
    assert_eq!(status, 201, "{body}");
    // The process exits 0 within ten seconds, the stalled client notwithstanding.
    let exited = loop {
        if let Some(status) = service.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM:\n{}",
            service.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exited.success(), "exited with {exited}");
    drop(stalled);

    // The worker's batch finished: the event applied with the fee it fetched; the donation
    // answered in flight exists with its PaymentIntent.
    let (pg, db) = local_database(dir.path()).await;
    assert!(pg.started_here(), "the service stopped its Postgres");
    let id = charged["id"].as_str().unwrap();
    assert_eq!(event_state(&db, id).await, Some(("applied".into(), 1)));
    let fee: Option<i64> = sqlx::query_scalar("SELECT fee FROM donations WHERE id = $1")
        .bind(donation)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(fee, Some(FEE));
    let late = Uuid::parse_str(body["id"].as_str().unwrap()).unwrap();
    let linked: Option<String> =
        sqlx::query_scalar("SELECT payment_intent_id FROM donations WHERE id = $1")
            .bind(late)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(linked.as_deref(), body["payment_intent_id"].as_str());
    assert_totals_match_rows_in(&db).await;
    assert_books_hold_in(&db, UNSETTLED).await;
    db.close().await;
    tokio::task::spawn_blocking(move || pg.stop().unwrap())
        .await
        .unwrap();
}

/// Waits (a minute at most) until every stored event is applied.
async fn every_event_applied(db: &PgPool) {
    eventually(Duration::from_secs(60), "every event applied", || async {
        let pending: i64 =
            sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE state <> 'applied'")
                .fetch_one(db)
                .await
                .unwrap();
        pending == 0
    })
    .await;
}

/// The connections now waiting for a commit to be confirmed by a standby: those whose last
/// statement is like `statement`.
async fn waiting_for_the_standby(db: &PgPool, statement: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event = 'SyncRep' AND query LIKE $1",
    )
    .bind(statement)
    .fetch_one(db)
    .await
    .unwrap()
}

/// Makes every commit of the cluster wait for a standby that never answers (`nobody`), or,
/// with `None`, stop waiting: the commits waiting are then complete.
async fn standby(db: &PgPool, name: Option<&str>) {
    let set = match name {
        Some(name) => format!("ALTER SYSTEM SET synchronous_standby_names = '{name}'"),
        None => "ALTER SYSTEM RESET synchronous_standby_names".to_owned(),
    };
    sqlx::query(sqlx::AssertSqlSafe(set))
        .execute(db)
        .await
        .unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(db)
        .await
        .unwrap();
}

/// Group commit's crash window, on the real binary: killed (SIGKILL) after a group's commit
/// is written and before any of its requests is answered. A commit that waits for a standby
/// that never comes is exactly that window, held open: the commit is on disk, the service is
/// still waiting to hear so. Nothing is answered meanwhile; after the kill the events are
/// stored though Stripe never had a 2xx, so it delivers them again, and each payment counts
/// once.
#[tokio::test]
async fn a_process_killed_between_a_groups_commit_and_its_answers_counts_each_payment_once() {
    let dir = tempfile::tempdir().unwrap();
    let stripe = stripe_making_payment_intents().await;
    let env = killable_env(dir.path(), &stripe);
    let mut service = start_service(dir.path(), env.clone()).await;
    let http = reqwest::Client::new();
    let mut payments = Vec::new();
    for n in 0..3 {
        let (status, body) = create(&http, &service.address, AMOUNT + n, &format!("crash-{n}"))
            .await
            .unwrap();
        assert_eq!(status, 201);
        let id = Uuid::parse_str(body["id"].as_str().unwrap()).unwrap();
        let pi = body["payment_intent_id"].as_str().unwrap().to_owned();
        payments.push(paid(id, &pi, AMOUNT + n));
    }
    let (pg, db) = local_database(dir.path()).await;
    // However the test ends, the Postgres it adopted does not outlive it.
    let pg = StopsOnDrop(pg);
    sqlx::query("CREATE TABLE standby_probe (x int)")
        .execute(&db)
        .await
        .unwrap();
    standby(&db, Some("nobody")).await;
    // The setting reaches the commits once the server has read it again, a moment after the
    // reload returns (the checkpointer publishes it): until then a commit does not wait. So
    // the test commits probes of its own, one after another, until one waits for the standby.
    let probe = || {
        let db = db.clone();
        tokio::spawn(async move {
            // A commit waits for the standby only if its transaction wrote to the WAL.
            sqlx::query("INSERT INTO standby_probe VALUES (1)")
                .execute(&db)
                .await
                .unwrap();
        })
    };
    let mut waiting_probe = probe();
    let until = Instant::now() + Duration::from_secs(30);
    while waiting_for_the_standby(&db, "%").await < 1 {
        assert!(
            Instant::now() < until,
            "never: a commit waiting for the standby"
        );
        if waiting_probe.is_finished() {
            waiting_probe.await.unwrap();
            waiting_probe = probe();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The first event's group commits and waits; the others queue behind it or commit too.
    let send = |event: &Value| {
        let (http, address, event) = (http.clone(), service.address.clone(), event.clone());
        tokio::spawn(async move { deliver(&http, &address, &event).await })
    };
    let mut sent = vec![send(&payments[0])];
    eventually(
        Duration::from_secs(30),
        "the first group's commit written",
        || async { waiting_for_the_standby(&db, "INSERT INTO stripe_events%").await >= 1 },
    )
    .await;
    sent.extend(payments[1..].iter().map(send));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        sent.iter().all(|request| !request.is_finished()),
        "an answer before its commit was confirmed"
    );
    service.child.kill().unwrap();
    service.child.wait().unwrap();
    for request in sent {
        assert_eq!(
            request.await.unwrap(),
            None,
            "no answer from a killed process"
        );
    }

    // The commits the process was waiting on are complete: stored, and never acknowledged.
    standby(&db, None).await;
    waiting_probe.await.unwrap();
    let first = payments[0]["id"].as_str().unwrap();
    eventually(
        Duration::from_secs(30),
        "the written commit visible",
        || async { event_state(&db, first).await.is_some() },
    )
    .await;

    // Stripe delivers every unacknowledged event again, to the next process.
    let service = start_service(dir.path(), env).await;
    for event in &payments {
        assert_eq!(deliver(&http, &service.address, event).await, Some(200));
    }
    every_event_applied(&db).await;
    let deliveries: i32 =
        sqlx::query_scalar("SELECT delivery_count FROM stripe_events WHERE id = $1")
            .bind(first)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(
        deliveries, 2,
        "stored before the crash, delivered again after it"
    );
    for event in &payments {
        let id = event["id"].as_str().unwrap();
        assert_eq!(
            event_state(&db, id).await,
            Some(("applied".into(), 1)),
            "{id}"
        );
    }
    let expected = (0..3).map(|n| AMOUNT + n).sum::<i64>();
    assert_eq!(campaign_row(&db).await, (expected, 3), "each payment once");
    assert_totals_match_rows_in(&db).await;
    assert_books_hold_in(&db, UNSETTLED).await;
    db.close().await;
    tokio::task::spawn_blocking(move || stop(service))
        .await
        .unwrap();
    drop(pg);
}

struct StopsOnDrop(LocalPostgres);

impl Drop for StopsOnDrop {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}
