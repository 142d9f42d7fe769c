//! Applying events: donations and campaign totals follow Stripe's objects, whatever the order,
//! duplication, concurrency, crash or outage.

use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{
    DonationFacts, StripeObjects, TestApp, event, objects, spawn_app, spawn_app_with,
    stripe_creates_payment_intents,
};

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
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

/// One donation's story at Stripe: a card declined, then a £25 gift charged, its fee, and two
/// refunds.
struct Story {
    donation: Uuid,
    pi: String,
    charge: String,
    declined_charge: String,
    txn: String,
    t0: i64,
}

const AMOUNT: i64 = 2500;
const FEE: i64 = 58;

impl Story {
    async fn begin(app: &TestApp, stripe: &StripeObjects) -> Self {
        let (donation, pi) = app.create_donation(AMOUNT).await;
        let suffix = Uuid::new_v4().simple().to_string();
        let story = Story {
            donation,
            pi,
            charge: format!("ch_{suffix}"),
            declined_charge: format!("ch_declined_{suffix}"),
            txn: format!("txn_{suffix}"),
            t0: now() - 100,
        };
        // What Stripe holds once the gift is paid: what a fetch sees.
        let mut paid = objects::payment_intent(&story.pi, Some(donation), "succeeded", AMOUNT);
        paid["latest_charge"] = story.charge.clone().into();
        stripe.put(paid);
        stripe.put(objects::balance_transaction(&story.txn, AMOUNT, FEE));
        story.at_stripe_refunded(stripe, 0);
        story
    }

    /// Stripe's charge with `refunded` refunded, and the refunds that make it up.
    fn at_stripe_refunded(&self, stripe: &StripeObjects, refunded: i64) {
        stripe.put(objects::charge(
            &self.charge,
            &self.pi,
            AMOUNT,
            refunded,
            Some(&self.txn),
        ));
        if refunded >= 500 {
            stripe.put(self.refund_a("succeeded"));
        }
        if refunded == AMOUNT {
            stripe.put(self.refund_b("succeeded"));
        }
    }

    fn refund_a(&self, status: &str) -> Value {
        objects::refund(
            &format!("re_a_{}", self.pi),
            &self.charge,
            &self.pi,
            500,
            status,
        )
    }

    fn refund_b(&self, status: &str) -> Value {
        objects::refund(
            &format!("re_b_{}", self.pi),
            &self.charge,
            &self.pi,
            AMOUNT - 500,
            status,
        )
    }

    /// The first card is declined: the PaymentIntent names the failed charge.
    fn declined(&self) -> Value {
        let mut pi = objects::failed_payment_intent(&self.pi, self.donation, AMOUNT);
        pi["latest_charge"] = self.declined_charge.clone().into();
        event("payment_intent.payment_failed", pi, self.t0 - 1)
    }

    fn charge_failed(&self) -> Value {
        let charge = objects::failed_charge(&self.declined_charge, &self.pi, AMOUNT);
        event("charge.failed", charge, self.t0 - 1)
    }

    fn processing(&self) -> Value {
        let pi = objects::payment_intent(&self.pi, Some(self.donation), "processing", AMOUNT);
        event("payment_intent.processing", pi, self.t0)
    }

    fn succeeded(&self) -> Value {
        let mut pi = objects::payment_intent(&self.pi, Some(self.donation), "succeeded", AMOUNT);
        pi["latest_charge"] = self.charge.clone().into();
        event("payment_intent.succeeded", pi, self.t0 + 1)
    }

    /// The charge once its balance transaction exists, before any refund.
    fn charge_updated_with_fee(&self) -> Value {
        let charge = objects::charge(&self.charge, &self.pi, AMOUNT, 0, Some(&self.txn));
        event("charge.updated", charge, self.t0 + 2)
    }

    fn partial_refund(&self) -> Value {
        event("refund.created", self.refund_a("succeeded"), self.t0 + 3)
    }

    fn full_refund(&self) -> Value {
        event("refund.created", self.refund_b("succeeded"), self.t0 + 4)
    }

    /// The row at the end of the story: paid by the second charge, never the declined one.
    fn fully_refunded(&self) -> DonationFacts {
        DonationFacts {
            status: "refunded".into(),
            payment_status: "succeeded".into(),
            amount_received: AMOUNT,
            fee: Some(FEE),
            net: Some(AMOUNT - FEE),
            refunded_amount: AMOUNT,
            dispute_status: None,
            dispute_lost_amount: 0,
            dispute_fee: 0,
            counted_amount: 0,
            charge_id: Some(self.charge.clone()),
            flag: None,
        }
    }
}

/// How many times the fake Stripe was asked for anything.
async fn stripe_reads(app: &TestApp) -> usize {
    app.stripe
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method == wiremock::http::Method::GET)
        .count()
}

#[tokio::test]
async fn a_succeeded_payment_makes_the_donation_count() {
    let (app, stripe) = manual_app().await;
    let story = Story::begin(&app, &stripe).await;
    assert_eq!(app.deliver(&story.succeeded()).await.status(), 200);
    app.apply_events().await;

    let donation: Value = app
        .get(&format!("/v1/donations/{}", story.donation))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(donation["status"], "succeeded");
    assert_eq!(donation["refunded_amount"], 0);
    let campaign = app.campaign().await;
    assert_eq!(
        (
            campaign["raised_amount"].as_i64(),
            campaign["donation_count"].as_i64()
        ),
        (Some(AMOUNT), Some(1))
    );
    app.assert_totals_match_rows().await;
}

#[tokio::test]
async fn the_worker_applies_a_new_event_promptly_on_its_own() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let (donation, pi) = app.create_donation(AMOUNT).await;
    let event = event(
        "payment_intent.succeeded",
        objects::payment_intent(&pi, Some(donation), "succeeded", AMOUNT),
        now(),
    );
    assert_eq!(app.deliver(&event).await.status(), 200);
    app.wait_until_applied().await;
    assert_eq!(app.donation_facts(donation).await.status, "succeeded");
}

#[tokio::test]
async fn every_order_of_a_donations_events_ends_in_the_same_row_with_one_stripe_call() {
    let (app, stripe) = manual_app().await;
    let orders = crate::helpers::orders(5);
    assert_eq!(orders.len(), 120);

    for (n, order) in orders.iter().enumerate() {
        let story = Story::begin(&app, &stripe).await;
        story.at_stripe_refunded(&stripe, AMOUNT);
        // The declined attempt, as the PaymentIntent or as its charge tells it.
        let declined = if n % 2 == 0 {
            story.declined()
        } else {
            story.charge_failed()
        };
        let events = [
            declined,
            story.succeeded(),
            story.charge_updated_with_fee(),
            story.partial_refund(),
            story.full_refund(),
        ];
        let reads_before = stripe_reads(&app).await;
        for &i in order {
            assert_eq!(app.deliver(&events[i]).await.status(), 200);
            app.apply_events().await;
        }
        assert_eq!(
            app.donation_facts(story.donation).await,
            story.fully_refunded(),
            "order {order:?}"
        );
        assert_eq!(
            stripe_reads(&app).await - reads_before,
            1,
            "one Stripe call (for the fee) in order {order:?}"
        );
    }
    let campaign = app.campaign().await;
    assert_eq!(
        (
            campaign["raised_amount"].as_i64(),
            campaign["donation_count"].as_i64()
        ),
        (Some(0), Some(0))
    );
    app.assert_totals_match_rows().await;
}

#[tokio::test]
async fn the_same_event_many_times_and_two_events_for_one_change_count_once() {
    let (app, stripe) = manual_app().await;
    let story = Story::begin(&app, &stripe).await;
    let succeeded = story.succeeded();
    for _ in 0..5 {
        assert_eq!(app.deliver(&succeeded).await.status(), 200);
    }
    // A different event describing the same change: the charge succeeding.
    let charge = objects::charge(&story.charge, &story.pi, AMOUNT, 0, Some(&story.txn));
    assert_eq!(
        app.deliver(&event("charge.succeeded", charge, story.t0 + 1))
            .await
            .status(),
        200
    );
    app.apply_events().await;

    let partial = story.partial_refund();
    for _ in 0..3 {
        app.deliver(&partial).await;
    }
    // ...and the charge.refunded that Stripe also sends for it.
    let refunded_charge = objects::charge(&story.charge, &story.pi, AMOUNT, 500, Some(&story.txn));
    story.at_stripe_refunded(&stripe, 500);
    app.deliver(&event("charge.refunded", refunded_charge, story.t0 + 3))
        .await;
    app.apply_events().await;

    let row = app.donation_facts(story.donation).await;
    assert_eq!(
        (row.status.as_str(), row.refunded_amount, row.counted_amount),
        ("succeeded", 500, AMOUNT - 500)
    );
    assert_eq!(row.fee, Some(FEE));
    let campaign = app.campaign().await;
    assert_eq!(
        (
            campaign["raised_amount"].as_i64(),
            campaign["donation_count"].as_i64()
        ),
        (Some(AMOUNT - 500), Some(1))
    );
    app.assert_totals_match_rows().await;
}

#[tokio::test]
async fn a_late_processing_event_never_moves_a_succeeded_donation_back() {
    let (app, stripe) = manual_app().await;
    let story = Story::begin(&app, &stripe).await;
    app.deliver(&story.succeeded()).await;
    app.apply_events().await;
    app.deliver(&story.processing()).await;
    app.apply_events().await;
    assert_eq!(app.donation_facts(story.donation).await.status, "succeeded");
}

#[tokio::test]
async fn a_declined_card_then_another_card_ends_succeeded_in_either_order() {
    for failed_first in [true, false] {
        let (app, stripe) = manual_app().await;
        let story = Story::begin(&app, &stripe).await;
        let failed = event(
            "payment_intent.payment_failed",
            objects::failed_payment_intent(&story.pi, story.donation, AMOUNT),
            story.t0,
        );
        let succeeded = story.succeeded();
        let (first, second) = if failed_first {
            (&failed, &succeeded)
        } else {
            (&succeeded, &failed)
        };
        app.deliver(first).await;
        app.apply_events().await;
        if failed_first {
            assert_eq!(app.donation_facts(story.donation).await.status, "failed");
        }
        app.deliver(second).await;
        app.apply_events().await;
        assert_eq!(
            app.donation_facts(story.donation).await.status,
            "succeeded",
            "failed first: {failed_first}"
        );
        app.assert_totals_match_rows().await;
    }
}

#[tokio::test]
async fn the_fee_arriving_later_with_charge_updated_is_recorded() {
    let (app, stripe) = manual_app().await;
    let story = Story::begin(&app, &stripe).await;
    app.deliver(&story.succeeded()).await;
    let no_fee_yet = objects::charge(&story.charge, &story.pi, AMOUNT, 0, None);
    app.deliver(&event("charge.succeeded", no_fee_yet, story.t0 + 1))
        .await;
    app.apply_events().await;
    assert_eq!(app.donation_facts(story.donation).await.fee, None);

    app.deliver(&story.charge_updated_with_fee()).await;
    app.apply_events().await;
    let row = app.donation_facts(story.donation).await;
    assert_eq!((row.fee, row.net), (Some(FEE), Some(AMOUNT - FEE)));
    assert_eq!(row.charge_id.as_deref(), Some(story.charge.as_str()));
}

#[tokio::test]
async fn a_dashboard_refund_seen_only_as_charge_refunded_is_fetched_and_counted() {
    let (app, stripe) = manual_app().await;
    let story = Story::begin(&app, &stripe).await;
    app.deliver(&story.succeeded()).await;
    app.apply_events().await;

    // Refunded from the dashboard; no refund.* event ever arrives.
    story.at_stripe_refunded(&stripe, 500);
    let charge = objects::charge(&story.charge, &story.pi, AMOUNT, 500, Some(&story.txn));
    app.deliver(&event("charge.refunded", charge, story.t0 + 3))
        .await;
    app.apply_events().await;

    let row = app.donation_facts(story.donation).await;
    assert_eq!(
        (row.refunded_amount, row.counted_amount),
        (500, AMOUNT - 500)
    );
    let donation: Value = app
        .get(&format!("/v1/donations/{}", story.donation))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(donation["refunded_amount"], 500);
    app.assert_totals_match_rows().await;
}

#[tokio::test]
async fn a_refund_that_fails_gives_the_money_back_to_the_total() {
    let (app, stripe) = manual_app().await;
    let story = Story::begin(&app, &stripe).await;
    app.deliver(&story.succeeded()).await;
    app.deliver(&event(
        "refund.created",
        story.refund_a("pending"),
        story.t0 + 3,
    ))
    .await;
    app.apply_events().await;
    assert_eq!(
        app.donation_facts(story.donation).await.refunded_amount,
        500
    );

    app.deliver(&event(
        "refund.failed",
        story.refund_a("failed"),
        story.t0 + 5,
    ))
    .await;
    // A late, stale "pending" changes nothing.
    app.deliver(&event(
        "refund.updated",
        story.refund_a("pending"),
        story.t0 + 4,
    ))
    .await;
    app.apply_events().await;
    let row = app.donation_facts(story.donation).await;
    assert_eq!((row.refunded_amount, row.counted_amount), (0, AMOUNT));
    app.assert_totals_match_rows().await;
}

#[tokio::test]
async fn a_lost_dispute_counts_like_a_refund_and_records_its_fee() {
    let (app, stripe) = manual_app().await;
    let story = Story::begin(&app, &stripe).await;
    app.deliver(&story.succeeded()).await;
    let dp = format!("dp_{}", story.pi);
    let opened = objects::dispute(&dp, &story.charge, &story.pi, AMOUNT, "needs_response", &[]);
    let withdrawn = objects::dispute(
        &dp,
        &story.charge,
        &story.pi,
        AMOUNT,
        "needs_response",
        &[2000],
    );
    let lost = objects::dispute(&dp, &story.charge, &story.pi, AMOUNT, "lost", &[2000]);
    // Out of order: closed first.
    app.deliver(&event("charge.dispute.closed", lost, story.t0 + 9))
        .await;
    app.deliver(&event("charge.dispute.created", opened, story.t0 + 5))
        .await;
    app.deliver(&event(
        "charge.dispute.funds_withdrawn",
        withdrawn,
        story.t0 + 6,
    ))
    .await;
    app.apply_events().await;

    let row = app.donation_facts(story.donation).await;
    assert_eq!(row.dispute_status.as_deref(), Some("lost"));
    assert_eq!(
        (row.dispute_lost_amount, row.dispute_fee, row.counted_amount),
        (AMOUNT, 2000, 0)
    );
    let donation: Value = app
        .get(&format!("/v1/donations/{}", story.donation))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(donation["dispute_status"], "lost");
    assert_eq!(app.campaign().await["donation_count"], 0);
    app.assert_totals_match_rows().await;
}

#[tokio::test]
async fn a_won_dispute_gives_the_gift_back_to_the_total() {
    let (app, stripe) = manual_app().await;
    let story = Story::begin(&app, &stripe).await;
    app.deliver(&story.succeeded()).await;
    let dp = format!("dp_{}", story.pi);
    for (kind, status, fees, t) in [
        ("charge.dispute.created", "needs_response", vec![], 5),
        (
            "charge.dispute.funds_withdrawn",
            "needs_response",
            vec![2000],
            6,
        ),
        ("charge.dispute.updated", "under_review", vec![2000], 7),
        (
            "charge.dispute.funds_reinstated",
            "won",
            vec![2000, -2000],
            8,
        ),
        ("charge.dispute.closed", "won", vec![2000, -2000], 9),
    ] {
        let dispute = objects::dispute(&dp, &story.charge, &story.pi, AMOUNT, status, &fees);
        app.deliver(&event(kind, dispute, story.t0 + t)).await;
        app.apply_events().await;
        if status == "under_review" {
            assert_eq!(
                app.donation_facts(story.donation)
                    .await
                    .dispute_status
                    .as_deref(),
                Some("under_review")
            );
        }
    }
    let row = app.donation_facts(story.donation).await;
    assert_eq!(row.dispute_status.as_deref(), Some("won"));
    assert_eq!((row.dispute_fee, row.counted_amount), (0, AMOUNT));
    app.assert_totals_match_rows().await;
}

#[tokio::test]
async fn events_of_other_products_are_ignored_with_their_reason_and_no_stripe_call() {
    let (app, _stripe) = manual_app().await;
    // Stripe is failing, which must not matter: nothing about these events is asked of it.
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .respond_with(crate::helpers::stripe_error(500, "api_error", "down"))
        .with_priority(1)
        .mount(&app.stripe)
        .await;
    let pi = "pi_the_shops";
    let t = now();
    let mut shop_charge = objects::charge("ch_the_shops", pi, 999, 0, Some("txn_the_shops"));
    shop_charge["metadata"] = serde_json::json!({"order": "1234"});
    let foreign = [
        event(
            "payment_intent.succeeded",
            objects::payment_intent(pi, None, "succeeded", 999),
            t,
        ),
        event("charge.succeeded", shop_charge.clone(), t),
        event(
            "charge.refunded",
            objects::charge("ch_the_shops", pi, 999, 999, Some("txn_the_shops")),
            t,
        ),
        event(
            "refund.created",
            objects::refund("re_the_shops", "ch_the_shops", pi, 999, "succeeded"),
            t,
        ),
        event(
            "charge.dispute.created",
            objects::dispute(
                "dp_the_shops",
                "ch_the_shops",
                pi,
                999,
                "needs_response",
                &[1500],
            ),
            t,
        ),
    ];
    for event in &foreign {
        assert_eq!(app.deliver(event).await.status(), 200);
    }
    app.apply_events().await;

    let rows: Vec<(String, Option<String>, i32)> =
        sqlx::query_as("SELECT state, last_error, attempts FROM stripe_events")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(rows.len(), foreign.len());
    for (state, reason, attempts) in rows {
        assert_eq!((state.as_str(), attempts), ("ignored", 1));
        let reason = reason.unwrap();
        assert!(reason.starts_with("not ours: "), "{reason}");
        assert!(reason.contains(pi), "{reason}");
    }
    assert_eq!(
        stripe_reads(&app).await,
        0,
        "no Stripe call for events not ours"
    );
    assert_eq!(app.campaign().await["raised_amount"], 0);
}

#[tokio::test]
async fn an_event_naming_another_payment_than_its_donations_is_not_ours() {
    let (app, _stripe) = manual_app().await;
    let (donation, _pi) = app.create_donation(AMOUNT).await;
    // Metadata copied onto another PaymentIntent (a dashboard duplicate, say).
    let impostor = objects::payment_intent("pi_impostor", Some(donation), "succeeded", AMOUNT);
    app.deliver(&event("payment_intent.succeeded", impostor, now()))
        .await;
    app.apply_events().await;
    let reason: Option<String> = sqlx::query_scalar("SELECT last_error FROM stripe_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.contains("belongs to PaymentIntent")),
        "{reason:?}"
    );
    assert_eq!(app.donation_facts(donation).await.status, "pending");
}
#[tokio::test]
async fn a_charge_seen_before_its_payment_is_linked_is_applied_once_the_payment_names_it() {
    let (app, stripe) = manual_app().await;
    let story = Story::begin(&app, &stripe).await;
    // As if a crash had lost the create flow's write of the PaymentIntent id.
    sqlx::query("UPDATE donations SET payment_intent_id = NULL WHERE id = $1")
        .bind(story.donation)
        .execute(&app.db)
        .await
        .unwrap();
    // The charge carries no metadata and names a PaymentIntent we have not stored: from the
    // event alone, it is not ours, and no Stripe call is spent on finding out.
    let charge = objects::charge(&story.charge, &story.pi, AMOUNT, 0, Some(&story.txn));
    let charge_event = event("charge.succeeded", charge, story.t0 + 1);
    app.deliver(&charge_event).await;
    app.apply_events().await;
    let state: String = sqlx::query_scalar("SELECT state FROM stripe_events WHERE id = $1")
        .bind(charge_event["id"].as_str())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(state, "ignored");
    assert_eq!(stripe_reads(&app).await, 0);

    // The PaymentIntent's own event names the donation: the link is recorded, and the charge
    // set aside is applied after all.
    app.deliver(&story.succeeded()).await;
    app.apply_events().await;
    let row = app.donation_facts(story.donation).await;
    assert_eq!((row.status.as_str(), row.fee), ("succeeded", Some(FEE)));
    assert_eq!(row.charge_id.as_deref(), Some(story.charge.as_str()));
    let (linked, state): (Option<String>, String) = sqlx::query_as(
        "SELECT d.payment_intent_id, e.state FROM donations d, stripe_events e
         WHERE d.id = $1 AND e.id = $2",
    )
    .bind(story.donation)
    .bind(charge_event["id"].as_str())
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (linked.as_deref(), state.as_str()),
        (Some(story.pi.as_str()), "applied")
    );
    app.assert_totals_match_rows().await;
}
#[tokio::test]
async fn an_event_whose_fee_stripe_cannot_show_is_retried_with_its_error_kept() {
    let (app, stripe) = manual_app().await;
    let (donation, pi) = app.create_donation(AMOUNT).await;
    // Stripe does not know the PaymentIntent yet: fetching it fails.
    let charge = objects::charge("ch_paid", &pi, AMOUNT, 0, Some("txn_paid"));
    let mut charge_event = event("charge.succeeded", charge.clone(), now());
    charge_event["data"]["object"]["metadata"] =
        serde_json::json!({"donation_id": donation.to_string()});
    app.deliver(&charge_event).await;
    app.apply_events().await;
    let (state, attempts, error): (String, i32, Option<String>) =
        sqlx::query_as("SELECT state, attempts, last_error FROM stripe_events")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((state.as_str(), attempts), ("pending", 1));
    assert!(error.unwrap().contains("Stripe"));
    // What the event says on its own is applied; only the fee waits.
    let row = app.donation_facts(donation).await;
    assert_eq!((row.status.as_str(), row.fee), ("succeeded", None));
    app.assert_totals_match_rows().await;

    // Stripe has it now; the retry, when due, records the fee.
    let mut paid = objects::payment_intent(&pi, Some(donation), "succeeded", AMOUNT);
    paid["latest_charge"] = "ch_paid".into();
    stripe.put(paid);
    stripe.put(charge);
    stripe.put(objects::balance_transaction("txn_paid", AMOUNT, FEE));
    sqlx::query("UPDATE stripe_events SET next_attempt_at = now()")
        .execute(&app.db)
        .await
        .unwrap();
    app.apply_events().await;
    let row = app.donation_facts(donation).await;
    assert_eq!((row.fee, row.net), (Some(FEE), Some(AMOUNT - FEE)));
    let (state, error): (String, Option<String>) =
        sqlx::query_as("SELECT state, last_error FROM stripe_events")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((state, error), ("applied".to_owned(), None));
}
#[tokio::test]
async fn many_concurrent_deliveries_of_many_events_leave_totals_exact() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;

    let mut stories = Vec::new();
    for _ in 0..30 {
        let story = Story::begin(&app, &stripe).await;
        story.at_stripe_refunded(&stripe, 500);
        stories.push(story);
    }
    let mut deliveries = Vec::new();
    for story in &stories {
        for event in [
            story.succeeded(),
            story.charge_updated_with_fee(),
            story.partial_refund(),
        ] {
            for _ in 0..3 {
                deliveries.push(event.clone());
            }
        }
    }
    // Shuffled deterministically, then delivered from 16 connections at once.
    crate::helpers::shuffle(&mut deliveries, 42);
    app.deliver_concurrently(deliveries, 16).await;
    app.wait_until_applied().await;

    for story in &stories {
        let row = app.donation_facts(story.donation).await;
        assert_eq!(
            (
                row.status.as_str(),
                row.fee,
                row.refunded_amount,
                row.counted_amount
            ),
            ("succeeded", Some(FEE), 500, AMOUNT - 500)
        );
    }
    let campaign = app.campaign().await;
    assert_eq!(
        campaign["raised_amount"].as_i64(),
        Some(30 * (AMOUNT - 500))
    );
    assert_eq!(campaign["donation_count"].as_i64(), Some(30));
    let events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE state = 'applied'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(events, 90);
    app.assert_totals_match_rows().await;
}

#[tokio::test]
async fn an_event_stored_before_a_crash_is_applied_after_the_restart() {
    // The first instance answers 2xx and dies before its worker runs.
    let (mut first, stripe) = manual_app().await;
    let story = Story::begin(&first, &stripe).await;
    assert_eq!(first.deliver(&story.succeeded()).await.status(), 200);
    first.owns_db = false;
    let db_name = first.db_name.clone();
    drop(first);

    // The next instance, with its worker running, finds it and applies it.
    let second = crate::helpers::spawn_app_on(db_name, |_| {}).await;
    stripe.serve(&second).await;
    second.wait_until_applied().await;
    assert_eq!(
        second.donation_facts(story.donation).await.status,
        "succeeded"
    );
    assert_eq!(
        second.campaign().await["raised_amount"].as_i64(),
        Some(AMOUNT)
    );
    second.assert_totals_match_rows().await;
}

#[tokio::test]
async fn a_database_outage_answers_503_then_redelivery_loses_and_doubles_nothing() {
    use quickdonate::db::local::{Durability, LocalPostgres};
    use std::os::unix::fs::PermissionsExt;

    // A Postgres of this test's own, to stop and start.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = dir.path().join("pg");
    let start = {
        let root = root.clone();
        move || LocalPostgres::start(&root, None, Durability::Throwaway).unwrap()
    };
    let pg = tokio::task::spawn_blocking(start.clone()).await.unwrap();
    pg.ensure_database("quickdonate").await.unwrap();
    let app = crate::helpers::spawn_app_at(pg.url("quickdonate"), |_| {}).await;
    stripe_creates_payment_intents(&app).await;
    let (donation, pi) = app.create_donation(AMOUNT).await;
    let succeeded = event(
        "payment_intent.succeeded",
        objects::payment_intent(&pi, Some(donation), "succeeded", AMOUNT),
        now(),
    );

    let pg = tokio::task::spawn_blocking(move || {
        pg.stop().unwrap();
        pg
    })
    .await
    .unwrap();
    let response = app.deliver(&succeeded).await;
    crate::helpers::assert_problem(response, 503, "service-unavailable").await;

    // Postgres is back; Stripe delivers again, twice for good measure.
    let pg2 = tokio::task::spawn_blocking(start).await.unwrap();
    for _ in 0..2 {
        assert_eq!(app.deliver(&succeeded).await.status(), 200);
    }
    app.wait_until_applied().await;
    assert_eq!(app.donation_facts(donation).await.status, "succeeded");
    let campaign = app.campaign().await;
    assert_eq!(
        (
            campaign["raised_amount"].as_i64(),
            campaign["donation_count"].as_i64()
        ),
        (Some(AMOUNT), Some(1))
    );
    let (rows, deliveries): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(delivery_count), 0)::bigint FROM stripe_events",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (rows, deliveries),
        (1, 2),
        "the refused delivery stored nothing"
    );
    app.assert_totals_match_rows().await;
    drop(pg);
    app.db.close().await;
    tokio::task::spawn_blocking(move || pg2.stop())
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn two_instances_sharing_a_database_never_apply_an_event_twice() {
    let first = spawn_app().await;
    stripe_creates_payment_intents(&first).await;
    let stripe = StripeObjects::default();
    stripe.serve(&first).await;
    let mut second = crate::helpers::spawn_app_at(first.database_url.clone(), |_| {}).await;
    second.owns_db = false;
    stripe.serve(&second).await;

    let mut stories = Vec::new();
    for _ in 0..20 {
        let story = Story::begin(&first, &stripe).await;
        story.at_stripe_refunded(&stripe, 500);
        stories.push(story);
    }
    // Each event goes to both instances, as if Stripe retried against another one.
    for story in &stories {
        for event in [
            story.succeeded(),
            story.charge_updated_with_fee(),
            story.partial_refund(),
        ] {
            let (a, b) = tokio::join!(first.deliver(&event), second.deliver(&event));
            assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
        }
    }
    first.wait_until_applied().await;

    for story in &stories {
        let row = first.donation_facts(story.donation).await;
        assert_eq!(
            (row.status.as_str(), row.refunded_amount, row.counted_amount),
            ("succeeded", 500, AMOUNT - 500)
        );
    }
    let campaign = first.campaign().await;
    assert_eq!(
        campaign["raised_amount"].as_i64(),
        Some(20 * (AMOUNT - 500))
    );
    let (applied, deliveries, attempts): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), sum(delivery_count)::bigint, sum(attempts)::bigint
         FROM stripe_events WHERE state = 'applied'",
    )
    .fetch_one(&first.db)
    .await
    .unwrap();
    assert_eq!(
        (applied, deliveries, attempts),
        (60, 120, 60),
        "each event stored once, and applied once, by one of the two"
    );
    first.assert_totals_match_rows().await;
}

#[tokio::test]
async fn a_payment_that_received_less_or_another_currency_is_flagged_and_counts_only_what_came() {
    let (app, _stripe) = manual_app().await;
    let (short, short_pi) = app.create_donation(AMOUNT).await;
    let (foreign, foreign_pi) = app.create_donation(AMOUNT).await;
    let mut received_less = objects::payment_intent(&short_pi, Some(short), "succeeded", AMOUNT);
    received_less["amount_received"] = 1000.into();
    let mut in_dollars = objects::payment_intent(&foreign_pi, Some(foreign), "succeeded", AMOUNT);
    in_dollars["currency"] = "usd".into();
    let short_event = event("payment_intent.succeeded", received_less, now());
    app.deliver(&short_event).await;
    app.deliver(&event("payment_intent.succeeded", in_dollars, now()))
        .await;
    app.apply_events().await;

    let row = app.donation_facts(short).await;
    assert_eq!(
        (row.status.as_str(), row.counted_amount),
        ("succeeded", 1000)
    );
    assert!(
        row.flag
            .as_deref()
            .is_some_and(|f| f.contains("received 1000 gbp") && f.contains("2500 gbp")),
        "{:?}",
        row.flag
    );
    let row = app.donation_facts(foreign).await;
    assert_eq!((row.status.as_str(), row.counted_amount), ("succeeded", 0));
    assert!(
        row.flag.as_deref().is_some_and(|f| f.contains("usd")),
        "{:?}",
        row.flag
    );
    let campaign = app.campaign().await;
    assert_eq!(
        (
            campaign["raised_amount"].as_i64(),
            campaign["donation_count"].as_i64()
        ),
        (Some(1000), Some(1))
    );

    // The operator's view of the event says so.
    let shown = quickdonate::webhooks::admin::show(&app.db, short_event["id"].as_str().unwrap())
        .await
        .unwrap();
    assert!(
        shown.contains(&format!("donation:        {short}")),
        "{shown}"
    );
    assert!(
        shown.contains("FLAGGED:") && shown.contains("received 1000 gbp"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_donation_is_refunded_and_its_notice_owed_only_once_its_refunds_have_succeeded() {
    let (app, stripe) = manual_app().await;
    let story = Story::begin(&app, &stripe).await;
    app.deliver(&story.succeeded()).await;
    // Refunded in full, but neither refund has gone through yet.
    app.deliver(&event(
        "refund.created",
        story.refund_a("pending"),
        story.t0 + 3,
    ))
    .await;
    app.deliver(&event(
        "refund.created",
        story.refund_b("pending"),
        story.t0 + 3,
    ))
    .await;
    app.apply_events().await;

    let notices = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM receipts WHERE donation_id = $1 AND kind = 'refund_notice'",
        )
        .bind(story.donation)
        .fetch_one(&app.db)
        .await
        .unwrap()
    };
    let row = app.donation_facts(story.donation).await;
    assert_eq!(
        (row.status.as_str(), row.refunded_amount, row.counted_amount),
        ("succeeded", AMOUNT, 0),
        "money on its way out is not counted, but the donor is not told yet"
    );
    assert_eq!(notices().await, 0);

    // One goes through, the other fails: the donor got 500 back, not the gift.
    app.deliver(&event(
        "refund.updated",
        story.refund_a("succeeded"),
        story.t0 + 5,
    ))
    .await;
    app.deliver(&event(
        "refund.failed",
        story.refund_b("failed"),
        story.t0 + 6,
    ))
    .await;
    app.apply_events().await;
    let row = app.donation_facts(story.donation).await;
    assert_eq!(
        (row.status.as_str(), row.refunded_amount, row.counted_amount),
        ("succeeded", 500, AMOUNT - 500)
    );
    assert_eq!(notices().await, 0);

    // Refunded again, and this time it goes through: refunded, and one notice owed.
    let again = objects::refund(
        &format!("re_c_{}", story.pi),
        &story.charge,
        &story.pi,
        AMOUNT - 500,
        "succeeded",
    );
    app.deliver(&event("refund.created", again, story.t0 + 7))
        .await;
    app.apply_events().await;
    let row = app.donation_facts(story.donation).await;
    assert_eq!(
        (row.status.as_str(), row.refunded_amount, row.counted_amount),
        ("refunded", AMOUNT, 0)
    );
    assert_eq!(notices().await, 1);
    app.assert_totals_match_rows().await;
}

/// A refund naming only its charge (older API versions leave `payment_intent` empty), whose
/// money the ledger lacks, is fetched through the PaymentIntent of the donation it was found
/// by, not set aside as a dead letter.
#[tokio::test]
async fn a_refund_naming_only_its_charge_is_fetched_through_its_donation() {
    let (app, stripe) = manual_app().await;
    let story = Story::begin(&app, &stripe).await;
    app.deliver(&story.succeeded()).await;
    app.deliver(&story.charge_updated_with_fee()).await;
    app.apply_events().await;
    let reads_before = stripe_reads(&app).await;

    story.at_stripe_refunded(&stripe, 500);
    let txn = format!("txn_re_{}", story.pi);
    let mut taken = objects::balance_transaction(&txn, -500, 0);
    taken["type"] = "refund".into();
    stripe.put(taken);
    let mut refund = story.refund_a("succeeded");
    refund["balance_transaction"] = txn.clone().into();
    stripe.put(refund.clone());
    refund["payment_intent"] = Value::Null;
    let created = event("refund.created", refund, story.t0 + 3);
    app.deliver(&created).await;
    app.apply_events().await;

    let state: String = sqlx::query_scalar("SELECT state FROM stripe_events WHERE id = $1")
        .bind(created["id"].as_str().unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(state, "applied");
    let row = app.donation_facts(story.donation).await;
    assert_eq!(
        (row.refunded_amount, row.counted_amount),
        (500, AMOUNT - 500)
    );
    assert_eq!(
        stripe_reads(&app).await,
        reads_before + 1,
        "one fetch, of its PaymentIntent"
    );
    let refunded: i64 = sqlx::query_scalar(
        "SELECT sum(amount)::bigint FROM ledger_entries WHERE balance_transaction_id = $1",
    )
    .bind(&txn)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(refunded, -500, "the refund's money is in the ledger");
    app.assert_totals_match_rows().await;
}
