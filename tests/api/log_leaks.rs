//! Donor data never reaches the log: the real binary, logging everything it can (every crate at
//! trace, sqlx included), runs a whole flow with a distinctive donor (a gift with
//! Gift Aid, a bad request, payment, webhooks applied, a refund, the finance API, the Gift Aid
//! schedule, the command line's export, `events list` and `events show`, and an erasure),
//! and neither its log nor the commands' logs, nor what `events` prints, holds the donor's
//! name, email, address or postcode.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::out_of_the_box::quickdonate;

const FIRST: &str = "Perpetua";
const LAST: &str = "Winterbottom-Skeffington";
const EMAIL: &str = "perpetua.ws@example-donor.org";
const HOUSE: &str = "Gorsebrook Mill";
const POSTCODE: &str = "DL8 3QR";
/// What must never be logged, in any case, and the bits of it a log might cut it into.
const PERSONAL: &[&str] = &[
    FIRST,
    LAST,
    "Winterbottom",
    "Skeffington",
    EMAIL,
    "perpetua.ws",
    "example-donor",
    HOUSE,
    "Gorsebrook",
    POSTCODE,
    "DL83QR",
];

const LOG_LEVELS: &str = "trace";

fn leaks(text: &str) -> Vec<&'static str> {
    let text = text.to_lowercase();
    PERSONAL
        .iter()
        .copied()
        .filter(|personal| text.contains(&personal.to_lowercase()))
        .collect()
}

/// The service, logging at `LOG_LEVELS`; everything it writes, stdout and stderr, is kept.
struct Service {
    child: Child,
    address: String,
    log: Arc<Mutex<String>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn keep(reader: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
}

fn start(dir: &Path) -> Service {
    let mut child = quickdonate(dir)
        .env("RUST_LOG", LOG_LEVELS)
        .spawn()
        .expect("the binary starts");
    let log = Arc::new(Mutex::new(String::new()));
    keep(child.stdout.take().unwrap(), log.clone());
    keep(child.stderr.take().unwrap(), log.clone());
    for _ in 0..1200 {
        let address = log
            .lock()
            .unwrap()
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next().map(str::to_owned));
        if let Some(address) = address {
            return Service {
                child,
                address: format!("http://{address}"),
                log,
            };
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the service exited with {status}:\n{}", log.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the service never listened:\n{}", log.lock().unwrap());
}

/// Runs `quickdonate args...` beside the service, logging at `LOG_LEVELS`.
fn command(dir: &Path, args: &[&str]) -> Output {
    let output = quickdonate(dir)
        .env("RUST_LOG", LOG_LEVELS)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "quickdonate {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Polls the donation until `done` says so.
async fn wait_for(
    http: &reqwest::Client,
    address: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let mut seen = Value::Null;
    for _ in 0..400 {
        seen = http
            .get(format!("{address}/v1/donations/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done(&seen) {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("donation {id} never got there: {seen}");
}

#[tokio::test]
async fn a_whole_flow_logged_at_trace_never_logs_donor_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let http = reqwest::Client::new();
    let service = tokio::task::spawn_blocking({
        let path = path.clone();
        move || start(&path)
    })
    .await
    .unwrap();
    let address = service.address.clone();
    // What the commands print and log, to search too.
    let mut printed = String::new();

    // A gift with Gift Aid and fee cover, retry-safe; a bad request full of the donor's data.
    let body = json!({
        "amount": 5000, "frequency": "one_off", "cover_fees": true,
        "donor": {"email": EMAIL, "first_name": FIRST, "last_name": LAST},
        "gift_aid": {"declared": true, "title": "Mrs", "house_name_or_number": HOUSE,
                     "postcode": POSTCODE, "country": "GB"}
    });
    let create = || {
        http.post(format!("{address}/v1/campaigns/kashmir/donations"))
            .header("Idempotency-Key", "log-leaks-1")
            .json(&body)
    };
    let created = create().send().await.unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(create().send().await.unwrap().status(), 201, "replayed");
    let mut bad = body.clone();
    bad["donor"]["email"] = json!(format!("{FIRST} {LAST} at {HOUSE}"));
    bad["gift_aid"]["postcode"] = json!(format!("{POSTCODE} {EMAIL}"));
    let refused = http
        .post(format!("{address}/v1/campaigns/kashmir/donations"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let id = created["id"].as_str().unwrap().to_owned();
    let pi = created["payment_intent_id"].as_str().unwrap().to_owned();

    // Paid, its events applied; then part refunded, applied.
    let paid = http
        .post(format!(
            "{address}/v1/simulator/payment_intents/{pi}/succeed"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    wait_for(&http, &address, &id, |d| d["status"] == "succeeded").await;
    let refunded = http
        .post(format!(
            "{address}/v1/simulator/payment_intents/{pi}/refund"
        ))
        .json(&json!({"amount": 1000}))
        .send()
        .await
        .unwrap();
    assert_eq!(refunded.status(), 200);
    wait_for(&http, &address, &id, |d| d["refunded_amount"] == 1000).await;

    // Finance: the API (its answers hold the donor, by design; its log must not) and the
    // command line's export.
    let made = command(
        &path,
        &[
            "tokens",
            "create",
            "--name",
            "log-leaks",
            "--role",
            "finance",
        ],
    );
    printed.push_str(&String::from_utf8_lossy(&made.stderr));
    let token = String::from_utf8(made.stdout).unwrap().trim().to_owned();
    let finance = http
        .get(format!("{address}/v1/finance/donations"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        finance.contains(EMAIL),
        "finance reads the donor: {finance}"
    );
    let now = time::OffsetDateTime::now_utc();
    let rfc3339 = |at: time::OffsetDateTime| {
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let schedule = http
        .get(format!("{address}/v1/finance/gift-aid/schedule"))
        .query(&[
            ("from", rfc3339(now - time::Duration::days(1))),
            ("to", rfc3339(now + time::Duration::days(1))),
        ])
        .bearer_auth(&token)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(schedule.status(), 200);
    let exported = command(&path, &["export", "donations", "--format", "csv"]);
    assert!(
        String::from_utf8_lossy(&exported.stdout).contains(EMAIL),
        "the export is finance's data"
    );
    printed.push_str(&String::from_utf8_lossy(&exported.stderr));

    // The event log, as an operator reads it: list, and every event shown in full.
    let listed = command(&path, &["events", "list"]);
    let listed_out = String::from_utf8_lossy(&listed.stdout).into_owned();
    printed.push_str(&listed_out);
    printed.push_str(&String::from_utf8_lossy(&listed.stderr));
    let events: Vec<&str> = listed_out
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|id| id.starts_with("evt_"))
        .collect();
    assert!(events.len() >= 4, "{listed_out}");
    for event in events {
        let shown = command(&path, &["events", "show", event]);
        let shown_out = String::from_utf8_lossy(&shown.stdout);
        assert!(shown_out.contains("payload:"), "{shown_out}");
        printed.push_str(&shown_out);
        printed.push_str(&String::from_utf8_lossy(&shown.stderr));
    }

    // An erasure says what it did without naming the donor.
    let erased = command(&path, &["donors", "erase", "--email", EMAIL]);
    assert!(
        String::from_utf8_lossy(&erased.stdout).contains("1 donation(s)"),
        "{}",
        String::from_utf8_lossy(&erased.stdout)
    );
    printed.push_str(&String::from_utf8_lossy(&erased.stdout));
    printed.push_str(&String::from_utf8_lossy(&erased.stderr));

    let log = service.log.clone();
    tokio::task::spawn_blocking(move || {
        let mut service = service;
        let pid = service.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        for _ in 0..400 {
            if service.child.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the service did not stop");
    })
    .await
    .unwrap();
    let log = log.lock().unwrap().clone();

    // The levels took: requests, the worker's statements, our own trace.
    assert!(log.contains("DEBUG"), "{log}");
    assert!(log.contains("sqlx::query"), "sqlx logs its statements");
    assert!(log.contains(&id), "the log names the donation by id");
    assert!(printed.contains("DEBUG"), "the commands log at debug too");
    assert_eq!(leaks(&log), Vec::<&str>::new(), "in the service's log");
    assert_eq!(
        leaks(&printed),
        Vec::<&str>::new(),
        "in the commands' output and log"
    );
}
