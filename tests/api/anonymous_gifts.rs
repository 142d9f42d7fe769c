//! An anonymous gift (`anonymous: true`) never shows the donor's name, nor their email or
//! address, in anything public: the creation answer and its replay, the donation, the
//! campaign, and the problems a bad request gets; nor in what we send Stripe.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{event, objects, spawn_app, stripe_creates_payment_intents};

const PERSONAL: &[&str] = &[
    "Wilhelmina",
    "Fotheringay",
    "w.fotheringay@example.org",
    "Larkspur House",
    "LS1 4AP",
];

fn assert_no_donor_data(what: &str, text: &str) {
    for personal in PERSONAL {
        assert!(
            !text.to_lowercase().contains(&personal.to_lowercase()),
            "{what} shows {personal:?}: {text}"
        );
    }
}

async fn public(what: &str, response: reqwest::Response) -> Value {
    let headers = format!("{:?}", response.headers());
    assert_no_donor_data(&format!("{what}'s headers"), &headers);
    let text = response.text().await.unwrap();
    assert_no_donor_data(what, &text);
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test]
async fn an_anonymous_gift_never_shows_the_donor_in_a_public_answer() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let body = json!({
        "amount": 2500, "frequency": "one_off", "anonymous": true,
        "donor": {"email": "w.fotheringay@example.org", "first_name": "Wilhelmina",
                  "last_name": "Fotheringay"},
        "gift_aid": {"declared": true, "title": "Lady", "house_name_or_number": "Larkspur House",
                     "postcode": "ls14ap", "country": "GB"}
    });
    let key = "anonymous-gift-1";
    let created = app.post_donation("kashmir", &body, Some(key)).await;
    assert_eq!(created.status(), 201);
    let created = public("the creation answer", created).await;
    let id = Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();
    let pi = created["payment_intent_id"].as_str().unwrap().to_owned();
    let anonymous: bool = sqlx::query_scalar("SELECT anonymous FROM donations WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(anonymous, "the choice is stored");

    let replayed = app.post_donation("kashmir", &body, Some(key)).await;
    assert_eq!(replayed.status(), 201);
    public("the replayed answer", replayed).await;
    let mut changed = body.clone();
    changed["amount"] = json!(3000);
    let reused = app.post_donation("kashmir", &changed, Some(key)).await;
    assert!(reused.status().is_client_error());
    public("the problem for a reused key", reused).await;
    let mut invalid = body.clone();
    invalid["donor"]["email"] = json!("Wilhelmina Fotheringay, Larkspur House LS1 4AP");
    invalid["gift_aid"]["postcode"] = json!("Wilhelmina Fotheringay");
    let refused = app.post_donation("kashmir", &invalid, None).await;
    assert_eq!(refused.status(), 422);
    public("a validation problem", refused).await;

    // Paid, so the campaign counts it.
    let intent = objects::payment_intent(&pi, Some(id), "succeeded", 2500);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert_eq!(
        app.deliver(&event("payment_intent.succeeded", intent, now))
            .await
            .status(),
        200
    );
    app.wait_until_applied().await;

    let donation = public(
        "the donation",
        app.get(&format!("/v1/donations/{id}")).await,
    )
    .await;
    assert_eq!(donation["status"], "succeeded");
    let campaign = public("the campaign", app.get("/v1/campaigns/kashmir").await).await;
    assert_eq!(campaign["donation_count"], 1);
    public(
        "an unknown donation",
        app.get(&format!("/v1/donations/{}", Uuid::now_v7())).await,
    )
    .await;

    // Nor does Stripe get any of it: not in metadata, description or receipt_email.
    let sent = app.stripe.received_requests().await.unwrap();
    assert!(!sent.is_empty());
    for request in sent {
        let text = format!("{} {}", request.url, String::from_utf8_lossy(&request.body));
        assert_no_donor_data("a request to Stripe", &text);
    }
}
