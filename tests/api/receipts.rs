//! Receipts, exactly once: a thank-you when a donation first succeeds and a notice when it is
//! fully refunded, each sent once whatever Stripe sends (duplicates, storms, replays) and
//! however many instances run, through an SMTP sink the tests start (or as .eml files).

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, donation_body, shuffle, spawn_app_at, spawn_app_with};
use crate::smtp_sink::SmtpSink;

/// An app on simulated payments whose receipts go to `sink` (or to files, without one).
pub async fn app_mailing(sink: Option<&SmtpSink>) -> TestApp {
    let url = sink.map(|s| s.url.clone());
    spawn_app_with(move |s| simulated_mailing(s, url)).await
}

pub fn simulated_mailing(s: &mut quickdonate::config::Settings, smtp_url: Option<String>) {
    s.stripe_secret_key = None;
    s.stripe_publishable_key = None;
    s.smtp_url = smtp_url.map(Into::into);
    s.charity_name = "Kashmir Relief Trust".to_owned();
    s.charity_number = "1234567".to_owned();
    s.receipt_from = "Kashmir Relief Trust <receipts@krt.example.org>".to_owned();
}

pub async fn simulate(app: &TestApp, pi: &str, action: &str, body: Option<Value>) -> Value {
    let mut request = app.http.post(format!(
        "{}/v1/simulator/payment_intents/{pi}/{action}",
        app.address
    ));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{action}");
    response.json().await.unwrap()
}

/// A donation made through the API (with `body`) and paid at the simulated Stripe.
pub async fn paid_donation(app: &TestApp, body: &Value) -> (Uuid, String) {
    let response = app.post_donation("kashmir", body, None).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let id = Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();
    let pi = created["payment_intent_id"].as_str().unwrap().to_owned();
    simulate(app, &pi, "succeed", None).await;
    (id, pi)
}

/// The donation's receipts: (id, kind, status, attempts).
pub async fn receipts_of(app: &TestApp, donation: Uuid) -> Vec<(Uuid, String, String, i32)> {
    sqlx::query_as(
        "SELECT id, kind, status, attempts FROM receipts WHERE donation_id = $1 ORDER BY kind",
    )
    .bind(donation)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

/// Waits (generously) until `n` receipts are recorded sent.
pub async fn wait_until_sent(app: &TestApp, n: i64) {
    for _ in 0..600 {
        let sent: i64 = sqlx::query_scalar("SELECT count(*) FROM receipts WHERE status = 'sent'")
            .fetch_one(&app.db)
            .await
            .unwrap();
        if sent >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows: Vec<(String, String, i32, Option<String>)> =
        sqlx::query_as("SELECT kind, status, attempts, last_error FROM receipts")
            .fetch_all(&app.db)
            .await
            .unwrap();
    panic!("{n} receipts never sent: {rows:?}");
}

/// Time for a sender that would send again to do so (several of its polls).
pub async fn settle() {
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// Every stored event of the donation's payment, as Stripe sent it.
async fn events_of(app: &TestApp) -> Vec<Value> {
    let payloads: Vec<String> =
        sqlx::query_scalar("SELECT payload FROM stripe_events ORDER BY created, id")
            .fetch_all(&app.db)
            .await
            .unwrap();
    payloads
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect()
}

/// A valid donation request with a Gift Aid declaration.
fn gift_aid_body() -> Value {
    let mut body = donation_body();
    body["gift_aid"] = json!({"declared": true, "title": "Ms", "house_name_or_number": "10",
                              "postcode": "S19 2BD", "country": "GB"});
    body
}

#[tokio::test]
async fn a_succeeded_donation_is_thanked_once_with_what_the_donor_gave_and_no_card_details() {
    let sink = SmtpSink::start().await;
    let app = app_mailing(Some(&sink)).await;
    let (donation, _) = paid_donation(&app, &donation_body()).await;
    app.wait_until_applied().await;
    wait_until_sent(&app, 1).await;

    let receipts = receipts_of(&app, donation).await;
    assert_eq!(receipts.len(), 1, "{receipts:?}");
    let (receipt, kind, status, _) = &receipts[0];
    assert_eq!((kind.as_str(), status.as_str()), ("thank_you", "sent"));
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    let text = mail.text();
    let email = donation_body()["donor"]["email"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(mail.to, [format!("<{email}>")]);
    for said in [
        "£25.00",
        "Kashmir Campaign",
        "Kashmir Relief Trust",
        "registered charity number 1234567",
        &receipt.to_string(),
        &format!("Message-ID: <receipt-{receipt}@krt.example.org>"),
    ] {
        assert!(text.contains(said), "{said:?} not in:\n{text}");
    }
    // No card details, and no Gift Aid statement when none was declared.
    for unsaid in ["4242", "pi_sim_", "ch_sim_", "card ending", "Gift Aid"] {
        assert!(!text.contains(unsaid), "{unsaid:?} in:\n{text}");
    }
}

#[tokio::test]
async fn duplicates_a_storm_and_replays_of_the_payment_send_no_second_thank_you() {
    let sink = SmtpSink::start().await;
    let app = app_mailing(Some(&sink)).await;
    let (donation, _) = paid_donation(&app, &donation_body()).await;
    app.wait_until_applied().await;
    wait_until_sent(&app, 1).await;
    let events = events_of(&app).await;
    assert!(!events.is_empty());

    // Duplicates (the same ids again) and a storm: each event again and again under new ids,
    // shuffled, from many connections at once.
    let mut storm = Vec::new();
    for round in 0..8 {
        for event in &events {
            let mut again = event.clone();
            if round > 1 {
                again["id"] = json!(format!("evt_{}", Uuid::new_v4().simple()));
            }
            storm.push(again);
        }
    }
    shuffle(&mut storm, 7);
    app.deliver_concurrently(storm, 8).await;
    app.wait_until_applied().await;
    // And `events replay` of every event the log holds.
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM stripe_events")
        .fetch_all(&app.db)
        .await
        .unwrap();
    for id in ids.iter().take(6) {
        crate::operators::quickdonate(&app, &["events", "replay", id]);
    }
    app.wait_until_applied().await;
    settle().await;

    assert_eq!(receipts_of(&app, donation).await.len(), 1);
    assert_eq!(sink.mails().len(), 1, "{:#?}", sink.mails());
}

#[tokio::test]
async fn two_instances_on_one_database_send_each_receipt_once() {
    let sink = SmtpSink::start().await;
    let first = app_mailing(Some(&sink)).await;
    let url = sink.url.clone();
    let second = spawn_app_at(first.database_url.clone(), move |s| {
        simulated_mailing(s, Some(url))
    })
    .await;
    let mut donations = Vec::new();
    for i in 0..6 {
        let app = if i % 2 == 0 { &first } else { &second };
        donations.push(paid_donation(app, &donation_body()).await.0);
    }
    first.wait_until_applied().await;
    wait_until_sent(&first, 6).await;
    settle().await;

    let mails = sink.mails();
    assert_eq!(mails.len(), 6, "{mails:#?}");
    for donation in donations {
        let receipts = receipts_of(&first, donation).await;
        assert_eq!(receipts.len(), 1);
        assert_eq!(sink.mentioning(&receipts[0].0.to_string()).len(), 1);
    }
}

#[tokio::test]
async fn a_full_refund_sends_one_refund_notice_and_a_partial_one_none() {
    let sink = SmtpSink::start().await;
    let app = app_mailing(Some(&sink)).await;
    let (donation, pi) = paid_donation(&app, &donation_body()).await;
    app.wait_until_applied().await;
    wait_until_sent(&app, 1).await;

    simulate(&app, &pi, "refund", Some(json!({"amount": 1000}))).await;
    app.wait_until_applied().await;
    settle().await;
    let kinds: Vec<String> = receipts_of(&app, donation)
        .await
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(kinds, ["thank_you"], "a partial refund owes no notice");
    assert_eq!(sink.mails().len(), 1);

    simulate(&app, &pi, "refund", None).await;
    app.wait_until_applied().await;
    wait_until_sent(&app, 2).await;
    // The refund's events again, under new ids: still one notice.
    let storm: Vec<Value> = events_of(&app)
        .await
        .into_iter()
        .map(|mut event| {
            event["id"] = json!(format!("evt_{}", Uuid::new_v4().simple()));
            event
        })
        .collect();
    app.deliver_concurrently(storm, 4).await;
    app.wait_until_applied().await;
    settle().await;

    let receipts = receipts_of(&app, donation).await;
    let kinds: Vec<&str> = receipts.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(kinds, ["refund_notice", "thank_you"]);
    assert_eq!(
        sink.mails().len(),
        2,
        "the thank-you is not un-sent, nor sent again"
    );
    let notices = sink.mentioning("has been refunded");
    assert_eq!(notices.len(), 1);
    assert!(
        notices[0].text().contains("£25.00"),
        "{}",
        notices[0].text()
    );
}

#[tokio::test]
async fn a_mail_server_that_is_down_is_retried_with_back_off_and_the_receipt_sent_once() {
    let sink = SmtpSink::start().await;
    sink.refuse_next(3);
    let app = app_mailing(Some(&sink)).await;
    let (donation, _) = paid_donation(&app, &donation_body()).await;
    app.wait_until_applied().await;
    // Back-off: 1 s, 2 s, 4 s; a generous deadline.
    wait_until_sent(&app, 1).await;
    settle().await;

    let receipts = receipts_of(&app, donation).await;
    assert_eq!(
        receipts[0].3, 4,
        "three refused attempts, then the one that went through"
    );
    assert_eq!(sink.connections(), 4);
    assert_eq!(sink.mails().len(), 1);
    let error: Option<String> = sqlx::query_scalar("SELECT last_error FROM receipts")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(error, None, "sent: the last error is cleared");
}

#[tokio::test]
async fn without_smtp_a_receipt_is_an_eml_file_under_the_data_directory() {
    let app = app_mailing(None).await;
    let body = gift_aid_body();
    let (donation, _) = paid_donation(&app, &body).await;
    app.wait_until_applied().await;
    wait_until_sent(&app, 1).await;

    let receipt = receipts_of(&app, donation).await[0].0;
    let dir = app.data_dir.path().join("receipts");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, [format!("{receipt}.eml")]);
    let eml = std::fs::read_to_string(dir.join(&files[0])).unwrap();
    let unfolded = crate::smtp_sink::readable(&eml).replace("\r\n", " ");
    assert!(unfolded.contains("Thank you for your donation"), "{eml}");
    assert!(
        unfolded.contains("I want to Gift Aid my donation")
            && unfolded.contains("Kashmir Relief Trust"),
        "the declared Gift Aid statement: {eml}"
    );
}

#[tokio::test]
async fn erasing_a_donor_deletes_their_eml_receipts_and_no_one_elses() {
    let app = app_mailing(None).await;
    let (erased, _) = paid_donation(&app, &donation_body()).await;
    let mut other = donation_body();
    other["donor"]["email"] = json!("someone.else@example.org");
    let (kept, _) = paid_donation(&app, &other).await;
    app.wait_until_applied().await;
    wait_until_sent(&app, 2).await;
    let dir = app.data_dir.path().join("receipts");
    let erased_file = dir.join(format!("{}.eml", receipts_of(&app, erased).await[0].0));
    let kept_file = dir.join(format!("{}.eml", receipts_of(&app, kept).await[0].0));
    assert!(erased_file.exists() && kept_file.exists());

    let email = donation_body()["donor"]["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let said = crate::operators::quickdonate(&app, &["donors", "erase", "--email", &email]);
    assert!(said.contains("1 receipt file(s) deleted"), "{said}");
    assert!(!erased_file.exists(), "the erased donor's receipt is gone");
    let kept_eml = std::fs::read_to_string(&kept_file).unwrap();
    assert!(
        crate::smtp_sink::readable(&kept_eml).contains("someone.else@example.org"),
        "another donor's receipt stays"
    );
    let audited: Value =
        sqlx::query_scalar("SELECT filters FROM finance_audit_log WHERE what = 'donors erase'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(audited["receipt_files"], 1, "{audited}");
}

#[tokio::test]
async fn an_erased_donors_owed_receipt_is_never_sent() {
    let sink = SmtpSink::start().await;
    sink.refuse_next(1000);
    let app = app_mailing(Some(&sink)).await;
    let (donation, _) = paid_donation(&app, &donation_body()).await;
    app.wait_until_applied().await;
    // Owed, and failing for now.
    for _ in 0..300 {
        if receipts_of(&app, donation)
            .await
            .first()
            .is_some_and(|r| r.3 >= 1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let email = donation_body()["donor"]["email"]
        .as_str()
        .unwrap()
        .to_owned();
    let said = crate::operators::quickdonate(&app, &["donors", "erase", "--email", &email]);
    assert!(
        said.contains("1 receipt(s) still owed will not be sent"),
        "{said}"
    );
    sink.refuse_next(0);
    settle().await;
    settle().await;
    assert_eq!(receipts_of(&app, donation).await[0].2, "canceled");
    assert!(sink.mails().is_empty());
}

#[tokio::test]
async fn with_the_fee_covered_the_thank_you_says_the_gift_and_the_fee_apart_and_gift_aid_on_the_gift()
 {
    let sink = SmtpSink::start().await;
    let url = Some(sink.url.clone());
    // Claimed as soon as it succeeds: no payout here.
    let app = spawn_app_with(move |s| {
        simulated_mailing(s, url);
        s.gift_aid_claim_after_payout = false;
    })
    .await;
    let mut body = gift_aid_body();
    body["cover_fees"] = json!(true);
    let response = app.post_donation("kashmir", &body, None).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    let cover = created["cover_fees_amount"].as_i64().unwrap();
    assert!(cover > 0, "{created}");
    assert_eq!(created["total_amount"].as_i64().unwrap(), 2500 + cover);
    let pi = created["payment_intent_id"].as_str().unwrap().to_owned();
    simulate(&app, &pi, "succeed", None).await;
    app.wait_until_applied().await;
    wait_until_sent(&app, 1).await;

    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    let text = mails[0].text();
    let pounds = |pence: i64| format!("£{}.{:02}", pence / 100, pence % 100);
    for said in [
        "Your gift:             £25.00".to_owned(),
        format!("Card fee you covered:  {}", pounds(cover)),
        format!("Total charged:         {}", pounds(2500 + cover)),
        // What the Gift Aid schedule claims: the gift, never the fee cover.
        format!(
            "Gift Aid is claimed on your gift of £25.00 alone, not on the {} card fee you",
            pounds(cover)
        ),
    ] {
        assert!(text.contains(&said), "{said:?} not in:\n{text}");
    }
    assert!(
        !text.contains(&format!("donation of {}", pounds(2500 + cover))),
        "the total is never called the gift:\n{text}"
    );

    // And the schedule claims exactly the amount the receipt names.
    let token = crate::finance_access::token(
        &app,
        "treasurer",
        quickdonate::operators::access::Role::Finance,
    )
    .await;
    let now = time::OffsetDateTime::now_utc();
    let format = &time::format_description::well_known::Rfc3339;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair(
        "from",
        &(now - time::Duration::hours(1)).format(format).unwrap(),
    );
    query.append_pair(
        "to",
        &(now + time::Duration::hours(1)).format(format).unwrap(),
    );
    let schedule: Value = crate::finance_access::get_with(
        &app,
        Some(&token),
        &format!("/v1/finance/gift-aid/schedule?{}", query.finish()),
        &[],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(schedule["rows"][0]["amount"], 2500, "{schedule}");
    assert_eq!(
        schedule["rows"][0]["schedule_amount"], "25.00",
        "{schedule}"
    );
}

#[tokio::test]
async fn without_fee_cover_the_thank_you_names_the_gift_once_and_gift_aid_on_it() {
    let app = app_mailing(None).await;
    let body = gift_aid_body();
    let (donation, _) = paid_donation(&app, &body).await;
    app.wait_until_applied().await;
    wait_until_sent(&app, 1).await;
    let receipt = receipts_of(&app, donation).await[0].0;
    let eml = std::fs::read_to_string(
        app.data_dir
            .path()
            .join("receipts")
            .join(format!("{receipt}.eml")),
    )
    .unwrap();
    let text = crate::smtp_sink::readable(&eml);
    assert!(
        text.contains("Thank you for your donation of £25.00"),
        "{text}"
    );
    assert!(
        text.contains("Gift Aid is claimed on your gift of £25.00."),
        "{text}"
    );
    assert!(!text.contains("Card fee"), "{text}");
}

#[tokio::test]
async fn a_live_instances_claim_is_never_released_as_a_dead_ones_while_it_sends() {
    let sink = SmtpSink::start().await;
    // The message is taken, and the answer held: the sender is in the middle of its send.
    sink.hold_next(1);
    let first = app_mailing(Some(&sink)).await;
    let (donation, _) = paid_donation(&first, &donation_body()).await;
    first.wait_until_applied().await;
    for _ in 0..600 {
        if sink.held() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sink.held(), 1, "the receipt never reached the sink");

    // Another instance starts (its sender releases the claims of instances gone) and looks
    // again, as every sender does every half minute: the first is alive, its claim stands.
    let url = sink.url.clone();
    let second = spawn_app_at(first.database_url.clone(), move |s| {
        simulated_mailing(s, Some(url))
    })
    .await;
    let released = quickdonate::receipts::sender::release_orphaned(&second.db)
        .await
        .unwrap();
    assert_eq!(released, 0);
    settle().await;
    let (instance, claimed): (Option<String>, bool) = sqlx::query_as(
        "SELECT claimed_instance, claimed_by IS NOT NULL FROM receipts WHERE donation_id = $1",
    )
    .bind(donation)
    .fetch_one(&first.db)
    .await
    .unwrap();
    assert!(claimed && instance.is_some(), "{instance:?}");
    assert_eq!(
        sink.mails().len(),
        1,
        "sent again while the first still sends"
    );
}
