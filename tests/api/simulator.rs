//! Simulated payments: the simulator's controls drive the production path end to end.

use serde_json::{Value, json};

use quickdonate::simulator::{SECRET_KEY, SimulatedStripe};

use quickdonate::operators::access::Role;

use crate::finance_access::{get_as, token};
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
    // When simulated, this request is a 422: the body is checked before the PaymentIntent is
    // looked up, so only the absence of the route can make it a 404.
    let bad_refund = json!({"amount": "ten"});
    let simulated = simulated_app().await;
    assert_problem(
        simulate(&simulated, "pi_123", "refund", Some(bad_refund.clone())).await,
        422,
        "validation",
    )
    .await;

    let app = spawn_app().await;
    let problem = assert_problem(
        simulate(&app, "pi_123", "refund", Some(bad_refund)).await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(problem["detail"], "There is nothing at this path.");
    assert!(
        app.stripe.received_requests().await.unwrap().is_empty(),
        "Stripe was called"
    );
}

/// Creates a donation through the API; returns its id and PaymentIntent id.
async fn create(app: &TestApp) -> (String, String) {
    let created: Value = app
        .post_donation("kashmir", &donation_body(), None)
        .await
        .json()
        .await
        .unwrap();
    (
        created["id"].as_str().unwrap().to_owned(),
        created["payment_intent_id"].as_str().unwrap().to_owned(),
    )
}

/// Runs a control that must succeed; returns the types of the events it delivered, each of
/// which our webhook endpoint took.
async fn simulate_ok(app: &TestApp, pi: &str, action: &str, body: Option<Value>) -> Vec<String> {
    let response = simulate(app, pi, action, body).await;
    assert_eq!(response.status(), 200, "{action}");
    let result: Value = response.json().await.unwrap();
    result["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["delivery_status"], 200, "{e}");
            e["type"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// The object of the one event of type `kind` our webhook endpoint stored.
async fn stored_object(app: &TestApp, kind: &str) -> Value {
    let payloads: Vec<Value> =
        sqlx::query_scalar("SELECT payload::jsonb FROM stripe_events WHERE type = $1")
            .bind(kind)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(payloads.len(), 1, "{kind}: {payloads:?}");
    payloads[0]["data"]["object"].clone()
}

async fn fee_of(app: &TestApp, id: &str) -> Option<i64> {
    sqlx::query_scalar("SELECT fee FROM donations WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// A second simulated Stripe over the app's database, as a restarted process would have:
/// its base URL. It answers from what the app's own simulator stored.
async fn simulated_stripe(app: &TestApp) -> String {
    SimulatedStripe::new(app.db.clone()).start().await.unwrap()
}

/// GETs `path` from the simulated Stripe at `base`, as the Stripe client does.
async fn stripe_get(app: &TestApp, base: &str, path: &str) -> Value {
    let response = app
        .http
        .get(format!("{base}{path}"))
        .bearer_auth(SECRET_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_declined_card_makes_a_failed_charge_and_a_retry_pays_with_a_new_one() {
    let app = simulated_app().await;
    let (id, pi) = create(&app).await;

    let events = simulate_ok(&app, &pi, "fail", None).await;
    assert_eq!(events, ["charge.failed", "payment_intent.payment_failed"]);
    app.wait_until_applied().await;
    let donation: Value = app
        .get(&format!("/v1/donations/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(donation["status"], "failed");
    let failed = stored_object(&app, "charge.failed").await;
    assert_eq!(
        (
            &failed["status"],
            &failed["paid"],
            &failed["captured"],
            &failed["amount_captured"],
            &failed["balance_transaction"],
            &failed["failure_code"],
            &failed["payment_intent"],
            &failed["metadata"]["donation_id"],
        ),
        (
            &json!("failed"),
            &json!(false),
            &json!(false),
            &json!(0),
            &Value::Null,
            &json!("card_declined"),
            &json!(pi),
            &json!(id),
        )
    );
    let intent = stored_object(&app, "payment_intent.payment_failed").await;
    assert_eq!(intent["status"], "requires_payment_method");
    assert_eq!(intent["last_payment_error"]["code"], "card_declined");
    assert_eq!(intent["latest_charge"], failed["id"]);

    // The donor tries again, and the card is charged.
    let events = simulate_ok(&app, &pi, "succeed", None).await;
    assert_eq!(events, ["payment_intent.succeeded", "charge.succeeded"]);
    app.wait_until_applied().await;
    let donation: Value = app
        .get(&format!("/v1/donations/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(donation["status"], "succeeded");
    assert_eq!(fee_of(&app, &id).await, Some(58));
    let paid = stored_object(&app, "charge.succeeded").await;
    assert_ne!(paid["id"], failed["id"]);
    assert_eq!(paid["metadata"]["donation_id"], id.as_str());

    let base = simulated_stripe(&app).await;
    let intent = stripe_get(
        &app,
        &base,
        &format!("v1/payment_intents/{pi}?expand[]=latest_charge"),
    )
    .await;
    assert_eq!(intent["status"], "succeeded");
    assert_eq!(intent["latest_charge"]["id"], paid["id"]);
    assert_eq!(intent["latest_charge"]["status"], "succeeded");
}

#[tokio::test]
async fn a_payment_intent_read_from_the_simulator_expands_its_charge_fee_and_refunds() {
    let app = simulated_app().await;
    let (_, pi) = create(&app).await;
    simulate_ok(&app, &pi, "succeed", None).await;
    simulate_ok(&app, &pi, "refund", Some(json!({"amount": 1000}))).await;
    simulate_ok(&app, &pi, "refund", Some(json!({"amount": 500}))).await;
    let base = simulated_stripe(&app).await;

    let plain = stripe_get(&app, &base, &format!("v1/payment_intents/{pi}")).await;
    let charge = plain["latest_charge"].as_str().unwrap().to_owned();
    assert!(charge.starts_with("ch_sim_"), "{plain}");

    let full = stripe_get(
        &app,
        &base,
        &format!(
            "v1/payment_intents/{pi}?expand[]=latest_charge&expand[]=latest_charge.balance_transaction&expand[]=latest_charge.refunds"
        ),
    )
    .await;
    let expanded = &full["latest_charge"];
    assert_eq!(
        (
            &expanded["object"],
            &expanded["id"],
            &expanded["amount_refunded"],
            &expanded["refunded"]
        ),
        (
            &json!("charge"),
            &json!(charge),
            &json!(1500),
            &json!(false)
        )
    );
    let transaction = &expanded["balance_transaction"];
    assert_eq!(
        (
            &transaction["object"],
            &transaction["fee"],
            &transaction["net"],
            &transaction["source"]
        ),
        (
            &json!("balance_transaction"),
            &json!(58),
            &json!(2442),
            &json!(charge)
        )
    );
    let refunds = &expanded["refunds"];
    assert_eq!(refunds["object"], "list");
    assert_eq!(refunds["has_more"], false);
    assert_eq!(refunds["url"], format!("/v1/charges/{charge}/refunds"));
    let amounts: Vec<i64> = refunds["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["charge"], charge.as_str());
            r["amount"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(amounts, [500, 1000], "newest first");

    // Each expansion alone, and the charge without any: ids stay ids, refunds absent.
    let only_refunds = stripe_get(
        &app,
        &base,
        &format!("v1/payment_intents/{pi}?expand[]=latest_charge.refunds"),
    )
    .await;
    assert_eq!(
        only_refunds["latest_charge"]["balance_transaction"],
        transaction["id"]
    );
    assert_eq!(only_refunds["latest_charge"]["refunds"], *refunds);
    let only_transaction = stripe_get(
        &app,
        &base,
        &format!("v1/payment_intents/{pi}?expand[]=latest_charge.balance_transaction"),
    )
    .await;
    assert_eq!(
        only_transaction["latest_charge"]["balance_transaction"],
        *transaction
    );
    assert!(only_transaction["latest_charge"].get("refunds").is_none());
    let only_charge = stripe_get(
        &app,
        &base,
        &format!("v1/payment_intents/{pi}?expand[]=latest_charge"),
    )
    .await;
    assert_eq!(
        only_charge["latest_charge"]["balance_transaction"],
        transaction["id"]
    );
    assert!(only_charge["latest_charge"].get("refunds").is_none());

    // What the worker reads besides: the balance transaction, the charge's refunds.
    let fetched = stripe_get(
        &app,
        &base,
        &format!(
            "v1/balance_transactions/{}",
            transaction["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(fetched, *transaction);
    let listed = stripe_get(&app, &base, &format!("v1/refunds?charge={charge}")).await;
    assert_eq!(listed["data"], refunds["data"]);
}

#[tokio::test]
async fn of_two_payments_of_one_payment_intent_at_once_only_one_succeeds() {
    let app = simulated_app().await;
    let (_, pi) = create(&app).await;

    // Hold the simulator's row of the PaymentIntent, so both requests are surely under way
    // (each waiting for the row) before either can finish.
    let mut hold = app.db.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM simulator_payment_intents WHERE id = $1 FOR UPDATE")
        .bind(&pi)
        .execute(&mut *hold)
        .await
        .unwrap();
    let url = format!("{}/v1/simulator/payment_intents/{pi}/succeed", app.address);
    let requests = [
        tokio::spawn(app.http.post(&url).send()),
        tokio::spawn(app.http.post(&url).send()),
    ];
    let mut waiting: i64 = 0;
    for _ in 0..500 {
        waiting = sqlx::query_scalar(
            r#"SELECT count(*) FROM pg_stat_activity
               WHERE datname = current_database() AND wait_event_type = 'Lock'"#,
        )
        .fetch_one(&app.db)
        .await
        .unwrap();
        if waiting == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(waiting, 2, "both requests wait for the PaymentIntent");
    hold.commit().await.unwrap();

    let mut statuses = Vec::new();
    for request in requests {
        let response = request.await.unwrap().unwrap();
        let status = response.status().as_u16();
        if status != 200 {
            assert_problem(response, 409, "simulation-refused").await;
        }
        statuses.push(status);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    app.wait_until_applied().await;
    let charges: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE type = 'charge.succeeded'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(charges, 1);
}

#[tokio::test]
async fn a_restarted_simulated_stripe_answers_a_reused_idempotency_key_as_stripe_does() {
    let app = simulated_app().await;
    let create = |base: String, amount: &'static str| {
        app.http
            .post(format!("{base}v1/payment_intents"))
            .bearer_auth(SECRET_KEY)
            .header("idempotency-key", "same-key")
            .form(&[("amount", amount), ("currency", "gbp")])
            .send()
    };
    let first = create(simulated_stripe(&app).await, "2500").await.unwrap();
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    // What it made changes after; a replay still answers what the first request got.
    SimulatedStripe::new(app.db.clone())
        .succeed(first["id"].as_str().unwrap())
        .await
        .unwrap();

    let base = simulated_stripe(&app).await;
    let again = create(base.clone(), "2500").await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first);

    let other = create(base, "3000").await.unwrap();
    assert_eq!(other.status(), 400);
    let error: Value = other.json().await.unwrap();
    assert_eq!(error["error"]["type"], "idempotency_error");
}

/// Every item of the list at `path` (a query without `limit`), read one page at a time with
/// `limit=1` and `starting_after`, as the Stripe client pages; each page but the last says
/// it has more.
async fn list_page_by_page(app: &TestApp, base: &str, path: &str) -> Vec<Value> {
    let mut items: Vec<Value> = Vec::new();
    for _ in 0..100 {
        let mut page_path = format!("{path}&limit=1");
        if let Some(last) = items.last() {
            page_path.push_str(&format!("&starting_after={}", last["id"].as_str().unwrap()));
        }
        let page = stripe_get(app, base, &page_path).await;
        assert_eq!(page["object"], "list", "{page}");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 1, "{page}");
        items.extend(data.iter().cloned());
        if !page["has_more"].as_bool().unwrap() {
            return items;
        }
        assert_eq!(
            data.len(),
            1,
            "a page with more after it is not empty: {page}"
        );
    }
    panic!("{path}: the list never ended");
}

/// The ids of the simulated refunds, in the order they were made.
async fn refund_ids(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM simulator_refunds ORDER BY seq")
        .fetch_all(&app.db)
        .await
        .unwrap()
}

/// The balance transaction of a PaymentIntent's charge, read from the simulator.
async fn charge_transaction(app: &TestApp, base: &str, pi: &str) -> Value {
    let intent = stripe_get(
        app,
        base,
        &format!("v1/payment_intents/{pi}?expand[]=latest_charge.balance_transaction"),
    )
    .await;
    intent["latest_charge"]["balance_transaction"].clone()
}

#[tokio::test]
async fn a_refund_has_its_own_balance_transaction_read_through_the_payment_intent() {
    let app = simulated_app().await;
    let (_, pi) = create(&app).await;
    simulate_ok(&app, &pi, "succeed", None).await;
    simulate_ok(&app, &pi, "refund", Some(json!({"amount": 1000}))).await;
    simulate_ok(&app, &pi, "refund", Some(json!({"amount": 300}))).await;
    app.wait_until_applied().await;
    let refunds = refund_ids(&app).await;
    assert_eq!(refunds.len(), 2);
    let base = simulated_stripe(&app).await;

    // The one expansion the service asks for brings the charge, its refunds and theirs.
    let intent = stripe_get(
        &app,
        &base,
        &format!("v1/payment_intents/{pi}?expand[]=latest_charge.refunds.data.balance_transaction"),
    )
    .await;
    let charge = &intent["latest_charge"];
    let listed = charge["refunds"]["data"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "{charge}");
    for (refund, amount) in listed.iter().zip([300, 1000]) {
        assert_eq!(refund["amount"], amount, "newest first");
        assert_eq!(refund["status"], "succeeded");
        assert_eq!(refund["failure_balance_transaction"], Value::Null);
        let transaction = &refund["balance_transaction"];
        assert!(
            transaction["id"].as_str().unwrap().starts_with("txn_sim_"),
            "{refund}"
        );
        assert_eq!(
            (
                &transaction["object"],
                &transaction["type"],
                &transaction["reporting_category"],
                &transaction["amount"],
                &transaction["fee"],
                &transaction["net"],
                &transaction["currency"],
                &transaction["source"],
            ),
            (
                &json!("balance_transaction"),
                &json!("refund"),
                &json!("refund"),
                &json!(-amount),
                &json!(0),
                &json!(-amount),
                &json!("gbp"),
                &refund["id"],
            )
        );
    }
    assert_eq!(listed[1]["id"], refunds[0].as_str());
    // The charge's own transaction stays an id unless asked for.
    assert!(charge["balance_transaction"].is_string(), "{charge}");

    // The refund as its event carried it names the same transaction, by id.
    let events: Vec<Value> = sqlx::query_scalar(
        "SELECT payload::jsonb #> '{data,object}' FROM stripe_events WHERE type = 'refund.created'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    for refund in events {
        let read = listed.iter().find(|r| r["id"] == refund["id"]).unwrap();
        assert_eq!(
            refund["balance_transaction"],
            read["balance_transaction"]["id"]
        );
    }

    // The refunds list expands the same, and pages as the service pages it.
    let charge_id = charge["id"].as_str().unwrap();
    let expanded = stripe_get(
        &app,
        &base,
        &format!("v1/refunds?charge={charge_id}&expand[]=data.balance_transaction"),
    )
    .await;
    assert_eq!(expanded["data"], charge["refunds"]["data"]);
    let paged = list_page_by_page(&app, &base, &format!("v1/refunds?charge={charge_id}")).await;
    let paged: Vec<&str> = paged.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(paged, [refunds[1].as_str(), refunds[0].as_str()]);

    // An expansion the simulator does not offer is refused, as Stripe refuses one.
    let refused = app
        .http
        .get(format!(
            "{base}v1/payment_intents/{pi}?expand[]=latest_charge.refunds.data.charge"
        ))
        .bearer_auth(SECRET_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
}

/// Fails refund `id` through the control.
async fn fail_refund(app: &TestApp, id: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/simulator/refunds/{id}/fail", app.address))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_refund_that_fails_puts_the_money_back_with_a_refund_failure_transaction() {
    let app = simulated_app().await;
    let (id, pi) = create(&app).await;
    simulate_ok(&app, &pi, "succeed", None).await;
    // The refund control names the refund it made.
    let made: Value = simulate(&app, &pi, "refund", Some(json!({"amount": 1000})))
        .await
        .json()
        .await
        .unwrap();
    let refund = made["refund"].as_str().unwrap().to_owned();
    assert_eq!(refund_ids(&app).await, std::slice::from_ref(&refund));
    app.wait_until_applied().await;
    assert_eq!(app.campaign().await["raised_amount"], 1500);

    let response = fail_refund(&app, &refund).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["refund"], refund.as_str());
    let events: Vec<&str> = answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["delivery_status"], 200, "{e}");
            e["type"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        events,
        ["refund.updated", "refund.failed", "charge.refund.updated"]
    );
    // The service applies them: the money is the charity's again.
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
        (Some("succeeded"), Some(0))
    );
    assert_eq!(app.campaign().await["raised_amount"], 2500);
    let failed = stored_object(&app, "refund.failed").await;
    assert_eq!(failed["status"], "failed");
    assert!(failed["failure_reason"].is_string(), "{failed}");

    let base = simulated_stripe(&app).await;
    let intent = stripe_get(
        &app,
        &base,
        &format!(
            "v1/payment_intents/{pi}?expand[]=latest_charge.refunds.data.balance_transaction&expand[]=latest_charge.refunds.data.failure_balance_transaction"
        ),
    )
    .await;
    let charge = &intent["latest_charge"];
    assert_eq!(
        (&charge["amount_refunded"], &charge["refunded"]),
        (&json!(0), &json!(false))
    );
    let read = &charge["refunds"]["data"][0];
    assert_eq!(read["status"], "failed");
    assert_eq!(read["balance_transaction"]["amount"], -1000);
    let failure = &read["failure_balance_transaction"];
    assert_eq!(failure["id"], failed["failure_balance_transaction"]);
    assert_eq!(
        (
            &failure["object"],
            &failure["type"],
            &failure["reporting_category"],
            &failure["amount"],
            &failure["fee"],
            &failure["net"],
            &failure["currency"],
            &failure["source"],
        ),
        (
            &json!("balance_transaction"),
            &json!("refund_failure"),
            &json!("refund_failure"),
            &json!(1000),
            &json!(0),
            &json!(1000),
            &json!("gbp"),
            &json!(refund),
        )
    );
    let listed = stripe_get(
        &app,
        &base,
        &format!(
            "v1/refunds?charge={}&expand[]=data.failure_balance_transaction",
            charge["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(listed["data"][0]["failure_balance_transaction"], *failure);
    assert!(listed["data"][0]["balance_transaction"].is_string());

    // A failed refund cannot fail again; a refund the simulator never made is not found.
    assert_problem(fail_refund(&app, &refund).await, 409, "simulation-refused").await;
    assert_problem(fail_refund(&app, "re_sim_unknown").await, 404, "not-found").await;
}

/// Runs the payout control with `body`.
async fn pay_out(app: &TestApp, body: Option<Value>) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/v1/simulator/payouts", app.address));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// Runs the payout control, which must make one payout; returns it (as the control answers)
/// and its events' types, after checking that our webhook endpoint took each and stored it to
/// be applied.
async fn pay_out_ok(app: &TestApp, body: Option<Value>) -> (Value, Vec<String>) {
    let response = pay_out(app, body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let payouts = answer["payouts"].as_array().unwrap();
    assert_eq!(payouts.len(), 1, "{answer}");
    let mut kinds = Vec::new();
    for event in answer["events"].as_array().unwrap() {
        assert_eq!(event["delivery_status"], 200, "{event}");
        let (state, object): (String, Value) = sqlx::query_as(
            "SELECT state, payload::jsonb #> '{data,object}' FROM stripe_events WHERE id = $1",
        )
        .bind(event["id"].as_str().unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert_ne!(state, "ignored", "payout events are applied: {event}");
        assert_eq!(object["id"], payouts[0]["id"]);
        kinds.push(event["type"].as_str().unwrap().to_owned());
    }
    (payouts[0].clone(), kinds)
}

/// The nets of `transactions`, added up.
fn net_of(transactions: &[Value]) -> i64 {
    transactions
        .iter()
        .map(|t| t["net"].as_i64().unwrap())
        .sum()
}

#[tokio::test]
async fn a_payout_pays_out_the_balance_once_and_lists_what_it_paid_out() {
    let app = simulated_app().await;
    let (_, first) = create(&app).await;
    let (_, second) = create(&app).await;
    simulate_ok(&app, &first, "succeed", None).await;
    simulate_ok(&app, &second, "succeed", None).await;
    simulate_ok(&app, &first, "refund", Some(json!({"amount": 1000}))).await;
    let base = simulated_stripe(&app).await;
    let first_charge = charge_transaction(&app, &base, &first).await;
    let second_charge = charge_transaction(&app, &base, &second).await;
    let refund = refund_ids(&app).await.remove(0);

    let (made, events) = pay_out_ok(&app, None).await;
    assert_eq!(
        events,
        [
            "payout.created",
            "payout.paid",
            "payout.reconciliation_completed"
        ]
    );
    // Two gifts of 2500 less the fee of 58 each, less the refund.
    assert_eq!(
        (&made["amount"], &made["currency"], &made["status"]),
        (&json!(2442 + 2442 - 1000), &json!("gbp"), &json!("paid"))
    );
    let id = made["id"].as_str().unwrap();
    assert!(id.starts_with("po_sim_"), "{made}");

    let payout = stripe_get(&app, &base, &format!("v1/payouts/{id}")).await;
    assert_eq!(
        (
            &payout["object"],
            &payout["amount"],
            &payout["currency"],
            &payout["status"],
            &payout["automatic"],
            &payout["reconciliation_status"],
            &payout["failure_balance_transaction"],
        ),
        (
            &json!("payout"),
            &json!(3884),
            &json!("gbp"),
            &json!("paid"),
            &json!(true),
            &json!("completed"),
            &Value::Null,
        )
    );
    assert!(payout["arrival_date"].as_i64() > payout["created"].as_i64());
    // Applied, the payout reconciles to the penny: both gifts and the refund are in the ledger.
    app.wait_until_applied().await;
    let finance = token(&app, "finance", Role::Finance).await;
    let shown: Value = get_as(&app, Some(&finance), &format!("/v1/finance/payouts/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            &shown["difference"],
            &shown["transaction_count"],
            &shown["donation_count"],
            &shown["unmatched"]
        ),
        (&json!(0), &json!(3), &json!(2), &json!([])),
        "{shown}"
    );
    // The events carry the payout as it was at each step, the last as it is now.
    let statuses: Vec<(String, String)> = sqlx::query_as(
        r#"SELECT payload::jsonb #>> '{data,object,status}',
                  payload::jsonb #>> '{data,object,reconciliation_status}'
           FROM stripe_events WHERE type LIKE 'payout.%' ORDER BY first_received_at"#,
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let step = |s: &str, r: &str| (s.to_owned(), r.to_owned());
    assert_eq!(
        statuses,
        [
            step("pending", "in_progress"),
            step("paid", "in_progress"),
            step("paid", "completed")
        ]
    );

    // Everything it paid out, page by page, newest first: its own payout transaction, the
    // refund, the second gift, the first.
    let listed =
        list_page_by_page(&app, &base, &format!("v1/balance_transactions?payout={id}")).await;
    let kinds: Vec<(&str, &str)> = listed
        .iter()
        .map(|t| (t["type"].as_str().unwrap(), t["source"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("payout", id),
            ("refund", refund.as_str()),
            ("charge", second_charge["source"].as_str().unwrap()),
            ("charge", first_charge["source"].as_str().unwrap()),
        ]
    );
    assert_eq!(listed[0]["id"], payout["balance_transaction"]);
    assert_eq!(
        (
            &listed[0]["amount"],
            &listed[0]["net"],
            &listed[0]["reporting_category"]
        ),
        (&json!(-3884), &json!(-3884), &json!("payout"))
    );
    assert_eq!(listed[3]["id"], first_charge["id"]);
    // The payout is the sum of what it paid out; with its own transaction, nothing is left.
    assert_eq!(net_of(&listed[1..]), 3884);
    assert_eq!(net_of(&listed), 0);
    // Paid out, each was available.
    assert!(listed.iter().all(|t| t["status"] == "available"));

    // One page of all, each source expanded, as Stripe's reconciliation guide reads them.
    let expanded = stripe_get(
        &app,
        &base,
        &format!("v1/balance_transactions?payout={id}&expand[]=data.source"),
    )
    .await;
    assert_eq!(expanded["has_more"], false);
    let objects: Vec<&str> = expanded["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["source"]["object"].as_str().unwrap())
        .collect();
    assert_eq!(objects, ["payout", "refund", "charge", "charge"]);

    // A third gift: the next payout holds it alone, nothing already paid out.
    let (_, third) = create(&app).await;
    simulate_ok(&app, &third, "succeed", None).await;
    let third_charge = charge_transaction(&app, &base, &third).await;
    let (next, _) = pay_out_ok(&app, None).await;
    assert_eq!(next["amount"], 2442);
    let next_id = next["id"].as_str().unwrap();
    let listed = list_page_by_page(
        &app,
        &base,
        &format!("v1/balance_transactions?payout={next_id}"),
    )
    .await;
    let ids: Vec<&Value> = listed.iter().map(|t| &t["id"]).collect();
    let next_payout = stripe_get(&app, &base, &format!("v1/payouts/{next_id}")).await;
    assert_eq!(
        ids,
        [&next_payout["balance_transaction"], &third_charge["id"]]
    );

    // Nothing left: no payout, and a problem that says why.
    let problem = assert_problem(pay_out(&app, None).await, 409, "simulation-refused").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("nothing to pay out"),
        "{problem}"
    );
    let payouts = list_page_by_page(&app, &base, "v1/payouts?").await;
    let ids: Vec<&str> = payouts.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [next_id, id], "newest first");
    // An unknown payout is not an empty list.
    let unknown = app
        .http
        .get(format!(
            "{base}v1/balance_transactions?payout=po_sim_unknown"
        ))
        .bearer_auth(SECRET_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn a_failed_payout_puts_its_money_back_for_the_next_payout() {
    let app = simulated_app().await;
    assert_problem(pay_out(&app, None).await, 409, "simulation-refused").await;
    let (_, pi) = create(&app).await;
    simulate_ok(&app, &pi, "succeed", None).await;
    let base = simulated_stripe(&app).await;
    let charge = charge_transaction(&app, &base, &pi).await;
    // The body is checked before anything is paid out.
    assert_problem(
        pay_out(&app, Some(json!({"fail": "yes"}))).await,
        422,
        "validation",
    )
    .await;
    assert_problem(
        pay_out(&app, Some(json!({"amount": 5}))).await,
        422,
        "validation",
    )
    .await;

    let (made, events) = pay_out_ok(&app, Some(json!({"fail": true}))).await;
    assert_eq!(
        events,
        [
            "payout.created",
            "payout.failed",
            "payout.reconciliation_completed"
        ]
    );
    assert_eq!(
        (&made["amount"], &made["status"]),
        (&json!(2442), &json!("failed"))
    );
    let id = made["id"].as_str().unwrap();
    let payout = stripe_get(
        &app,
        &base,
        &format!(
            "v1/payouts/{id}?expand[]=balance_transaction&expand[]=failure_balance_transaction"
        ),
    )
    .await;
    assert_eq!(payout["status"], "failed");
    assert!(payout["failure_code"].is_string(), "{payout}");
    let paid = &payout["balance_transaction"];
    assert_eq!(
        (&paid["type"], &paid["amount"], &paid["source"]),
        (&json!("payout"), &json!(-2442), &json!(id))
    );
    let failure = &payout["failure_balance_transaction"];
    assert_eq!(
        (
            &failure["object"],
            &failure["type"],
            &failure["reporting_category"],
            &failure["amount"],
            &failure["net"],
            &failure["currency"],
            &failure["source"],
        ),
        (
            &json!("balance_transaction"),
            &json!("payout_failure"),
            &json!("payout_reversal"),
            &json!(2442),
            &json!(2442),
            &json!("gbp"),
            &json!(id),
        )
    );
    // The failed payout still holds what it paid out; the money it gave back is in the
    // balance again.
    let listed =
        list_page_by_page(&app, &base, &format!("v1/balance_transactions?payout={id}")).await;
    let ids: Vec<&Value> = listed.iter().map(|t| &t["id"]).collect();
    assert_eq!(ids, [&paid["id"], &charge["id"]]);

    let (next, events) = pay_out_ok(&app, Some(json!({"fail": false}))).await;
    assert_eq!(events[1], "payout.paid");
    assert_eq!(
        (&next["amount"], &next["status"]),
        (&json!(2442), &json!("paid"))
    );
    let next_id = next["id"].as_str().unwrap();
    let listed = list_page_by_page(
        &app,
        &base,
        &format!("v1/balance_transactions?payout={next_id}"),
    )
    .await;
    let kinds: Vec<&str> = listed.iter().map(|t| t["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["payout", "payout_failure"]);
    assert_eq!(listed[1]["id"], failure["id"]);
    assert_eq!(net_of(&listed[1..]), 2442);

    // The whole balance's history, newest first: it adds up to nothing left.
    let all = list_page_by_page(&app, &base, "v1/balance_transactions?").await;
    let kinds: Vec<&str> = all.iter().map(|t| t["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["payout", "payout_failure", "payout", "charge"]);
    assert_eq!(net_of(&all), 0);
}

#[tokio::test]
async fn a_control_answers_once_its_events_are_applied_so_the_next_read_shows_them() {
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
    let states = |answer: &Value| -> Vec<String> {
        answer["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["state"].as_str().unwrap_or("(none)").to_owned())
            .collect()
    };

    let paid: Value = simulate(&app, pi, "succeed", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(states(&paid), ["applied", "applied"], "{paid}");
    // No waiting: the very next reads show the payment.
    let donation: Value = app
        .get(&format!("/v1/donations/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(donation["status"], "succeeded");
    assert_eq!(app.campaign().await["raised_amount"], 2500);

    let refunded: Value = simulate(&app, pi, "refund", Some(json!({"amount": 1000})))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        states(&refunded).iter().all(|s| s == "applied"),
        "{refunded}"
    );
    let donation: Value = app
        .get(&format!("/v1/donations/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(donation["refunded_amount"], 1000);
}

#[tokio::test]
async fn without_a_worker_a_control_answers_at_once_and_says_its_events_wait() {
    let app = spawn_app_with(|s| {
        s.stripe_secret_key = None;
        s.stripe_publishable_key = None;
        s.apply_events = false;
    })
    .await;
    let created: Value = app
        .post_donation("kashmir", &donation_body(), None)
        .await
        .json()
        .await
        .unwrap();
    let pi = created["payment_intent_id"].as_str().unwrap();
    let started = std::time::Instant::now();
    let paid: Value = simulate(&app, pi, "succeed", None)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        started.elapsed() < quickdonate::simulator::routes::APPLIED_WITHIN,
        "it does not wait for a worker that is not there"
    );
    for event in paid["events"].as_array().unwrap() {
        assert_eq!(event["state"], "pending", "{event}");
    }
    app.apply_events().await;
    assert_eq!(app.campaign().await["raised_amount"], 2500);
}
