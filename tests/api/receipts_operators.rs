//! `quickdonate receipts list` and `quickdonate receipts retry`: what an operator sees of the
//! receipts outbox (never the donor), and failed receipts put back in the queue, audited, but
//! never one whose donor was erased.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{TestApp, donation_body, spawn_app_at, spawn_app_with};
use crate::operators::{command, quickdonate};
use crate::receipts::{
    app_mailing, paid_donation, receipts_of, settle, simulated_mailing, wait_until_sent,
};
use crate::smtp_sink::SmtpSink;

/// The receipt of `donation` (its only one), set aside as `failed` as after its last attempt.
async fn set_aside(app: &TestApp, donation: Uuid) -> Uuid {
    sqlx::query_scalar(
        "UPDATE receipts SET status = 'failed', attempts = 20, claimed_by = NULL,
                claimed_until = NULL, claimed_instance = NULL,
                last_error = 'the mail server refused it (421)'
         WHERE donation_id = $1 RETURNING id",
    )
    .bind(donation)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

/// `quickdonate args...`, expected to fail: its stderr.
fn refused(app: &TestApp, args: &[&str]) -> String {
    let output = command(app, &app.database_url).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "quickdonate {args:?} succeeded:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

/// The audit log's `receipts retry` entries: (token name, filters, row count).
async fn retries_audited(app: &TestApp) -> Vec<(String, Value, i64)> {
    sqlx::query_as(
        "SELECT token_name, filters, row_count FROM finance_audit_log
         WHERE what = 'receipts retry' ORDER BY id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap()
}

fn body_from(email: &str, first: &str, last: &str) -> Value {
    let mut body = donation_body();
    body["donor"] = serde_json::json!({"email": email, "first_name": first, "last_name": last});
    body
}

#[tokio::test]
async fn receipts_are_listed_without_the_donor_and_a_failed_one_retried_is_sent_once() {
    let sink = SmtpSink::start().await;
    let app = app_mailing(Some(&sink)).await;
    let (delivered, _) = paid_donation(&app, &donation_body()).await;
    app.wait_until_applied().await;
    wait_until_sent(&app, 1).await;
    let delivered_receipt = receipts_of(&app, delivered).await[0].0;

    // The mail server goes away; the next receipt fails, and is set aside.
    sink.refuse_next(usize::MAX);
    let (failing, _) = paid_donation(&app, &donation_body()).await;
    app.wait_until_applied().await;
    for _ in 0..300 {
        if receipts_of(&app, failing)
            .await
            .first()
            .is_some_and(|r| r.3 >= 1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failed_receipt = set_aside(&app, failing).await;

    let listed = quickdonate(&app, &["receipts", "list"]);
    assert!(
        listed.starts_with("id "),
        "the table alone on stdout:\n{listed}"
    );
    let line = |id: Uuid| {
        listed
            .lines()
            .find(|l| l.starts_with(&id.to_string()))
            .unwrap_or_else(|| panic!("{id} not listed:\n{listed}"))
            .to_owned()
    };
    let sent_line = line(delivered_receipt);
    assert!(
        sent_line.contains(&delivered.to_string())
            && sent_line.contains("thank_you")
            && sent_line.contains(" sent "),
        "{sent_line}"
    );
    let failed_line = line(failed_receipt);
    for said in [
        &failing.to_string(),
        "thank_you",
        " failed ",
        " 20 ",
        "(421)",
    ] {
        assert!(failed_line.contains(said), "{said:?} not in {failed_line}");
    }
    assert!(listed.trim_end().ends_with("2 receipt(s)"), "{listed}");
    // Never the donor.
    let donor = &donation_body()["donor"];
    for field in ["email", "first_name", "last_name"] {
        let value = donor[field].as_str().unwrap().to_lowercase();
        assert!(
            !listed.to_lowercase().contains(&value),
            "{field} listed:\n{listed}"
        );
    }

    let only_failed = quickdonate(&app, &["receipts", "list", "--failed"]);
    assert!(
        only_failed.contains(&failed_receipt.to_string()),
        "{only_failed}"
    );
    assert!(
        !only_failed.contains(&delivered_receipt.to_string()),
        "{only_failed}"
    );

    // A sent receipt is never sent again, nor is one that is not there.
    let said = refused(&app, &["receipts", "retry", &delivered_receipt.to_string()]);
    assert!(said.contains("would send it twice"), "{said}");
    let said = refused(&app, &["receipts", "retry", &Uuid::now_v7().to_string()]);
    assert!(said.contains("no receipt"), "{said}");
    assert!(
        retries_audited(&app).await.is_empty(),
        "nothing done, nothing recorded"
    );

    // The mail server is back; the operator retries the failed one.
    sink.refuse_next(0);
    let said = quickdonate(&app, &["receipts", "retry", &failed_receipt.to_string()]);
    assert!(said.contains("queued again"), "{said}");
    wait_until_sent(&app, 2).await;
    settle().await;
    assert_eq!(sink.mails().len(), 2);
    assert_eq!(sink.mentioning(&failed_receipt.to_string()).len(), 1);
    let (_, _, status, attempts) = receipts_of(&app, failing).await.remove(0);
    assert_eq!(
        (status.as_str(), attempts),
        ("sent", 1),
        "attempts reset, then one"
    );

    let audited = retries_audited(&app).await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    let (who, filters, rows) = &audited[0];
    assert!(who.starts_with("cli"), "{who}");
    assert_eq!(*rows, 1);
    assert_eq!(filters["queued"][0]["id"], failed_receipt.to_string());
    assert_eq!(filters["queued"][0]["attempts"], 20, "what it had is kept");
    // Sent now: a second retry is refused.
    let said = refused(&app, &["receipts", "retry", &failed_receipt.to_string()]);
    assert!(said.contains("would send it twice"), "{said}");
}

#[tokio::test]
async fn retrying_every_failed_receipt_never_sends_one_whose_donor_was_erased() {
    let sink = SmtpSink::start().await;
    let url = sink.url.clone();
    // No sender here: the states after the retry are read before anything is sent.
    let app = spawn_app_with(move |s| {
        simulated_mailing(s, Some(url));
        s.apply_events = false;
    })
    .await;
    let mut donations = Vec::new();
    for (email, first, last) in [
        ("one@example.org", "Una", "First"),
        ("two@example.org", "Dai", "Second"),
        ("erased@example.org", "Erin", "Erased"),
        ("gone@example.org", "Gwen", "Gone"),
    ] {
        donations.push(paid_donation(&app, &body_from(email, first, last)).await.0);
    }
    app.apply_events().await;
    let mut receipts = Vec::new();
    for donation in &donations {
        receipts.push(set_aside(&app, *donation).await);
    }
    // One donor is erased as the README says (their receipts are canceled with them)...
    let said = quickdonate(&app, &["donors", "erase", "--email", "erased@example.org"]);
    assert!(
        said.contains("1 receipt(s) still owed will not be sent"),
        "{said}"
    );
    // ...and one reads erased while its receipt is still `failed` (erased by hand, or by a
    // release before erasure canceled receipts): the retry must see it for itself.
    sqlx::query(
        "UPDATE donations SET donor_email = 'erased', donor_first_name = 'erased',
                donor_last_name = 'erased', personal_data_erased_at = now() WHERE id = $1",
    )
    .bind(donations[3])
    .execute(&app.db)
    .await
    .unwrap();

    let said = quickdonate(&app, &["receipts", "retry", "--all-failed"]);
    assert!(
        said.contains("2 failed receipt(s) queued again") && said.contains("1 not retried"),
        "{said}"
    );
    let states: Vec<(String, i32)> = {
        let mut states = Vec::new();
        for donation in &donations {
            let (_, _, status, attempts) = receipts_of(&app, *donation).await.remove(0);
            states.push((status, attempts));
        }
        states
    };
    assert_eq!(
        states,
        [
            ("pending".to_owned(), 0),
            ("pending".to_owned(), 0),
            ("canceled".to_owned(), 20),
            ("canceled".to_owned(), 20),
        ]
    );
    for erased in &receipts[2..] {
        let said = refused(&app, &["receipts", "retry", &erased.to_string()]);
        assert!(said.contains("erased"), "{said}");
    }
    let audited = retries_audited(&app).await;
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0].2, 2);
    assert_eq!(
        audited[0].1["canceled_donor_erased"],
        serde_json::json!([receipts[3].to_string()])
    );
    let audit_text = audited[0].1.to_string();
    for donor in ["one@", "two@", "erased@", "gone@", "Una", "Gwen"] {
        assert!(!audit_text.contains(donor), "{audit_text}");
    }

    // A sender on the same database sends the two, and only the two.
    let url = sink.url.clone();
    let sender = spawn_app_at(app.database_url.clone(), move |s| {
        simulated_mailing(s, Some(url))
    })
    .await;
    wait_until_sent(&sender, 2).await;
    settle().await;
    let mails = sink.mails();
    assert_eq!(mails.len(), 2, "{mails:#?}");
    for (receipt, sent) in receipts.iter().zip([1, 1, 0, 0]) {
        assert_eq!(
            sink.mentioning(&receipt.to_string()).len(),
            sent,
            "{receipt}"
        );
    }
    // Nothing left to retry.
    let said = quickdonate(&app, &["receipts", "retry", "--all-failed"]);
    assert!(said.contains("0 failed receipt(s) queued again"), "{said}");
}
