//! `GET /v1/finance/donations/{id}`: one donation whole, as finance sees it: its row, the Stripe
//! events of its payment in the order Stripe created them, its ledger rows, its receipts and
//! its Gift Aid; a 404 for an id that names no donation; a token needed; every read audited.

use quickdonate::operators::access::Role;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::finance_access::{audit_rows, get_as, token};
use crate::helpers::{
    StripeObjects, TestApp, assert_problem, donation_body, event, objects, problem_fields,
    spawn_app_with, stripe_creates_payment_intents,
};

const WHAT: &str = "GET /v1/finance/donations/{id}";

/// An app that applies events as they come, sends receipts, and claims Gift Aid on gifts as
/// soon as they succeed, with a fake Stripe that creates PaymentIntents and serves what the
/// test puts in `StripeObjects`.
async fn app() -> (TestApp, StripeObjects) {
    let app = spawn_app_with(|s| s.gift_aid_claim_after_payout = false).await;
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;
    (app, stripe)
}

fn path(id: impl std::fmt::Display) -> String {
    format!("/v1/finance/donations/{id}")
}

fn text(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap()
}

fn at(unix: i64) -> String {
    text(OffsetDateTime::from_unix_timestamp(unix).unwrap())
}

/// Creates a donation with `body` through the API; returns its id, PaymentIntent and total.
async fn donate(app: &TestApp, body: &Value) -> (Uuid, String, i64) {
    let response = app.post_donation("kashmir", body, None).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    (
        created["id"].as_str().unwrap().parse().unwrap(),
        created["payment_intent_id"].as_str().unwrap().to_owned(),
        created["total_amount"].as_i64().unwrap(),
    )
}

/// One payment at Stripe, as its signed events tell it: paid at `t0` with a fee of 60, its
/// charge's balance transaction made then; and, if `refund` is given, that much refunded at
/// `t0 + 20`. Stripe's objects are left as they end; the events come back in the order Stripe
/// created them.
struct Payment {
    charge: String,
    txn: String,
    refund: Option<(String, String)>,
    events: Vec<Value>,
}

fn payment(
    stripe: &StripeObjects,
    donation: Uuid,
    pi: &str,
    total: i64,
    t0: i64,
    refund: Option<i64>,
) -> Payment {
    let suffix = Uuid::new_v4().simple();
    let charge = format!("ch_{suffix}");
    let txn = format!("txn_{suffix}");
    let mut intent = objects::payment_intent(pi, Some(donation), "succeeded", total);
    intent["latest_charge"] = json!(charge);
    let mut paid = objects::balance_transaction(&txn, total, 60);
    paid["created"] = json!(t0);
    paid["source"] = json!(charge);
    stripe.put(intent.clone());
    stripe.put(paid);
    let charged = objects::charge(&charge, pi, total, 0, Some(&txn));
    let mut events = vec![
        event("payment_intent.succeeded", intent, t0),
        event("charge.succeeded", charged.clone(), t0 + 1),
    ];
    stripe.put(charged);
    let mut refunded = None;
    if let Some(amount) = refund {
        let id = format!("re_{suffix}");
        let taken_id = format!("txn_{id}");
        let mut refund = objects::refund(&id, &charge, pi, amount, "succeeded");
        refund["balance_transaction"] = json!(taken_id);
        let mut taken = objects::balance_transaction(&taken_id, -amount, 0);
        taken["type"] = json!("refund");
        taken["reporting_category"] = json!("refund");
        taken["source"] = json!(id);
        taken["created"] = json!(t0 + 20);
        let charge_now = objects::charge(&charge, pi, total, amount, Some(&txn));
        stripe.put(refund.clone());
        stripe.put(taken);
        stripe.put(charge_now.clone());
        events.push(event("refund.created", refund, t0 + 20));
        events.push(event("charge.refunded", charge_now, t0 + 21));
        refunded = Some((id, taken_id));
    }
    Payment {
        charge,
        txn,
        refund: refunded,
        events,
    }
}

/// The keys of a JSON object, sorted.
fn keys(object: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = object
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    keys
}

/// Delivers `events` signed, each answered 200, and waits until the worker has applied them.
async fn deliver(app: &TestApp, events: &[Value]) {
    for event in events {
        assert_eq!(app.deliver(event).await.status(), 200);
    }
    app.wait_until_applied().await;
}

#[tokio::test]
async fn a_paid_partly_refunded_gift_aid_donation_is_shown_whole() {
    let (app, stripe) = app().await;
    let finance = token(&app, "treasurer", Role::Finance).await;
    let admin = token(&app, "trustee", Role::Admin).await;
    let t0 = OffsetDateTime::now_utc().unix_timestamp() - 1000;

    // £50 with the fee covered and a Gift Aid declaration, paid, then £10 of it refunded.
    let mut body = donation_body();
    body["amount"] = json!(5000);
    body["cover_fees"] = json!(true);
    body["gift_aid"] = json!({"declared": true, "title": "Ms", "house_name_or_number": "10",
                              "postcode": "s192bd"});
    let (id, pi, total) = donate(&app, &body).await;
    assert!(total > 5000, "the fee is covered: {total}");
    let paid = payment(&stripe, id, &pi, total, t0, Some(1000));
    let (refund, refund_txn) = paid.refund.clone().unwrap();
    // Another donor's gift, paid at the same moments: none of its events or rows are shown.
    let mut other_body = donation_body();
    other_body["donor"] = json!({"email": "bilal@example.org", "first_name": "Bilal",
                                 "last_name": "Ahmed"});
    let (other, other_pi, other_total) = donate(&app, &other_body).await;
    let other_paid = payment(&stripe, other, &other_pi, other_total, t0, Some(500));

    // Stripe's events arrive out of the order it created them: the PaymentIntent's, then the
    // refund's, applied while Stripe shows no balance transaction on the charge yet (so the
    // ledger writes the refund's row before the gift's), then the charge's two, backwards.
    let events = paid.events.clone();
    stripe.put(objects::charge(&paid.charge, &pi, total, 1000, None));
    deliver(&app, &[events[0].clone()]).await;
    deliver(&app, &[events[2].clone()]).await;
    stripe.put(objects::charge(
        &paid.charge,
        &pi,
        total,
        1000,
        Some(&paid.txn),
    ));
    deliver(&app, &[events[3].clone(), events[1].clone()]).await;
    let mut others = other_paid.events.clone();
    others.reverse();
    deliver(&app, &others).await;
    crate::receipts::wait_until_sent(&app, 2).await;

    // Its Gift Aid claimed, and its declaration cancelled from tomorrow (this gift stays
    // covered).
    let now = OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let claim: Value = app
        .http
        .post(format!("{}/v1/finance/gift-aid/claims", app.address))
        .bearer_auth(&admin)
        .json(&json!({"from": text(now - day), "to": text(now + day)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(claim["status"], "prepared", "{claim}");
    let line = claim["rows"]
        .as_array()
        .unwrap()
        .iter()
        .position(|row| row["donation_ids"].to_string().contains(&id.to_string()))
        .unwrap_or_else(|| panic!("the claim holds the gift: {claim}"));
    let declaration: Uuid =
        sqlx::query_scalar("SELECT id FROM gift_aid_declarations WHERE donation_id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let tomorrow = OffsetDateTime::from_unix_timestamp((now + day).unix_timestamp()).unwrap();
    let cancelled = app
        .http
        .post(format!(
            "{}/v1/finance/gift-aid/declarations/{declaration}/cancel",
            app.address
        ))
        .bearer_auth(&admin)
        .json(&json!({"from": text(tomorrow)}))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);

    let response = get_as(&app, Some(&finance), &path(id)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let shown: Value = response.json().await.unwrap();
    assert_eq!(
        keys(&shown),
        ["donation", "events", "gift_aid", "ledger", "receipts"],
        "{shown}"
    );

    // The donation: the list's row for it, and when it succeeded (its event's time).
    let listed: Value = get_as(
        &app,
        Some(&finance),
        &format!("/v1/finance/donations?q={id}"),
    )
    .await
    .json()
    .await
    .unwrap();
    let mut row = listed["data"][0].clone();
    row["succeeded_at"] = json!(at(t0));
    assert_eq!(shown["donation"], row);
    let donation = &shown["donation"];
    assert_eq!(donation["id"], json!(id));
    assert_eq!(donation["status"], "succeeded");
    assert_eq!(
        (
            &donation["total_amount"],
            &donation["fee"],
            &donation["net"]
        ),
        (&json!(total), &json!(60), &json!(total - 60))
    );
    assert_eq!(donation["refunded_amount"], 1000);
    assert_eq!(donation["gift_aid"], true);
    assert_eq!(donation["charge_id"], json!(paid.charge));

    // Its events, in the order Stripe created them, whatever order they came in; no payload.
    let events = shown["events"].as_array().unwrap();
    let seen: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap(),
                e["type"].as_str().unwrap(),
                e["created"].as_str().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(&str, &str, String)> = paid
        .events
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap(),
                e["type"].as_str().unwrap(),
                at(e["created"].as_i64().unwrap()),
            )
        })
        .collect();
    let expected: Vec<(&str, &str, &str)> = expected
        .iter()
        .map(|(i, k, c)| (*i, *k, c.as_str()))
        .collect();
    assert_eq!(seen, expected, "{events:#?}");
    for event in events {
        assert_eq!(
            keys(event),
            [
                "applied_at",
                "attempts",
                "created",
                "id",
                "received_at",
                "state",
                "type"
            ],
            "never the payload: {event}"
        );
        assert_eq!(event["state"], "applied", "{event}");
        assert!(event["attempts"].as_i64().is_some(), "{event}");
        assert!(event["applied_at"].is_string(), "{event}");
        assert!(
            OffsetDateTime::parse(event["received_at"].as_str().unwrap(), &Rfc3339).is_ok(),
            "{event}"
        );
    }
    // They were received in another order than Stripe created them.
    let mut received: Vec<&Value> = events.iter().collect();
    received.sort_by_key(|e| e["received_at"].as_str().unwrap().to_owned());
    assert_ne!(
        received.iter().map(|e| &e["id"]).collect::<Vec<_>>(),
        events.iter().map(|e| &e["id"]).collect::<Vec<_>>()
    );

    // Its ledger rows, oldest first (the refund's was written first).
    assert_eq!(
        shown["ledger"],
        json!([
            {"kind": "gift", "amount": total, "currency": "gbp", "occurred_at": at(t0),
             "source_id": paid.charge, "balance_transaction_id": paid.txn},
            {"kind": "stripe_fee", "amount": -60, "currency": "gbp", "occurred_at": at(t0),
             "source_id": paid.charge, "balance_transaction_id": paid.txn},
            {"kind": "refund", "amount": -1000, "currency": "gbp", "occurred_at": at(t0 + 20),
             "source_id": refund, "balance_transaction_id": refund_txn},
        ])
    );
    let written: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM ledger_entries WHERE donation_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(
        written[0], "refund",
        "the refund's row was written first: {written:?}"
    );

    // Its thank-you, sent; a partial refund owes no refund notice.
    let receipts = shown["receipts"].as_array().unwrap();
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    assert_eq!(receipts[0]["kind"], "thank_you");
    assert_eq!(receipts[0]["status"], "sent");
    assert_eq!(receipts[0]["attempts"], 1);
    assert!(receipts[0]["sent_at"].is_string(), "{receipts:?}");
    assert!(receipts[0]["created_at"].is_string(), "{receipts:?}");

    // Its Gift Aid: the declaration made with it, cancelled from tomorrow, and the claim.
    let gift_aid = &shown["gift_aid"];
    assert_eq!(gift_aid["declared"], true);
    assert_eq!(gift_aid["cancelled"], true);
    assert_eq!(gift_aid["declaration"]["id"], json!(declaration));
    assert_eq!(gift_aid["declaration"]["source"], "donation_form");
    assert_eq!(gift_aid["declaration"]["cancelled_at"], text(tomorrow));
    assert!(gift_aid["declaration"]["declared_at"].is_string());
    assert!(gift_aid["declaration"]["covers_from"].is_string());
    assert_eq!(gift_aid["claim"]["id"], claim["id"]);
    assert_eq!(gift_aid["claim"]["status"], "prepared");
    assert_eq!(gift_aid["claim"]["status_at"], claim["status_at"]);
    assert_eq!(gift_aid["claim"]["line"], line + 1);
    assert_eq!(gift_aid["claim"]["amount"], claim["rows"][line]["amount"]);

    // The other gift: its own events, rows and receipt, and no Gift Aid.
    let shown: Value = get_as(&app, Some(&finance), &path(other))
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&Value> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["id"])
        .collect();
    let expected: Vec<&Value> = other_paid.events.iter().map(|e| &e["id"]).collect();
    assert_eq!(ids, expected);
    let sources: Vec<&Value> = shown["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["source_id"])
        .collect();
    let (other_refund, _) = other_paid.refund.unwrap();
    assert_eq!(
        sources,
        [
            &json!(other_paid.charge),
            &json!(other_paid.charge),
            &json!(other_refund)
        ]
    );
    assert_eq!(shown["receipts"].as_array().unwrap().len(), 1);
    assert_eq!(
        shown["gift_aid"],
        json!({"declared": false, "cancelled": false, "declaration": null, "claim": null})
    );
}

#[tokio::test]
async fn each_read_is_audited_with_the_id_and_one_row() {
    let (app, _) = app().await;
    let finance = token(&app, "treasurer", Role::Finance).await;
    let (id, pi, total) = donate(&app, &donation_body()).await;

    // Not paid yet: its row, and nothing else so far.
    let response = get_as(&app, Some(&finance), &path(id)).await;
    assert_eq!(response.status(), 200);
    let shown: Value = response.json().await.unwrap();
    assert_eq!(shown["donation"]["status"], "pending");
    assert_eq!(shown["donation"]["payment_intent_id"], json!(pi));
    assert_eq!(shown["donation"]["total_amount"], total);
    assert_eq!(shown["donation"]["succeeded_at"], Value::Null);
    assert_eq!(shown["events"], json!([]));
    assert_eq!(shown["ledger"], json!([]));
    assert_eq!(shown["receipts"], json!([]));
    assert_eq!(
        shown["gift_aid"],
        json!({"declared": false, "cancelled": false, "declaration": null, "claim": null})
    );

    let audited: Vec<_> = audit_rows(&app)
        .await
        .into_iter()
        .filter(|row| row.2 == WHAT)
        .collect();
    assert_eq!(
        audited,
        [(
            "treasurer".to_owned(),
            "finance".to_owned(),
            WHAT.to_owned(),
            json!({"id": id.to_string()}),
            1
        )]
    );
}

#[tokio::test]
async fn an_unknown_or_malformed_id_is_a_404_and_reads_nothing() {
    let (app, _) = app().await;
    let finance = token(&app, "treasurer", Role::Finance).await;
    donate(&app, &donation_body()).await;

    for id in [Uuid::now_v7().to_string(), "not-a-uuid".to_owned()] {
        let response = get_as(&app, Some(&finance), &path(&id)).await;
        let problem = assert_problem(response, 404, "not-found").await;
        assert_eq!(problem_fields(&problem), ["id"], "{id}: {problem}");
    }
    // A query parameter it does not take is named.
    let (id, _, _) = donate(&app, &donation_body()).await;
    let response = get_as(&app, Some(&finance), &format!("{}?limit=5", path(id))).await;
    let problem = assert_problem(response, 400, "bad-parameter").await;
    assert_eq!(problem_fields(&problem), ["limit"]);
    assert!(
        audit_rows(&app).await.is_empty(),
        "nothing read, nothing audited"
    );
}

#[tokio::test]
async fn without_a_token_it_is_a_401() {
    let (app, _) = app().await;
    let (id, _, _) = donate(&app, &donation_body()).await;
    let response = get_as(&app, None, &path(id)).await;
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert_problem(response, 401, "unauthorized").await;
    assert!(audit_rows(&app).await.is_empty());
}

#[tokio::test]
async fn the_document_describes_it_with_schemas_it_has() {
    let (app, _) = app().await;
    let document: Value = app.get("/openapi.json").await.json().await.unwrap();
    let operation = &document["paths"]["/v1/finance/donations/{id}"]["get"];
    assert_eq!(
        operation["operationId"], "showFinanceDonation",
        "{operation}"
    );
    assert_eq!(operation["tags"], json!(["finance"]));
    assert_eq!(operation["security"], json!([{"bearerAuth": []}]));
    for status in ["200", "400", "401", "404", "503"] {
        assert!(operation["responses"][status].is_object(), "{status}");
    }
    // Every schema it names is in the document, the list's row among them.
    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.push(target);
                }
                map.values().for_each(|v| refs(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }
    let mut pending = vec![operation];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(schema) = pending.pop() {
        let mut found = Vec::new();
        refs(schema, &mut found);
        for target in found {
            let name = target.trim_start_matches("#/components/schemas/");
            let component = &document["components"]["schemas"][name];
            assert!(component.is_object(), "{target} is not in the document");
            if seen.insert(name.to_owned()) {
                pending.push(component);
            }
        }
    }
    assert!(seen.contains("FinanceDonation"), "{seen:?}");
    assert!(seen.contains("FinanceDonationWhole"), "{seen:?}");
}
