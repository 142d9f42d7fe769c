//! Inputs no one expected, generated (proptest): any bytes at the public endpoints get a 4xx
//! and change nothing, and signed events of any shape are stored or refused without ever
//! stopping the worker or breaking a campaign's totals.

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::arbitrary;
use crate::helpers::{
    TestApp, event, objects, spawn_app, spawn_app_with, stripe_creates_payment_intents,
};

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// A body: any bytes, or JSON of any shape.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..400),
        arbitrary::json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        arbitrary::object().prop_map(|v| serde_json::to_vec(&v).unwrap()),
    ]
}

/// A header value: any bytes a client can send, or none.
fn header() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        "t=[0-9]{1,12},v1=[0-9a-f]{0,64}".prop_map(String::into_bytes),
    ])
}

async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_bytes_at_the_donation_and_webhook_endpoints_get_a_4xx_and_change_nothing() {
    let app = Arc::new(spawn_app().await);
    stripe_creates_payment_intents(&app).await;
    let handle = tokio::runtime::Handle::current();
    let content_types = prop::sample::select(vec![
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ]);
    let result = runner(128).run(
        &(body(), content_types, header(), header()),
        |(body, content_type, key, signature)| {
            tokio::task::block_in_place(|| {
                handle.block_on(async {
                    let mut donation = app
                        .http
                        .post(format!("{}/v1/campaigns/kashmir/donations", app.address))
                        .body(body.clone());
                    if let Some(content_type) = content_type {
                        donation = donation.header("content-type", content_type);
                    }
                    if let Some(key) =
                        key.and_then(|k| reqwest::header::HeaderValue::from_bytes(&k).ok())
                    {
                        donation = donation.header("idempotency-key", key);
                    }
                    let status = donation.send().await.unwrap().status();
                    prop_assert!(status.is_client_error(), "donation: {status}");

                    let mut webhook = app
                        .http
                        .post(format!("{}/v1/webhooks/stripe", app.address))
                        .header("content-type", "application/json")
                        .body(body);
                    if let Some(signature) =
                        signature.and_then(|s| reqwest::header::HeaderValue::from_bytes(&s).ok())
                    {
                        webhook = webhook.header("stripe-signature", signature);
                    }
                    let status = webhook.send().await.unwrap().status();
                    prop_assert_eq!(status.as_u16(), 400, "webhook");
                    Ok(())
                })
            })
        },
    );
    if let Err(failure) = result {
        panic!("{failure}");
    }
    for table in [
        "donations",
        "idempotency_keys",
        "stripe_events",
        "donation_attempts",
    ] {
        assert_eq!(count(&app, table).await, 0, "{table}");
    }
    assert!(app.stripe_requests("/v1/payment_intents").await.is_empty());
}

/// Every kind of event we apply, about one of our donations, as Stripe sends it.
fn our_events(donation: Uuid, pi: &str) -> Vec<Value> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let charge = objects::charge("ch_any", pi, 2500, 0, Some("txn_any"));
    let mut refunded = objects::charge("ch_any", pi, 2500, 1000, Some("txn_any"));
    refunded["refunds"] = json!({"object": "list", "has_more": false, "data": [
        objects::refund("re_any", "ch_any", pi, 1000, "succeeded")
    ]});
    let mut payout = json!({
        "id": "po_any", "object": "payout", "amount": 2441, "currency": "gbp", "status": "paid",
        "automatic": true, "created": now, "arrival_date": now, "balance_transaction": "txn_po",
        "reconciliation_status": "completed", "failure_balance_transaction": null
    });
    payout["metadata"] = json!({});
    vec![
        event(
            "payment_intent.succeeded",
            objects::payment_intent(pi, Some(donation), "succeeded", 2500),
            now,
        ),
        event("charge.succeeded", charge, now),
        event("charge.refunded", refunded, now),
        event(
            "charge.dispute.created",
            objects::dispute("dp_any", "ch_any", pi, 2500, "needs_response", &[1500]),
            now,
        ),
        event("payout.paid", payout, now),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_events_of_any_shape_never_stop_the_worker_nor_break_the_totals() {
    let app = Arc::new(spawn_app_with(|s| s.apply_events = false).await);
    stripe_creates_payment_intents(&app).await;
    let (donation, pi) = app.create_donation(2500).await;
    let bases = our_events(donation, &pi);
    let events = (
        prop::sample::select(bases).prop_flat_map(arbitrary::variant_of),
        proptest::bool::weighted(0.8),
    )
        .prop_map(|(mut event, new)| {
            // Mostly new events; sometimes the same id again, as Stripe redelivers.
            if let Some(id) = event.get_mut("id").filter(|id| new && id.is_string()) {
                *id = json!(format!("evt_{}", Uuid::new_v4().simple()));
            }
            event
        });
    let handle = tokio::runtime::Handle::current();
    let result = runner(96).run(&events, |event| {
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                let status = app.deliver(&event).await.status();
                prop_assert!(
                    status.as_u16() == 200 || status.as_u16() == 400,
                    "{status} for {event}"
                );
                Ok(())
            })
        })
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    assert!(count(&app, "stripe_events").await > 10, "most are events");

    // The worker takes every one: applied, ignored, or set aside to retry; it never stops.
    app.apply_events().await;
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM stripe_events GROUP BY state ORDER BY state")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert!(
        states.iter().any(|(state, _)| state == "applied"),
        "{states:?}"
    );
    app.assert_totals_match_rows().await;

    // And it still applies a plain event for another donation.
    let (next, next_pi) = app.create_donation(1000).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let paid = objects::payment_intent(&next_pi, Some(next), "succeeded", 1000);
    assert_eq!(
        app.deliver(&event("payment_intent.succeeded", paid, now))
            .await
            .status(),
        200
    );
    app.apply_events().await;
    let status: String = sqlx::query_scalar("SELECT status FROM donations WHERE id = $1")
        .bind(next)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "succeeded");
    app.assert_totals_match_rows().await;
}
