//! Receiving Stripe's webhooks: signatures checked on the raw bytes, every verified event
//! stored before the 2xx, and every refusal a clear problem that stores nothing.

use secrecy::SecretString;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::helpers::{
    TestApp, WEBHOOK_SECRET, assert_problem, event, objects, spawn_app, spawn_app_with,
};
use quickdonate::webhooks::signature::sign;

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn some_event() -> Value {
    event(
        "payment_intent.succeeded",
        objects::payment_intent("pi_unknown", None, "succeeded", 1000),
        now(),
    )
}

async fn stored_events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM stripe_events")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_signed_event_is_stored_durably_before_the_answer() {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    let event = some_event();
    let response = app.deliver(&event).await;
    assert_eq!(response.status(), 200);

    let (kind, payload, count, state, livemode, api_version): (String, String, i32, String, bool, Option<String>) =
        sqlx::query_as(
            "SELECT type, payload, delivery_count, state, livemode, api_version FROM stripe_events WHERE id = $1",
        )
        .bind(event["id"].as_str().unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(kind, "payment_intent.succeeded");
    assert_eq!(
        payload.as_bytes(),
        serde_json::to_vec(&event).unwrap(),
        "the body is kept byte for byte"
    );
    assert_eq!((count, state.as_str(), livemode), (1, "pending", false));
    assert_eq!(api_version.as_deref(), Some("2026-09-30.clover"));
}

#[tokio::test]
async fn a_repeated_event_answers_200_and_adds_no_row() {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    let event = some_event();
    for _ in 0..3 {
        assert_eq!(app.deliver(&event).await.status(), 200);
    }
    assert_eq!(stored_events(&app).await, 1);
    let count: i32 = sqlx::query_scalar("SELECT delivery_count FROM stripe_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 3);
}

#[tokio::test]
async fn every_bad_signature_is_a_400_and_stores_nothing() {
    let app = spawn_app().await;
    let body = serde_json::to_vec(&some_event()).unwrap();
    let secret = SecretString::from(WEBHOOK_SECRET);
    let good = sign(&secret, &body, now());
    let good_sig = good.split_once(",v1=").unwrap().1.to_owned();
    let other_secret = sign(&SecretString::from("whsec_someone_else"), &body, now());
    // Well outside the 300 s tolerance, so that time passing during the test cannot matter.
    let stale = sign(&secret, &body, now() - 400);
    let future = sign(&secret, &body, now() + 400);
    let cases: Vec<(&str, Option<String>, Vec<u8>)> = vec![
        ("no header", None, body.clone()),
        ("empty header", Some(String::new()), body.clone()),
        ("malformed", Some("not a signature".into()), body.clone()),
        ("no timestamp", Some(format!("v1={good_sig}")), body.clone()),
        ("no v1", Some(format!("t={}", now())), body.clone()),
        (
            "only v0",
            Some(format!("t={},v0={good_sig}", now())),
            body.clone(),
        ),
        ("another secret", Some(other_secret), body.clone()),
        ("stale", Some(stale), body.clone()),
        ("from the future", Some(future), body.clone()),
        (
            "body changed",
            Some(good.clone()),
            [&body[..], b" "].concat(),
        ),
    ];
    for (name, header, body) in cases {
        let response = app.deliver_raw(body, header.as_deref()).await;
        let problem = assert_problem(response, 400, "invalid-signature").await;
        assert!(!problem.to_string().contains(WEBHOOK_SECRET), "{name}");
    }
    assert_eq!(stored_events(&app).await, 0);
}

#[tokio::test]
async fn any_configured_secret_verifies_while_one_is_rolled() {
    let app = spawn_app_with(|s| {
        s.stripe_webhook_secret = Some(SecretString::from("whsec_old,whsec_new"));
    })
    .await;
    for secret in ["whsec_old", "whsec_new"] {
        let body = serde_json::to_vec(&some_event()).unwrap();
        let header = sign(&SecretString::from(secret), &body, now());
        assert_eq!(
            app.deliver_raw(body, Some(&header)).await.status(),
            200,
            "{secret}"
        );
    }
    assert_eq!(stored_events(&app).await, 2);
}

#[tokio::test]
async fn the_verifier_accepts_headers_from_async_stripe_webhooks_own_generator() {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    let payload = serde_json::to_string(&some_event()).unwrap();
    let header =
        stripe_webhook::Webhook::generate_test_header(&payload, WEBHOOK_SECRET, Some(now()));
    let response = app
        .deliver_raw(payload.clone().into_bytes(), Some(&header))
        .await;
    assert_eq!(response.status(), 200);
    // And the reverse: our signer agrees with theirs to the byte.
    let t = now();
    assert_eq!(
        sign(&SecretString::from(WEBHOOK_SECRET), payload.as_bytes(), t),
        stripe_webhook::Webhook::generate_test_header(&payload, WEBHOOK_SECRET, Some(t))
    );
}

#[tokio::test]
async fn a_signed_body_that_is_not_a_stripe_event_is_a_400() {
    let app = spawn_app().await;
    for body in [
        json!({"hello": "world"}),
        json!({"object": "event", "id": "evt_1"}),
        json!({"object": "charge", "id": "ch_1", "type": "charge.succeeded"}),
    ] {
        let body = serde_json::to_vec(&body).unwrap();
        let header = sign(&SecretString::from(WEBHOOK_SECRET), &body, now());
        assert_problem(
            app.deliver_raw(body, Some(&header)).await,
            400,
            "invalid-event",
        )
        .await;
    }
    let header = sign(&SecretString::from(WEBHOOK_SECRET), b"not json", now());
    assert_problem(
        app.deliver_raw(b"not json".to_vec(), Some(&header)).await,
        400,
        "invalid-event",
    )
    .await;
    assert_eq!(stored_events(&app).await, 0);
}

#[tokio::test]
async fn a_body_over_1_mib_is_a_413() {
    let app = spawn_app().await;
    let mut event = some_event();
    event["data"]["object"]["description"] = json!("x".repeat(1024 * 1024));
    let body = serde_json::to_vec(&event).unwrap();
    let header = sign(&SecretString::from(WEBHOOK_SECRET), &body, now());
    let problem = assert_problem(
        app.deliver_raw(body, Some(&header)).await,
        413,
        "body-too-large",
    )
    .await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("at most 1 MiB"),
        "it says the limit: {problem}"
    );
    assert_eq!(stored_events(&app).await, 0);
}

#[tokio::test]
async fn unknown_types_and_the_other_modes_events_are_stored_but_never_applied() {
    let app = spawn_app().await;
    crate::helpers::stripe_creates_payment_intents(&app).await;
    let (donation, pi) = app.create_donation(2500).await;

    let unknown = event(
        "customer.created",
        json!({"id": "cus_1", "object": "customer"}),
        now(),
    );
    let mut live = event(
        "payment_intent.succeeded",
        objects::payment_intent(&pi, Some(donation), "succeeded", 2500),
        now(),
    );
    live["livemode"] = json!(true);
    for event in [&unknown, &live] {
        assert_eq!(app.deliver(event).await.status(), 200);
    }
    let states: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT id, state, last_error FROM stripe_events ORDER BY type")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(states.len(), 2);
    for (_, state, reason) in &states {
        assert_eq!(state, "ignored");
        assert!(reason.as_deref().is_some_and(|r| !r.is_empty()));
    }
    assert_eq!(
        app.donation_facts(donation).await.status,
        "pending",
        "a live event changed a test donation"
    );
}

#[tokio::test]
async fn when_the_database_cannot_store_the_event_the_answer_is_503() {
    let app = spawn_app().await;
    app.db.close().await;
    let response = app.deliver(&some_event()).await;
    assert_problem(response, 503, "service-unavailable").await;
}
