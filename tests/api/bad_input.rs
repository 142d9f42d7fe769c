//! Every kind of bad input gets a clear RFC 9457 problem and changes nothing.

use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_problem, donation_body, problem_fields, spawn_app,
    stripe_creates_payment_intents,
};

/// Asserts that nothing was stored and Stripe was not called.
async fn assert_nothing_changed(app: &TestApp) {
    assert_eq!(app.donation_count().await, 0, "a donation was stored");
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM idempotency_keys")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(keys, 0, "an idempotency key was stored");
    assert!(
        app.stripe_requests("/v1/payment_intents").await.is_empty(),
        "Stripe was called"
    );
}

async fn post_raw(app: &TestApp, content_type: Option<&str>, body: Vec<u8>) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/v1/campaigns/kashmir/donations", app.address))
        .header("Idempotency-Key", "bad-input")
        .body(body);
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    request.send().await.unwrap()
}

fn with(changes: impl FnOnce(&mut Value)) -> Value {
    let mut body = donation_body();
    changes(&mut body);
    body
}

#[tokio::test]
async fn malformed_json_is_a_400() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    for body in [
        &b"{\"amount\": 25"[..],
        b"",
        b"not json",
        b"{\"amount\":1,}",
    ] {
        let response = post_raw(&app, Some("application/json"), body.to_vec()).await;
        assert_problem(response, 400, "malformed-json").await;
    }
    assert_nothing_changed(&app).await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_415() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let json = serde_json::to_vec(&donation_body()).unwrap();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let response = post_raw(&app, content_type, json.clone()).await;
        assert_problem(response, 415, "unsupported-media-type").await;
    }
    assert_nothing_changed(&app).await;
}

#[tokio::test]
async fn a_body_over_16_kib_is_a_413() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let body = with(|b| b["donor"]["last_name"] = json!("x".repeat(17 * 1024)));
    let response = post_raw(
        &app,
        Some("application/json"),
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    let problem = assert_problem(response, 413, "body-too-large").await;
    assert_eq!(
        problem["detail"], "The request body is larger than the 16 KiB this endpoint accepts.",
        "it says the limit"
    );
    assert_nothing_changed(&app).await;
}

#[tokio::test]
async fn each_invalid_field_is_a_422_naming_it() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "unknown field",
            with(|b| b["colour"] = json!("red")),
            vec!["colour"],
        ),
        (
            "unknown donor field",
            with(|b| b["donor"]["phone"] = json!("0")),
            vec!["donor.phone"],
        ),
        (
            "missing amount",
            with(|b| {
                b.as_object_mut().unwrap().remove("amount");
            }),
            vec!["amount"],
        ),
        (
            "missing frequency",
            with(|b| {
                b.as_object_mut().unwrap().remove("frequency");
            }),
            vec!["frequency"],
        ),
        (
            "missing donor",
            with(|b| {
                b.as_object_mut().unwrap().remove("donor");
            }),
            vec!["donor"],
        ),
        (
            "missing email",
            with(|b| {
                b["donor"].as_object_mut().unwrap().remove("email");
            }),
            vec!["donor.email"],
        ),
        (
            "missing names",
            with(|b| b["donor"] = json!({"email": "a@example.org"})),
            vec!["donor.first_name", "donor.last_name"],
        ),
        (
            "fractional amount",
            with(|b| b["amount"] = json!(25.5)),
            vec!["amount"],
        ),
        (
            "amount as a string",
            with(|b| b["amount"] = json!("2500")),
            vec!["amount"],
        ),
        (
            "zero amount",
            with(|b| b["amount"] = json!(0)),
            vec!["amount"],
        ),
        (
            "negative amount",
            with(|b| b["amount"] = json!(-100)),
            vec!["amount"],
        ),
        (
            "below the minimum",
            with(|b| b["amount"] = json!(199)),
            vec!["amount"],
        ),
        (
            "above the maximum",
            with(|b| b["amount"] = json!(1_000_001)),
            vec!["amount"],
        ),
        (
            "invalid email",
            with(|b| b["donor"]["email"] = json!("amina@")),
            vec!["donor.email"],
        ),
        (
            "email without a domain",
            with(|b| b["donor"]["email"] = json!("amina@localhost")),
            vec!["donor.email"],
        ),
        (
            "currency mismatch",
            with(|b| b["currency"] = json!("usd")),
            vec!["currency"],
        ),
        (
            "unknown frequency",
            with(|b| b["frequency"] = json!("weekly")),
            vec!["frequency"],
        ),
        (
            "anonymous not a bool",
            with(|b| b["anonymous"] = json!("yes")),
            vec!["anonymous"],
        ),
        (
            "gift aid without a house",
            with(|b| b["gift_aid"] = json!({"declared": true, "postcode": "SW1A 1AA"})),
            vec!["gift_aid.house_name_or_number"],
        ),
        ("a JSON array", json!([1, 2]), vec![""]),
        (
            "many at once",
            json!({"amount": "x", "currency": "eur", "frequency": "one_off", "donor": {"email": "nope", "first_name": "A", "last_name": "B"}, "extra": 1}),
            vec!["amount", "currency", "donor.email", "extra"],
        ),
    ];
    for (name, body, fields) in cases {
        let response = app.post_donation("kashmir", &body, Some("bad-input")).await;
        let problem = assert_problem(response, 422, "validation").await;
        assert_eq!(problem_fields(&problem), fields, "{name}: {problem}");
        for error in problem["errors"].as_array().unwrap() {
            assert!(!error["message"].as_str().unwrap().is_empty(), "{name}");
        }
    }
    assert_nothing_changed(&app).await;
}

#[tokio::test]
async fn monthly_giving_is_a_422_not_supported_yet() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let body = with(|b| b["frequency"] = json!("monthly"));
    let problem = assert_problem(
        app.post_donation("kashmir", &body, Some("bad-input")).await,
        422,
        "not-supported",
    )
    .await;
    assert_eq!(problem_fields(&problem), ["frequency"]);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("not supported yet")
    );
    assert_nothing_changed(&app).await;
}

#[tokio::test]
async fn an_unknown_campaign_is_a_404_and_stores_nothing() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let response = app
        .post_donation("atlantis", &donation_body(), Some("bad-input"))
        .await;
    assert_problem(response, 404, "not-found").await;
    assert_nothing_changed(&app).await;
}

#[tokio::test]
async fn a_malformed_idempotency_key_is_a_400() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let long = "k".repeat(300);
    for key in ["", "has space", long.as_str()] {
        let response = app
            .post_donation("kashmir", &donation_body(), Some(key))
            .await;
        assert_problem(response, 400, "invalid-idempotency-key").await;
    }
    assert_nothing_changed(&app).await;
}

#[tokio::test]
async fn unknown_paths_and_methods_are_problems_too() {
    let app = spawn_app().await;
    assert_problem(app.get("/v1/nothing-here").await, 404, "not-found").await;
    let response = app
        .http
        .delete(format!("{}/v1/campaigns/kashmir", app.address))
        .send()
        .await
        .unwrap();
    assert_problem(response, 405, "method-not-allowed").await;
}

#[tokio::test]
async fn a_problem_reads_as_a_sentence() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let problem = assert_problem(
        post_raw(&app, Some("application/json"), b"[]".to_vec()).await,
        422,
        "validation",
    )
    .await;
    assert_eq!(problem["detail"], "The body must be a JSON object.");
    let body = with(|b| b["amount"] = json!(1));
    let problem = assert_problem(
        app.post_donation("kashmir", &body, None).await,
        422,
        "validation",
    )
    .await;
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("`amount` must ") && detail.ends_with('.') && !detail.ends_with(".."),
        "{detail}"
    );
    assert_nothing_changed(&app).await;
}
