//! The finance staff's console (`/staff`) in a real browser: headless Chromium with a virtual
//! authenticator (WebDriver's WebAuthn extension) against the real app with simulated payments.
//! Passkeys are bound to a name, never an IP address, so each app here listens on a port chosen
//! first and is opened as `http://localhost:PORT`, its `STAFF_ORIGIN`. Each page is saved as a
//! screenshot under `target/screenshots/console-*.png`.

use fantoccini::key::Key;
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
    tab.screenshot(&format!("{name}-link")).await;
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
    tab.screenshot("console-first-overview").await;

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
    // From the keyboard alone: the skip link, the name, the button.
    tab.press(Key::Tab).await;
    assert_eq!(tab.text(":focus").await, "Skip to the page");
    tab.press(Key::Tab).await;
    assert_eq!(tab.focused().await, "name");
    tab.type_text("amina").await;
    tab.press(Key::Tab).await;
    assert_eq!(tab.focused().await, "sign-in-button");
    tab.press(Key::Enter).await;
    tab.wait_for_text("h1", "Overview").await;
    // A bookmarked page opens after signing in.
    tab.click(".who button").await;
    tab.client
        .goto(&format!("{origin}/staff/donations?status=succeeded"))
        .await
        .unwrap();
    tab.wait_for_text("h1", "Sign in").await;
    tab.type_into("#name", "amina").await;
    tab.click("#sign-in-button").await;
    tab.wait_for_text("h1", "Donations").await;
    assert!(
        tab.client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .ends_with("/staff/donations?status=succeeded")
    );

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

    // Every lookup checks the account: one revoked is refused even if its session were left.
    sqlx::query("UPDATE staff SET revoked_at = now()")
        .execute(&app.db)
        .await
        .unwrap();
    let (status, _, _) = get_with(&app, "/staff/donations", &cookie).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    sqlx::query("UPDATE staff SET revoked_at = NULL")
        .execute(&app.db)
        .await
        .unwrap();
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
    tab.type_into("#q", "ZAINAB.ali@example.ORG ").await;
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
            .contains("q=ZAINAB.ali%40example.ORG"),
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

/// An app on Stripe's look-alike (wiremock), as the payout tests have it, whose console is at
/// `http://localhost:PORT`: the app, the objects its Stripe holds, the origin.
async fn console_app_on_stripe() -> (TestApp, crate::helpers::StripeObjects, String) {
    console_app_on_stripe_with(|_| {}).await
}

async fn console_app_on_stripe_with(
    customize: impl FnOnce(&mut quickdonate::config::Settings),
) -> (TestApp, crate::helpers::StripeObjects, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let origin = format!("http://localhost:{port}");
    let app = spawn_app_with(|s| {
        s.apply_events = false;
        s.listen_addr = format!("127.0.0.1:{port}").parse().unwrap();
        s.staff_origin = origin.clone();
        customize(s);
    })
    .await;
    crate::helpers::stripe_creates_payment_intents(&app).await;
    let stripe = crate::helpers::StripeObjects::default();
    stripe.serve(&app).await;
    (app, stripe, origin)
}

/// A gift of `amount` from `email` with a Gift Aid declaration, paid with a fee of `fee`
/// through Stripe's signed webhooks, its balance transaction in payout `payout`; its net.
async fn paid_with_gift_aid(
    app: &TestApp,
    stripe: &crate::helpers::StripeObjects,
    email: &str,
    amount: i64,
    fee: i64,
    payout: &str,
) -> i64 {
    use crate::helpers::{event, objects};
    let mut body = crate::helpers::donation_body();
    body["amount"] = amount.into();
    body["donor"]["email"] = email.into();
    body["gift_aid"] = serde_json::json!({"declared": true, "title": "Ms",
        "house_name_or_number": "10", "postcode": "s192bd"});
    let created: Value = app
        .post_donation("kashmir", &body, None)
        .await
        .json()
        .await
        .unwrap();
    let donation = uuid::Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();
    let pi = created["payment_intent_id"].as_str().unwrap();
    let charge = format!("ch_{}", &pi[3..]);
    let txn = format!("txn_{charge}");
    let mut intent = objects::payment_intent(pi, Some(donation), "succeeded", amount);
    intent["latest_charge"] = charge.clone().into();
    stripe.put(intent.clone());
    stripe.put(objects::charge(&charge, pi, amount, 0, Some(&txn)));
    let t = time::OffsetDateTime::now_utc().unix_timestamp() - 60;
    let mut transaction =
        crate::payouts::transaction(&txn, "charge", amount, fee, &charge, Some(payout));
    transaction["created"] = t.into();
    stripe.put(transaction);
    app.deliver(&event("payment_intent.succeeded", intent, t))
        .await;
    app.deliver(&event(
        "charge.succeeded",
        objects::charge(&charge, pi, amount, 0, Some(&txn)),
        t + 1,
    ))
    .await;
    app.apply_events().await;
    amount - fee
}

#[tokio::test]
async fn a_months_work_find_a_gift_open_a_payout_claim_gift_aid_and_mark_it_submitted() {
    let (app, stripe, origin) = console_app_on_stripe().await;
    let po = "po_december";
    let mut net = 0;
    net += paid_with_gift_aid(&app, &stripe, "ada@example.org", 2500, 58, po).await;
    net += paid_with_gift_aid(&app, &stripe, "zainab@example.org", 10000, 170, po).await;
    // The charity's shop sold a mug on the same Stripe account: paid out with the gifts.
    stripe.put(crate::payouts::transaction(
        "txn_shop_mug",
        "charge",
        1200,
        40,
        "ch_shop_mug",
        Some(po),
    ));
    let amount = net + 1160;
    stripe.put(crate::payouts::transaction(
        &format!("txn_{po}"),
        "payout",
        -amount,
        0,
        po,
        Some(po),
    ));
    app.deliver(&crate::helpers::event(
        "payout.paid",
        crate::payouts::payout(po, amount, "paid", "completed"),
        time::OffsetDateTime::now_utc().unix_timestamp(),
    ))
    .await;
    app.apply_events().await;

    let link = invite(&app, &origin, "amina", Role::Admin).await;
    let Some(tab) = enrol("console-month", &link).await else {
        return;
    };
    // The overview says the payout needs a look.
    tab.wait_for_text("#attention", "po_december").await;
    let today_row = tab.text(".figures tbody tr").await;
    assert_eq!(today_row, "Today 2 £125.00 £2.28 £122.72 £0.00 £0.00");
    assert!(tab.is_displayed(".chart svg").await);
    tab.screenshot("console-overview").await;

    // Find a gift by its donor's email.
    tab.client
        .goto(&format!("{origin}/staff/donations?q=Zainab%40example.org"))
        .await
        .unwrap();
    tab.wait_for_text("#donations caption", "1 donation(s)")
        .await;
    let row = tab.text("#donations tbody tr").await;
    assert!(row.contains("£100.00") && row.contains(po), "{row}");

    // Open it: its money, its events in Stripe's order, its ledger, its Gift Aid.
    tab.click("#donations tbody a[href^='/staff/donations/']")
        .await;
    tab.wait_for_text("h1", "Donation ").await;
    assert!(tab.text("#donation-status").await.starts_with("succeeded"));
    let events = tab.text("#events tbody").await;
    let (intent, charge) = (
        events
            .find("payment_intent.succeeded")
            .expect("the intent's event"),
        events.find("charge.succeeded").expect("the charge's event"),
    );
    assert!(intent < charge, "{events}");
    let ledger = tab.text("#ledger tbody").await;
    assert!(
        ledger.contains("gift £100.00") && ledger.contains("stripe_fee -£1.70"),
        "{ledger}"
    );
    assert_eq!(
        tab.text("#donation-gift-aid").await,
        "declared with the gift; not claimed yet"
    );
    tab.screenshot("console-donation").await;

    // Open its payout: the mug's sale is the one unmatched line, and says what it is.
    tab.click(&format!("#donation-facts a[href='/staff/payouts/{po}']"))
        .await;
    tab.wait_for_text("h1", "Payout po_december").await;
    assert!(
        tab.text("#reconciliation")
            .await
            .contains("differs by £11.60")
    );
    let unmatched = tab
        .client
        .find_all(fantoccini::Locator::Css("#transactions tr.unmatched"))
        .await
        .unwrap();
    assert_eq!(unmatched.len(), 2, "the line and what it is");
    assert!(unmatched[0].text().await.unwrap().contains("txn_shop_mug"));
    assert!(
        unmatched[1]
            .text()
            .await
            .unwrap()
            .contains("Not in our ledger")
    );
    tab.screenshot("console-payout").await;
    tab.click("nav a[href='/staff/payouts']").await;
    tab.wait_for_text("#payouts", "differs by £11.60").await;
    tab.screenshot("console-payouts").await;

    // Gift Aid for today's gifts: preview, prepare the claim, download its workbook.
    let today = quickdonate::timestamps::uk_date(time::OffsetDateTime::now_utc());
    let tomorrow = today + time::Duration::days(1);
    tab.client
        .goto(&format!(
            "{origin}/staff/gift-aid?from={today}&to={tomorrow}"
        ))
        .await
        .unwrap();
    tab.wait_for_text("#schedule-facts", "2, £125.00 given")
        .await;
    assert_eq!(tab.text("#schedule-gift-aid").await, "£31.25");
    tab.screenshot("console-gift-aid").await;
    tab.click("#prepare-claim").await;
    tab.wait_for_text("#claim-status", "prepared").await;
    let claim_page = tab.client.current_url().await.unwrap();
    let id = claim_page.path().rsplit('/').next().unwrap().to_owned();
    let cookie = session_cookie(&tab).await;
    let workbook = reqwest::Client::new()
        .get(format!(
            "{}/staff/exports/gift-aid-claim.ods?id={id}",
            app.address
        ))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(workbook.status(), StatusCode::OK);
    assert!(
        workbook.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(".ods")
    );
    let workbook = workbook.bytes().await.unwrap();
    assert_eq!(crate::hmrc::check(&workbook, today), Vec::<String>::new());
    let rows = crate::hmrc::rows(&workbook);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        rows.iter().map(|r| r[9].as_str()).collect::<Vec<_>>(),
        ["25.00", "100.00"]
    );

    // HMRC took it: mark it submitted with their reference.
    tab.type_into("#hmrc_reference", "CHAR-2026-12-A").await;
    tab.click("#mark-submitted").await;
    tab.wait_for_text("#claim-status", "submitted").await;
    assert_eq!(tab.text("#claim-reference").await, "CHAR-2026-12-A");
    tab.screenshot("console-claim").await;
    tab.click("nav a[href='/staff/exports']").await;
    tab.wait_for_text("#exports", "Every donation").await;
    tab.screenshot("console-exports").await;
    tab.click("nav a[href='/staff/admin']").await;
    tab.wait_for_text("#staff-log", "enrolled").await;
    tab.screenshot("console-admin").await;

    // Each step is in the audit log under the person's name.
    let whats: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT what FROM finance_audit_log WHERE token_name = 'staff:amina' ORDER BY 1",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let whats: Vec<&str> = whats.iter().map(|(w,)| w.as_str()).collect();
    for step in [
        "GET /v1/finance/donations",
        "GET /v1/finance/payouts/po_december",
        "GET /v1/finance/gift-aid/schedule",
        "GET /v1/finance/gift-aid/claims/{id}",
    ] {
        assert!(whats.contains(&step), "{step} in {whats:?}");
    }
    let claims: Vec<(String, String)> =
        sqlx::query_as("SELECT created_by, status FROM gift_aid_claims")
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(claims, [("staff:amina".to_owned(), "submitted".to_owned())]);
}

#[tokio::test]
async fn staff_accounts_are_invited_listed_and_revoked_from_the_command_line() {
    use crate::finance_access::{quickdonate, stderr, stdout};
    let (app, _) = console_app().await;
    let invited = quickdonate(
        &app,
        &["staff", "invite", "--name", "amina", "--role", "admin"],
    );
    assert!(invited.status.success(), "{}", stderr(&invited));
    let link = stdout(&invited);
    let link = link.trim();
    // The default STAFF_ORIGIN: the binary runs with the built-in settings.
    assert!(
        link.starts_with("http://localhost:8080/staff/enrol/"),
        "{link}"
    );
    assert_eq!(link.len(), "http://localhost:8080/staff/enrol/".len() + 64);
    assert!(
        stderr(&invited).contains("within 24 hours"),
        "{}",
        stderr(&invited)
    );
    let secret = link.rsplit('/').next().unwrap();
    let hash: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM staff_enrolments")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_ne!(hash, secret.as_bytes(), "only the link's hash is kept");
    let (status, _, page) = get_with(&app, &format!("/staff/enrol/{secret}"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("amina"));

    // A further passkey for the same person: a new link, the role unchanged.
    let again = quickdonate(&app, &["staff", "invite", "--name", "amina"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stderr(&again).contains("A further passkey for \"amina\" (admin)"));
    let other_role = quickdonate(
        &app,
        &["staff", "invite", "--name", "amina", "--role", "finance"],
    );
    assert!(!other_role.status.success());
    assert!(
        stderr(&other_role).contains("already admin"),
        "{}",
        stderr(&other_role)
    );
    let no_role = quickdonate(&app, &["staff", "invite", "--name", "bilal"]);
    assert!(!no_role.status.success());
    assert!(stderr(&no_role).contains("--role is needed"));

    let listed = stdout(&quickdonate(&app, &["staff", "list"]));
    assert!(
        listed.contains("amina") && listed.contains("admin"),
        "{listed}"
    );
    assert!(listed.trim_end().ends_with("1 account(s)"), "{listed}");

    let revoked = quickdonate(&app, &["staff", "revoke", "amina"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert!(stdout(&revoked).contains("amina is revoked: 0 session(s) ended"));
    // Its links no longer work, and its name is never reused.
    let (status, _, _) = get_with(&app, &format!("/staff/enrol/{secret}"), "").await;
    assert_eq!(status, StatusCode::GONE);
    let reused = quickdonate(
        &app,
        &["staff", "invite", "--name", "amina", "--role", "admin"],
    );
    assert!(!reused.status.success());
    assert!(stderr(&reused).contains("names are never reused"));
    let log = staff_log(&app).await;
    assert_eq!(
        log.iter().map(|(_, w)| w.as_str()).collect::<Vec<_>>(),
        ["invited", "invited", "revoked"]
    );
}

/// `POST path` with a JSON `body` from this machine, as the console's script sends it.
async fn post_json(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.http
        .post(format!("{}{path}", app.address))
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sign_in_attempts_are_limited_per_address_and_every_refusal_is_one_problem() {
    let (app, origin) = console_app().await;
    let link = invite(&app, &origin, "amina", Role::Admin).await;
    let secret = link.rsplit('/').next().unwrap().to_owned();

    // Every refusal says the same thing, whichever check failed.
    let unknown = post_json(
        &app,
        "/staff/login/begin",
        serde_json::json!({"name": "nobody"}),
    )
    .await;
    let unknown = crate::helpers::assert_problem(unknown, 401, "sign-in-refused").await;
    let no_passkey = post_json(
        &app,
        "/staff/login/begin",
        serde_json::json!({"name": "amina"}),
    )
    .await;
    let no_passkey = crate::helpers::assert_problem(no_passkey, 401, "sign-in-refused").await;
    assert_eq!(unknown["detail"], no_passkey["detail"]);
    let late = post_json(
        &app,
        "/staff/login/finish",
        serde_json::json!({"ceremony": uuid::Uuid::new_v4(), "credential": {
            "id": "AA", "rawId": "AA", "type": "public-key", "extensions": {},
            "response": {"authenticatorData": "AA", "clientDataJSON": "AA", "signature": "AA",
                         "userHandle": null}}}),
    )
    .await;
    crate::helpers::assert_problem(late, 401, "sign-in-refused").await;
    let bad_link = post_json(
        &app,
        &format!("/staff/enrol/{}/begin", "0".repeat(64)),
        Value::Null,
    )
    .await;
    crate::helpers::assert_problem(bad_link, 401, "sign-in-refused").await;
    let not_an_answer = post_json(
        &app,
        "/staff/login/finish",
        serde_json::json!({"ceremony": 1}),
    )
    .await;
    crate::helpers::assert_problem(not_an_answer, 422, "validation").await;

    // A challenge is answered once: a wrong answer uses it up, and the link stays for a new one.
    let begun: Value = post_json(&app, &format!("/staff/enrol/{secret}/begin"), Value::Null)
        .await
        .json()
        .await
        .unwrap();
    assert!(begun["publicKey"]["challenge"].is_string(), "{begun}");
    let forged = serde_json::json!({"ceremony": begun["ceremony"], "credential": {
        "id": "AA", "rawId": "AA", "type": "public-key", "extensions": {},
        "response": {"attestationObject": "AA", "clientDataJSON": "AA"}}});
    for _ in 0..2 {
        let refused = post_json(
            &app,
            &format!("/staff/enrol/{secret}/finish"),
            forged.clone(),
        )
        .await;
        crate::helpers::assert_problem(refused, 401, "sign-in-refused").await;
    }
    let details: Vec<(String,)> = sqlx::query_as(
        "SELECT detail FROM staff_log WHERE what = 'enrolment refused' ORDER BY id DESC LIMIT 2",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(details[0].0, "late or replayed");
    assert_ne!(
        details[1].0, "late or replayed",
        "the first was checked: {details:?}"
    );
    assert_eq!(
        get_with(&app, &format!("/staff/enrol/{secret}"), "")
            .await
            .0,
        StatusCode::OK
    );

    // 20 challenges from one address in 10 minutes, then no more, even for a real link.
    for _ in 0..16 {
        let response = post_json(
            &app,
            "/staff/login/begin",
            serde_json::json!({"name": "nobody"}),
        )
        .await;
        assert_eq!(response.status(), 401);
    }
    let last = post_json(&app, &format!("/staff/enrol/{secret}/begin"), Value::Null).await;
    assert_eq!(last.status(), 200, "the 20th challenge");
    let over = post_json(&app, &format!("/staff/enrol/{secret}/begin"), Value::Null).await;
    assert_eq!(over.headers()["retry-after"], "600");
    crate::helpers::assert_problem(over, 429, "too-many-attempts").await;
    let log = staff_log(&app).await;
    assert_eq!(log.last().unwrap().1, "sign-in refused");
    let failed = log
        .iter()
        .filter(|(_, what)| what == "sign-in failed")
        .count();
    assert!(failed >= 18, "{log:?}");
}

#[tokio::test]
async fn an_admin_applies_a_failed_event_again_from_the_console() {
    use crate::helpers::{event, objects};
    let (app, stripe, origin) = console_app_on_stripe_with(|s| s.event_max_attempts = 1).await;
    let (donation, pi) = app.create_donation(2500).await;
    // Stripe does not show the payment yet: the charge's event fails and is set aside.
    let mut charge = objects::charge("ch_late", &pi, 2500, 0, Some("txn_late"));
    charge["metadata"] = serde_json::json!({"donation_id": donation.to_string()});
    let charged = event(
        "charge.succeeded",
        charge.clone(),
        time::OffsetDateTime::now_utc().unix_timestamp(),
    );
    let id = charged["id"].as_str().unwrap().to_owned();
    assert_eq!(app.deliver(&charged).await.status(), 200);
    app.apply_events().await;

    let link = invite(&app, &origin, "amina", Role::Admin).await;
    let Some(tab) = enrol("console-replay", &link).await else {
        return;
    };
    tab.click("nav a[href='/staff/admin']").await;
    tab.wait_for_text("#failed-events", &id).await;
    tab.screenshot("console-admin-failed-event").await;

    // Stripe shows it now; the admin applies it again.
    let mut paid = objects::payment_intent(&pi, Some(donation), "succeeded", 2500);
    paid["latest_charge"] = "ch_late".into();
    stripe.put(paid);
    stripe.put(charge);
    stripe.put(crate::payouts::transaction(
        "txn_late", "charge", 2500, 58, "ch_late", None,
    ));
    tab.click(&format!("button[aria-label='Apply {id} again']"))
        .await;
    tab.wait_for_text("#done", "is queued to be applied again")
        .await;
    app.apply_events().await;
    let state: String = sqlx::query_scalar("SELECT state FROM stripe_events WHERE id = $1")
        .bind(&id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(state, "applied");
    let status: String = sqlx::query_scalar("SELECT status FROM donations WHERE id = $1")
        .bind(donation)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(status, "succeeded");
    tab.client
        .goto(&format!("{origin}/staff/admin"))
        .await
        .unwrap();
    tab.wait_for_text("#failed-events", "None: every event was applied")
        .await;
    let replays: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM finance_audit_log
         WHERE token_name = 'staff:amina' AND what = 'POST /v1/finance/events/{id}/replay'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(replays, 1);
}
