//! Abandoned payments: a donation still waiting for its payment after `ABANDONED_AFTER` has
//! its PaymentIntent cancelled at Stripe, once, and becomes `canceled`; nothing can then
//! complete it.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use quickdonate::donations::abandoned::Swept;

use crate::helpers::{
    TestApp, assert_problem, donation_body, event, form_params, objects, spawn_app, spawn_app_with,
    stripe_creates_payment_intents, stripe_error,
};

/// Makes the donation older than the default `ABANDONED_AFTER` (24 hours).
async fn age(app: &TestApp, id: Uuid) {
    sqlx::query("UPDATE donations SET created_at = now() - interval '25 hours' WHERE id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
}

async fn status(app: &TestApp, id: Uuid) -> String {
    let donation: Value = app
        .get(&format!("/v1/donations/{id}"))
        .await
        .json()
        .await
        .unwrap();
    donation["status"].as_str().unwrap().to_owned()
}

/// Stripe's answer to a cancel: the PaymentIntent, canceled.
struct Cancels;

impl Respond for Cancels {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let pi = request.url.path().split('/').nth(3).unwrap().to_owned();
        let mut intent = objects::payment_intent(&pi, None, "canceled", 2500);
        intent["canceled_at"] = json!(1_790_000_000);
        intent["cancellation_reason"] = json!("abandoned");
        ResponseTemplate::new(200).set_body_json(intent)
    }
}

async fn stripe_cancels(app: &TestApp) {
    Mock::given(method("POST"))
        .and(path_regex(r"^/v1/payment_intents/[^/]+/cancel$"))
        .respond_with(Cancels)
        .mount(&app.stripe)
        .await;
}

async fn cancel_requests(app: &TestApp) -> Vec<Request> {
    app.stripe
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path().ends_with("/cancel"))
        .collect()
}

#[tokio::test]
async fn an_old_pending_or_declined_donation_is_cancelled_at_stripe_once_and_a_recent_one_is_not() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    stripe_cancels(&app).await;
    let (old, old_pi) = app.create_donation(2500).await;
    let (declined, declined_pi) = app.create_donation(1000).await;
    let (recent, _) = app.create_donation(5000).await;
    // A decline leaves the PaymentIntent waiting for another card: still payable.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let failed = objects::failed_payment_intent(&declined_pi, declined, 1000);
    assert_eq!(
        app.deliver(&event("payment_intent.payment_failed", failed, now))
            .await
            .status(),
        200
    );
    app.wait_until_applied().await;
    assert_eq!(status(&app, declined).await, "failed");
    age(&app, old).await;
    age(&app, declined).await;

    let swept = app.abandoned.sweep().await.unwrap();
    assert_eq!(
        swept,
        Swept {
            canceled: 2,
            not_cancelable: 0,
            left: 0
        }
    );
    assert_eq!(status(&app, old).await, "canceled");
    assert_eq!(status(&app, declined).await, "canceled");
    assert_eq!(status(&app, recent).await, "pending");

    let requests = cancel_requests(&app).await;
    let mut cancelled: Vec<String> = requests
        .iter()
        .map(|r| r.url.path().split('/').nth(3).unwrap().to_owned())
        .collect();
    cancelled.sort();
    let mut expected = vec![old_pi.clone(), declined_pi];
    expected.sort();
    assert_eq!(
        cancelled, expected,
        "one call for each, none for the recent one"
    );
    for request in &requests {
        assert_eq!(form_params(request)["cancellation_reason"], "abandoned");
        // Stripe would answer a reused key's first answer (a 500 too) for a day.
        assert!(request.headers.get("idempotency-key").is_none());
    }

    // Nothing left to do: a second pass calls Stripe for nothing.
    assert_eq!(app.abandoned.sweep().await.unwrap(), Swept::default());
    assert_eq!(cancel_requests(&app).await.len(), 2);

    // Stripe's own word on the cancellation, and an older snapshot after it, change nothing.
    let mut canceled = objects::payment_intent(&old_pi, Some(old), "canceled", 2500);
    canceled["canceled_at"] = json!(now);
    let older = objects::payment_intent(&old_pi, Some(old), "requires_payment_method", 2500);
    app.deliver(&event("payment_intent.canceled", canceled, now))
        .await;
    app.deliver(&event("payment_intent.requires_action", older, now - 60))
        .await;
    app.wait_until_applied().await;
    assert_eq!(status(&app, old).await, "canceled");
    app.assert_totals_match_rows().await;
}

#[tokio::test]
async fn a_payment_intent_stripe_will_not_cancel_is_left_to_its_events_and_not_asked_again() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let (id, pi) = app.create_donation(2500).await;
    let succeeded = objects::payment_intent(&pi, Some(id), "succeeded", 2500);
    Mock::given(method("POST"))
        .and(path_regex(r"^/v1/payment_intents/[^/]+/cancel$"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "type": "invalid_request_error", "code": "payment_intent_unexpected_state",
            "message": "You cannot cancel this PaymentIntent because it has a status of succeeded.",
            "payment_intent": succeeded
        }})))
        .mount(&app.stripe)
        .await;
    age(&app, id).await;

    let swept = app.abandoned.sweep().await.unwrap();
    assert_eq!(swept.not_cancelable, 1, "{swept:?}");
    assert_eq!(swept.canceled, 0);
    assert_eq!(status(&app, id).await, "pending", "the money may be taken");
    // Not asked again within the hour, however often the sweep runs.
    assert_eq!(app.abandoned.sweep().await.unwrap(), Swept::default());
    assert_eq!(cancel_requests(&app).await.len(), 1);

    // The success's event arrives late, and is the truth.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    app.deliver(&event("payment_intent.succeeded", succeeded, now))
        .await;
    app.wait_until_applied().await;
    assert_eq!(status(&app, id).await, "succeeded");
}

#[tokio::test]
async fn while_stripe_is_away_the_donation_waits_for_the_next_pass() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let (id, _) = app.create_donation(2500).await;
    age(&app, id).await;
    let away = Mock::given(method("POST"))
        .and(path_regex(r"^/v1/payment_intents/[^/]+/cancel$"))
        .respond_with(stripe_error(503, "api_error", "Stripe is down."))
        .mount_as_scoped(&app.stripe)
        .await;

    let swept = app.abandoned.sweep().await.unwrap();
    assert_eq!(swept.left, 1, "{swept:?}");
    assert_eq!(status(&app, id).await, "pending");
    let tried = cancel_requests(&app).await.len();
    assert_eq!(tried, quickdonate::payments::ATTEMPTS as usize);
    drop(away);

    // Stripe is back: the next pass (not the next hour) finishes it.
    stripe_cancels(&app).await;
    assert_eq!(app.abandoned.sweep().await.unwrap().canceled, 1);
    assert_eq!(status(&app, id).await, "canceled");
}

#[tokio::test]
async fn a_donation_stripe_never_gave_an_intent_is_given_up_without_a_call_and_its_retry_refused() {
    let app = spawn_app().await;
    let down = Mock::given(method("POST"))
        .and(path_regex(r"^/v1/payment_intents$"))
        .respond_with(stripe_error(500, "api_error", "Something went wrong."))
        .mount_as_scoped(&app.stripe)
        .await;
    let key = Uuid::new_v4().to_string();
    let response = app
        .post_donation("kashmir", &donation_body(), Some(&key))
        .await;
    assert!(response.status().is_server_error(), "{}", response.status());
    drop(down);
    let id: Uuid = sqlx::query_scalar("SELECT id FROM donations")
        .fetch_one(&app.db)
        .await
        .unwrap();
    age(&app, id).await;

    assert_eq!(app.abandoned.sweep().await.unwrap().canceled, 1);
    assert_eq!(status(&app, id).await, "canceled");
    assert!(
        cancel_requests(&app).await.is_empty(),
        "no intent to cancel"
    );

    // The website's retry of the same request, with Stripe back, makes no PaymentIntent.
    stripe_creates_payment_intents(&app).await;
    let creations = app.stripe_requests("/v1/payment_intents").await.len();
    let retry = app
        .post_donation("kashmir", &donation_body(), Some(&key))
        .await;
    assert_problem(retry, 409, "donation-abandoned").await;
    assert_eq!(
        app.stripe_requests("/v1/payment_intents").await.len(),
        creations
    );
    assert_eq!(app.donation_count().await, 1);
}

#[tokio::test]
async fn an_intent_made_while_its_donation_was_given_up_is_cancelled_and_not_handed_out() {
    let app = spawn_app().await;
    stripe_cancels(&app).await;
    // Stripe answers the creation slowly; the sweep gives the donation up meanwhile.
    stripe_creates_slowly(&app, "pi_late").await;
    let request = donate_in_background(&app);
    let id = the_donation(&app).await;
    age(&app, id).await;
    assert_eq!(app.abandoned.sweep().await.unwrap().canceled, 1);

    let response = request.await.unwrap();
    assert_problem(response, 409, "donation-abandoned").await;
    let cancelled: Vec<String> = cancel_requests(&app)
        .await
        .iter()
        .map(|r| r.url.path().to_owned())
        .collect();
    assert_eq!(cancelled, ["/v1/payment_intents/pi_late/cancel"]);
    let (status, intent): (String, Option<String>) =
        sqlx::query_as("SELECT status, payment_intent_id FROM donations WHERE id = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((status.as_str(), intent), ("canceled", None));
}

#[tokio::test]
async fn with_simulated_payments_a_cancelled_intent_can_no_longer_be_paid() {
    let app = spawn_app_with(|s| {
        s.stripe_secret_key = None;
        s.stripe_publishable_key = None;
    })
    .await;
    let (id, pi) = app.create_donation(2500).await;
    assert!(pi.starts_with("pi_sim_"));
    age(&app, id).await;
    assert_eq!(app.abandoned.sweep().await.unwrap().canceled, 1);
    assert_eq!(status(&app, id).await, "canceled");

    // The simulated Stripe cancelled it: paying it now is refused, as Stripe would.
    let paid = app
        .http
        .post(format!(
            "{}/v1/simulator/payment_intents/{pi}/succeed",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 409, "{}", paid.text().await.unwrap());
    assert_eq!(status(&app, id).await, "canceled");
    app.assert_totals_match_rows().await;
}

/// Stripe answers the creation of `pi` a second and a half late.
async fn stripe_creates_slowly(app: &TestApp, pi: &str) {
    Mock::given(method("POST"))
        .and(path_regex(r"^/v1/payment_intents$"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(objects::payment_intent(
                    pi,
                    None,
                    "requires_payment_method",
                    2500,
                ))
                .set_delay(Duration::from_millis(1500)),
        )
        .mount(&app.stripe)
        .await;
}

/// A donation request, sent in the background.
fn donate_in_background(app: &TestApp) -> tokio::task::JoinHandle<reqwest::Response> {
    let http = app.http.clone();
    let url = format!("{}/v1/campaigns/kashmir/donations", app.address);
    tokio::spawn(async move { http.post(url).json(&donation_body()).send().await.unwrap() })
}

/// The only donation in the database, once the create flow has written it.
async fn the_donation(app: &TestApp) -> Uuid {
    for _ in 0..200 {
        if let Some(id) = sqlx::query_scalar::<_, Uuid>("SELECT id FROM donations")
            .fetch_optional(&app.db)
            .await
            .unwrap()
        {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the donation is written before Stripe is called");
}

#[tokio::test]
async fn an_intent_its_events_linked_before_the_answer_was_recorded_is_a_201_not_given_up() {
    let app = spawn_app().await;
    stripe_cancels(&app).await;
    stripe_creates_slowly(&app, "pi_early").await;
    let request = donate_in_background(&app);
    // Stripe's `payment_intent.created` arrives while Stripe's answer is still on its way.
    let id = the_donation(&app).await;
    let created = objects::payment_intent("pi_early", Some(id), "requires_payment_method", 2500);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert_eq!(
        app.deliver(&event("payment_intent.created", created, now))
            .await
            .status(),
        200
    );
    app.wait_until_applied().await;

    let response = request.await.unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    assert!(cancel_requests(&app).await.is_empty(), "nothing cancelled");
    assert_eq!(status(&app, id).await, "pending");
}

#[tokio::test]
async fn a_donation_given_up_without_an_intent_still_counts_if_stripe_says_it_was_paid() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    let (id, pi) = app.create_donation(2500).await;
    // As if a crash lost the write that recorded its intent, after the 201 had gone out.
    sqlx::query("UPDATE donations SET payment_intent_id = NULL WHERE id = $1")
        .bind(id)
        .execute(&app.db)
        .await
        .unwrap();
    age(&app, id).await;
    assert_eq!(app.abandoned.sweep().await.unwrap().canceled, 1);
    assert_eq!(status(&app, id).await, "canceled");
    assert!(cancel_requests(&app).await.is_empty());

    // The donor paid with the client secret they had: Stripe's word wins over ours.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let paid = objects::payment_intent(&pi, Some(id), "succeeded", 2500);
    app.deliver(&event("payment_intent.succeeded", paid, now))
        .await;
    app.wait_until_applied().await;
    assert_eq!(status(&app, id).await, "succeeded");
    app.assert_totals_match_rows().await;
}

/// Card testing through one client secret: a bot holding one donation's PaymentIntent tries
/// card after card. Each declined attempt is counted once (however its events repeat), and
/// counts against the address and email that made the donation; at `DECLINES_PER_PAYMENT` the
/// PaymentIntent is cancelled at Stripe, once, and the donation given up.
#[tokio::test]
async fn a_burst_of_declines_on_one_payment_cancels_it_and_counts_against_the_caps() {
    let app = spawn_app_with(|s| {
        s.apply_events = false;
        s.declines_per_payment = 5;
        s.donation_limit_per_ip = Some("50/10m".to_owned());
        s.donation_limit_per_email = Some("4/10m".to_owned());
    })
    .await;
    stripe_creates_payment_intents(&app).await;
    stripe_cancels(&app).await;
    let (donation, pi) = app.create_donation(2500).await;
    let t0 = 1_790_000_000;
    let decline = |n: i64| {
        let charge = format!("ch_declined_{n}_{}", &pi[3..]);
        let mut intent = objects::failed_payment_intent(&pi, donation, 2500);
        intent["latest_charge"] = json!(charge);
        [
            event(
                "charge.failed",
                objects::failed_charge(&charge, &pi, 2500),
                t0 + n,
            ),
            event("payment_intent.payment_failed", intent, t0 + n),
        ]
    };
    // Four cards declined, the first one's events delivered twice more (a retry, and anew).
    for n in 1..=4 {
        for e in decline(n) {
            assert_eq!(app.deliver(&e).await.status(), 200);
        }
    }
    let again = decline(1);
    app.deliver(&again[0]).await;
    for e in decline(1) {
        app.deliver(&e).await;
    }
    app.apply_events().await;
    let (declines, state): (i32, String) =
        sqlx::query_as("SELECT declines, status FROM donations WHERE id = $1")
            .bind(donation)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!((declines, state.as_str()), (4, "failed"));
    assert!(cancel_requests(&app).await.is_empty(), "not yet");

    // The fifth: the PaymentIntent is cancelled, once, and its client secret is dead.
    for e in decline(5) {
        app.deliver(&e).await;
    }
    app.apply_events().await;
    for _ in 0..100 {
        if status(&app, donation).await == "canceled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(&app, donation).await, "canceled");
    let cancels = cancel_requests(&app).await;
    assert_eq!(cancels.len(), 1);
    assert!(cancels[0].url.path().contains(&pi), "{}", cancels[0].url);
    // More declines (a bot that does not know yet) cancel nothing more.
    for e in decline(6) {
        app.deliver(&e).await;
    }
    app.apply_events().await;
    app.abandoned.sweep().await.unwrap();
    assert_eq!(cancel_requests(&app).await.len(), 1);

    // Each decline counted against the address and the email that made the donation.
    let attempts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT scope, count(*) FROM donation_attempts WHERE scope IN ('ip', 'email')
         GROUP BY scope ORDER BY scope",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        attempts,
        [("email".to_owned(), 1 + 6), ("ip".to_owned(), 1 + 6)],
        "the donation itself, and each of its six declines once"
    );
    let refused = app.post_donation("kashmir", &donation_body(), None).await;
    assert_eq!(
        refused.status(),
        429,
        "the email's cap is spent by the declines"
    );
}
