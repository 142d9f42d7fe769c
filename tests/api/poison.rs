//! Poison events stop poisoning: one event, one payment or one campaign that cannot be
//! applied never halts the worker for the others; an event that keeps failing through its own
//! fault is set aside for an operator; the database's passing troubles are retried at once;
//! and an event Postgres's jsonb would refuse is still stored.

use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{
    TestApp, donation_body, event, objects, spawn_app_with, stripe_creates_payment_intents,
};

const AMOUNT: i64 = 2500;

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

async fn manual_app(max_attempts: i32) -> TestApp {
    let app = spawn_app_with(|s| {
        s.apply_events = false;
        s.event_max_attempts = max_attempts;
    })
    .await;
    stripe_creates_payment_intents(&app).await;
    app
}

fn succeeded(donation: Uuid, pi: &str) -> Value {
    event(
        "payment_intent.succeeded",
        objects::payment_intent(pi, Some(donation), "succeeded", AMOUNT),
        now(),
    )
}

async fn state_of(app: &TestApp, event: &Value) -> (String, i32, Option<String>) {
    sqlx::query_as("SELECT state, attempts, last_error FROM stripe_events WHERE id = $1")
        .bind(event["id"].as_str())
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// Makes every event waiting for a retry due now, as time passing would.
async fn time_passes(app: &TestApp) {
    sqlx::query("UPDATE stripe_events SET next_attempt_at = now() WHERE state = 'pending'")
        .execute(&app.db)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_unreadable_event_is_set_aside_after_its_attempts_and_the_rest_apply() {
    let app = manual_app(3).await;
    let (donation, pi) = app.create_donation(AMOUNT).await;
    let (other, other_pi) = app.create_donation(AMOUNT).await;
    // A PaymentIntent with no status cannot be read, however often it is tried.
    let mut broken = succeeded(donation, &pi);
    broken["data"]["object"]
        .as_object_mut()
        .unwrap()
        .remove("status");
    let good = succeeded(other, &other_pi);
    app.deliver(&broken).await;
    app.deliver(&good).await;
    app.apply_events().await;
    assert_eq!(state_of(&app, &good).await.0, "applied");
    assert_eq!(app.donation_facts(other).await.status, "succeeded");

    for attempt in 1..=3 {
        let (state, attempts, error) = state_of(&app, &broken).await;
        assert_eq!(attempts, attempt);
        assert!(error.unwrap().contains("no status"));
        let expected = if attempt < 3 { "pending" } else { "failed" };
        assert_eq!(state, expected, "after attempt {attempt}");
        time_passes(&app).await;
        app.apply_events().await;
    }
    assert_eq!(
        state_of(&app, &broken).await.1,
        3,
        "a failed event is not tried again"
    );
    assert_eq!(app.donation_facts(donation).await.status, "pending");
    app.assert_totals_match_rows().await;
}

#[tokio::test]
async fn a_campaign_whose_total_cannot_move_halts_neither_the_worker_nor_other_campaigns() {
    let app = manual_app(10).await;
    // A second campaign, and a fault that stops Kashmir's total from moving.
    sqlx::query(
        "INSERT INTO campaigns (slug, title, currency, min_amount, max_amount)
         VALUES ('floods', 'Flood relief', 'gbp', 100, 1000000)",
    )
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query(
        "ALTER TABLE campaigns ADD CONSTRAINT kashmir_stuck
         CHECK (slug <> 'kashmir' OR raised_amount = 0)",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let (stuck, stuck_pi) = app.create_donation(AMOUNT).await;
    let response = app.post_donation("floods", &donation_body(), None).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let floods = Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();
    let floods_pi = created["payment_intent_id"].as_str().unwrap().to_owned();

    let stuck_event = succeeded(stuck, &stuck_pi);
    let floods_event = succeeded(floods, &floods_pi);
    app.deliver(&stuck_event).await;
    app.deliver(&floods_event).await;
    app.apply_events().await;

    assert_eq!(state_of(&app, &floods_event).await.0, "applied");
    let raised: i64 =
        sqlx::query_scalar("SELECT raised_amount FROM campaigns WHERE slug = 'floods'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(raised, AMOUNT);
    let (state, attempts, error) = state_of(&app, &stuck_event).await;
    assert_eq!((state.as_str(), attempts), ("pending", 1));
    assert!(error.unwrap().contains("kashmir_stuck"));
    assert_eq!(
        app.donation_facts(stuck).await.status,
        "pending",
        "nothing half-applied"
    );

    // Once the fault is mended, the retry applies it.
    sqlx::query("ALTER TABLE campaigns DROP CONSTRAINT kashmir_stuck")
        .execute(&app.db)
        .await
        .unwrap();
    time_passes(&app).await;
    app.apply_events().await;
    assert_eq!(state_of(&app, &stuck_event).await.0, "applied");
    assert_eq!(app.campaign().await["raised_amount"], AMOUNT);
    app.assert_totals_match_rows().await;
}

#[tokio::test]
async fn a_deadlock_is_retried_at_once_not_backed_off() {
    let app = manual_app(10).await;
    let (donation, pi) = app.create_donation(AMOUNT).await;
    // The database reports a deadlock on the first three writes of a donation, as it may when
    // other work holds the rows.
    sqlx::raw_sql(
        r#"CREATE SEQUENCE test_deadlock_seq;
           -- A sequence is not rolled back with the transaction: it counts every attempt.
           CREATE FUNCTION test_deadlock() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               IF nextval('test_deadlock_seq') <= 3 THEN
                   RAISE EXCEPTION 'deadlock detected (a test)' USING ERRCODE = '40P01';
               END IF;
               RETURN NEW;
           END $$;
           CREATE TRIGGER test_deadlock BEFORE UPDATE ON donations
               FOR EACH ROW EXECUTE FUNCTION test_deadlock();"#,
    )
    .execute(&app.db)
    .await
    .unwrap();
    let paid = succeeded(donation, &pi);
    app.deliver(&paid).await;
    app.apply_events().await;

    let (state, attempts, error) = state_of(&app, &paid).await;
    assert_eq!((state.as_str(), attempts, error), ("applied", 1, None));
    assert_eq!(app.donation_facts(donation).await.status, "succeeded");
    let raised: i64 = sqlx::query_scalar("SELECT nextval('test_deadlock_seq')")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(raised, 5, "three deadlocks, then the write that succeeded");
}

#[tokio::test]
async fn an_event_jsonb_would_refuse_is_stored_as_signed_and_applied() {
    let app = manual_app(10).await;
    let (donation, pi) = app.create_donation(AMOUNT).await;
    let mut paid = succeeded(donation, &pi);
    paid["data"]["object"]["description"] = json!("a gift\u{0}with a NUL in it");
    let body = serde_json::to_vec(&paid).unwrap();
    assert!(
        String::from_utf8_lossy(&body).contains("\\u0000"),
        "the body carries the escape jsonb refuses"
    );
    let response = app.deliver(&paid).await;
    assert_eq!(response.status(), 200);
    let stored: String = sqlx::query_scalar("SELECT payload FROM stripe_events WHERE id = $1")
        .bind(paid["id"].as_str())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored.as_bytes(), body, "stored byte for byte");
    app.apply_events().await;
    assert_eq!(app.donation_facts(donation).await.status, "succeeded");
}
