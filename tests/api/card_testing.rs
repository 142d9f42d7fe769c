//! Card-testing defence: a burst of new donations from one address, or many emails through
//! many forwarded addresses, is stopped with one generic 429 and a Retry-After, while a normal
//! donor in between goes through; the counts are the database's, shared by every instance.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{
    TestApp, assert_problem, donation_body, spawn_app_at, spawn_app_with,
    stripe_creates_payment_intents,
};

/// The tests' client connects from 127.0.0.1: trusting it makes `X-Forwarded-For` the client.
async fn limited_app(customize: impl FnOnce(&mut quickdonate::config::Settings)) -> TestApp {
    let app = spawn_app_with(|s| {
        s.donation_limit_per_ip = Some("5/10m".to_owned());
        s.donation_limit_per_email = Some("3/10m".to_owned());
        s.donation_limit_per_campaign = Some("300/1m".to_owned());
        s.trusted_proxies = "127.0.0.1/32".to_owned();
        customize(s);
    })
    .await;
    stripe_creates_payment_intents(&app).await;
    app
}

async fn donate(
    app: &TestApp,
    email: &str,
    forwarded: Option<&str>,
    key: Option<&str>,
) -> reqwest::Response {
    let mut body = donation_body();
    body["donor"]["email"] = json!(email);
    let mut request = app
        .http
        .post(format!("{}/v1/campaigns/kashmir/donations", app.address))
        .json(&body);
    if let Some(forwarded) = forwarded {
        request = request.header("x-forwarded-for", forwarded);
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap()
}

/// A refusal: 429 with Retry-After within `window_secs`, after a pause; returns the body.
async fn refused(app: &TestApp, email: &str, forwarded: Option<&str>, window_secs: u64) -> Value {
    let started = Instant::now();
    let response = donate(app, email, forwarded, None).await;
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "a refusal waits a little first"
    );
    assert_eq!(response.status(), 429, "{email} from {forwarded:?}");
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=window_secs).contains(&retry), "Retry-After {retry}");
    let mut problem = assert_problem(response, 429, "too-many-attempts").await;
    problem.as_object_mut().unwrap().remove("instance");
    problem
}

#[tokio::test]
async fn a_burst_from_one_address_is_stopped_while_a_normal_donor_goes_through() {
    let app = limited_app(|_| {}).await;
    let bot = "203.0.113.9";
    for i in 0..5 {
        let response = donate(&app, &format!("card{i}@example.org"), Some(bot), None).await;
        assert_eq!(response.status(), 201, "attempt {i}");
    }
    let before = app.donation_count().await;
    refused(&app, "card5@example.org", Some(bot), 600).await;
    // Writing another address on the left changes nothing: the proxy appended the real one.
    refused(
        &app,
        "card6@example.org",
        Some(&format!("198.51.100.250, {bot}")),
        600,
    )
    .await;
    assert_eq!(
        app.donation_count().await,
        before,
        "a refusal writes nothing"
    );

    // A donor elsewhere, at the same moment, is not slowed at all.
    let started = Instant::now();
    let donor = donate(&app, "amina@example.org", Some("198.51.100.7"), None).await;
    assert_eq!(donor.status(), 201);
    assert!(started.elapsed() < Duration::from_secs(5));

    // A retry of a donation already made is not a new attempt: it replays, never refused.
    let first = donate(
        &app,
        "retry@example.org",
        Some("192.0.2.1"),
        Some("retry-1"),
    )
    .await;
    assert_eq!(first.status(), 201);
    for _ in 0..5 {
        let again = donate(
            &app,
            "retry@example.org",
            Some("192.0.2.1"),
            Some("retry-1"),
        )
        .await;
        assert_eq!(again.status(), 201, "a replay");
        assert_eq!(again.headers()["idempotent-replayed"], "true");
    }
}

#[tokio::test]
async fn one_email_from_many_addresses_and_many_emails_at_one_campaign_are_stopped_alike() {
    let app = limited_app(|s| s.donation_limit_per_campaign = Some("8/1m".to_owned())).await;
    // One card-tester's email from three addresses, then a fourth.
    for i in 0..3 {
        let from = format!("198.51.100.{i}");
        let response = donate(&app, "tester@example.org", Some(&from), None).await;
        assert_eq!(response.status(), 201);
    }
    let by_email = refused(&app, "TESTER@example.org", Some("198.51.100.9"), 600).await;

    // Many emails from many addresses: the campaign's cap (8 a minute) stops the ninth.
    for i in 0..5 {
        let response = donate(
            &app,
            &format!("many{i}@example.org"),
            Some(&format!("192.0.2.{i}")),
            None,
        )
        .await;
        assert_eq!(response.status(), 201, "campaign attempt {}", i + 4);
    }
    let by_campaign = refused(&app, "many9@example.org", Some("192.0.2.99"), 60).await;
    assert_eq!(
        by_email, by_campaign,
        "a bot learns nothing from which cap refused it"
    );
}

#[tokio::test]
async fn an_untrusted_peer_cannot_choose_its_address_and_every_instance_counts_together() {
    // No trusted proxy: X-Forwarded-For is whatever the client wrote, and ignored.
    let app = limited_app(|s| s.trusted_proxies = String::new()).await;
    for i in 0..3 {
        let forged = format!("192.0.2.{i}");
        let response = donate(&app, &format!("f{i}@example.org"), Some(&forged), None).await;
        assert_eq!(response.status(), 201);
    }
    // A second instance on the same database counts the same attempts.
    let second = spawn_app_at(app.database_url.clone(), |s| {
        s.donation_limit_per_ip = Some("5/10m".to_owned());
        s.donation_limit_per_email = Some("3/10m".to_owned());
        s.donation_limit_per_campaign = Some("300/1m".to_owned());
    })
    .await;
    stripe_creates_payment_intents(&second).await;
    for i in 3..5 {
        let forged = format!("192.0.2.{i}");
        let response = donate(&second, &format!("f{i}@example.org"), Some(&forged), None).await;
        assert_eq!(response.status(), 201);
    }
    refused(&second, "f5@example.org", Some("192.0.2.200"), 600).await;
    refused(&app, "f6@example.org", Some("192.0.2.201"), 600).await;

    // What no window counts any more is deleted, and never what one still does.
    let rows = |app: &TestApp| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM donation_attempts")
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    let counted = rows(&app).await;
    sqlx::query("UPDATE donation_attempts SET at = now() - interval '11 minutes' WHERE ctid IN (SELECT ctid FROM donation_attempts LIMIT 2)")
        .execute(&app.db)
        .await
        .unwrap();
    let pruned = quickdonate::donations::limits::prune(&app.db, Duration::from_secs(600))
        .await
        .unwrap();
    // The housekeeping prunes too (as it starts, then every minute): it may take some first.
    assert!(
        pruned <= 2,
        "only the two old attempts are pruned, not {pruned}"
    );
    assert_eq!(rows(&app).await, counted - 2);
}

#[tokio::test]
async fn once_a_cap_refuses_an_address_it_must_solve_a_captcha_and_no_one_else_sees_one() {
    use wiremock::matchers::{body_string_contains, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    // A local stand-in for Turnstile's or hCaptcha's siteverify.
    let verifier = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/siteverify"))
        .and(body_string_contains("secret=captcha-secret"))
        .and(body_string_contains("response=solved"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true})))
        .mount(&verifier)
        .await;
    Mock::given(method("POST"))
        .and(path("/siteverify"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"success": false, "error-codes": ["invalid-input-response"]}),
            ),
        )
        .mount(&verifier)
        .await;
    let url = format!("{}/siteverify", verifier.uri());
    let app = limited_app(move |s| {
        s.captcha_verify_url = Some(url);
        s.captcha_secret = Some("captcha-secret".to_owned().into());
    })
    .await;
    let with_token = |email: &str, from: &str, token: Option<&str>| {
        let mut body = donation_body();
        body["donor"]["email"] = json!(email);
        let mut request = app
            .http
            .post(format!("{}/v1/campaigns/kashmir/donations", app.address))
            .header("x-forwarded-for", from)
            .json(&body);
        if let Some(token) = token {
            request = request.header("captcha-token", token);
        }
        request.send()
    };

    let bot = "203.0.113.50";
    for i in 0..5 {
        let response = with_token(&format!("b{i}@example.org"), bot, None)
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "no captcha before a cap trips");
    }
    refused(&app, "b5@example.org", Some(bot), 600).await;
    assert_eq!(verifier.received_requests().await.unwrap().len(), 0);

    // From now on this address needs a solved captcha: without one, or with a wrong one, no.
    let without = with_token("b6@example.org", bot, None).await.unwrap();
    assert_problem(without, 403, "captcha-required").await;
    let wrong = with_token("b6@example.org", bot, Some("guessed"))
        .await
        .unwrap();
    assert_problem(wrong, 403, "captcha-required").await;
    // A person behind that address who solves it may give, over the address's cap.
    let solved = with_token("person@example.org", bot, Some("solved"))
        .await
        .unwrap();
    assert_eq!(solved.status(), 201);

    // Everyone else: no captcha asked, none checked.
    let asked_before = verifier.received_requests().await.unwrap().len();
    let donor = with_token("amina@example.org", "198.51.100.7", None)
        .await
        .unwrap();
    assert_eq!(donor.status(), 201);
    assert_eq!(
        verifier.received_requests().await.unwrap().len(),
        asked_before
    );
}
