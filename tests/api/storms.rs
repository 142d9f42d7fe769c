//! What Stripe really sends: storms of distinct events for the same payments in any order,
//! older snapshots after newer ones, and a Stripe that is slow while all this happens. The
//! record must come out exact, with no deadlock, at most one Stripe call per payment, and
//! nothing else in the service waiting on Stripe.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{
    StripeObjects, TestApp, event, objects, spawn_app, spawn_app_with,
    stripe_creates_payment_intents,
};

const AMOUNT: i64 = 2500;
const FEE: i64 = 58;
const REFUND: i64 = 500;

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// A paid donation at Stripe: a declined card, then a charge that paid, its fee, and a
/// partial refund, all set in `stripe` as a fetch would see them now.
struct Paid {
    donation: Uuid,
    pi: String,
    charge: String,
    declined: String,
    txn: String,
    refund: String,
}

impl Paid {
    async fn new(app: &TestApp, stripe: &StripeObjects) -> Self {
        let (donation, pi) = app.create_donation(AMOUNT).await;
        let s = Uuid::new_v4().simple().to_string();
        let paid = Self {
            donation,
            pi,
            charge: format!("ch_{s}"),
            declined: format!("ch_declined_{s}"),
            txn: format!("txn_{s}"),
            refund: format!("re_{s}"),
        };
        let mut intent = objects::payment_intent(&paid.pi, Some(donation), "succeeded", AMOUNT);
        intent["latest_charge"] = paid.charge.clone().into();
        stripe.put(intent);
        stripe.put(paid.charge_refunded(REFUND));
        stripe.put(objects::balance_transaction(&paid.txn, AMOUNT, FEE));
        // The refund's money, as Stripe records it from the moment the refund is made.
        let mut taken = objects::balance_transaction(&paid.refund_txn(), -REFUND, 0);
        taken["type"] = "refund".into();
        stripe.put(taken);
        stripe.put(paid.refund("succeeded"));
        paid
    }

    fn refund_txn(&self) -> String {
        format!("txn_{}", self.refund)
    }

    fn refund(&self, status: &str) -> Value {
        let mut refund = objects::refund(&self.refund, &self.charge, &self.pi, REFUND, status);
        refund["balance_transaction"] = self.refund_txn().into();
        refund
    }

    fn intent(&self, status: &str) -> Value {
        objects::payment_intent(&self.pi, Some(self.donation), status, AMOUNT)
    }

    fn charge_refunded(&self, refunded: i64) -> Value {
        objects::charge(&self.charge, &self.pi, AMOUNT, refunded, Some(&self.txn))
    }

    /// Twenty-five distinct events, as Stripe sends them for such a payment over ten minutes:
    /// several snapshots of the PaymentIntent, the declined charge, the charge that paid and
    /// its many updates, and the refund.
    fn storm(&self, t0: i64) -> Vec<Value> {
        let mut declined_pi = objects::failed_payment_intent(&self.pi, self.donation, AMOUNT);
        declined_pi["latest_charge"] = self.declined.clone().into();
        let mut succeeded = self.intent("succeeded");
        succeeded["latest_charge"] = self.charge.clone().into();
        let refund = |status| self.refund(status);
        let mut events = vec![
            event(
                "payment_intent.created",
                self.intent("requires_payment_method"),
                t0,
            ),
            event(
                "payment_intent.requires_action",
                self.intent("requires_action"),
                t0 + 10,
            ),
            event(
                "charge.failed",
                objects::failed_charge(&self.declined, &self.pi, AMOUNT),
                t0 + 20,
            ),
            event("payment_intent.payment_failed", declined_pi, t0 + 20),
            event(
                "payment_intent.processing",
                self.intent("processing"),
                t0 + 30,
            ),
            event("charge.succeeded", self.charge_refunded(0), t0 + 40),
            event("payment_intent.succeeded", succeeded, t0 + 40),
            event("charge.captured", self.charge_refunded(0), t0 + 40),
            event("charge.updated", self.charge_refunded(0), t0 + 60),
            event("refund.created", refund("pending"), t0 + 100),
            event("charge.refunded", self.charge_refunded(REFUND), t0 + 100),
            event("refund.updated", refund("succeeded"), t0 + 110),
            event("charge.refund.updated", refund("succeeded"), t0 + 110),
            event("charge.updated", self.charge_refunded(REFUND), t0 + 120),
        ];
        // Further updates of the charge (its description, its metadata, a receipt sent).
        for k in 0..11 {
            events.push(event(
                "charge.updated",
                self.charge_refunded(REFUND),
                t0 + 150 + k * 40,
            ));
        }
        assert_eq!(events.len(), 25);
        events
    }
}

/// An app whose events are applied only when the test says so, with a fake Stripe that
/// creates PaymentIntents and serves the objects the test puts in `StripeObjects`.
async fn manual_app() -> (TestApp, StripeObjects) {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;
    (app, stripe)
}

/// Stripe GETs so far, by path.
async fn reads_by_path(app: &TestApp) -> HashMap<String, usize> {
    let mut reads = HashMap::new();
    for request in app.stripe.received_requests().await.unwrap_or_default() {
        if request.method == wiremock::http::Method::GET {
            *reads.entry(request.url.path().to_owned()).or_default() += 1;
        }
    }
    reads
}

#[tokio::test]
async fn a_storm_of_distinct_events_in_any_order_drains_exactly_with_one_stripe_call_per_payment() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;

    let t0 = now() - 600;
    let mut payments = Vec::new();
    let mut storm = Vec::new();
    for _ in 0..40 {
        let paid = Paid::new(&app, &stripe).await;
        storm.extend(paid.storm(t0));
        payments.push(paid);
    }
    crate::helpers::shuffle(&mut storm, 7);
    app.deliver_concurrently(storm, 16).await;
    app.wait_until_applied().await;

    for paid in &payments {
        let row = app.donation_facts(paid.donation).await;
        assert_eq!(
            (
                row.status.as_str(),
                row.charge_id.as_deref(),
                row.fee,
                row.refunded_amount,
                row.counted_amount,
                row.flag.as_deref()
            ),
            (
                "succeeded",
                Some(paid.charge.as_str()),
                Some(FEE),
                REFUND,
                AMOUNT - REFUND,
                None
            ),
            "{}",
            paid.pi
        );
    }
    let campaign = app.campaign().await;
    assert_eq!(
        (
            campaign["raised_amount"].as_i64(),
            campaign["donation_count"].as_i64()
        ),
        (Some(40 * (AMOUNT - REFUND)), Some(40))
    );
    app.assert_totals_match_rows().await;
    app.assert_books_hold().await;

    // Every event applied at its first attempt: no deadlock, no retry, no error.
    let (applied, attempts, errors): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'applied'), sum(attempts)::bigint,
                count(*) FILTER (WHERE last_error IS NOT NULL)
         FROM stripe_events",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((applied, attempts, errors), (1000, 1000, 0));
    let deadlocks: i64 = sqlx::query_scalar(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(deadlocks, 0);

    // At most one call per payment, and only for what the events lacked (the fee).
    let reads = reads_by_path(&app).await;
    for paid in &payments {
        let calls = reads
            .get(&format!("/v1/payment_intents/{}", paid.pi))
            .copied()
            .unwrap_or(0);
        assert!(calls <= 1, "{} was fetched {calls} times", paid.pi);
    }
    let total: usize = reads.values().sum();
    assert!(
        total <= 40,
        "{total} Stripe calls for 40 payments: {reads:?}"
    );
}

#[tokio::test]
async fn older_snapshots_of_a_settled_payment_change_nothing_and_call_nobody() {
    let (app, stripe) = manual_app().await;
    let paid = Paid::new(&app, &stripe).await;
    let t0 = now() - 600;
    let storm = paid.storm(t0);
    // The newest picture first: the payment, its fee (one call), the refund.
    for i in [6, 8, 11, 24] {
        app.deliver(&storm[i]).await;
    }
    app.apply_events().await;
    let settled = app.donation_facts(paid.donation).await;
    assert_eq!(
        (
            settled.status.as_str(),
            settled.fee,
            settled.refunded_amount
        ),
        ("succeeded", Some(FEE), REFUND)
    );
    let calls = reads_by_path(&app).await.values().sum::<usize>();
    assert_eq!(calls, 1);

    // Then every older snapshot, among them a charge from before the refund and one claiming a
    // refund we already hold.
    for (i, older) in storm.iter().enumerate() {
        if ![6, 8, 11, 24].contains(&i) {
            app.deliver(older).await;
        }
    }
    app.apply_events().await;
    assert_eq!(app.donation_facts(paid.donation).await, settled);
    assert_eq!(
        reads_by_path(&app).await.values().sum::<usize>(),
        calls,
        "no Stripe call for snapshots older than what we hold"
    );
    app.assert_totals_match_rows().await;
    app.assert_books_hold().await;
}

#[tokio::test]
async fn a_refund_stripe_no_longer_shows_is_not_fetched_again_for_an_older_snapshot() {
    let (app, stripe) = manual_app().await;
    let paid = Paid::new(&app, &stripe).await;
    let t0 = now() - 600;
    // The refund failed since; Stripe's charge now shows nothing refunded.
    stripe.put(paid.charge_refunded(0));
    stripe.put(objects::refund(
        &paid.refund,
        &paid.charge,
        &paid.pi,
        REFUND,
        "failed",
    ));
    let mut succeeded = paid.intent("succeeded");
    succeeded["latest_charge"] = paid.charge.clone().into();
    app.deliver(&event("payment_intent.succeeded", succeeded, t0 + 40))
        .await;
    app.deliver(&event("charge.succeeded", paid.charge_refunded(0), t0 + 40))
        .await;
    app.apply_events().await;
    assert_eq!(reads_by_path(&app).await.values().sum::<usize>(), 1);

    // An old snapshot of the charge from while the refund stood: we looked at Stripe since.
    app.deliver(&event(
        "charge.refunded",
        paid.charge_refunded(REFUND),
        t0 + 100,
    ))
    .await;
    app.apply_events().await;
    assert_eq!(reads_by_path(&app).await.values().sum::<usize>(), 1);
    let row = app.donation_facts(paid.donation).await;
    assert_eq!((row.refunded_amount, row.counted_amount), (0, AMOUNT));
}

#[tokio::test]
async fn a_slow_stripe_holds_up_no_redelivery_no_donation_and_no_readiness_check() {
    // Stripe takes a minute to answer any read; our client waits 15 s for each attempt.
    let app = spawn_app_with(|s| s.stripe_timeout_secs = 15).await;
    stripe_creates_payment_intents(&app).await;
    Mock::given(method("GET"))
        .and(path_regex("^/v1/"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(60)))
        .mount(&app.stripe)
        .await;
    let (donation, pi) = app.create_donation(AMOUNT).await;
    let mut charge = objects::charge("ch_slow", &pi, AMOUNT, 0, Some("txn_slow"));
    charge["metadata"] = serde_json::json!({"donation_id": donation.to_string()});
    let charge_event = event("charge.succeeded", charge, now());
    assert_eq!(app.deliver(&charge_event).await.status(), 200);

    // The worker is now waiting on Stripe for the fee.
    let mut waiting = false;
    for _ in 0..200 {
        if !reads_by_path(&app).await.is_empty() {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waiting, "the worker never asked Stripe for the fee");

    // Meanwhile, everything else answers as usual.
    let within = Duration::from_secs(5);
    let redelivered = tokio::time::timeout(within, app.deliver(&charge_event))
        .await
        .expect("a redelivery of the event being applied is answered");
    assert_eq!(redelivered.status(), 200);
    let succeeded = event(
        "payment_intent.succeeded",
        objects::payment_intent(&pi, Some(donation), "succeeded", AMOUNT),
        now(),
    );
    let other = tokio::time::timeout(within, app.deliver(&succeeded))
        .await
        .expect("another event for the same payment is stored");
    assert_eq!(other.status(), 200);
    let ready = tokio::time::timeout(within, app.get("/readyz"))
        .await
        .expect("readiness answers");
    assert_eq!(ready.status(), 200);
    let created = tokio::time::timeout(
        within,
        app.post_donation(
            "kashmir",
            &crate::helpers::donation_body(),
            Some("while-slow"),
        ),
    )
    .await
    .expect("a donation is created");
    assert_eq!(created.status(), 201);
    let shown = tokio::time::timeout(within, app.get(&format!("/v1/donations/{donation}")))
        .await
        .expect("a donation is read");
    assert_eq!(shown.status(), 200);
}
