use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    PUBLISHABLE_KEY, assert_problem, donation_body, form_params, spawn_app,
    stripe_creates_payment_intents,
};

#[tokio::test]
async fn a_donation_is_stored_pending_and_gets_a_payment_intent_for_its_total() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;

    let response = app.post_donation("kashmir", &donation_body(), None).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();

    let id = Uuid::parse_str(body["id"].as_str().unwrap()).unwrap();
    assert_eq!(location, format!("/v1/donations/{id}"));
    assert_eq!(body["status"], "pending");
    assert_eq!(body["campaign"], "kashmir");
    assert_eq!(body["amount"], 2500);
    assert_eq!(body["cover_fees_amount"], 0);
    assert_eq!(body["total_amount"], 2500);
    assert_eq!(body["currency"], "gbp");
    assert_eq!(body["publishable_key"], PUBLISHABLE_KEY);
    let intent_id = body["payment_intent_id"].as_str().unwrap();
    assert!(intent_id.starts_with("pi_"));
    assert!(
        body["client_secret"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{intent_id}_secret_"))
    );

    // What Stripe was asked for.
    let requests = app.stripe_requests("/v1/payment_intents").await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        request.headers["idempotency-key"],
        format!("quickdonate-pi-{id}").as_str()
    );
    assert_eq!(
        request.headers["authorization"],
        "Bearer sk_test_quickdonate"
    );
    let form = form_params(request);
    assert_eq!(form["amount"], "2500");
    assert_eq!(form["currency"], "gbp");
    assert_eq!(form["metadata[donation_id]"], id.to_string());
    assert_eq!(form["metadata[campaign]"], "kashmir");
    assert_eq!(form["metadata[cover_fees_amount]"], "0");
    assert_eq!(form["automatic_payment_methods[enabled]"], "true");
    assert_eq!(form["statement_descriptor_suffix"], "DONATION");
    // Donor data stays out of Stripe's metadata and description.
    let metadata_keys: Vec<&String> = form.keys().filter(|k| k.starts_with("metadata[")).collect();
    assert_eq!(metadata_keys.len(), 3, "{metadata_keys:?}");
    let sent = String::from_utf8_lossy(&request.body).to_string();
    for personal in ["amina", "Amina", "Khan"] {
        assert!(
            !sent.contains(personal),
            "{personal} reached Stripe: {sent}"
        );
    }

    // What we stored.
    let row: (String, Option<String>, i64, String, String) = sqlx::query_as(
        "SELECT status, payment_intent_id, total_amount, donor_email, frequency FROM donations WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "pending".into(),
            Some(intent_id.to_owned()),
            2500,
            "amina@example.org".into(),
            "one_off".into()
        )
    );
}

#[tokio::test]
async fn covering_the_fees_charges_the_grossed_up_total() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let mut request = donation_body();
    request["amount"] = json!(1000);
    request["cover_fees"] = json!(true);

    let body: Value = app
        .post_donation("kashmir", &request, None)
        .await
        .json()
        .await
        .unwrap();
    // 1.5% + 20p: 1036 - (ceil(15.54) + 20) = 1000 for the charity.
    assert_eq!(body["amount"], 1000);
    assert_eq!(body["cover_fees_amount"], 36);
    assert_eq!(body["total_amount"], 1036);
    let form = form_params(&app.stripe_requests("/v1/payment_intents").await[0]);
    assert_eq!(form["amount"], "1036");
}

#[tokio::test]
async fn the_fee_model_comes_from_the_configuration() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.fee_percent_bps = 0;
        s.fee_fixed_amount = 30;
    })
    .await;
    stripe_creates_payment_intents(&app).await;
    let mut request = donation_body();
    request["cover_fees"] = json!(true);
    let body: Value = app
        .post_donation("kashmir", &request, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["cover_fees_amount"], 30);
}

#[tokio::test]
async fn a_gift_aid_declaration_is_kept_apart_with_a_normalised_postcode() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let mut request = donation_body();
    request["anonymous"] = json!(true);
    request["gift_aid"] = json!({
        "declared": true, "title": "Ms", "house_name_or_number": "Flat 2, 10",
        "postcode": "s19 2bd", "country": "GB"
    });
    let body: Value = app
        .post_donation("kashmir", &request, None)
        .await
        .json()
        .await
        .unwrap();
    let id = Uuid::parse_str(body["id"].as_str().unwrap()).unwrap();

    let (title, house, postcode, anonymous): (Option<String>, String, Option<String>, bool) =
        sqlx::query_as(
            "SELECT g.title, g.house_name_or_number, g.postcode, d.anonymous
             FROM gift_aid_declarations g JOIN donations d ON d.id = g.donation_id
             WHERE g.donation_id = $1",
        )
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(title.as_deref(), Some("Ms"));
    assert_eq!(house, "Flat 2, 10");
    assert_eq!(postcode.as_deref(), Some("S19 2BD"));
    assert!(anonymous);
}

#[tokio::test]
async fn a_donation_can_be_read_back_without_donor_data() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let created: Value = app
        .post_donation("kashmir", &donation_body(), None)
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();

    let response = app.get(&format!("/v1/donations/{id}")).await;
    assert_eq!(response.status(), 200);
    let donation: Value = response.json().await.unwrap();
    let keys: Vec<&str> = donation
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "status",
            "campaign",
            "amount",
            "total_amount",
            "currency",
            "refunded_amount",
            "dispute_status",
            "created_at"
        ]
    );
    assert_eq!(donation["refunded_amount"], 0);
    assert_eq!(donation["dispute_status"], serde_json::Value::Null);
    assert_eq!(donation["id"], id);
    assert_eq!(donation["status"], "pending");
    assert_eq!(donation["total_amount"], 2500);
    assert!(
        time::OffsetDateTime::parse(
            donation["created_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok()
    );
    assert!(!donation.to_string().contains("amina"));
}

#[tokio::test]
async fn an_unknown_or_malformed_donation_id_is_a_404_problem() {
    let app = spawn_app().await;
    assert_problem(
        app.get(&format!("/v1/donations/{}", Uuid::new_v4())).await,
        404,
        "not-found",
    )
    .await;
    assert_problem(app.get("/v1/donations/not-a-uuid").await, 404, "not-found").await;
}

#[tokio::test]
async fn the_website_origin_may_call_the_api_from_the_browser() {
    let app = crate::helpers::spawn_app_with(|s| {
        s.allowed_origins = "https://www.example.org".into();
    })
    .await;
    let preflight = app
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/campaigns/kashmir/donations", app.address),
        )
        .header("Origin", "https://www.example.org")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type,idempotency-key",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://www.example.org"
    );

    let other = app
        .http
        .get(format!("{}/v1/campaigns/kashmir", app.address))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
