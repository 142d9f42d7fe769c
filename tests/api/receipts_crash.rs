//! The crash window of receipts, with the real binary: killed (SIGKILL) while the mail server
//! holds a receipt, then started again on the same data. What the README promises: the receipt
//! is delivered, at most once more per crash, with the same Message-ID, and promptly (the
//! killed instance's claim is released when the next one starts, long before its two-minute
//! lease would run out). Killed after the server took the message whole: two copies, one
//! Message-ID. Killed before: one.

use std::time::{Duration, Instant};

use crate::out_of_the_box::{Service, start_with, stop};
use crate::smtp_sink::SmtpSink;

async fn start(dir: &std::path::Path, smtp_url: &str) -> Service {
    let (dir, env) = (
        dir.to_owned(),
        [
            ("SMTP_URL", smtp_url.to_owned()),
            (
                "RECEIPT_FROM",
                "Kashmir Relief Trust <receipts@krt.example.org>".to_owned(),
            ),
        ],
    );
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        start_with(&dir, &env)
    })
    .await
    .unwrap()
}

async fn until(deadline: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !check() {
        assert!(Instant::now() < until, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the binary on `dir` with `sink`, makes a donation and pays it, waits until the sink
/// holds its receipt, and kills the process (SIGKILL: no shutdown of any kind). Returns when
/// it was killed.
async fn kill_while_sending(dir: &std::path::Path, sink: &SmtpSink) -> Instant {
    let mut service = start(dir, &sink.url).await;
    let http = reqwest::Client::new();
    let (_, pi) = crate::out_of_the_box::create_donation(&http, &service.address).await;
    let paid = http
        .post(format!(
            "{}/v1/simulator/payment_intents/{pi}/succeed",
            service.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200);
    until(
        Duration::from_secs(60),
        "the receipt reaching the sink",
        || sink.held() == 1,
    )
    .await;
    service.child.kill().unwrap();
    service.child.wait().unwrap();
    Instant::now()
}

/// The one receipt's (status, attempts, message_id), read from the service's database, and
/// the service and its Postgres stopped.
async fn the_receipt_and_stop(dir: &std::path::Path, service: Service) -> (String, i32, String) {
    let (pg, db) = crate::faults::local_database(dir).await;
    let row: (String, i32, String) =
        sqlx::query_as("SELECT status, attempts, message_id FROM receipts")
            .fetch_one(&db)
            .await
            .unwrap();
    db.close().await;
    tokio::task::spawn_blocking(move || stop(service))
        .await
        .unwrap();
    // Adopted, not started, by the second run: stop it here.
    pg.stop().unwrap();
    row
}

#[tokio::test]
async fn a_process_killed_while_its_receipt_is_being_sent_sends_it_again_promptly_once_with_the_same_message_id()
 {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start().await;
    // The first message is taken whole, and its 250 never comes: killed then, the message is
    // delivered and `sent` never written.
    sink.hold_next(1);
    let killed_at = kill_while_sending(dir.path(), &sink).await;
    assert_eq!(sink.mails().len(), 1);

    let service = start(dir.path(), &sink.url).await;
    until(Duration::from_secs(60), "the receipt sent again", || {
        sink.mails().len() >= 2
    })
    .await;
    // Long before the killed instance's lease would have run out.
    assert!(
        killed_at.elapsed() < quickdonate::receipts::sender::LEASE,
        "resent only when the lease ran out"
    );
    service
        .wait_for_log_line(&["receipts claimed by an instance that is gone are due again"])
        .await;
    // Time for anything that would send a third copy.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mails = sink.mails();
    assert_eq!(
        mails.len(),
        2,
        "one copy more for the one crash: {mails:#?}"
    );
    let ids: Vec<Option<String>> = mails.iter().map(|m| m.message_id()).collect();
    assert!(ids[0].is_some(), "{:?}", mails[0].data);
    assert_eq!(ids[0], ids[1], "the same Message-ID");
    assert_eq!(mails[0].to, mails[1].to);

    let (status, attempts, message_id) = the_receipt_and_stop(dir.path(), service).await;
    assert_eq!(
        (status.as_str(), attempts),
        ("sent", 2),
        "the attempt that was cut off counts"
    );
    assert_eq!(
        ids[0].as_deref(),
        Some(format!("<{message_id}@krt.example.org>").as_str())
    );
}

#[tokio::test]
async fn a_process_killed_before_the_mail_server_took_its_receipt_sends_it_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start().await;
    // DATA is never answered: killed then, the sink never had the message.
    sink.hold_next_before_the_message(1);
    let killed_at = kill_while_sending(dir.path(), &sink).await;
    assert!(sink.mails().is_empty());

    let service = start(dir.path(), &sink.url).await;
    until(Duration::from_secs(60), "the receipt sent", || {
        !sink.mails().is_empty()
    })
    .await;
    assert!(killed_at.elapsed() < quickdonate::receipts::sender::LEASE);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sink.mails().len(), 1, "exactly once: {:#?}", sink.mails());
    let (status, attempts, _) = the_receipt_and_stop(dir.path(), service).await;
    assert_eq!((status.as_str(), attempts), ("sent", 2));
}
