//! Stored event payloads lose their personal data once applied, ignored or failed and older than
//! EVENT_PAYLOAD_RETENTION, in batches and once; what applying reads stays, so a replay of a
//! stripped event applies exactly as before.

use std::time::Duration;

use quickdonate::webhooks::payloads;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{
    StripeObjects, TestApp, event, objects, spawn_app_at, spawn_app_with,
    stripe_creates_payment_intents,
};

const RETENTION: Duration = Duration::from_secs(30 * 86_400);

/// The billing details a real charge carries, with the donor's name, email and address.
pub fn billing(name: &str, email: &str, line1: &str, postcode: &str) -> Value {
    json!({
        "address": {"city": "Sheffield", "country": "GB", "line1": line1, "line2": null,
                    "postal_code": postcode, "state": null},
        "email": email, "name": name, "phone": "+44 7700 900123", "tax_id": null
    })
}

/// A paid donation's PaymentIntent and charge, served by the fake Stripe, and their two events
/// (`payment_intent.succeeded`, `charge.succeeded`) made `days_ago` days ago, delivered. The
/// charge and the PaymentIntent carry `details` as Stripe would: billing details and receipt
/// email. Returns the events' ids.
pub async fn pay(
    app: &TestApp,
    stripe: &StripeObjects,
    donation: Uuid,
    pi: &str,
    total: i64,
    days_ago: i64,
    details: &Value,
) -> (String, String) {
    let suffix = Uuid::new_v4().simple();
    let (charge_id, txn) = (format!("ch_{suffix}"), format!("txn_{suffix}"));
    let mut intent = objects::payment_intent(pi, Some(donation), "succeeded", total);
    intent["latest_charge"] = json!(charge_id);
    intent["receipt_email"] = details["email"].clone();
    let mut charge = objects::charge(&charge_id, pi, total, 0, Some(&txn));
    charge["billing_details"] = details.clone();
    charge["receipt_email"] = details["email"].clone();
    charge["metadata"] = json!({"donation_id": donation.to_string(), "campaign": "kashmir"});
    stripe.put(intent.clone());
    stripe.put(charge.clone());
    stripe.put(objects::balance_transaction(&txn, total, 60));
    let created = OffsetDateTime::now_utc().unix_timestamp() - days_ago * 86_400;
    let intent_event = event("payment_intent.succeeded", intent, created);
    let charge_event = event("charge.succeeded", charge, created + 1);
    for e in [&intent_event, &charge_event] {
        assert_eq!(app.deliver(e).await.status(), 200);
    }
    (
        intent_event["id"].as_str().unwrap().to_owned(),
        charge_event["id"].as_str().unwrap().to_owned(),
    )
}

async fn stored(app: &TestApp, id: &str) -> (String, String, Option<OffsetDateTime>) {
    sqlx::query_as(
        "SELECT state, payload, personal_data_removed_at FROM stripe_events WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn old_applied_payloads_are_stripped_once_in_batches_and_still_replay() {
    // The service's own housekeeping keeps them ten years: the test strips them itself.
    let app = spawn_app_with(|s| {
        s.apply_events = false;
        s.event_payload_retention = "3650d".to_owned();
    })
    .await;
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;
    let details = billing(
        "Philippa Ravensworth",
        "Philippa.R@Example.org",
        "12 Quillfeather Lane",
        "S19 2BD",
    );

    // Applied, 40 days old: stripped.
    let (old, old_pi) = app.create_donation(2500).await;
    let (old_intent, old_charge) = pay(&app, &stripe, old, &old_pi, 2500, 40, &details).await;
    // Applied, today: kept.
    let (recent, recent_pi) = app.create_donation(2500).await;
    let (recent_intent, _) = pay(&app, &stripe, recent, &recent_pi, 2500, 0, &details).await;
    app.apply_events().await;
    // 40 days old but not applied yet (a refund waiting on the worker): kept.
    let refund = objects::refund("re_pending", "ch_x", &recent_pi, 100, "succeeded");
    let mut pending = event(
        "refund.created",
        refund,
        OffsetDateTime::now_utc().unix_timestamp() - 40 * 86_400,
    );
    pending["data"]["object"]["metadata"] = json!({"note": "Philippa Ravensworth"});
    assert_eq!(app.deliver(&pending).await.status(), 200);
    let pending = pending["id"].as_str().unwrap().to_owned();
    // Ignored (not a type we apply), 40 days old: stripped too.
    let customer = json!({"id": "cus_1", "object": "customer", "email": "Philippa.R@Example.org",
                          "name": "Philippa Ravensworth", "address": details["address"]});
    let ignored = event(
        "customer.created",
        customer,
        OffsetDateTime::now_utc().unix_timestamp() - 40 * 86_400,
    );
    assert_eq!(app.deliver(&ignored).await.status(), 200);
    let ignored = ignored["id"].as_str().unwrap().to_owned();
    // Set aside as failed (a dead letter), 40 days old: stripped too; a replay still applies.
    let mut dead = event(
        "payment_intent.succeeded",
        objects::payment_intent(&recent_pi, Some(recent), "succeeded", 2500),
        OffsetDateTime::now_utc().unix_timestamp() - 40 * 86_400,
    );
    dead["data"]["object"]["receipt_email"] = json!("Philippa.R@Example.org");
    assert_eq!(app.deliver(&dead).await.status(), 200);
    let dead = dead["id"].as_str().unwrap().to_owned();
    sqlx::query("UPDATE stripe_events SET state = 'failed' WHERE id = $1")
        .bind(&dead)
        .execute(&app.db)
        .await
        .unwrap();

    let facts_before = app.donation_facts(old).await;
    assert_eq!(facts_before.status, "succeeded");
    assert_eq!(stored(&app, &old_charge).await.0, "applied");
    assert_eq!(stored(&app, &ignored).await.0, "ignored");
    assert_eq!(stored(&app, &pending).await.0, "pending");

    // One event per batch: every due one is done all the same.
    let stripped = payloads::strip_expired(&app.db, RETENTION, 1)
        .await
        .unwrap();
    assert_eq!(
        stripped, 4,
        "the old applied events, the old ignored one and the old failed one"
    );

    for id in [&old_intent, &old_charge, &ignored, &dead] {
        let (_, payload, removed) = stored(&app, id).await;
        assert!(removed.is_some(), "{id} is marked stripped");
        for personal in [
            "Philippa",
            "Ravensworth",
            "example.org",
            "Quillfeather",
            "S19 2BD",
            "7700",
        ] {
            assert!(
                !payload.to_lowercase().contains(&personal.to_lowercase()),
                "{personal} left in {payload}"
            );
        }
    }
    // What applying and `events show` read stays.
    let charge: Value = serde_json::from_str(&stored(&app, &old_charge).await.1).unwrap();
    assert_eq!(charge["type"], "charge.succeeded");
    assert_eq!(charge["data"]["object"]["amount"], 2500);
    assert_eq!(charge["data"]["object"]["currency"], "gbp");
    assert_eq!(charge["data"]["object"]["status"], "succeeded");
    assert_eq!(charge["data"]["object"]["payment_intent"], old_pi.as_str());
    assert_eq!(
        charge["data"]["object"]["metadata"]["donation_id"],
        old.to_string()
    );
    // The recent one and the pending one keep theirs.
    for id in [&recent_intent, &pending] {
        let (_, payload, removed) = stored(&app, id).await;
        assert!(removed.is_none(), "{id}");
        assert!(payload.contains("Philippa"), "{id} kept as Stripe sent it");
    }

    // Done once: nothing more to strip, and a stripped payload is not touched again.
    let stripped_at = stored(&app, &old_charge).await.2;
    assert_eq!(
        payloads::strip_expired(&app.db, RETENTION, 500)
            .await
            .unwrap(),
        0
    );
    assert_eq!(stored(&app, &old_charge).await.2, stripped_at);

    // A replay of the stripped events applies as before.
    for id in [&old_intent, &old_charge] {
        sqlx::query(
            "UPDATE stripe_events SET state = 'pending', next_attempt_at = now() WHERE id = $1",
        )
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
    }
    app.apply_events().await;
    for id in [&old_intent, &old_charge] {
        let (state, _, _) = stored(&app, id).await;
        assert_eq!(state, "applied", "{id}");
        let error: Option<String> =
            sqlx::query_scalar("SELECT last_error FROM stripe_events WHERE id = $1")
                .bind(id)
                .fetch_one(&app.db)
                .await
                .unwrap();
        assert_eq!(error, None);
    }
    assert_eq!(app.donation_facts(old).await, facts_before);
}

#[tokio::test]
async fn every_instance_strips_old_payloads_from_its_start_on() {
    let app = spawn_app_with(|s| {
        s.apply_events = false;
        s.event_payload_retention = "3650d".to_owned();
    })
    .await;
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;
    let details = billing(
        "Philippa Ravensworth",
        "pr@example.org",
        "1 Lane",
        "S19 2BD",
    );
    let (old, old_pi) = app.create_donation(2500).await;
    let (intent, charge) = pay(&app, &stripe, old, &old_pi, 2500, 40, &details).await;
    let (recent, recent_pi) = app.create_donation(2500).await;
    let (recent_intent, _) = pay(&app, &stripe, recent, &recent_pi, 2500, 0, &details).await;
    app.apply_events().await;
    assert!(stored(&app, &charge).await.2.is_none());

    // Another instance on the same database, with the default retention (30 days): its
    // housekeeping strips them as it starts (and every minute after).
    let _other = spawn_app_at(app.database_url.clone(), |_| {}).await;
    let mut left = 2_i64;
    for _ in 0..600 {
        left = sqlx::query_scalar(
            "SELECT count(*) FROM stripe_events WHERE id = ANY($1) AND personal_data_removed_at IS NULL",
        )
        .bind([&intent, &charge])
        .fetch_one(&app.db)
        .await
        .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left, 0, "the old events were never stripped");
    assert!(!stored(&app, &charge).await.1.contains("Philippa"));
    assert!(
        stored(&app, &recent_intent).await.2.is_none(),
        "a recent one is kept"
    );
}
