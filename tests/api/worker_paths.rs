//! The worker's two paths (`src/webhooks/worker.rs`): a batch that needs nothing from Stripe is
//! applied at once, in one transaction with no claim written; one that does is claimed first,
//! and Stripe is called holding nothing. A claim names its instance (`claimed_instance`); an
//! event applied at once never had one.

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{
    StripeObjects, event, objects, spawn_app_with, stripe_creates_payment_intents,
};

const AMOUNT: i64 = 2500;
const FEE: i64 = 58;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The event that pays a donation, carrying all it says.
fn paying(donation: Uuid, pi: &str) -> Value {
    event(
        "payment_intent.succeeded",
        objects::payment_intent(pi, Some(donation), "succeeded", AMOUNT),
        now(),
    )
}

/// The event's (state, attempts, whether a claim ever named an instance, whether it is still
/// claimed).
async fn life(db: &PgPool, event: &Value) -> (String, i32, bool, bool) {
    sqlx::query_as(
        "SELECT state, attempts, claimed_instance IS NOT NULL, claimed_by IS NOT NULL
         FROM stripe_events WHERE id = $1",
    )
    .bind(event["id"].as_str().unwrap())
    .fetch_one(db)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_event_carrying_all_it_says_is_applied_at_once_and_one_needing_stripe_is_claimed() {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;
    let (donation, pi) = app.create_donation(AMOUNT).await;

    // The PaymentIntent succeeded: all the event says is in it.
    let paid = paying(donation, &pi);
    assert_eq!(app.deliver(&paid).await.status(), 200);
    app.apply_events().await;
    assert_eq!(
        life(&app.db, &paid).await,
        ("applied".into(), 1, false, false),
        "applied at once, never claimed"
    );
    let fetch = format!("/v1/payment_intents/{pi}");
    let fetches = || app.stripe_requests(&fetch);
    assert_eq!(fetches().await.len(), 0);
    assert_eq!(
        app.donation_facts(donation).await.payment_status,
        "succeeded"
    );

    // The charge names a balance transaction it does not carry: the fee must be fetched.
    let (charge, txn) = ("ch_paths", "txn_paths");
    let mut intent = objects::payment_intent(&pi, Some(donation), "succeeded", AMOUNT);
    intent["latest_charge"] = serde_json::json!(charge);
    stripe.put(intent);
    stripe.put(objects::charge(charge, &pi, AMOUNT, 0, Some(txn)));
    stripe.put(objects::balance_transaction(txn, AMOUNT, FEE));
    let charged = event(
        "charge.succeeded",
        objects::charge(charge, &pi, AMOUNT, 0, Some(txn)),
        now(),
    );
    // In one batch with another donation's self-contained event: that one is applied at once,
    // and only the payment needing Stripe is claimed.
    let (other, other_pi) = app.create_donation(AMOUNT).await;
    let other_paid = paying(other, &other_pi);
    assert_eq!(app.deliver(&charged).await.status(), 200);
    assert_eq!(app.deliver(&other_paid).await.status(), 200);
    app.apply_events().await;
    assert_eq!(
        life(&app.db, &charged).await,
        ("applied".into(), 1, true, false),
        "claimed, fetched, applied"
    );
    assert_eq!(
        life(&app.db, &other_paid).await,
        ("applied".into(), 1, false, false),
        "applied at once beside a payment that needed Stripe"
    );
    assert_eq!(app.donation_facts(donation).await.fee, Some(FEE));
    assert_eq!(fetches().await.len(), 1);
    assert_eq!(app.campaign().await["raised_amount"], 2 * AMOUNT);
    app.assert_totals_match_rows().await;
}

#[tokio::test]
async fn an_event_left_by_a_claim_that_ran_out_is_applied_at_once_and_its_claim_ended() {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    stripe_creates_payment_intents(&app).await;
    let (donation, pi) = app.create_donation(AMOUNT).await;
    let paid = paying(donation, &pi);
    assert_eq!(app.deliver(&paid).await.status(), 200);
    // A worker claimed it and died; its lease ran out a minute ago.
    sqlx::query(
        "UPDATE stripe_events
         SET claimed_by = $2, claimed_until = now() - interval '1 minute',
             next_attempt_at = now() - interval '1 minute', claimed_instance = 'gone'
         WHERE id = $1",
    )
    .bind(paid["id"].as_str().unwrap())
    .bind(Uuid::new_v4())
    .execute(&app.db)
    .await
    .unwrap();

    assert_eq!(app.worker.apply_due().await.unwrap(), 1);
    let (state, attempts, _, claimed) = life(&app.db, &paid).await;
    assert_eq!((state.as_str(), attempts, claimed), ("applied", 1, false));
    assert_eq!(app.campaign().await["donation_count"], 1);
}

#[tokio::test]
async fn a_payment_held_by_one_worker_is_left_alone_by_another() {
    use quickdonate::webhooks::queue::lock_due;
    let app = spawn_app_with(|s| s.apply_events = false).await;
    stripe_creates_payment_intents(&app).await;
    let (donation, pi) = app.create_donation(AMOUNT).await;
    let (other, other_pi) = app.create_donation(AMOUNT).await;
    let created = event(
        "payment_intent.created",
        objects::payment_intent(&pi, Some(donation), "requires_payment_method", AMOUNT),
        now() - 5,
    );
    assert_eq!(app.deliver(&created).await.status(), 200);

    // One worker holds the payment's first event.
    let mut first = app.db.begin().await.unwrap();
    let held = lock_due(&mut first, 200).await.unwrap();
    assert_eq!(held.len(), 1);
    // Meanwhile the payment's next event arrives, and another payment's.
    let paid = paying(donation, &pi);
    let other_paid = paying(other, &other_pi);
    assert_eq!(app.deliver(&paid).await.status(), 200);
    assert_eq!(app.deliver(&other_paid).await.status(), 200);

    // A second worker takes the other payment only.
    let mut second = app.db.begin().await.unwrap();
    let taken: Vec<String> = lock_due(&mut second, 200)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(taken, [other_paid["id"].as_str().unwrap()]);
    second.rollback().await.unwrap();
    first.rollback().await.unwrap();

    app.apply_events().await;
    assert_eq!(
        app.donation_facts(donation).await.payment_status,
        "succeeded"
    );
    assert_eq!(app.campaign().await["donation_count"], 2);
}
