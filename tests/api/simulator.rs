//! Simulated payments: the simulator's controls drive the production path end to end.

use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, donation_body, spawn_app, spawn_app_with};

async fn simulated_app() -> TestApp {
    spawn_app_with(|s| {
        s.stripe_secret_key = None;
        s.stripe_publishable_key = None;
    })
    .await
}

async fn simulate(app: &TestApp, pi: &str, action: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = app.http.post(format!(
        "{}/v1/simulator/payment_intents/{pi}/{action}",
        app.address
    ));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_simulated_donation_goes_from_pending_to_succeeded_to_partly_refunded() {
    let app = simulated_app().await;
    let created: Value = app
        .post_donation("kashmir", &donation_body(), None)
        .await
        .json()
        .await
        .unwrap();
    let (id, pi) = (
        created["id"].as_str().unwrap(),
        created["payment_intent_id"].as_str().unwrap(),
    );
    assert!(pi.starts_with("pi_sim_"));

    let response = simulate(&app, pi, "succeed", None).await;
    assert_eq!(response.status(), 200);
    let result: Value = response.json().await.unwrap();
    let events: Vec<&str> = result["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["delivery_status"], 200, "{e}");
            e["type"].as_str().unwrap()
        })
        .collect();
    assert_eq!(events, ["payment_intent.succeeded", "charge.succeeded"]);
    app.wait_until_applied().await;
    let donation: Value = app
        .get(&format!("/v1/donations/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(donation["status"], "succeeded");
    assert_eq!(app.campaign().await["raised_amount"], 2500);
    // The simulated fee: 1.5% of 2500, rounded, plus 20p.
    let fee: Option<i64> = sqlx::query_scalar("SELECT fee FROM donations WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(fee, Some(58));

    let response = simulate(&app, pi, "refund", Some(json!({"amount": 1000}))).await;
    assert_eq!(response.status(), 200);
    app.wait_until_applied().await;
    let donation: Value = app
        .get(&format!("/v1/donations/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            donation["status"].as_str(),
            donation["refunded_amount"].as_i64()
        ),
        (Some("succeeded"), Some(1000))
    );
    assert_eq!(app.campaign().await["raised_amount"], 1500);

    // The rest: fully refunded, and the campaign total drops to nothing.
    assert_eq!(simulate(&app, pi, "refund", None).await.status(), 200);
    app.wait_until_applied().await;
    let donation: Value = app
        .get(&format!("/v1/donations/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(donation["status"], "refunded");
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
async fn a_simulated_decline_fails_the_donation() {
    let app = simulated_app().await;
    let created: Value = app
        .post_donation("kashmir", &donation_body(), None)
        .await
        .json()
        .await
        .unwrap();
    let pi = created["payment_intent_id"].as_str().unwrap();
    assert_eq!(simulate(&app, pi, "fail", None).await.status(), 200);
    app.wait_until_applied().await;
    let donation: Value = app
        .get(&format!(
            "/v1/donations/{}",
            created["id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(donation["status"], "failed");
    // A refund of an unpaid gift is refused, and so is too large a refund of a paid one.
    assert_problem(
        simulate(&app, pi, "refund", None).await,
        409,
        "simulation-refused",
    )
    .await;
    assert_eq!(simulate(&app, pi, "succeed", None).await.status(), 200);
    assert_problem(
        simulate(&app, pi, "refund", Some(json!({"amount": 999_999}))).await,
        422,
        "validation",
    )
    .await;
    assert_problem(
        simulate(&app, pi, "refund", Some(json!({"amount": "ten"}))).await,
        422,
        "validation",
    )
    .await;
    assert_problem(
        simulate(&app, "pi_sim_unknown", "succeed", None).await,
        404,
        "not-found",
    )
    .await;
}

#[tokio::test]
async fn the_simulator_does_not_exist_when_a_real_stripe_key_is_set() {
    let app = spawn_app().await;
    assert_problem(
        simulate(&app, "pi_123", "succeed", None).await,
        404,
        "not-found",
    )
    .await;
}
