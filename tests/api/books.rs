//! `quickdonate verify`, `GET /v1/finance/verify` and the `quickdonate_books_differences`
//! metric: the books hold after real payments, refunds and a payout; each invariant broken by
//! hand is found and named with its ids.

use quickdonate::operators::access::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::finance_access::{get_as, quickdonate, stdout, token};
use crate::helpers::{TestApp, donation_body};
use crate::receipts::{app_mailing, paid_donation, simulate};

/// `quickdonate verify --settle 0s`: whether it exited 0, and what it printed.
fn verify_cli(app: &TestApp) -> (bool, String) {
    let output = quickdonate(app, &["verify", "--settle", "0s"]);
    (output.status.success(), stdout(&output))
}

async fn verify_api(app: &TestApp, admin: &str) -> Value {
    let response = get_as(app, Some(admin), "/v1/finance/verify?settle=0s").await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The ids each check of the report names, by check, for the checks that differ.
fn named(report: &Value) -> Vec<(String, Vec<String>)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| !c["differences"].as_array().unwrap().is_empty())
        .map(|c| {
            let ids = c["differences"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|d| d["ids"].as_array().unwrap().iter())
                .map(|id| id.as_str().unwrap().to_owned())
                .collect();
            (c["check"].as_str().unwrap().to_owned(), ids)
        })
        .collect()
}

#[tokio::test]
async fn the_books_hold_after_real_payments_and_each_broken_invariant_is_named() {
    let app = app_mailing(None).await;
    let admin = token(&app, "auditor", Role::Admin).await;
    let finance = token(&app, "treasurer", Role::Finance).await;
    let (kept, _) = paid_donation(&app, &donation_body()).await;
    let (partly, partly_pi) = paid_donation(&app, &donation_body()).await;
    let (_, refunded_pi) = paid_donation(&app, &donation_body()).await;
    simulate(&app, &partly_pi, "refund", Some(json!({"amount": 700}))).await;
    simulate(&app, &refunded_pi, "refund", None).await;
    let paid_out: Value = app
        .http
        .post(format!("{}/v1/simulator/payouts", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let payout = paid_out["payouts"][0]["id"].as_str().unwrap().to_owned();
    app.wait_until_applied().await;
    let created = app.post_donation("kashmir", &donation_body(), None).await;
    let unpaid: Value = created.json().await.unwrap();
    let unpaid = unpaid["id"].as_str().unwrap().to_owned();

    let (ok, said) = verify_cli(&app);
    assert!(ok, "{said}");
    assert!(said.contains("The books hold: 7 checks"), "{said}");
    let report = verify_api(&app, &admin).await;
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(
        get_as(&app, Some(&finance), "/v1/finance/verify")
            .await
            .status(),
        403,
        "admins only"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"quickdonate_books_differences{check="payouts"} 0"#),
        "{metrics}"
    );

    // Each invariant broken by hand, as a bug or a bad restore would.
    let receipt: Uuid =
        sqlx::query_scalar("SELECT id FROM receipts WHERE donation_id = $1 AND kind = 'thank_you'")
            .bind(kept)
            .fetch_one(&app.db)
            .await
            .unwrap();
    let charge: String = sqlx::query_scalar("SELECT charge_id FROM donations WHERE id = $1")
        .bind(kept)
        .fetch_one(&app.db)
        .await
        .unwrap();
    for statement in [
        "UPDATE campaigns SET raised_amount = raised_amount + 1 WHERE slug = 'kashmir'",
        &format!("UPDATE donations SET refunded_amount = 1 WHERE id = '{kept}'"),
        &format!(
            "INSERT INTO ledger_entries (kind, amount, currency, balance_transaction_id, \
             source_id, donation_id, campaign, occurred_at) SELECT 'stripe_fee', -1, \
             settlement_currency, 'txn_extra', charge_id, id, campaign, now() FROM donations \
             WHERE id = '{partly}'"
        ),
        &format!("UPDATE donations SET payment_status = 'succeeded' WHERE id = '{unpaid}'"),
        &format!(
            "INSERT INTO payout_transactions (payout_id, balance_transaction_id, type, amount, \
             fee, net, currency, source_id) VALUES ('{payout}', 'txn_missing', 'charge', 100, \
             0, 100, 'gbp', '{charge}')"
        ),
        &format!(
            "UPDATE receipts SET status = 'pending', created_at = now() - interval '2 days' \
             WHERE id = '{receipt}'"
        ),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&app.db)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }

    let expected = vec![
        ("campaign_totals".to_owned(), vec!["kashmir".to_owned()]),
        ("donation_parts".to_owned(), vec![kept.to_string()]),
        ("donation_ledger".to_owned(), vec![partly.to_string()]),
        ("gift_in_ledger".to_owned(), vec![unpaid.clone()]),
        (
            "payouts".to_owned(),
            vec![payout.clone(), "txn_missing".to_owned()],
        ),
        (
            "receipts_owed".to_owned(),
            vec![receipt.to_string(), kept.to_string()],
        ),
    ];
    let report = verify_api(&app, &admin).await;
    assert_eq!(report["ok"], false);
    assert_eq!(named(&report), expected, "{report:#}");

    let (ok, said) = verify_cli(&app);
    assert!(!ok, "exits non-zero: {said}");
    for (check, ids) in &expected {
        assert!(said.contains(&format!("DIFF  {check}:")), "{check}: {said}");
        for id in ids {
            assert!(said.contains(id.as_str()), "{check} names {id}: {said}");
        }
    }
    assert!(said.contains("ok    gift_aid_once"), "{said}");
    assert!(said.contains("The books differ in 6 place(s)."), "{said}");
}

/// The books' checks in SQL and the worker in Rust hold the same rule of which disputes hold
/// the disputed money.
#[tokio::test]
async fn the_sql_and_the_rust_rule_of_withdrawn_money_agree_for_every_status() {
    let app = crate::helpers::spawn_app().await;
    for status in [
        "warning_needs_response",
        "warning_under_review",
        "warning_closed",
        "prevented",
        "needs_response",
        "under_review",
        "won",
        "lost",
        "pending_arbitration",
    ] {
        let sql: bool = sqlx::query_scalar("SELECT dispute_withdraws($1)")
            .bind(status)
            .fetch_one(&app.db)
            .await
            .unwrap();
        let rust = quickdonate::payments::status::DisputeStatus::parse(status).withdraws();
        assert_eq!(sql, rust, "{status}");
    }
}
