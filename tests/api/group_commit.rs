//! Group commit of webhook events (`src/webhooks/ingest.rs`): events waiting together are
//! stored with one statement and one commit, and answered only after it.
//!
//! Each test makes a group it knows: it holds a lock that stops every INSERT into the event
//! log, sends one "plug" event per writer (each writer takes one and waits on the lock), then
//! the events under test, which wait in the queue until a writer is free and go together as
//! one group. The metrics say how many requests wait and how large each group was.

use std::time::{Duration, Instant};

use quickdonate::webhooks::ingest::WRITERS;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::helpers::{TestApp, event, objects, spawn_app_with, stripe_creates_payment_intents};
use crate::metrics::value;

const WAITING: &str = "quickdonate_webhook_events_waiting";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The service's INSERTs into the event log now waiting on a lock, by backend.
async fn blocked_inserts(db: &PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'
           AND query LIKE 'INSERT INTO stripe_events%'",
    )
    .fetch_all(db)
    .await
    .unwrap()
}

async fn gauge(app: &TestApp, name: &str) -> f64 {
    value(&app.scrape().await, name, &[])
}

/// The group-size histogram: how many groups, how many events in them.
async fn groups(app: &TestApp) -> (f64, f64) {
    let body = app.scrape().await;
    (
        value(&body, "quickdonate_webhook_group_size_count", &[]),
        value(&body, "quickdonate_webhook_group_size_sum", &[]),
    )
}

fn send(app: &TestApp, event: &Value) -> JoinHandle<StatusCode> {
    let (http, address) = (app.http.clone(), app.address.clone());
    let body = serde_json::to_vec(event).unwrap();
    tokio::spawn(async move {
        let header = quickdonate::webhooks::signature::sign(
            &secrecy::SecretString::from(crate::helpers::WEBHOOK_SECRET),
            &body,
            now(),
        );
        http.post(format!("{address}/v1/webhooks/stripe"))
            .header("stripe-signature", header)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    })
}

/// An event of a type we store and never apply, to keep a writer busy.
fn plug() -> Value {
    event(
        "customer.created",
        json!({"id": "cus_plug", "object": "customer"}),
        now(),
    )
}

/// No worker (the test applies events itself), and connections enough for the writers held,
/// the test's lock and the test's own queries.
fn held_apart(settings: &mut quickdonate::config::Settings) {
    settings.apply_events = false;
    settings.database_max_connections = 12;
}

/// A lock that stops every INSERT into the event log, and a writer stuck on it with a plug
/// event for each writer: what is sent next waits in the queue and goes as one group.
struct Held {
    lock: sqlx::Transaction<'static, sqlx::Postgres>,
    plugs: Vec<JoinHandle<StatusCode>>,
}

async fn hold_the_writers(app: &TestApp) -> Held {
    let mut lock = app.db.begin().await.unwrap();
    sqlx::query("LOCK TABLE stripe_events IN SHARE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let mut plugs = Vec::new();
    for writer in 1..=WRITERS {
        plugs.push(send(app, &plug()));
        until("a writer waiting on the lock", || async {
            blocked_inserts(&app.db).await.len() == writer
        })
        .await;
    }
    Held { lock, plugs }
}

/// Sends `events` while the writers are held, and waits until all of them wait in the queue
/// with the plugs.
async fn queue_behind(app: &TestApp, events: &[Value]) -> Vec<JoinHandle<StatusCode>> {
    let sent: Vec<_> = events.iter().map(|e| send(app, e)).collect();
    let all = (WRITERS + events.len()) as f64;
    until("every request waiting for its commit", || async {
        gauge(app, WAITING).await == all
    })
    .await;
    sent
}

async fn answers(sent: Vec<JoinHandle<StatusCode>>) -> Vec<u16> {
    let mut statuses = Vec::new();
    for request in sent {
        statuses.push(request.await.unwrap().as_u16());
    }
    statuses
}

async fn stored(db: &PgPool, id: &str) -> Option<i32> {
    sqlx::query_scalar("SELECT delivery_count FROM stripe_events WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
        .unwrap()
}

fn id(event: &Value) -> &str {
    event["id"].as_str().unwrap()
}

#[tokio::test]
async fn copies_of_one_event_in_a_group_are_stored_once_and_answered_only_after_the_commit() {
    let app = spawn_app_with(held_apart).await;
    stripe_creates_payment_intents(&app).await;
    let (donation, pi) = app.create_donation(2500).await;
    let paid = event(
        "payment_intent.succeeded",
        objects::payment_intent(&pi, Some(donation), "succeeded", 2500),
        now(),
    );
    let created = event(
        "payment_intent.created",
        objects::payment_intent(&pi, Some(donation), "requires_payment_method", 2500),
        now() - 5,
    );

    let held = hold_the_writers(&app).await;
    let group = [
        paid.clone(),
        created.clone(),
        paid.clone(),
        paid.clone(),
        paid.clone(),
    ];
    let sent = queue_behind(&app, &group).await;
    // Nothing is answered, and nothing is stored, before the commit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(sent.iter().chain(&held.plugs).all(|r| !r.is_finished()));
    assert_eq!(stored(&app.db, id(&paid)).await, None);

    held.lock.commit().await.unwrap();
    assert_eq!(answers(held.plugs).await, vec![200; WRITERS]);
    assert_eq!(answers(sent).await, vec![200; group.len()]);
    // The plugs went one to a group, and the five as one group.
    assert_eq!(
        groups(&app).await,
        ((WRITERS + 1) as f64, (WRITERS + group.len()) as f64)
    );
    assert_eq!(
        stored(&app.db, id(&paid)).await,
        Some(4),
        "one row, four deliveries"
    );
    assert_eq!(stored(&app.db, id(&created)).await, Some(1));
    let body = app.scrape().await;
    let delivery = |outcome: &str| {
        value(
            &body,
            "quickdonate_webhook_deliveries_total",
            &[("type", "payment_intent.succeeded"), ("outcome", outcome)],
        )
    };
    assert_eq!((delivery("stored"), delivery("duplicate")), (1.0, 3.0));
    assert_eq!(gauge(&app, WAITING).await, 0.0);

    // A copy in a later group meets the row through the conflict; the payment counts once.
    assert_eq!(app.deliver(&paid).await.status(), 200);
    assert_eq!(stored(&app.db, id(&paid)).await, Some(5));
    app.apply_events().await;
    assert_eq!(app.donation_facts(donation).await.status, "succeeded");
    assert_eq!(app.campaign().await["raised_amount"], 2500);
    assert_eq!(app.campaign().await["donation_count"], 1);
}

#[tokio::test]
async fn a_database_error_fails_the_whole_group_with_503s_and_stores_none_of_it() {
    let app = spawn_app_with(held_apart).await;
    let held = hold_the_writers(&app).await;
    let group: Vec<Value> = (0..4).map(|_| plug()).collect();
    let sent = queue_behind(&app, &group).await;

    // The plugs' connections die: their groups fail. A writer freed takes the four as one
    // group, and waits on the lock in turn; its connection dies too.
    let plugs = blocked_inserts(&app.db).await;
    let kill = |pids: Vec<i32>| {
        let db = app.db.clone();
        async move {
            sqlx::query("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid")
                .bind(pids)
                .execute(&db)
                .await
                .unwrap();
        }
    };
    kill(plugs.clone()).await;
    until("the group of four waiting on the lock", || async {
        let waiting = blocked_inserts(&app.db).await;
        waiting.len() == 1 && !plugs.contains(&waiting[0])
    })
    .await;
    kill(blocked_inserts(&app.db).await).await;

    assert_eq!(answers(held.plugs).await, vec![503; WRITERS]);
    assert_eq!(answers(sent).await, vec![503; group.len()]);
    held.lock.rollback().await.unwrap();
    assert_eq!(
        groups(&app).await,
        ((WRITERS + 1) as f64, (WRITERS + group.len()) as f64),
        "the four were one group"
    );
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM stripe_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(kept, 0, "a 503 stores nothing");

    // Stripe delivers them again: each is stored, once.
    for event in &group {
        assert_eq!(app.deliver(event).await.status(), 200);
        assert_eq!(stored(&app.db, id(event)).await, Some(1));
    }
}

#[tokio::test]
async fn an_event_the_database_refuses_fails_alone_and_the_rest_of_its_group_is_stored() {
    let app = spawn_app_with(held_apart).await;
    let refused = plug();
    // A value the database will not take (a constraint of this test's own, on this test's
    // own database).
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE stripe_events ADD CONSTRAINT refused_by_test CHECK (id <> '{}')",
        id(&refused)
    )))
    .execute(&app.db)
    .await
    .unwrap();
    let held = hold_the_writers(&app).await;
    let group = [plug(), refused.clone(), plug(), plug()];
    let sent = queue_behind(&app, &group).await;
    held.lock.commit().await.unwrap();

    assert_eq!(answers(held.plugs).await, vec![200; WRITERS]);
    assert_eq!(answers(sent).await, vec![200, 503, 200, 200]);
    assert_eq!(groups(&app).await.0, (WRITERS + 1) as f64, "one group");
    for event in &group {
        let expected = (id(event) != id(&refused)).then_some(1);
        assert_eq!(stored(&app.db, id(event)).await, expected);
    }
}
