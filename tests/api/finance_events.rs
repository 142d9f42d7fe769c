//! The event log's failures in the finance API: `GET /v1/finance/events` lists them and
//! `POST /v1/finance/events/{id}/replay` retries one, for admins only, both audited.

use quickdonate::operators::access::Role;
use reqwest::Response;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::finance_access::{audit_rows, get_as, token};
use crate::helpers::{
    StripeObjects, TestApp, assert_problem, event, objects, problem_fields, spawn_app_with,
    stripe_creates_payment_intents,
};

const AMOUNT: i64 = 2500;

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// An app whose events are applied only when the test says, each set aside as failed after
/// its first failed attempt, with a fake Stripe serving `stripe`'s objects.
async fn manual_app() -> (TestApp, StripeObjects) {
    let app = spawn_app_with(|s| {
        s.apply_events = false;
        s.event_max_attempts = 1;
    })
    .await;
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;
    (app, stripe)
}

/// POST `/v1/finance/events/{id}/replay` with the bearer token (none when `token` is None).
async fn replay_as(app: &TestApp, token: Option<&str>, id: &str) -> Response {
    let mut request = app
        .http
        .post(format!("{}/v1/finance/events/{id}/replay", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("the request is sent")
}

/// The events `GET path` lists for `token`.
async fn listed(app: &TestApp, token: &str, path: &str) -> Vec<Value> {
    let response = get_as(app, Some(token), path).await;
    assert_eq!(response.status(), 200, "{path}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["data"],
        "{body}"
    );
    body["data"].as_array().unwrap().clone()
}

fn ids(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["id"].as_str().unwrap()).collect()
}

async fn state_of(app: &TestApp, id: &str) -> String {
    sqlx::query_scalar("SELECT state FROM stripe_events WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

/// A charge event whose payment Stripe will not show (404) yet: set aside as failed on its
/// first attempt. Returns the event's id and the charge, for Stripe to show later.
async fn a_failed_event(app: &TestApp, donation: Uuid, pi: &str) -> (String, Value) {
    let mut charge = objects::charge("ch_ev", pi, AMOUNT, 0, Some("txn_ev"));
    charge["metadata"] = json!({"donation_id": donation.to_string()});
    let charged = event("charge.succeeded", charge.clone(), now());
    assert_eq!(app.deliver(&charged).await.status(), 200);
    (charged["id"].as_str().unwrap().to_owned(), charge)
}

#[tokio::test]
async fn a_failed_event_is_listed_for_admins_and_a_replay_applies_it_once_its_cause_is_fixed() {
    let (app, stripe) = manual_app().await;
    let admin = token(&app, "ops-admin", Role::Admin).await;
    let (donation, pi) = app.create_donation(AMOUNT).await;
    let (other, other_pi) = app.create_donation(AMOUNT).await;
    let (failed_id, charge) = a_failed_event(&app, donation, &pi).await;
    let healthy = event(
        "payment_intent.succeeded",
        objects::payment_intent(&other_pi, Some(other), "succeeded", AMOUNT),
        now(),
    );
    let healthy_id = healthy["id"].as_str().unwrap().to_owned();
    assert_eq!(app.deliver(&healthy).await.status(), 200);
    app.apply_events().await;
    assert_eq!(state_of(&app, &failed_id).await, "failed");
    assert_eq!(state_of(&app, &healthy_id).await, "applied");

    // Only the failed one, as `events list --failed` shows it, and never a payload.
    let failed = listed(&app, &admin, "/v1/finance/events?failed=true").await;
    assert_eq!(ids(&failed), [failed_id.as_str()], "{failed:#?}");
    let row = failed[0].as_object().unwrap();
    assert_eq!(
        row.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "id",
            "type",
            "state",
            "attempts",
            "delivery_count",
            "first_received_at",
            "last_error"
        ],
        "{row:?}"
    );
    assert_eq!(row["type"], "charge.succeeded");
    assert_eq!(row["state"], "failed");
    assert_eq!(row["attempts"], 1);
    assert_eq!(row["delivery_count"], 1);
    assert!(
        row["last_error"].as_str().unwrap().contains("404"),
        "{row:?}"
    );
    let received = row["first_received_at"].as_str().unwrap();
    let received = OffsetDateTime::parse(received, &Rfc3339).expect("RFC 3339");
    assert!((OffsetDateTime::now_utc() - received).whole_minutes().abs() < 5);

    // Without `failed`: every event, newest first; `limit` bounds them.
    let every = listed(&app, &admin, "/v1/finance/events").await;
    assert_eq!(ids(&every), [healthy_id.as_str(), failed_id.as_str()]);
    assert_eq!(every[0]["state"], "applied");
    assert_eq!(every[0]["last_error"], Value::Null);
    let one = listed(&app, &admin, "/v1/finance/events?failed=false&limit=1").await;
    assert_eq!(ids(&one), [healthy_id.as_str()]);

    // Stripe shows the payment now; the admin replays the event, and the worker applies it.
    let mut paid = objects::payment_intent(&pi, Some(donation), "succeeded", AMOUNT);
    paid["latest_charge"] = "ch_ev".into();
    stripe.put(paid);
    stripe.put(charge);
    stripe.put(objects::balance_transaction("txn_ev", AMOUNT, 58));
    let response = replay_as(&app, Some(&admin), &failed_id).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer, json!({"id": failed_id, "replayed": true}));
    assert_eq!(state_of(&app, &failed_id).await, "pending", "queued");
    app.apply_events().await;
    assert_eq!(state_of(&app, &failed_id).await, "applied");
    let facts = app.donation_facts(donation).await;
    assert_eq!(
        (facts.status.as_str(), facts.fee),
        ("succeeded", Some(58)),
        "the replayed event is applied"
    );
    assert!(
        listed(&app, &admin, "/v1/finance/events?failed=true")
            .await
            .is_empty(),
        "it left the failed list"
    );
    app.assert_totals_match_rows().await;

    // Each read and the replay, by whom and with what.
    let audited = audit_rows(&app).await;
    let expected = [
        ("GET /v1/finance/events", json!({"failed": "true"}), 1),
        ("GET /v1/finance/events", json!({}), 2),
        (
            "GET /v1/finance/events",
            json!({"failed": "false", "limit": "1"}),
            1,
        ),
        (
            "POST /v1/finance/events/{id}/replay",
            json!({"id": failed_id}),
            1,
        ),
        ("GET /v1/finance/events", json!({"failed": "true"}), 0),
    ];
    assert_eq!(audited.len(), expected.len(), "{audited:#?}");
    for (row, (what, filters, rows)) in audited.iter().zip(expected) {
        assert_eq!(
            (row.0.as_str(), row.1.as_str()),
            ("ops-admin", "admin"),
            "{row:?}"
        );
        assert_eq!((row.2.as_str(), &row.3, row.4), (what, &filters, rows));
    }
}

#[tokio::test]
async fn only_an_admin_token_lists_or_replays_events() {
    let (app, _stripe) = manual_app().await;
    let finance = token(&app, "finance-team", Role::Finance).await;
    let (donation, pi) = app.create_donation(AMOUNT).await;
    let (failed_id, _) = a_failed_event(&app, donation, &pi).await;
    app.apply_events().await;
    assert_eq!(state_of(&app, &failed_id).await, "failed");

    for path in ["/v1/finance/events", "/v1/finance/events?failed=true"] {
        let problem =
            assert_problem(get_as(&app, Some(&finance), path).await, 403, "forbidden").await;
        assert!(problem["detail"].as_str().unwrap().contains("admin"));
        let response = get_as(&app, None, path).await;
        assert!(response.headers().contains_key("www-authenticate"));
        assert_problem(response, 401, "unauthorized").await;
    }
    let problem = assert_problem(
        replay_as(&app, Some(&finance), &failed_id).await,
        403,
        "forbidden",
    )
    .await;
    assert!(problem["detail"].as_str().unwrap().contains("admin"));
    let response = replay_as(&app, None, &failed_id).await;
    assert!(response.headers().contains_key("www-authenticate"));
    assert_problem(response, 401, "unauthorized").await;
    let unknown = format!("qd_{}", "ab".repeat(32));
    assert_problem(
        replay_as(&app, Some(&unknown), &failed_id).await,
        401,
        "unauthorized",
    )
    .await;

    assert_eq!(
        state_of(&app, &failed_id).await,
        "failed",
        "nothing replayed"
    );
    assert!(
        audit_rows(&app).await.is_empty(),
        "a refused request reads and does nothing"
    );
}

#[tokio::test]
async fn an_unknown_event_is_a_404_and_one_never_applied_a_422() {
    let (app, _stripe) = manual_app().await;
    let admin = token(&app, "ops-admin", Role::Admin).await;

    let problem = assert_problem(
        replay_as(&app, Some(&admin), "evt_nowhere").await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(problem_fields(&problem), ["id"], "{problem}");
    assert!(
        audit_rows(&app).await.is_empty(),
        "no event, nothing done or recorded"
    );

    // Stored, but of a type we never apply: nothing is queued.
    let other = event(
        "customer.created",
        json!({"id": "cus_1", "object": "customer"}),
        now(),
    );
    let other_id = other["id"].as_str().unwrap();
    assert_eq!(app.deliver(&other).await.status(), 200);
    assert_eq!(state_of(&app, other_id).await, "ignored");
    let problem = assert_problem(
        replay_as(&app, Some(&admin), other_id).await,
        422,
        "validation",
    )
    .await;
    assert_eq!(problem_fields(&problem), ["id"], "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("not a type we apply"),
        "{problem}"
    );
    assert_eq!(state_of(&app, other_id).await, "ignored", "not queued");
    assert!(
        audit_rows(&app).await.is_empty(),
        "nothing done, nothing recorded"
    );
}

#[tokio::test]
async fn the_list_takes_only_its_own_parameters() {
    let (app, _stripe) = manual_app().await;
    let admin = token(&app, "ops-admin", Role::Admin).await;
    for (query, parameter) in [
        ("faild=true", "faild"),
        ("failed=yes", "failed"),
        ("failed=true&failed=false", "failed"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("cursor=abc", "cursor"),
    ] {
        let response = get_as(&app, Some(&admin), &format!("/v1/finance/events?{query}")).await;
        let problem = assert_problem(response, 400, "bad-parameter").await;
        assert_eq!(problem_fields(&problem), [parameter], "{query}: {problem}");
    }
    assert!(
        audit_rows(&app).await.is_empty(),
        "a refused read reads nothing"
    );
}
