//! `GET /metrics`: what an operator scrapes. Each app has metrics of its own, so each test
//! reads exact values, not deltas another test could disturb.

use serde_json::json;
use wiremock::Mock;
use wiremock::matchers::{method, path};

use crate::helpers::{
    StripeObjects, TestApp, donation_body, event, objects, spawn_app_with,
    stripe_creates_payment_intents, stripe_error,
};

/// The value of the series `name` whose labels include every one of `labels`; 0 if there is
/// none (a counter not yet counted). Fails if more than one series matches.
pub fn value(body: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = body
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.trim_end_matches('}')),
                None => (series, ""),
            };
            (series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse().unwrap())
        })
        .collect();
    assert!(
        found.len() <= 1,
        "{name} {labels:?} matches {found:?}:\n{body}"
    );
    found.first().copied().unwrap_or(0.0)
}

impl TestApp {
    pub async fn scrape(&self) -> String {
        let response = self.get("/metrics").await;
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4"),
            "Prometheus's text format"
        );
        response.text().await.unwrap()
    }
}

const DONATIONS_ROUTE: &str = "/v1/campaigns/{slug}/donations";

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test]
async fn requests_are_counted_by_route_and_status_with_no_ids_in_labels() {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    stripe_creates_payment_intents(&app).await;
    let created = [
        ("method", "POST"),
        ("route", DONATIONS_ROUTE),
        ("status", "201"),
    ];

    let before = app.scrape().await;
    assert_eq!(
        value(&before, "quickdonate_http_requests_total", &created),
        0.0
    );
    let (donation, pi) = app.create_donation(2500).await;
    let response = app.get(&format!("/v1/donations/{donation}")).await;
    assert_eq!(response.status(), 200);
    let mut bad = donation_body();
    bad["amount"] = json!(1);
    assert_eq!(app.post_donation("kashmir", &bad, None).await.status(), 422);
    assert_eq!(app.get("/no/such/path").await.status(), 404);

    let after = app.scrape().await;
    assert_eq!(
        value(&after, "quickdonate_http_requests_total", &created),
        1.0
    );
    let invalid = [("route", DONATIONS_ROUTE), ("status", "422")];
    assert_eq!(
        value(&after, "quickdonate_http_requests_total", &invalid),
        1.0
    );
    let read = [
        ("method", "GET"),
        ("route", "/v1/donations/{id}"),
        ("status", "200"),
    ];
    assert_eq!(value(&after, "quickdonate_http_requests_total", &read), 1.0);
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert_eq!(
        value(&after, "quickdonate_http_requests_total", &unmatched),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "quickdonate_http_request_duration_seconds_count",
            &created
        ),
        1.0
    );
    // The Stripe call behind the 201: one, and it succeeded.
    let create = [("operation", "create_payment_intent"), ("outcome", "ok")];
    assert_eq!(
        value(
            &after,
            "quickdonate_stripe_request_duration_seconds_count",
            &create
        ),
        1.0
    );
    assert_eq!(app.stripe_requests("/v1/payment_intents").await.len(), 1);

    // Routes as declared, never the ids or the donor in them.
    for private in [
        donation.to_string(),
        pi,
        "amina".to_owned(),
        "kashmir".to_owned(),
    ] {
        assert!(!after.contains(&private), "{private} in:\n{after}");
    }
}

#[tokio::test]
async fn webhooks_are_counted_by_type_and_outcome_and_the_backlog_is_the_pending_count() {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    stripe_creates_payment_intents(&app).await;
    let (donation, pi) = app.create_donation(2500).await;
    let succeeded = event(
        "payment_intent.succeeded",
        objects::payment_intent(&pi, Some(donation), "succeeded", 2500),
        now(),
    );
    let canceled = event(
        "payment_intent.canceled",
        objects::payment_intent("pi_someone_elses", None, "canceled", 100),
        now(),
    );
    assert_eq!(app.deliver(&succeeded).await.status(), 200);
    assert_eq!(app.deliver(&succeeded).await.status(), 200);
    assert_eq!(app.deliver(&canceled).await.status(), 200);
    let customer = event(
        "customer.created",
        json!({"id": "cus_metrics", "object": "customer"}),
        now(),
    );
    assert_eq!(app.deliver(&customer).await.status(), 200);
    let body = serde_json::to_vec(&succeeded).unwrap();
    let forged = app.deliver_raw(body, Some("t=1,v1=00")).await;
    assert_eq!(forged.status(), 400);

    let scraped = app.scrape().await;
    let deliveries = |kind: &str, outcome: &str| {
        value(
            &scraped,
            "quickdonate_webhook_deliveries_total",
            &[("type", kind), ("outcome", outcome)],
        )
    };
    assert_eq!(deliveries("payment_intent.succeeded", "stored"), 1.0);
    assert_eq!(deliveries("payment_intent.succeeded", "duplicate"), 1.0);
    assert_eq!(deliveries("payment_intent.canceled", "stored"), 1.0);
    assert_eq!(deliveries("customer.created", "ignored"), 1.0);
    assert_eq!(deliveries("unknown", "bad_signature"), 1.0);
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE state = 'pending'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(pending, 2);
    assert_eq!(value(&scraped, "quickdonate_events_pending", &[]), 2.0);
    assert!(
        value(
            &scraped,
            "quickdonate_events_oldest_pending_age_seconds",
            &[]
        ) >= 0.0
    );
    assert!(scraped.contains("quickdonate_events_oldest_pending_age_seconds "));
    // Aged by an hour, the oldest says so.
    sqlx::query("UPDATE stripe_events SET first_received_at = now() - interval '1 hour'")
        .execute(&app.db)
        .await
        .unwrap();
    let aged = app.scrape().await;
    let age = value(&aged, "quickdonate_events_oldest_pending_age_seconds", &[]);
    assert!((3600.0..3700.0).contains(&age), "{age}");

    app.apply_events().await;
    let applied = app.scrape().await;
    assert_eq!(value(&applied, "quickdonate_events_pending", &[]), 0.0);
    assert_eq!(
        value(
            &applied,
            "quickdonate_events_oldest_pending_age_seconds",
            &[]
        ),
        0.0
    );
    assert_eq!(
        value(
            &applied,
            "quickdonate_events_processed_total",
            &[("type", "payment_intent.succeeded"), ("outcome", "applied")]
        ),
        1.0
    );
    // Not our PaymentIntent: stored, and set aside by the worker as not ours.
    let canceled_outcomes: f64 = ["applied", "ignored"]
        .iter()
        .map(|outcome| {
            value(
                &applied,
                "quickdonate_events_processed_total",
                &[("type", "payment_intent.canceled"), ("outcome", outcome)],
            )
        })
        .sum();
    assert_eq!(canceled_outcomes, 1.0, "{applied}");
}

#[tokio::test]
async fn an_event_set_aside_as_failed_is_a_dead_letter() {
    let app = spawn_app_with(|s| {
        s.apply_events = false;
        s.event_max_attempts = 1;
    })
    .await;
    stripe_creates_payment_intents(&app).await;
    StripeObjects::default().serve(&app).await;
    let (donation, pi) = app.create_donation(2500).await;
    // Stripe cannot show the payment (404): with one attempt allowed, it is set aside.
    let mut charge = objects::charge("ch_dead", &pi, 2500, 0, Some("txn_dead"));
    charge["metadata"] = json!({"donation_id": donation.to_string()});
    app.deliver(&event("charge.succeeded", charge, now())).await;
    app.apply_events().await;

    let scraped = app.scrape().await;
    assert_eq!(value(&scraped, "quickdonate_events_failed", &[]), 1.0);
    assert_eq!(value(&scraped, "quickdonate_events_pending", &[]), 0.0);
    assert_eq!(
        value(
            &scraped,
            "quickdonate_events_processed_total",
            &[("type", "charge.succeeded"), ("outcome", "failed")]
        ),
        1.0
    );
    // The fetch Stripe refused: counted as an error of its operation.
    assert!(
        value(
            &scraped,
            "quickdonate_stripe_errors_total",
            &[
                ("operation", "retrieve_payment_intent"),
                ("kind", "refused")
            ]
        ) >= 1.0,
        "{scraped}"
    );
}

#[tokio::test]
async fn stripe_errors_are_counted_per_attempt_with_the_calls_outcome() {
    let app = spawn_app_with(|_| {}).await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(stripe_error(500, "api_error", "Something went wrong"))
        .mount(&app.stripe)
        .await;
    let response = app.post_donation("kashmir", &donation_body(), None).await;
    assert_eq!(response.status(), 503);

    let scraped = app.scrape().await;
    let attempts = app.stripe_requests("/v1/payment_intents").await.len();
    assert_eq!(attempts, 3);
    assert_eq!(
        value(
            &scraped,
            "quickdonate_stripe_errors_total",
            &[
                ("operation", "create_payment_intent"),
                ("kind", "server_error")
            ]
        ),
        attempts as f64
    );
    let call = [
        ("operation", "create_payment_intent"),
        ("outcome", "unavailable"),
    ];
    assert_eq!(
        value(
            &scraped,
            "quickdonate_stripe_request_duration_seconds_count",
            &call
        ),
        1.0
    );
}

#[tokio::test]
async fn card_testing_rejections_are_counted_by_cap() {
    let app = spawn_app_with(|s| s.donation_limit_per_ip = Some("1/10m".to_owned())).await;
    stripe_creates_payment_intents(&app).await;
    app.create_donation(2500).await;
    let refused = app.post_donation("kashmir", &donation_body(), None).await;
    assert_eq!(refused.status(), 429);

    let scraped = app.scrape().await;
    assert_eq!(
        value(
            &scraped,
            "quickdonate_card_testing_rejections_total",
            &[("cap", "ip")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &scraped,
            "quickdonate_card_testing_rejections_total",
            &[("cap", "email")]
        ),
        0.0
    );
}

/// An address of this machine other than loopback, if it has one with a route out.
fn this_machines_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // Connecting a UDP socket sends nothing; it only picks the route and its source address.
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn in_production_metrics_on_the_main_listener_answer_loopback_peers_only() {
    let app = spawn_app_with(|s| {
        s.app_env = quickdonate::config::AppEnv::Production;
        s.listen_addr = "0.0.0.0:0".parse().unwrap();
        // Production refuses the placeholders.
        s.charity_name = "Kashmir Relief Trust".to_owned();
        s.charity_number = "1234567".to_owned();
        // And a mail server (none answers here; this test sends no receipt).
        s.smtp_url = Some("smtp://127.0.0.1:1".to_owned().into());
    })
    .await;
    let port = app.address.rsplit(':').next().unwrap().to_owned();
    let local = format!("http://127.0.0.1:{port}/metrics");

    let response = app.http.get(&local).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("quickdonate_events_pending")
    );

    // Forwarded by a proxy on this machine: not a local request.
    for (header, value) in [
        ("x-forwarded-for", "203.0.113.9"),
        ("forwarded", "for=203.0.113.9"),
    ] {
        let proxied = app
            .http
            .get(&local)
            .header(header, value)
            .send()
            .await
            .unwrap();
        crate::helpers::assert_problem(proxied, 404, "not-found").await;
    }

    // From another address of this machine: a peer beyond loopback.
    match this_machines_address() {
        Some(ip) => {
            let remote = format!(
                "http://{}/metrics",
                std::net::SocketAddr::new(ip, port.parse().unwrap())
            );
            let response = app.http.get(&remote).send().await.unwrap();
            crate::helpers::assert_problem(response, 404, "not-found").await;
            // The rest of the API answers there as usual.
            let campaign = app
                .http
                .get(remote.replace("/metrics", "/v1/campaigns/kashmir"))
                .send()
                .await
                .unwrap();
            assert_eq!(campaign.status(), 200);
        }
        None => eprintln!("no address beyond loopback on this machine: that case is not tried"),
    }
}

#[tokio::test]
async fn metrics_addr_serves_metrics_on_its_own_listener_and_not_the_main_one() {
    let app = spawn_app_with(|s| s.metrics_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let own = app.metrics_address.clone().expect("a metrics listener");
    assert_ne!(own, app.address);

    crate::helpers::assert_problem(app.get("/metrics").await, 404, "not-found").await;
    let response = app.http.get(format!("{own}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let scraped = response.text().await.unwrap();
    // The main listener's 404 just now is counted; the scrapes on their own listener are not.
    assert_eq!(
        value(
            &scraped,
            "quickdonate_http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0,
        "{scraped}"
    );
    // Nothing else is served there.
    let other = app
        .http
        .get(format!("{own}/v1/campaigns/kashmir"))
        .send()
        .await
        .unwrap();
    crate::helpers::assert_problem(other, 404, "not-found").await;
}

#[tokio::test]
async fn a_request_id_is_on_every_answer_and_kept_when_given() {
    let app = spawn_app_with(|_| {}).await;
    for path in ["/v1/campaigns/kashmir", "/no/such/path", "/metrics"] {
        let response = app.get(path).await;
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{path}: {id}");
    }
    let given = app
        .http
        .get(format!("{}/v1/campaigns/kashmir", app.address))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(given.headers()["x-request-id"], "trace-me-42");
}
