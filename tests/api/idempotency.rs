//! Our Idempotency-Key, and Stripe's beneath it: however a request is retried, one donation
//! and one PaymentIntent.

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    CreatesPaymentIntents, TestApp, assert_problem, donation_body, spawn_app, spawn_app_with,
    stripe_creates_payment_intents, stripe_error,
};

async fn intent_of(app: &TestApp, id: &str) -> Option<String> {
    sqlx::query_scalar("SELECT payment_intent_id FROM donations WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_same_key_and_body_replay_the_first_answer() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;

    let first = app
        .post_donation("kashmir", &donation_body(), Some("key-1"))
        .await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    let again = app
        .post_donation("kashmir", &donation_body(), Some("key-1"))
        .await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.headers()["location"],
        format!("/v1/donations/{}", first["id"].as_str().unwrap()).as_str()
    );
    let again: Value = again.json().await.unwrap();

    assert_eq!(again, first);
    assert_eq!(app.donation_count().await, 1);
    assert_eq!(app.stripe_requests("/v1/payment_intents").await.len(), 1);
}

#[tokio::test]
async fn a_replay_is_the_first_answer_byte_for_byte() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;

    let first = app
        .post_donation("kashmir", &donation_body(), Some("bytes"))
        .await;
    assert_eq!(first.status(), 201);
    let first_location = first.headers()["location"].clone();
    let first = first.bytes().await.unwrap();

    let again = app
        .post_donation("kashmir", &donation_body(), Some("bytes"))
        .await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["content-type"], "application/json");
    assert_eq!(again.headers()["location"], first_location);
    let again = again.bytes().await.unwrap();

    assert_eq!(
        String::from_utf8_lossy(&again),
        String::from_utf8_lossy(&first)
    );
}

#[tokio::test]
async fn the_same_body_with_its_keys_in_another_order_is_the_same_request() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let send = |body: &'static str| {
        app.http
            .post(format!("{}/v1/campaigns/kashmir/donations", app.address))
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", "order")
            .body(body)
            .send()
    };

    let first = send(
        r#"{"amount": 2500, "frequency": "one_off",
            "donor": {"email": "amina@example.org", "first_name": "Amina", "last_name": "Khan"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(first.status(), 201);
    let again = send(
        r#"{"donor": {"last_name": "Khan", "first_name": "Amina", "email": "amina@example.org"},
            "frequency": "one_off", "amount": 2500}"#,
    )
    .await
    .unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(app.donation_count().await, 1);
}

#[tokio::test]
async fn a_replay_after_the_campaign_closes_is_the_same_201_and_bytes() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let first = app
        .post_donation("kashmir", &donation_body(), Some("before-closing"))
        .await;
    assert_eq!(first.status(), 201);
    let first_location = first.headers()["location"].clone();
    let first = first.bytes().await.unwrap();

    close_the_kashmir_campaign(&app).await;

    let again = app
        .post_donation("kashmir", &donation_body(), Some("before-closing"))
        .await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()["location"], first_location);
    assert_eq!(again.bytes().await.unwrap(), first);
    // A new request is refused as before.
    let new = app
        .post_donation("kashmir", &donation_body(), Some("after-closing"))
        .await;
    assert_problem(new, 409, "campaign-inactive").await;
    assert_eq!(app.donation_count().await, 1);
    assert_eq!(app.stripe_requests("/v1/payment_intents").await.len(), 1);
}

#[tokio::test]
async fn after_the_campaign_closes_the_key_with_another_body_is_still_a_422() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let first = app
        .post_donation("kashmir", &donation_body(), Some("closing"))
        .await;
    assert_eq!(first.status(), 201);

    close_the_kashmir_campaign(&app).await;

    let mut other = donation_body();
    other["amount"] = json!(5000);
    let response = app.post_donation("kashmir", &other, Some("closing")).await;
    assert_problem(response, 422, "idempotency-key-reused").await;
    assert_eq!(app.donation_count().await, 1);
}

#[tokio::test]
async fn an_unknown_campaign_with_an_unknown_key_is_a_404_and_keeps_no_key() {
    let app = spawn_app().await;
    let response = app
        .post_donation("no-such-campaign", &donation_body(), Some("lost"))
        .await;
    assert_problem(response, 404, "not-found").await;
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(keys, 0, "a refused request leaves its key free");
}

async fn close_the_kashmir_campaign(app: &TestApp) {
    sqlx::query("UPDATE campaigns SET active = false WHERE slug = 'kashmir'")
        .execute(&app.db)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_same_key_with_another_body_is_a_422_and_changes_nothing() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let first: Value = app
        .post_donation("kashmir", &donation_body(), Some("key-1"))
        .await
        .json()
        .await
        .unwrap();

    let mut other = donation_body();
    other["amount"] = json!(5000);
    let response = app.post_donation("kashmir", &other, Some("key-1")).await;
    assert_problem(response, 422, "idempotency-key-reused").await;

    assert_eq!(app.donation_count().await, 1);
    assert_eq!(app.stripe_requests("/v1/payment_intents").await.len(), 1);
    // The first request's answer is still what the key replays.
    let replay: Value = app
        .post_donation("kashmir", &donation_body(), Some("key-1"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(replay["id"], first["id"]);
}

#[tokio::test]
async fn a_key_whose_first_request_is_still_running_is_a_409() {
    // Stripe answers slowly, well within our timeout: the first request is plainly in flight
    // for as long as the test needs, however slow the machine.
    let app = spawn_app_with(|s| s.stripe_timeout_secs = 15).await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(SlowIntents(Duration::from_secs(6)))
        .mount(&app.stripe)
        .await;

    let first = {
        let app_address = app.address.clone();
        let http = app.http.clone();
        tokio::spawn(async move {
            http.post(format!("{app_address}/v1/campaigns/kashmir/donations"))
                .header("Idempotency-Key", "slow")
                .json(&donation_body())
                .send()
                .await
                .unwrap()
        })
    };
    // Wait until the first request has written its donation and is waiting on Stripe.
    for _ in 0..100 {
        if app.donation_count().await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.donation_count().await, 1);

    let second = app
        .post_donation("kashmir", &donation_body(), Some("slow"))
        .await;
    assert_problem(second, 409, "idempotency-key-in-use").await;

    let first = first.await.unwrap();
    assert_eq!(first.status(), 201);
    assert_eq!(app.donation_count().await, 1);
    assert_eq!(app.stripe_requests("/v1/payment_intents").await.len(), 1);
}

/// Answers like `CreatesPaymentIntents`, after a delay.
struct SlowIntents(Duration);

impl wiremock::Respond for SlowIntents {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        CreatesPaymentIntents::new()
            .respond(request)
            .set_delay(self.0)
    }
}

#[tokio::test]
async fn when_stripe_is_down_the_donor_gets_a_503_and_a_retry_completes_the_same_donation() {
    let app = spawn_app().await;
    // Stripe fails every attempt of the first request (three), then recovers.
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(stripe_error(503, "api_error", "Stripe is having a moment"))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&app.stripe)
        .await;
    stripe_creates_payment_intents(&app).await;

    let response = app
        .post_donation("kashmir", &donation_body(), Some("retry-me"))
        .await;
    let problem = assert_problem(response, 503, "payment-provider-unavailable").await;
    assert!(
        !problem.to_string().contains("Stripe is having a moment"),
        "no upstream detail leaks"
    );

    // No half-made state: the donation waits, pending, with no PaymentIntent.
    let (id, status): (uuid::Uuid, String) = sqlx::query_as("SELECT id, status FROM donations")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "pending");
    assert_eq!(intent_of(&app, &id.to_string()).await, None);

    let retry = app
        .post_donation("kashmir", &donation_body(), Some("retry-me"))
        .await;
    assert_eq!(retry.status(), 201);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(
        retry["id"],
        id.to_string(),
        "the retry finished the same donation"
    );
    assert_eq!(app.donation_count().await, 1);
    assert_eq!(
        intent_of(&app, &id.to_string()).await.as_deref(),
        retry["payment_intent_id"].as_str()
    );

    // Every attempt at Stripe carried the one key derived from the donation.
    let attempts = app.stripe_requests("/v1/payment_intents").await;
    assert_eq!(attempts.len(), 4);
    for attempt in &attempts {
        assert_eq!(
            attempt.headers["idempotency-key"],
            format!("quickdonate-pi-{id}").as_str()
        );
    }
}

#[tokio::test]
async fn when_stripe_refuses_the_donor_gets_a_502_and_nothing_half_made() {
    let app = spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(stripe_error(
            400,
            "invalid_request_error",
            "Invalid currency",
        ))
        .mount(&app.stripe)
        .await;

    let response = app
        .post_donation("kashmir", &donation_body(), Some("refused"))
        .await;
    assert_problem(response, 502, "payment-provider-error").await;
    // A 4xx is not retried: Stripe would give the same answer.
    assert_eq!(app.stripe_requests("/v1/payment_intents").await.len(), 1);
    let intents: Vec<Option<String>> =
        sqlx::query_scalar("SELECT payment_intent_id FROM donations")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(intents, [None]);
    let replayed: Option<i16> = sqlx::query_scalar("SELECT response_status FROM idempotency_keys")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(
        replayed, None,
        "a failure is never replayed; a retry tries again"
    );
}

#[tokio::test]
async fn a_stripe_timeout_is_a_503() {
    let app = spawn_app_with(|s| s.stripe_timeout_secs = 1).await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(SlowIntents(Duration::from_millis(1500)))
        .mount(&app.stripe)
        .await;
    let response = app
        .post_donation("kashmir", &donation_body(), Some("slow"))
        .await;
    assert_problem(response, 503, "payment-provider-unavailable").await;
}

#[tokio::test]
async fn concurrent_requests_with_one_key_make_one_donation_and_one_payment_intent() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (http, address) = (app.http.clone(), app.address.clone());
        requests.spawn(async move {
            http.post(format!("{address}/v1/campaigns/kashmir/donations"))
                .header("Idempotency-Key", "burst")
                .json(&donation_body())
                .send()
                .await
                .unwrap()
        });
    }

    let mut ids = std::collections::HashSet::new();
    while let Some(response) = requests.join_next().await {
        let response = response.unwrap();
        match response.status().as_u16() {
            201 => {
                let body: Value = response.json().await.unwrap();
                ids.insert(body["id"].as_str().unwrap().to_owned());
            }
            409 => {
                assert_problem(response, 409, "idempotency-key-in-use").await;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ids.len(), 1, "every success names the same donation");
    assert_eq!(app.donation_count().await, 1);
    assert_eq!(app.stripe_requests("/v1/payment_intents").await.len(), 1);
}

#[tokio::test]
async fn keys_older_than_a_day_expire_and_then_make_a_new_donation() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let first: Value = app
        .post_donation("kashmir", &donation_body(), Some("old-key"))
        .await
        .json()
        .await
        .unwrap();
    app.post_donation("kashmir", &donation_body(), Some("new-key"))
        .await;
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old-key'")
        .execute(&app.db)
        .await
        .unwrap();

    // The service's housekeeping runs the same expiry as it starts; on a slow machine that
    // pass may come after the back-dating and take the key first. Either way it is gone.
    let expired = quickdonate::idempotency::expire(&app.db).await.unwrap();
    assert!(expired <= 1, "only the old key is expired, not {expired}");
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(keys, ["new-key"]);
    // The donation stays; only the key's memory of the request goes.
    let again: Value = app
        .post_donation("kashmir", &donation_body(), Some("old-key"))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(again["id"], first["id"]);
    assert_eq!(app.donation_count().await, 3);
}
