//! `quickdonate events ...`: what an operator runs against the event log.

use std::process::Command;

use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::helpers::{TestApp, event, objects, spawn_app_with, stripe_creates_payment_intents};

const BINARY: &str = env!("CARGO_BIN_EXE_quickdonate");

/// Runs `quickdonate args...` against `app`'s database, with its fake Stripe; returns stdout.
pub fn quickdonate(app: &TestApp, args: &[&str]) -> String {
    let output = command(app, &app.database_url).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "quickdonate {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The binary with `app`'s settings, on the database at `database_url`.
pub fn command(app: &TestApp, database_url: &str) -> Command {
    let mut command = Command::new(BINARY);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        // The default level: its log must not mix with the command's answer.
        .env("RUST_LOG", "info")
        .env("DATABASE_URL", database_url)
        // The same deployment as the app: its receipts' .eml files are under this.
        .env("DATA_DIR", app.data_dir.path())
        .env(
            "CAMPAIGNS_FILE",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/campaigns.toml"),
        )
        .env("STRIPE_SECRET_KEY", "sk_test_quickdonate")
        .env("STRIPE_PUBLISHABLE_KEY", "pk_test_quickdonate")
        .env("STRIPE_WEBHOOK_SECRET", crate::helpers::WEBHOOK_SECRET)
        .env("STRIPE_API_BASE", app.stripe.uri());
    command
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test]
async fn events_can_be_listed_shown_and_replayed() {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    stripe_creates_payment_intents(&app).await;
    let (donation, pi) = app.create_donation(2500).await;
    let succeeded = event(
        "payment_intent.succeeded",
        objects::payment_intent(&pi, Some(donation), "succeeded", 2500),
        now(),
    );
    let id = succeeded["id"].as_str().unwrap().to_owned();
    app.deliver(&succeeded).await;
    // Make it fail once, as if something had gone wrong.
    sqlx::query("UPDATE stripe_events SET attempts = 1, last_error = 'boom', next_attempt_at = now() + interval '1 hour'")
        .execute(&app.db)
        .await
        .unwrap();

    let listed = quickdonate(&app, &["events", "list"]);
    assert!(
        listed.starts_with("id "),
        "the answer alone on stdout, the log elsewhere:\n{listed}"
    );
    assert!(
        listed.contains(&id) && listed.contains("payment_intent.succeeded"),
        "{listed}"
    );
    let failed = quickdonate(&app, &["events", "list", "--failed"]);
    assert!(failed.contains(&id) && failed.contains("boom"), "{failed}");

    let shown = quickdonate(&app, &["events", "show", &id]);
    assert!(shown.contains("state:           pending"), "{shown}");
    assert!(
        shown.contains(&format!("\"id\": \"{pi}\"")),
        "the payload is shown: {shown}"
    );

    // Not due for an hour; --failed makes it due now, and the worker applies it.
    app.apply_events().await;
    assert_eq!(app.donation_facts(donation).await.status, "pending");
    let replayed = quickdonate(&app, &["events", "replay", "--failed"]);
    assert!(
        replayed.starts_with("1 failed or failing event"),
        "{replayed}"
    );
    app.apply_events().await;
    assert_eq!(app.donation_facts(donation).await.status, "succeeded");

    // Replaying an applied event applies it again and changes nothing.
    quickdonate(&app, &["events", "replay", &id]);
    app.apply_events().await;
    assert_eq!(app.campaign().await["raised_amount"], 2500);
    app.assert_totals_match_rows().await;
}

#[tokio::test]
async fn backfill_stores_the_events_we_missed_and_they_are_applied() {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    stripe_creates_payment_intents(&app).await;
    let (first, first_pi) = app.create_donation(2500).await;
    let (second, second_pi) = app.create_donation(5000).await;
    let delivered = event(
        "payment_intent.succeeded",
        objects::payment_intent(&first_pi, Some(first), "succeeded", 2500),
        now() - 60,
    );
    let missed = event(
        "payment_intent.succeeded",
        objects::payment_intent(&second_pi, Some(second), "succeeded", 5000),
        now() - 30,
    );
    app.deliver(&delivered).await;

    // Stripe lists newest first, a page at a time.
    let missed_id = missed["id"].as_str().unwrap();
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .and(query_param("starting_after", missed_id))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"object": "list", "data": [delivered], "has_more": false, "url": "/v1/events"}),
        ))
        .with_priority(1)
        .mount(&app.stripe)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/events"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"object": "list", "data": [missed], "has_more": true, "url": "/v1/events"}),
        ))
        .mount(&app.stripe)
        .await;

    let out = quickdonate(&app, &["events", "backfill", "--since", "2d"]);
    assert!(out.contains("2 event(s) listed by Stripe, 1 new"), "{out}");
    let requests = app.stripe_requests("/v1/events").await;
    let since: i64 = requests[0]
        .url
        .query_pairs()
        .find(|(k, _)| k == "created[gte]")
        .unwrap()
        .1
        .parse()
        .unwrap();
    assert!(
        (since - (now() - 2 * 86_400)).abs() < 60,
        "asked from two days back"
    );

    app.apply_events().await;
    assert_eq!(app.donation_facts(second).await.status, "succeeded");
    assert_eq!(app.campaign().await["raised_amount"], 7500);
    let source: String = sqlx::query_scalar("SELECT source FROM stripe_events WHERE id = $1")
        .bind(missed_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(source, "backfill");
    app.assert_totals_match_rows().await;
}

#[tokio::test]
async fn an_event_set_aside_as_failed_is_listed_and_a_replay_applies_it() {
    let app = spawn_app_with(|s| {
        s.apply_events = false;
        s.event_max_attempts = 1;
    })
    .await;
    stripe_creates_payment_intents(&app).await;
    let stripe = crate::helpers::StripeObjects::default();
    stripe.serve(&app).await;
    let (donation, pi) = app.create_donation(2500).await;
    // Stripe refuses to show the payment (404): the event's fee cannot be had, and with one
    // attempt allowed, it is set aside at once.
    let mut charge = objects::charge("ch_op", &pi, 2500, 0, Some("txn_op"));
    charge["metadata"] = json!({"donation_id": donation.to_string()});
    let charged = event("charge.succeeded", charge.clone(), now());
    let id = charged["id"].as_str().unwrap().to_owned();
    app.deliver(&charged).await;
    app.apply_events().await;

    let failed = quickdonate(&app, &["events", "list", "--failed"]);
    let line = failed
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{failed}"));
    assert!(line.contains("failed") && line.contains("404"), "{line}");

    // Stripe shows it now; the operator replays the event.
    let mut paid = objects::payment_intent(&pi, Some(donation), "succeeded", 2500);
    paid["latest_charge"] = "ch_op".into();
    stripe.put(paid);
    stripe.put(charge);
    stripe.put(objects::balance_transaction("txn_op", 2500, 58));
    quickdonate(&app, &["events", "replay", &id]);
    app.apply_events().await;
    let shown = quickdonate(&app, &["events", "show", &id]);
    assert!(shown.contains("state:           applied"), "{shown}");
    assert_eq!(app.donation_facts(donation).await.fee, Some(58));
    let listed = quickdonate(&app, &["events", "list", "--failed"]);
    assert!(!listed.contains(&id), "{listed}");
}

/// The start of each column of a table's line: where a cell begins after two spaces or more.
fn column_starts(line: &str) -> Vec<usize> {
    let bytes = line.as_bytes();
    let mut starts = vec![0];
    for i in 2..bytes.len() {
        if bytes[i] != b' ' && bytes[i - 1] == b' ' && bytes[i - 2] == b' ' {
            starts.push(i);
        }
    }
    starts
}

#[tokio::test]
async fn events_list_fits_its_columns_to_the_longest_id_and_writes_times_in_rfc_3339() {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    stripe_creates_payment_intents(&app).await;
    let (donation, pi) = app.create_donation(2500).await;
    let mut long = event(
        "payment_intent.succeeded",
        objects::payment_intent(&pi, Some(donation), "succeeded", 2500),
        now(),
    );
    let long_id = format!("evt_{}", "L".repeat(50));
    long["id"] = json!(long_id);
    let short = event(
        "charge.refunded",
        objects::charge("ch_x", &pi, 2500, 2500, None),
        now(),
    );
    app.deliver(&long).await;
    app.deliver(&short).await;

    let output = command(&app, &app.database_url)
        .args(["events", "list"])
        // Colour would only be for a terminal: stderr here is a pipe.
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    assert!(output.status.success());
    let listed = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        !stderr.contains('\u{1b}'),
        "no escape codes in a piped log:\n{stderr:?}"
    );
    assert!(!listed.contains('\u{1b}'), "{listed:?}");

    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 4, "a header, two events, a count:\n{listed}");
    // Every line's columns start where the header's do, the second just past the longest id.
    let header = column_starts(lines[0]);
    assert_eq!(header.len(), 7, "{}", lines[0]);
    assert_eq!(header[1], long_id.len() + 2, "{listed}");
    // (The counts are aligned to the right, under the end of their header.)
    for line in &lines[1..3] {
        let starts = column_starts(line);
        assert_eq!(&starts[..3], &header[..3], "\n{listed}");
        assert_eq!(starts[5], header[5], "\n{listed}");
    }
    let long_line = lines.iter().find(|l| l.starts_with(&long_id)).unwrap();
    assert!(
        long_line.contains("payment_intent.succeeded"),
        "{long_line}"
    );
    // The received time, in RFC 3339.
    let received = &long_line[header[5]..].split_whitespace().next().unwrap();
    time::OffsetDateTime::parse(received, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{received}: {e}"));

    let shown = quickdonate(&app, &["events", "show", &long_id]);
    for field in ["created:", "first received:", "last received:"] {
        let line = shown.lines().find(|l| l.starts_with(field)).unwrap();
        let value = line[field.len()..].trim();
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{field} {value}: {e}"));
    }
}

#[tokio::test]
async fn reading_the_event_log_never_migrates_and_says_once_which_database_it_reads() {
    let app = spawn_app_with(|_| {}).await;
    // An empty database that nothing has migrated.
    let (name, url) = crate::helpers::fresh_database_url().await;
    for args in [
        ["events", "list"].as_slice(),
        &["events", "show", "evt_none"],
    ] {
        let output = command(&app, &url).args(args).output().unwrap();
        assert!(!output.status.success(), "{args:?} read an empty database");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reading: Vec<&str> = stderr.lines().filter(|l| l.contains("reading")).collect();
        assert_eq!(reading.len(), 1, "{stderr}");
        assert!(reading[0].contains(&name), "{stderr}");
    }
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let migrated: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(migrated, None, "a read-only command migrated the database");
    db.close().await;

    // On the app's own database, it reads and says so once.
    let output = command(&app, &app.database_url)
        .args(["events", "list"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line of log:\n{stderr}");
    assert!(stderr.contains("reading the database"), "{stderr}");
    assert!(!stderr.contains("migrat"), "{stderr}");
}

#[tokio::test]
async fn an_unreachable_database_is_named_by_host_and_port_never_with_its_password() {
    let app = spawn_app_with(|_| {}).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("postgres://quickdonate:s3cret-pw@127.0.0.1:{port}/quickdonate");
    for args in [["events", "list"].as_slice(), &["migrate"]] {
        let output = command(&app, &url).args(args).output().unwrap();
        assert!(!output.status.success(), "{args:?}");
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            out.contains(&format!("127.0.0.1:{port}")),
            "{args:?}: {out}"
        );
        assert!(!out.contains("s3cret-pw"), "{args:?}: {out}");
    }
}
