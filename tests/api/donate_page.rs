//! The quick-donate page (`GET /donate/{slug}`) in a real browser: headless Chromium against the
//! real app with simulated payments. Each final state is saved as a screenshot under
//! `target/screenshots/`.

use fantoccini::key::Key;
use serde_json::Value;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use quickdonate::config::{Config, Settings};
use quickdonate::donations::fees::FeeModel;
use quickdonate::money;

use crate::helpers::{TestApp, spawn_app_with};
use crate::webdriver::{self, Tab};

async fn simulated_app(customize: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.stripe_secret_key = None;
        s.stripe_publishable_key = None;
        customize(s);
    })
    .await
}

fn page_of(app: &TestApp) -> String {
    format!("{}/donate/kashmir", app.address)
}

/// The extra the service adds to cover the card fee on `amount`, by its own fee model.
fn cover_for(amount: i64) -> i64 {
    let config = Config::from_settings(&Settings::defaults().unwrap()).unwrap();
    FeeModel::new(config.fees).cover_for(amount)
}

async fn fill_in_the_donor(tab: &Tab, email: &str) {
    tab.type_into("#first-name", "Ada").await;
    tab.type_into("#last-name", "Lovelace").await;
    tab.type_into("#email", email).await;
}

/// The donations stored: (status, amount, cover, total, email).
async fn donations(app: &TestApp) -> Vec<(String, i64, i64, i64, String)> {
    sqlx::query_as(
        "SELECT status::text, amount, cover_fees_amount, total_amount, donor_email
         FROM donations ORDER BY created_at",
    )
    .fetch_all(&app.db)
    .await
    .unwrap()
}

/// A donation made through the API and paid (`succeed`) or declined (`fail`) with the
/// simulator's control, as a page elsewhere would have; its creation answer.
async fn donation_paid_by_api(app: &TestApp, action: &str) -> Value {
    let created: Value = app
        .post_donation("kashmir", &crate::helpers::donation_body(), None)
        .await
        .json()
        .await
        .unwrap();
    let pi = created["payment_intent_id"].as_str().unwrap();
    let answer = app
        .http
        .post(format!(
            "{}/v1/simulator/payment_intents/{pi}/{action}",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    created
}

async fn donation_id(app: &TestApp) -> Uuid {
    sqlx::query_scalar("SELECT id FROM donations")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_donor_chooses_25_pounds_pays_and_sees_the_thank_you_and_the_total_move() {
    let app = simulated_app(|_| {}).await;
    let Some(tab) = webdriver::open("quick-donate", &page_of(&app)).await else {
        return;
    };
    assert_eq!(tab.text("h1").await, "Kashmir Campaign");
    assert_eq!(tab.text("#raised").await, "£0.00");
    let mut presets = Vec::new();
    for label in tab
        .client
        .find_all(fantoccini::Locator::Css(".amounts label"))
        .await
        .unwrap()
    {
        presets.push(label.text().await.unwrap());
    }
    assert_eq!(presets, ["£10", "£25", "£50", "£100", "Other amount"]);

    tab.click_label("£25").await;
    let cover = money::format(cover_for(2500), "gbp");
    tab.wait_for_text(
        "#cover-fees-label",
        &format!("Add {cover} to cover the card fee"),
    )
    .await;
    tab.wait_for_text("#total", "You will give £25.00.").await;
    fill_in_the_donor(&tab, "ada@example.org").await;
    tab.click("#quick-donate").await;

    tab.wait_for_text("#payment-heading", "Pay £25.00").await;
    assert_eq!(tab.focused().await, "payment-heading");
    assert!(!tab.is_displayed("#donation-form").await);
    assert!(tab.text(".simulated").await.contains("no money moves"));
    tab.click("#simulated-pay").await;

    tab.wait_for_text("#result-heading", "Thank you").await;
    assert_eq!(
        tab.text("#result-message").await,
        "Your donation of £25.00 to the Kashmir Campaign has been received. \
         Your receipt is on its way to your email."
    );
    assert_eq!(tab.focused().await, "result-heading");
    tab.wait_for_text("#raised", "£25.00").await;
    assert_eq!(tab.text("#donation-count").await, "1 donation");
    tab.screenshot("quick-donate-thank-you").await;

    assert_eq!(
        donations(&app).await,
        [(
            "succeeded".to_owned(),
            2500,
            0,
            2500,
            "ada@example.org".to_owned()
        )]
    );
    let campaign = app.campaign().await;
    assert_eq!(campaign["raised_amount"], 2500);
}

#[tokio::test]
async fn a_bad_email_is_shown_at_its_field_and_the_corrected_form_makes_one_donation() {
    let app = simulated_app(|_| {}).await;
    let Some(tab) = webdriver::open("bad-email", &page_of(&app)).await else {
        return;
    };
    tab.click_label("£10").await;
    fill_in_the_donor(&tab, "not-an-email").await;
    tab.click("#quick-donate").await;

    let message = tab
        .wait_for_text("#email-error", "must be an email address")
        .await;
    assert_eq!(
        message,
        "Email: must be an email address like name@example.org"
    );
    assert_eq!(tab.focused().await, "error-summary");
    assert_eq!(
        tab.find("#email")
            .await
            .attr("aria-invalid")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    assert!(!tab.is_displayed("#first-name-error").await);
    assert!(!tab.is_displayed("#payment").await);
    tab.screenshot("bad-email").await;
    assert_eq!(app.donation_count().await, 0);

    // The summary's link leads to the field.
    tab.click("#error-list a").await;
    assert_eq!(tab.focused().await, "email");
    tab.type_into("#email", "ada@example.org").await;
    tab.click("#quick-donate").await;
    tab.wait_for_text("#payment-heading", "Pay £10.00").await;
    assert!(!tab.is_displayed("#error-summary").await);
    assert_eq!(app.donation_count().await, 1);
}

#[tokio::test]
async fn a_declined_card_then_another_card_pays_the_same_donation() {
    let app = simulated_app(|_| {}).await;
    let Some(tab) = webdriver::open("declined-then-paid", &page_of(&app)).await else {
        return;
    };
    tab.click_label("£50").await;
    fill_in_the_donor(&tab, "ada@example.org").await;
    tab.click("#quick-donate").await;
    tab.wait_for_text("#payment-heading", "Pay £50.00").await;

    tab.click("#simulated-decline").await;
    tab.wait_for_text("#result-heading", "Your payment did not go through")
        .await;
    assert!(
        tab.text("#result-message")
            .await
            .starts_with("Your card was declined.")
    );
    assert_eq!(tab.focused().await, "result-heading");
    tab.screenshot("declined").await;

    tab.click("#try-another-card").await;
    assert_eq!(tab.focused().await, "payment-heading");
    tab.click("#simulated-pay").await;
    tab.wait_for_text("#result-heading", "Thank you").await;
    tab.wait_for_text("#raised", "£50.00").await;
    tab.screenshot("declined-then-paid").await;

    // One donation, paid on its second charge.
    assert_eq!(
        donations(&app).await,
        [(
            "succeeded".to_owned(),
            5000,
            0,
            5000,
            "ada@example.org".to_owned()
        )]
    );
    let charges: Vec<String> = sqlx::query_scalar(
        "SELECT c.object->>'status' FROM simulator_charges c
         ORDER BY (c.object->>'created')::bigint, c.object->>'paid'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(charges, ["failed", "succeeded"]);
}

#[tokio::test]
async fn the_whole_flow_works_from_the_keyboard_alone() {
    let app = simulated_app(|_| {}).await;
    let Some(tab) = webdriver::open("keyboard-only", &page_of(&app)).await else {
        return;
    };

    // Into the amounts: the first is focused, and the arrow keys choose.
    tab.press(Key::Tab).await;
    assert_eq!(tab.focused().await, "amount-1000");
    tab.press(Key::Right).await;
    assert_eq!(tab.focused().await, "amount-2500");
    // On to the fee box, which the space bar ticks.
    tab.press(Key::Tab).await;
    assert_eq!(tab.focused().await, "cover-fees");
    tab.press(Key::Space).await;
    let cover = cover_for(2500);
    tab.wait_for_text(
        "#total",
        &format!("You will give {}.", money::format(2500 + cover, "gbp")),
    )
    .await;
    for (field, text) in [
        ("first-name", "Ada"),
        ("last-name", "Lovelace"),
        ("email", "ada@example.org"),
    ] {
        tab.press(Key::Tab).await;
        assert_eq!(tab.focused().await, field);
        tab.type_text(text).await;
    }
    tab.press(Key::Tab).await;
    assert_eq!(tab.focused().await, "anonymous");
    tab.press(Key::Tab).await;
    assert_eq!(tab.focused().await, "gift-aid-declared");
    tab.press(Key::Tab).await;
    assert_eq!(tab.focused().await, "quick-donate");
    tab.press(Key::Enter).await;

    tab.wait_for_text("#payment-heading", "Pay").await;
    assert_eq!(tab.focused().await, "payment-heading");
    tab.press(Key::Tab).await;
    assert_eq!(tab.focused().await, "simulated-pay");
    tab.press(Key::Enter).await;
    tab.wait_for_text("#result-heading", "Thank you").await;
    assert_eq!(tab.focused().await, "result-heading");
    tab.screenshot("keyboard-only").await;

    assert_eq!(
        donations(&app).await,
        [(
            "succeeded".to_owned(),
            2500,
            cover,
            2500 + cover,
            "ada@example.org".to_owned()
        )]
    );
}

#[tokio::test]
async fn a_gift_aid_declaration_and_an_other_amount_with_the_fee_covered_are_stored() {
    let app = simulated_app(|_| {}).await;
    let Some(tab) = webdriver::open("gift-aid", &page_of(&app)).await else {
        return;
    };
    tab.click_label("Other amount").await;
    assert_eq!(tab.focused().await, "other-amount");
    tab.type_text("12.34").await;
    tab.click("#cover-fees").await;
    let cover = cover_for(1234);
    tab.wait_for_text(
        "#cover-fees-label",
        &format!("Add {} to cover the card fee", money::format(cover, "gbp")),
    )
    .await;
    tab.wait_for_text(
        "#total",
        &format!("You will give {}.", money::format(1234 + cover, "gbp")),
    )
    .await;
    fill_in_the_donor(&tab, "ada@example.org").await;

    assert!(!tab.is_displayed("#gift-aid-address").await);
    let declaration = tab.text("#gift-aid-declaration").await;
    assert_eq!(
        declaration,
        quickdonate::gift_aid::declaration("Example Charity")
    );
    tab.click("#gift-aid-declared").await;
    assert!(tab.is_displayed("#gift-aid-address").await);
    tab.type_into("#gift-aid-title", "Dr").await;
    tab.type_into("#gift-aid-house", "12").await;
    tab.type_into("#gift-aid-postcode", "sw1a 1aa").await;
    tab.click("#quick-donate").await;
    tab.wait_for_text(
        "#payment-heading",
        &format!(
            "Pay {} (your £12.34 gift and the {} card fee)",
            money::format(1234 + cover, "gbp"),
            money::format(cover, "gbp")
        ),
    )
    .await;
    tab.click("#simulated-pay").await;
    let thanks = tab
        .wait_for_text("#result-message", "has been received")
        .await;
    assert!(
        thanks.contains(&format!(
            "That is your £12.34 gift and {} to cover the card fee.",
            money::format(cover, "gbp")
        )),
        "{thanks}"
    );
    tab.screenshot("gift-aid-thank-you").await;

    assert_eq!(
        donations(&app).await,
        [(
            "succeeded".to_owned(),
            1234,
            cover,
            1234 + cover,
            "ada@example.org".to_owned()
        )]
    );
    let declaration: (Option<String>, String, Option<String>, String, Uuid) = sqlx::query_as(
        "SELECT title, house_name_or_number, postcode, country, donation_id
         FROM gift_aid_declarations",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        declaration,
        (
            Some("Dr".to_owned()),
            "12".to_owned(),
            Some("SW1A 1AA".to_owned()),
            "United Kingdom".to_owned(),
            donation_id(&app).await
        )
    );
}

#[tokio::test]
async fn the_page_fits_a_320_pixel_screen() {
    let app = simulated_app(|_| {}).await;
    let Some(tab) = webdriver::open("narrow", &page_of(&app)).await else {
        return;
    };
    tab.client.set_window_size(320, 900).await.unwrap();
    tab.click("#gift-aid-declared").await;
    let fits = tab
        .script(
            "return [window.innerWidth, document.documentElement.scrollWidth,
                     Array.from(document.querySelectorAll('input:not([type=radio]), button, label'))
                       .filter(e => e.offsetParent !== null)
                       .every(e => e.getBoundingClientRect().right <= window.innerWidth)];",
        )
        .await;
    let [width, scroll_width, inside] = fits.as_array().unwrap().as_slice() else {
        panic!("{fits}");
    };
    assert!(width.as_i64().unwrap() <= 320, "{fits}");
    assert!(
        scroll_width.as_i64() <= width.as_i64(),
        "the page scrolls sideways at 320 px: {fits}"
    );
    assert_eq!(inside, &Value::Bool(true), "a control is cut off: {fits}");
    // Every control has a label a screen reader reads out.
    let unlabelled = tab
        .script(
            "return Array.from(document.querySelectorAll('input'))
                      .filter(input => input.labels.length === 0 ||
                                       input.labels[0].textContent.trim() === '')
                      .map(input => input.id);",
        )
        .await;
    assert_eq!(unlabelled, serde_json::json!([]));
    tab.screenshot("narrow-320").await;
}

/// Makes `site`, on another origin, a page that frames the donation page.
async fn frame_on(site: &MockServer, app: &TestApp) {
    let html = format!(
        "<!doctype html><title>framing</title>\
         <iframe id=\"donate\" title=\"Donate\" src=\"{}\" width=\"420\" height=\"1100\" \
         onload=\"document.title='loaded'\"></iframe>",
        page_of(app)
    );
    Mock::given(method("GET"))
        .and(path("/"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(html, "text/html"))
        .mount(site)
        .await;
}

#[tokio::test]
async fn the_page_works_in_an_iframe_on_an_allowed_origin_and_is_refused_elsewhere() {
    let allowed = MockServer::start().await;
    let allowed_origin = allowed.uri();
    let app = simulated_app(|s| s.allowed_origins = allowed_origin).await;
    frame_on(&allowed, &app).await;

    let Some(tab) = webdriver::open("embedded", &allowed.uri()).await else {
        return;
    };
    tab.find("#donate").await.enter_frame().await.unwrap();
    tab.wait_for_text("h1", "Kashmir Campaign").await;
    tab.click_label("£10").await;
    fill_in_the_donor(&tab, "ada@example.org").await;
    tab.click("#quick-donate").await;
    tab.wait_for_text("#payment-heading", "Pay £10.00").await;
    tab.click("#simulated-pay").await;
    tab.wait_for_text("#result-heading", "Thank you").await;
    tab.client.enter_parent_frame().await.unwrap();
    tab.screenshot("embedded-thank-you").await;
    assert_eq!(app.donation_count().await, 1);

    // An origin not in ALLOWED_ORIGINS: the browser refuses to show the page in its frame.
    let elsewhere = MockServer::start().await;
    frame_on(&elsewhere, &app).await;
    tab.client.goto(&elsewhere.uri()).await.unwrap();
    wait_for_title(&tab, "loaded").await;
    tab.find("#donate").await.enter_frame().await.unwrap();
    let shown = tab
        .script("return document.getElementById('donate-page') !== null")
        .await;
    assert_eq!(
        shown,
        Value::Bool(false),
        "the page showed in a foreign frame"
    );
    tab.client.enter_parent_frame().await.unwrap();
    tab.screenshot("embedded-refused").await;
}

async fn wait_for_title(tab: &Tab, title: &str) {
    for _ in 0..300 {
        if tab.client.title().await.unwrap() == title {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the page's title never became {title:?}");
}

#[tokio::test]
async fn a_lost_answer_is_retried_with_the_same_idempotency_key_and_makes_one_donation() {
    let app = simulated_app(|_| {}).await;
    let Some(tab) = webdriver::open("lost-answer", &page_of(&app)).await else {
        return;
    };
    // The first creation reaches the server, but its answer never reaches the page, as when a
    // connection drops; every creation's key is noted.
    tab.script(LOSE_THE_FIRST_ANSWER).await;
    tab.click_label("£25").await;
    fill_in_the_donor(&tab, "ada@example.org").await;
    tab.click("#quick-donate").await;
    tab.wait_for_text(
        "#error-summary",
        "We could not reach the server, and nothing was charged",
    )
    .await;
    assert_eq!(app.donation_count().await, 1);

    tab.click("#quick-donate").await;
    tab.wait_for_text("#payment-heading", "Pay £25.00").await;
    let keys = tab.script("return window.keys").await;
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1], "the retry sent another key");
    assert!(Uuid::parse_str(keys[0].as_str().unwrap()).is_ok());
    assert_eq!(app.donation_count().await, 1);

    // A changed form is another attempt, with a key of its own: the first answer is lost
    // again, then the donor picks another amount before pressing again.
    tab.script("location.reload(); return null").await;
    tab.find("#quick-donate").await;
    tab.script(LOSE_THE_FIRST_ANSWER).await;
    tab.click_label("£25").await;
    fill_in_the_donor(&tab, "ada@example.org").await;
    tab.click("#quick-donate").await;
    tab.wait_for_text("#error-summary", "We could not reach the server")
        .await;
    tab.click_label("£50").await;
    tab.click("#quick-donate").await;
    tab.wait_for_text("#payment-heading", "Pay £50.00").await;
    let keys = tab.script("return window.keys").await;
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1], "a changed form reused its key");
    // The lost one and the second; none refused as a reused key.
    assert_eq!(app.donation_count().await, 3);
}

/// Makes the page's first donation request reach the server and its answer never reach the
/// page, as when a connection drops, and notes every creation's Idempotency-Key in `keys`.
const LOSE_THE_FIRST_ANSWER: &str = "const send = window.fetch;
     window.keys = [];
     window.fetch = async (url, options) => {
       if (!(options && options.method === 'POST' && String(url).endsWith('/donations')))
         return send(url, options);
       window.keys.push(options.headers['idempotency-key']);
       const answer = await send(url, options);
       if (window.keys.length === 1) throw new TypeError('Failed to fetch');
       return answer;
     };
     return null;";

#[tokio::test]
async fn an_amount_with_a_decimal_comma_is_refused_not_read_as_a_hundred_times_more() {
    let app = simulated_app(|_| {}).await;
    let Some(tab) = webdriver::open("decimal-comma", &page_of(&app)).await else {
        return;
    };
    tab.click_label("Other amount").await;
    tab.type_text("12,50").await;
    fill_in_the_donor(&tab, "ada@example.org").await;
    assert_eq!(tab.text("#total").await, "");
    tab.click("#quick-donate").await;
    tab.wait_for_text("#amount-error", "Amount: Enter an amount like 12.50")
        .await;
    assert_eq!(tab.focused().await, "error-summary");
    assert_eq!(app.donation_count().await, 0);

    // A comma that groups thousands is read as one.
    tab.type_into("#other-amount", "1,250").await;
    tab.wait_for_text("#total", "You will give £1,250.00.")
        .await;
    tab.click("#quick-donate").await;
    tab.wait_for_text("#payment-heading", "Pay £1,250.00").await;
    assert_eq!(donations(&app).await[0].1, 125_000);
}

/// Without a browser: what the page and its assets are served with.
#[tokio::test]
async fn the_page_is_served_with_a_strict_policy_no_inline_script_and_a_404_for_no_campaign() {
    let app = simulated_app(|s| s.allowed_origins = "https://www.example.org".to_owned()).await;
    let response = app.get("/donate/kashmir").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.starts_with("default-src 'none'; script-src 'self';"),
        "{policy}"
    );
    assert!(
        policy.ends_with("frame-ancestors 'self' https://www.example.org"),
        "{policy}"
    );
    assert!(!policy.contains("unsafe"), "{policy}");
    let html = response.text().await.unwrap();
    // Everything the script runs comes from a file, which the policy allows; nothing inline.
    assert_eq!(html.matches("<script").count(), 1);
    // The script and style are named with this build's version, which the answer's own URLs
    // carry.
    let url_of = |prefix: &str| {
        let start = html
            .find(prefix)
            .unwrap_or_else(|| panic!("{prefix} in {html}"));
        let rest = &html[start + prefix.len() - "/donate/assets/".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    };
    let script = url_of("<script src=\"/donate/assets/");
    let style = url_of("<link rel=\"stylesheet\" href=\"/donate/assets/");
    assert!(
        script.starts_with("/donate/assets/donate.js?v="),
        "{script}"
    );
    let version = script.rsplit('=').next().unwrap().to_owned();
    assert_eq!(version.len(), 16);
    assert_eq!(style, format!("/donate/assets/donate.css?v={version}"));
    assert!(html.contains(&format!("<script src=\"{script}\" defer></script>")));
    assert!(!html.contains(" style=") && !html.contains("<style"));
    let handler = html.split(" on").skip(1).find(|rest| {
        rest.split_once('=').is_some_and(|(name, _)| {
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase())
        })
    });
    assert_eq!(handler, None, "an inline event handler");
    assert!(
        !html.contains("js.stripe.com"),
        "Stripe.js loaded with simulated payments"
    );

    for (path, kind) in [
        (script.as_str(), "text/javascript; charset=utf-8"),
        (style.as_str(), "text/css; charset=utf-8"),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], kind, "{path}");
        assert_eq!(response.headers()["cache-control"], "max-age=86400");
    }
    let unknown = app.get("/donate/assets/other.js").await;
    assert_eq!(unknown.status(), 404);

    let missing = app.get("/donate/nowhere").await;
    assert_eq!(missing.status(), 404);
    // Not remembered: a campaign that opens later shows at once.
    assert_eq!(missing.headers()["cache-control"], "no-store");
    assert!(
        missing.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    assert!(
        missing
            .text()
            .await
            .unwrap()
            .contains("There is no campaign here")
    );
}

/// With a real Stripe key the page loads Stripe.js, and its policy lets exactly Stripe's script,
/// frames and API through (what the page does with Stripe.js is the next test's).
#[tokio::test]
async fn with_a_real_stripe_key_the_page_loads_stripe_js_and_allows_only_stripe() {
    let app = crate::helpers::spawn_app().await;
    let response = app.get("/donate/kashmir").await;
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("script-src 'self' https://js.stripe.com https://*.js.stripe.com;"),
        "{policy}"
    );
    assert!(
        policy.contains("connect-src 'self' https://api.stripe.com;"),
        "{policy}"
    );
    assert!(
        policy.contains(
            "frame-src https://js.stripe.com https://*.js.stripe.com https://hooks.stripe.com;"
        ),
        "{policy}"
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("<script src=\"https://js.stripe.com/v3/\" defer></script>"));
    assert!(html.contains("data-payments=\"stripe\""));
    assert!(html.contains("<div id=\"payment-element\"></div>"));
    assert!(!html.contains("simulated-pay"));
}

#[tokio::test]
async fn a_goal_is_shown_gift_aid_only_in_pounds_and_a_closed_campaign_has_no_page() {
    let catalogue = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        catalogue.path(),
        r#"
        [[campaigns]]
        slug = "appeal"
        title = "Winter <Appeal> & More"
        currency = "gbp"
        suggested_amounts = [1250, 5000]
        min_amount = 200
        max_amount = 1000000
        goal_amount = 5000000
        active = true

        [[campaigns]]
        slug = "dollars"
        title = "Dollar Appeal"
        currency = "usd"
        suggested_amounts = [2000]
        min_amount = 200
        max_amount = 1000000
        active = true

        [[campaigns]]
        slug = "closed"
        title = "Closed Appeal"
        currency = "gbp"
        suggested_amounts = [1000]
        min_amount = 200
        max_amount = 1000000
        active = false
        "#,
    )
    .unwrap();
    let path = catalogue.path().to_owned();
    let app = simulated_app(move |s| s.campaigns_file = path).await;

    let html = app.get("/donate/appeal").await.text().await.unwrap();
    // The title is escaped wherever it appears.
    assert!(
        html.contains("<h1>Winter &#60;Appeal&#62; &#38; More</h1>"),
        "{html}"
    );
    assert!(!html.contains("<Appeal>"));
    assert!(html.contains("of a <span id=\"goal\">£50,000</span> goal"));
    assert!(html.contains("<progress id=\"progress-bar\" max=\"5000000\" value=\"0\""));
    assert!(html.contains(">£12.50</label>") && html.contains(">£50</label>"));
    assert!(html.contains("id=\"gift-aid-declared\""));

    let html = app.get("/donate/dollars").await.text().await.unwrap();
    assert!(html.contains(">$20</label>"));
    assert!(html.contains("Other amount ($)"));
    assert!(!html.contains("gift-aid"), "Gift Aid offered on dollars");
    assert!(!html.contains("<progress"));

    assert_eq!(app.get("/donate/closed").await.status(), 404);
}

/// Stripe sends a donor whose payment method left the page (a bank's own page, say) back to
/// the page with the donation named; the page waits for that donation's status.
#[tokio::test]
async fn back_from_a_payment_redirect_the_page_waits_for_the_donation_it_names() {
    let app = simulated_app(|_| {}).await;
    let created = donation_paid_by_api(&app, "succeed").await;
    let (id, pi) = (
        created["id"].as_str().unwrap(),
        created["payment_intent_id"].as_str().unwrap(),
    );

    let Some(tab) = webdriver::open(
        "redirect-return",
        &format!(
            "{}?donation={id}&payment_intent={pi}&redirect_status=succeeded",
            page_of(&app)
        ),
    )
    .await
    else {
        return;
    };
    assert!(!tab.is_displayed("#donation-form").await);
    tab.wait_for_text("#result-heading", "Thank you").await;
    let amount = money::format(created["total_amount"].as_i64().unwrap(), "gbp");
    tab.wait_for_text("#result-message", &format!("Your donation of {amount}"))
        .await;

    // The donor can start again at once, and a reload starts afresh too.
    tab.client
        .goto(&format!(
            "{}?donation={id}&redirect_status=failed",
            page_of(&app)
        ))
        .await
        .unwrap();
    tab.wait_for_text("#error-summary", "Your payment did not go through")
        .await;
    assert!(tab.is_displayed("#donation-form").await);
    let url = tab.client.current_url().await.unwrap();
    assert_eq!(url.query(), None, "{url}");
}

/// With a real key, in the browser. Stripe.js cannot load here (no network), which is the first
/// case; then a stand-in for it shows that the page mounts the Payment Element with the
/// donation's client secret, shows a decline Stripe reports, and waits after a payment.
#[tokio::test]
async fn with_a_real_key_the_page_mounts_the_payment_element_and_survives_stripe_js_missing() {
    let app = crate::helpers::spawn_app().await;
    crate::helpers::stripe_creates_payment_intents(&app).await;
    let Some(tab) = webdriver::open("stripe-mode", &page_of(&app)).await else {
        return;
    };
    tab.click_label("£10").await;
    fill_in_the_donor(&tab, "ada@example.org").await;
    tab.click("#quick-donate").await;
    tab.wait_for_text("#result-heading", "The card form did not load")
        .await;

    tab.client.refresh().await.unwrap();
    tab.find("#quick-donate").await;
    tab.script(
        "window.calls = [];
         window.Stripe = (key) => ({
           elements: (options) => ({
             create: (kind) => ({
               mount: (at) => window.calls.push(['mount', key, options.clientSecret, kind, at]),
             }),
           }),
           confirmPayment: async (options) => {
             window.calls.push(['confirm', options.redirect, options.confirmParams.return_url]);
             return window.calls.length === 2
               ? { error: { message: 'Your card has insufficient funds.' } }
               : {};
           },
         });
         return null;",
    )
    .await;
    tab.click_label("£10").await;
    fill_in_the_donor(&tab, "ada@example.org").await;
    tab.click("#quick-donate").await;
    tab.wait_for_text("#payment-heading", "Pay £10.00").await;
    let created: (Uuid, String) =
        sqlx::query_as("SELECT id, payment_intent_id FROM donations ORDER BY created_at DESC")
            .fetch_one(&app.db)
            .await
            .unwrap();
    let calls = tab.script("return window.calls").await;
    let mount = &calls[0];
    assert_eq!(mount[0], "mount");
    assert_eq!(mount[1], crate::helpers::PUBLISHABLE_KEY);
    assert!(
        mount[2]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}_secret_", created.1)),
        "{calls}"
    );
    assert_eq!(
        (&mount[3], &mount[4]),
        (&Value::from("payment"), &Value::from("#payment-element"))
    );

    tab.click("#pay").await;
    tab.wait_for_text("#result-message", "Your card has insufficient funds.")
        .await;
    let calls = tab.script("return window.calls").await;
    assert_eq!(calls[1][1], "if_required");
    assert_eq!(
        calls[1][2],
        Value::from(format!("{}?donation={}", page_of(&app), created.0))
    );
    tab.click("#try-another-card").await;
    tab.click("#pay").await;
    tab.wait_for_text("#status", "Confirming your payment")
        .await;
    tab.screenshot("stripe-mode-confirming").await;
}

/// A donation that failed after the card step (a bank's later answer, the outcome of a
/// redirect) is shown as declined, not waited on for two minutes.
#[tokio::test]
async fn a_failure_that_arrives_only_by_webhook_is_shown_as_a_decline() {
    let app = simulated_app(|_| {}).await;
    let created = donation_paid_by_api(&app, "fail").await;
    let id = created["id"].as_str().unwrap();
    app.wait_until_applied().await;

    let Some(tab) = webdriver::open(
        "failed-by-webhook",
        &format!("{}?donation={id}&redirect_status=succeeded", page_of(&app)),
    )
    .await
    else {
        return;
    };
    tab.wait_for_text("#result-heading", "Your payment did not go through")
        .await;
    assert!(
        tab.text("#result-message")
            .await
            .starts_with("Your payment was declined.")
    );
}

/// A retry whose donation was given up meanwhile (`donation-abandoned`) is told so in words a
/// donor reads, and the next press starts a new donation with a new key.
#[tokio::test]
async fn a_donation_given_up_meanwhile_is_started_afresh_with_a_new_key() {
    let app = crate::helpers::spawn_app().await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(crate::helpers::stripe_error(500, "api_error", "down"))
        .mount(&app.stripe)
        .await;
    let Some(tab) = webdriver::open("given-up", &page_of(&app)).await else {
        return;
    };
    tab.script(
        "const send = window.fetch; window.keys = [];
         window.fetch = (url, options) => {
           if (options && options.method === 'POST') window.keys.push(options.headers['idempotency-key']);
           return send(url, options);
         };
         return null;",
    )
    .await;
    tab.click_label("£25").await;
    fill_in_the_donor(&tab, "ada@example.org").await;
    tab.click("#quick-donate").await;
    tab.wait_for_text(
        "#error-summary",
        "Something went wrong on our side, and nothing was charged",
    )
    .await;
    // Stripe is back, but meanwhile the sweep of abandoned payments gave the donation up, as
    // it does one that never got its PaymentIntent.
    app.stripe.reset().await;
    crate::helpers::stripe_creates_payment_intents(&app).await;
    sqlx::query("UPDATE donations SET status = 'canceled'")
        .execute(&app.db)
        .await
        .unwrap();

    tab.click("#quick-donate").await;
    tab.wait_for_text(
        "#error-summary",
        "That donation was given up after waiting too long",
    )
    .await;
    tab.click("#quick-donate").await;
    // A new donation (whose card form cannot load here, with no network for Stripe.js).
    tab.wait_for_text("#result-heading", "The card form did not load")
        .await;
    let keys = tab.script("return window.keys").await;
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(keys[0], keys[1], "the retry after a 5xx sent another key");
    assert_ne!(keys[1], keys[2], "a given-up donation's key was sent again");
    assert_eq!(app.donation_count().await, 2);
}
