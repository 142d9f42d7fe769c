//! The browser's side: CORS for the allowed origins on the public endpoints only, and the
//! security headers on every answer.

use reqwest::header::HeaderMap;
use reqwest::{Method, Response};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, donation_body, spawn_app_with, stripe_creates_payment_intents};

const WEBSITE: &str = "https://www.example.org";
const OTHER_SITE: &str = "https://evil.example";

/// An app whose `ALLOWED_ORIGINS` names the website (and one more, as production may).
async fn app_for_the_website() -> TestApp {
    spawn_app_with(|s| s.allowed_origins = format!("{WEBSITE}, https://donate.example.org")).await
}

/// A simulated app, so that the simulator's routes exist too.
async fn simulated_app_for_the_website() -> TestApp {
    spawn_app_with(|s| {
        s.allowed_origins = WEBSITE.to_owned();
        s.stripe_secret_key = None;
        s.stripe_publishable_key = None;
    })
    .await
}

/// The preflight a browser sends before a cross-origin `method` with JSON and a key.
async fn preflight(app: &TestApp, origin: &str, method: &str, path: &str) -> Response {
    app.http
        .request(Method::OPTIONS, format!("{}{path}", app.address))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header(
            "Access-Control-Request-Headers",
            "content-type,idempotency-key,captcha-token",
        )
        .send()
        .await
        .expect("the preflight is sent")
}

/// A header's comma-separated values, lower-cased.
fn listed(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|value| value.to_str().unwrap().split(','))
        .map(|item| item.trim().to_ascii_lowercase())
        .filter(|item| !item.is_empty())
        .collect()
}

fn cors_headers(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("access-control-"))
        .collect()
}

fn public_routes() -> Vec<(&'static str, String)> {
    vec![
        ("GET", "/v1/campaigns/kashmir".to_owned()),
        ("POST", "/v1/campaigns/kashmir/donations".to_owned()),
        ("GET", format!("/v1/donations/{}", Uuid::new_v4())),
    ]
}

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_succeeds_on_each_public_route() {
    let app = app_for_the_website().await;
    for (method, path) in public_routes() {
        let response = preflight(&app, WEBSITE, method, &path).await;
        let what = format!("{method} {path}");
        assert!(
            response.status().is_success(),
            "{what}: {}",
            response.status()
        );
        let headers = response.headers();
        assert_eq!(headers["access-control-allow-origin"], WEBSITE, "{what}");
        assert!(
            listed(headers, "access-control-allow-methods").contains(&method.to_ascii_lowercase()),
            "{what}: {headers:?}"
        );
        let allowed = listed(headers, "access-control-allow-headers");
        for header in ["content-type", "idempotency-key", "captcha-token"] {
            assert!(
                allowed.contains(&header.to_owned()),
                "{what}: {header} in {allowed:?}"
            );
        }
    }
    // The second origin in the list is allowed just as well.
    let response = preflight(
        &app,
        "https://donate.example.org",
        "POST",
        "/v1/campaigns/kashmir/donations",
    )
    .await;
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://donate.example.org"
    );
}

#[tokio::test]
async fn a_preflight_from_another_origin_carries_no_allow_origin() {
    let app = app_for_the_website().await;
    for origin in [
        OTHER_SITE,
        // Near misses: another scheme, a longer host, another port.
        "http://www.example.org",
        "https://www.example.org.evil.example",
        "https://www.example.org:8443",
        "null",
    ] {
        for (method, path) in public_routes() {
            let response = preflight(&app, origin, method, &path).await;
            assert!(
                response
                    .headers()
                    .get("access-control-allow-origin")
                    .is_none(),
                "{origin} {method} {path}: {:?}",
                response.headers()
            );
        }
    }
}

#[tokio::test]
async fn answers_to_the_website_expose_the_headers_it_reads() {
    let app = app_for_the_website().await;
    stripe_creates_payment_intents(&app).await;

    let created = app
        .http
        .post(format!("{}/v1/campaigns/kashmir/donations", app.address))
        .header("Origin", WEBSITE)
        .header("Idempotency-Key", "browser-1")
        .json(&donation_body())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let headers = created.headers();
    assert_eq!(headers["access-control-allow-origin"], WEBSITE);
    let exposed = listed(headers, "access-control-expose-headers");
    for header in [
        "location",
        "idempotent-replayed",
        "retry-after",
        "x-request-id",
    ] {
        assert!(
            exposed.contains(&header.to_owned()),
            "{header} in {exposed:?}"
        );
    }
    let location = headers["location"].to_str().unwrap().to_owned();

    // The donation and the campaign read back, and a problem, are all readable by the page.
    let too_large = json!({"amount": 2500, "padding": "x".repeat(17 * 1024)});
    let answers = [
        app.http.get(format!("{}{location}", app.address)),
        app.http
            .get(format!("{}/v1/campaigns/kashmir", app.address)),
        app.http
            .get(format!("{}/v1/campaigns/no-such-campaign", app.address)),
        app.http
            .post(format!("{}/v1/campaigns/kashmir/donations", app.address))
            .json(&too_large),
    ];
    let mut statuses = Vec::new();
    for request in answers {
        let response = request.header("Origin", WEBSITE).send().await.unwrap();
        statuses.push(response.status().as_u16());
        assert_eq!(
            response.headers()["access-control-allow-origin"],
            WEBSITE,
            "{}",
            response.status()
        );
    }
    assert_eq!(statuses, [200, 200, 404, 413]);

    // Another origin's answer names no origin, so its page cannot read it.
    let response = app
        .http
        .get(format!("{}/v1/campaigns/kashmir", app.address))
        .header("Origin", OTHER_SITE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn finance_webhook_and_simulator_routes_carry_no_cors_at_all() {
    let app = simulated_app_for_the_website().await;
    let routes = [
        ("GET", "/v1/finance/donations"),
        ("GET", "/v1/finance/payouts/po_123"),
        ("GET", "/v1/finance/campaigns/kashmir/summary"),
        ("POST", "/v1/webhooks/stripe"),
        ("POST", "/v1/simulator/payouts"),
        ("POST", "/v1/simulator/payment_intents/pi_123/succeed"),
    ];
    for (method, path) in routes {
        let response = preflight(&app, WEBSITE, method, path).await;
        assert_eq!(response.status(), 405, "{method} {path}");
        let cors = cors_headers(response.headers());
        assert!(cors.is_empty(), "{method} {path}: {cors:?}");
    }
    // Nor does a plain request from the website's origin.
    let response = app
        .http
        .get(format!("{}/v1/finance/donations", app.address))
        .header("Origin", WEBSITE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let cors = cors_headers(response.headers());
    assert!(cors.is_empty(), "{cors:?}");
    let response = app
        .http
        .post(format!("{}/v1/webhooks/stripe", app.address))
        .header("Origin", WEBSITE)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let cors = cors_headers(response.headers());
    assert!(cors.is_empty(), "{cors:?}");
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let app = app_for_the_website().await;
    stripe_creates_payment_intents(&app).await;
    let url = |path: &str| format!("{}{path}", app.address);
    let http = &app.http;
    let requests = [
        ("ok", http.get(url("/healthz"))),
        ("campaign", http.get(url("/v1/campaigns/kashmir"))),
        (
            "created",
            http.post(url("/v1/campaigns/kashmir/donations"))
                .json(&donation_body()),
        ),
        ("no such path", http.get(url("/no/such/path"))),
        ("no such campaign", http.get(url("/v1/campaigns/no-such"))),
        (
            "method not allowed",
            http.delete(url("/v1/campaigns/kashmir")),
        ),
        (
            "unsupported media type",
            http.post(url("/v1/campaigns/kashmir/donations")).body("{}"),
        ),
        (
            "too large",
            http.post(url("/v1/campaigns/kashmir/donations"))
                .json(&json!({"padding": "x".repeat(17 * 1024)})),
        ),
        ("unauthorised", http.get(url("/v1/finance/donations"))),
        (
            "bad webhook",
            http.post(url("/v1/webhooks/stripe")).body("{}"),
        ),
        (
            "preflight",
            http.request(Method::OPTIONS, url("/v1/campaigns/kashmir/donations"))
                .header("Origin", WEBSITE)
                .header("Access-Control-Request-Method", "POST"),
        ),
    ];
    let mut statuses = Vec::new();
    for (what, request) in requests {
        let response = request.send().await.unwrap();
        statuses.push(response.status().as_u16());
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{what}");
        // None of these is HTML, so none gets a policy (the layer's HTML case is unit-tested
        // in src/http/browser.rs).
        assert!(headers.get("content-security-policy").is_none(), "{what}");
    }
    assert_eq!(
        statuses,
        [200, 200, 201, 404, 404, 405, 415, 413, 401, 400, 200]
    );
}
