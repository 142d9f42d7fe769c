//! The finance staff's console (`/staff`) in a real browser: headless Chromium with a virtual
//! authenticator (WebDriver's WebAuthn extension) against the real app with simulated payments.
//! Passkeys are bound to a name, never an IP address, so each app here listens on a port chosen
//! first and is opened as `http://localhost:PORT`, its `STAFF_ORIGIN`. Each page is saved as a
//! screenshot under `target/screenshots/console-*.png`.

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, ORIGIN};
use serde_json::Value;

use quickdonate::operators::access::Role;
use quickdonate::staff::accounts;

use crate::helpers::{TestApp, spawn_app_with};
use crate::webdriver::{self, Tab};

/// A simulated app whose console is at `http://localhost:PORT`: the app and that origin.
async fn console_app() -> (TestApp, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let origin = format!("http://localhost:{port}");
    let app = spawn_app_with(|s| {
        s.stripe_secret_key = None;
        s.stripe_publishable_key = None;
        s.listen_addr = format!("127.0.0.1:{port}").parse().unwrap();
        s.staff_origin = origin.clone();
    })
    .await;
    (app, origin)
}

/// An enrolment link for a new account `name` with `role`, as `staff invite` prints it.
async fn invite(app: &TestApp, origin: &str, name: &str, role: Role) -> String {
    let invitation = accounts::invite(&app.db, name, Some(role)).await.unwrap();
    format!("{origin}/staff/enrol/{}", invitation.secret)
}

/// Opens `link` in the browser (with its virtual authenticator), registers a passkey and waits
/// for the overview.
async fn enrol(name: &'static str, link: &str) -> Option<Tab> {
    let tab = webdriver::open(name, link).await?;
    tab.client.delete_all_cookies().await.unwrap();
    tab.authenticator().await;
    tab.wait_for_text("h1", "Register a passkey").await;
    tab.click("#enrol-button").await;
    tab.wait_for_text("h1", "Overview").await;
    Some(tab)
}

/// Signs in as `name` from the sign-in page, with the passkey the authenticator holds.
async fn sign_in(tab: &Tab, origin: &str, name: &str) {
    tab.client
        .goto(&format!("{origin}/staff/login"))
        .await
        .unwrap();
    tab.type_into("#name", name).await;
    tab.click("#sign-in-button").await;
    tab.wait_for_text("h1", "Overview").await;
}

/// The browser's session cookie, as a `Cookie` header.
async fn session_cookie(tab: &Tab) -> String {
    let cookie = tab
        .client
        .get_named_cookie("qd_staff")
        .await
        .expect("the browser holds the session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Strict")
    );
    assert_eq!(cookie.path(), Some("/staff"));
    format!("qd_staff={}", cookie.value())
}

/// The staff log's (name, what) lines, oldest first.
async fn staff_log(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as("SELECT name, what FROM staff_log ORDER BY id")
        .fetch_all(&app.db)
        .await
        .unwrap()
}

/// `GET path` with `cookie`, following no redirect: its status and `Location`.
async fn get_with(app: &TestApp, path: &str, cookie: &str) -> (StatusCode, String, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(format!("{}{path}", app.address))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    let location = response
        .headers()
        .get(LOCATION)
        .map(|l| l.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (response.status(), location, response.text().await.unwrap())
}

/// The CSRF token in a page's sign-out form.
fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    page[at..at + 64].to_owned()
}

#[tokio::test]
async fn staff_register_a_passkey_from_a_link_then_sign_out_and_in_with_it() {
    let (app, origin) = console_app().await;
    let link = invite(&app, &origin, "amina", Role::Admin).await;
    let Some(tab) = enrol("console-enrol", &link).await else {
        return;
    };
    assert_eq!(tab.text("#who").await, "amina (admin)");
    // The authenticator holds a passkey for `localhost` whose user handle is the account's id.
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM staff WHERE name = 'amina'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    let handle = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        id.as_bytes(),
    );
    let held = tab.credentials(&tab.authenticator().await).await;
    assert!(
        held.iter()
            .any(|c| c["rpId"] == "localhost" && c["userHandle"].as_str() == Some(&handle)),
        "the authenticator holds amina's passkey: {held:?}"
    );
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM staff_passkeys")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 1);
    tab.screenshot("console-overview").await;

    // The link worked once.
    tab.client.goto(&link).await.unwrap();
    tab.wait_for_text("h1", "This link no longer works").await;

    // Sign out, then in again with the same passkey.
    tab.client.goto(&format!("{origin}/staff")).await.unwrap();
    tab.click(".who button").await;
    tab.wait_for_text("h1", "Sign in").await;
    tab.screenshot("console-sign-in").await;
    let (status, location, _) = get_with(&app, "/staff", "").await;
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::SEE_OTHER, "/staff/login?next=%2Fstaff")
    );
    sign_in(&tab, &origin, "amina").await;

    // A name with no account is refused, and says what to do.
    tab.click(".who button").await;
    tab.wait_for_text("h1", "Sign in").await;
    tab.type_into("#name", "nobody").await;
    tab.click("#sign-in-button").await;
    tab.wait_for_text("#status", "That did not sign you in")
        .await;

    let log = staff_log(&app).await;
    let whats: Vec<&str> = log.iter().map(|(_, what)| what.as_str()).collect();
    assert_eq!(
        whats,
        [
            "invited",
            "enrolled",
            "signed in",
            "signed out",
            "signed in",
            "signed out",
            "sign-in failed"
        ]
    );
    assert_eq!(log.last().unwrap().0, "nobody");
}

#[tokio::test]
async fn a_post_without_the_sessions_csrf_token_changes_nothing() {
    let (app, origin) = console_app().await;
    let link = invite(&app, &origin, "amina", Role::Admin).await;
    let Some(tab) = enrol("console-csrf", &link).await else {
        return;
    };
    let cookie = session_cookie(&tab).await;
    drop(tab);
    let (status, _, page) = get_with(&app, "/staff/admin", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    let csrf = csrf_of(&page);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let post = |body: String, origin: Option<&str>| {
        let mut request = client
            .post(format!("{}/staff/admin/invite", app.address))
            .header(COOKIE, &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(origin) = origin {
            request = request.header(ORIGIN, origin);
        }
        request.send()
    };
    for (body, from) in [
        ("name=mallory&role=admin".to_owned(), None),
        (
            format!("name=mallory&role=admin&csrf={}", "0".repeat(64)),
            None,
        ),
        (
            format!("name=mallory&role=admin&csrf={csrf}"),
            Some("https://evil.example"),
        ),
    ] {
        let response = post(body.clone(), from).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{body} from {from:?}"
        );
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("This form has expired")
        );
    }
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM staff")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(accounts, 1, "no account was made");
    // With it, from the console's own origin, the invitation is made.
    let response = post(
        format!("name=bilal&role=finance&csrf={csrf}"),
        Some(&origin),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("/staff/enrol/"));
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM staff")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(accounts, 2);
}

#[tokio::test]
async fn a_finance_account_is_refused_the_admin_pages_and_a_revoked_one_is_signed_out_at_once() {
    let (app, origin) = console_app().await;
    let link = invite(&app, &origin, "bilal", Role::Finance).await;
    let Some(tab) = enrol("console-finance", &link).await else {
        return;
    };
    tab.client
        .goto(&format!("{origin}/staff/admin"))
        .await
        .unwrap();
    tab.wait_for_text("h1", "Only an admin may open this page")
        .await;
    tab.screenshot("console-admin-refused").await;
    let cookie = session_cookie(&tab).await;
    let (status, _, _) = get_with(&app, "/staff/admin", &cookie).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = get_with(&app, "/staff/donations", &cookie).await;
    assert_eq!(status, StatusCode::OK);

    // Revoked: the very next request is signed out.
    accounts::revoke(&app.db, "bilal", "cli:test")
        .await
        .unwrap();
    let (status, location, _) = get_with(&app, "/staff/donations", &cookie).await;
    assert_eq!(
        (status, location.as_str()),
        (
            StatusCode::SEE_OTHER,
            "/staff/login?next=%2Fstaff%2Fdonations"
        )
    );
    tab.client.goto(&format!("{origin}/staff")).await.unwrap();
    tab.wait_for_text("h1", "Sign in").await;
    // And the passkey no longer signs in.
    tab.type_into("#name", "bilal").await;
    tab.click("#sign-in-button").await;
    tab.wait_for_text("#status", "That did not sign you in")
        .await;
    let ended: Vec<(Option<String>,)> = sqlx::query_as("SELECT ended_why FROM staff_sessions")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(ended, [(Some("revoked".to_owned()),)]);
}

#[tokio::test]
async fn a_session_ends_after_30_minutes_idle_and_12_hours_in_all() {
    let (app, origin) = console_app().await;
    let link = invite(&app, &origin, "amina", Role::Admin).await;
    let Some(tab) = enrol("console-expiry", &link).await else {
        return;
    };
    let cookie = session_cookie(&tab).await;
    // 29 minutes idle: still signed in (and seen now).
    sqlx::query("UPDATE staff_sessions SET last_seen_at = now() - interval '29 minutes'")
        .execute(&app.db)
        .await
        .unwrap();
    assert_eq!(
        get_with(&app, "/staff/donations", &cookie).await.0,
        StatusCode::OK
    );
    // 31 minutes idle: signed out.
    sqlx::query("UPDATE staff_sessions SET last_seen_at = now() - interval '31 minutes'")
        .execute(&app.db)
        .await
        .unwrap();
    let (status, _, _) = get_with(&app, "/staff/donations", &cookie).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    tab.client.goto(&format!("{origin}/staff")).await.unwrap();
    tab.wait_for_text("h1", "Sign in").await;

    // A busy session still ends 12 hours after sign-in.
    sign_in(&tab, &origin, "amina").await;
    let cookie = session_cookie(&tab).await;
    sqlx::query(
        "UPDATE staff_sessions SET created_at = now() - interval '12 hours 1 minute'
         WHERE ended_at IS NULL",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let (status, _, _) = get_with(&app, "/staff/donations", &cookie).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let ended: Vec<(String,)> =
        sqlx::query_as("SELECT ended_why FROM staff_sessions ORDER BY ended_at")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(ended, [("idle".to_owned(),), ("too old".to_owned(),)]);
    let log = staff_log(&app).await;
    assert!(
        log.iter().any(|(_, what)| what == "session ended"),
        "{log:?}"
    );
}

/// A donation made through the API and paid with the simulator's control; its answer.
async fn paid_donation(app: &TestApp, email: &str, amount: i64) -> Value {
    let mut body = crate::helpers::donation_body();
    body["donor"]["email"] = email.into();
    body["amount"] = amount.into();
    let created: Value = app
        .post_donation("kashmir", &body, None)
        .await
        .json()
        .await
        .unwrap();
    let pi = created["payment_intent_id"].as_str().unwrap();
    let answer = app
        .http
        .post(format!(
            "{}/v1/simulator/payment_intents/{pi}/succeed",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    created
}

#[tokio::test]
async fn finance_finds_a_donation_by_email_and_by_its_payment_intent() {
    let (app, origin) = console_app().await;
    paid_donation(&app, "ada@example.org", 2500).await;
    let wanted = paid_donation(&app, "Zainab.Ali@Example.org", 5000).await;
    paid_donation(&app, "grace@example.org", 1000).await;
    app.wait_until_applied().await;
    let link = invite(&app, &origin, "bilal", Role::Finance).await;
    let Some(tab) = enrol("console-search", &link).await else {
        return;
    };
    tab.click("nav a[href='/staff/donations']").await;
    tab.wait_for_text("#donations caption", "3 donation(s)")
        .await;
    tab.type_into("#q", "zainab.ali@example.org").await;
    tab.click(".filters button").await;
    tab.wait_for_text("#donations caption", "1 donation(s)")
        .await;
    let row = tab.text("#donations tbody tr").await;
    assert!(row.contains("Zainab.Ali@Example.org"), "{row}");
    assert!(row.contains("£50.00"), "{row}");
    assert!(
        tab.client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("q=zainab.ali%40example.org"),
        "the search is in the address"
    );
    tab.screenshot("console-donations-search").await;
    let pi = wanted["payment_intent_id"].as_str().unwrap();
    tab.client
        .goto(&format!("{origin}/staff/donations?q={pi}"))
        .await
        .unwrap();
    tab.wait_for_text("#donations caption", "1 donation(s)")
        .await;
    assert!(
        tab.text("#donations tbody tr")
            .await
            .contains("Zainab.Ali@Example.org")
    );
    // The audit log has the searches as staff:bilal, by their kind only.
    let searches: Vec<(String, Value)> = sqlx::query_as(
        "SELECT token_name, filters FROM finance_audit_log
         WHERE what = 'GET /v1/finance/donations' AND filters ? 'q' ORDER BY id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        searches
            .iter()
            .map(|(who, f)| (who.as_str(), f["q"].as_str().unwrap()))
            .collect::<Vec<_>>(),
        [
            ("staff:bilal", "(email)"),
            ("staff:bilal", "(payment intent)")
        ]
    );
}
