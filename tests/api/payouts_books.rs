//! Payouts ready for the books: each payout's arrival day, trace id, statement descriptor,
//! method and whether Stripe's schedule made it; its split by reporting category for the
//! journal; the accountant's CSV; a manual (instant) payout, whose fee is fetched once and
//! whose contents are unknown rather than a false difference; and a chain of failed payouts
//! followed to the one that paid.

use serde_json::{Value, json};
use time::OffsetDateTime;

use quickdonate::operators::access::Role;

use crate::finance_access::{get_with, token};
use crate::helpers::{event, objects};
use crate::payouts::{paid, payout, payouts_app, read, reconciliation, refund_in, transaction};

/// 2026-12-01 12:00 UTC, as Stripe writes an arrival date.
const ARRIVAL: i64 = 1_796_126_400;

#[tokio::test]
async fn a_payout_for_the_books_has_its_trace_its_split_and_its_line_in_the_accountants_file() {
    let (app, stripe) = payouts_app().await;
    let po = "po_books";
    let mut total = 0;
    for (amount, fee) in [(2500, 58), (1000, 35)] {
        total += paid(&app, &stripe, amount, fee, Some(po)).await.2;
    }
    // A refund taken from the payout, and an adjustment that is not ours (Stripe's).
    let (_, pi, net) = paid(&app, &stripe, 2000, 50, Some(po)).await;
    total += net;
    refund_in(&app, &stripe, &pi, 2000, "re_books", 700, po).await;
    total -= 700;
    let mut adjustment = transaction("txn_adj_books", "adjustment", -100, 0, "adj_1", Some(po));
    adjustment["reporting_category"] = json!("other_adjustment");
    stripe.put(adjustment);
    total -= 100;
    stripe.put(transaction(
        &format!("txn_{po}"),
        "payout",
        -total,
        0,
        po,
        Some(po),
    ));

    let mut paid_out = payout(po, total, "paid", "completed");
    paid_out["arrival_date"] = json!(ARRIVAL);
    paid_out["trace_id"] = json!({"status": "supported", "value": "TRC-0001-2026"});
    paid_out["statement_descriptor"] = json!("KASHMIR APPEAL");
    app.deliver(&event("payout.paid", paid_out, ARRIVAL - 86_400))
        .await;
    app.apply_events().await;

    let shown = reconciliation(&app, po).await;
    assert_eq!(shown["trace_id"], "TRC-0001-2026");
    assert_eq!(shown["trace_status"], "supported");
    // An older snapshot, from before the bank gave the trace id (with the arrival day then
    // expected), changes nothing.
    let mut older = payout(po, total, "in_transit", "in_progress");
    older["trace_id"] = json!({"status": "pending", "value": null});
    older["arrival_date"] = json!(ARRIVAL - 86_400);
    app.deliver(&event("payout.updated", older, ARRIVAL - 2 * 86_400))
        .await;
    app.apply_events().await;
    let again = reconciliation(&app, po).await;
    assert_eq!(
        (&again["status"], &again["trace_id"], &again["trace_status"]),
        (&json!("paid"), &json!("TRC-0001-2026"), &json!("supported"))
    );
    assert_eq!(again["arrival_date"], shown["arrival_date"]);
    assert_eq!(shown["statement_descriptor"], "KASHMIR APPEAL");
    assert_eq!(shown["method"], "standard");
    assert_eq!(shown["automatic"], true);
    assert_eq!(shown["contents"], "listed");
    // Stripe's adjustment is not ours: the ledger holds nothing for it, and it is named.
    assert_eq!(shown["difference"], -100, "{shown}");
    assert_eq!(shown["unmatched"][0]["id"], "txn_adj_books");
    assert_eq!(shown["payout_fee"], 0);
    assert_eq!(
        shown["split"],
        json!([
            {"category": "charge", "count": 3, "gross": 5500, "fee": 143, "net": 5357},
            {"category": "other_adjustment", "count": 1, "gross": -100, "fee": 0, "net": -100},
            {"category": "refund", "count": 1, "gross": -700, "fee": 0, "net": -700},
        ])
    );
    let nets: i64 = shown["split"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["net"].as_i64().unwrap())
        .sum();
    assert_eq!(nets, total, "the split sums to the payout");

    // Found by the day it arrived at the bank.
    let on = |from: &str, to: &str| {
        let app = &app;
        let path = format!("/v1/finance/payouts?arrival_from={from}&arrival_to={to}");
        async move {
            read(app, &path).await["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(on("2026-12-01", "2026-12-01").await, [po]);
    assert_eq!(on("2026-11-01", "2026-12-31").await, [po]);
    assert!(on("2026-12-02", "2026-12-31").await.is_empty());
    assert!(on("2026-11-01", "2026-11-30").await.is_empty());
    let finance = token(&app, "bad-day", Role::Finance).await;
    let bad = get_with(
        &app,
        Some(&finance),
        "/v1/finance/payouts?arrival_from=1/12/26",
        &[],
    )
    .await;
    crate::helpers::assert_problem(bad, 400, "bad-parameter").await;

    // The accountant's file: one line per payout, pounds with two decimals beside the currency.
    let response = get_with(
        &app,
        Some(&finance),
        "/v1/finance/payouts?arrival_from=2026-12-01&arrival_to=2026-12-01",
        &[("accept", "text/csv")],
    )
    .await;
    let body = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1);
    let cell = |name: &str| rows[0][header.iter().position(|h| h == name).unwrap()].to_owned();
    let pounds = |pence: i64| format!("{}.{:02}", pence / 100, pence % 100);
    assert_eq!(cell("id"), po);
    assert_eq!(cell("currency"), "gbp");
    assert_eq!(cell("amount"), pounds(total));
    assert_eq!(cell("arrival_date"), "2026-12-01");
    assert_eq!(cell("trace_id"), "TRC-0001-2026");
    assert_eq!(cell("statement_descriptor"), "KASHMIR APPEAL");
    assert_eq!(
        (cell("charge_gross"), cell("charge_fee"), cell("charge_net")),
        ("55.00".into(), "1.43".into(), "53.57".into())
    );
    assert_eq!(cell("refund_net"), "-7.00");
    assert_eq!(cell("other_net"), "-1.00");
    assert_eq!(cell("fee_net"), "0.00");
    assert_eq!(cell("difference"), "-1.00");
    assert_eq!(cell("unmatched"), "txn_adj_books");
    app.assert_books_hold().await;
}

#[tokio::test]
async fn a_manual_instant_payout_has_its_fee_fetched_once_and_no_false_difference() {
    let (app, stripe) = payouts_app().await;
    let po = "po_instant";
    // An instant payout of £100.00: Stripe's fee for it, £1.50, is on its own transaction.
    let mut own = transaction(&format!("txn_{po}"), "payout", -10_000, 150, po, None);
    own["reporting_category"] = json!("payout");
    stripe.put(own);
    let mut manual = payout(po, 10_000, "pending", "not_applicable");
    manual["automatic"] = json!(false);
    manual["method"] = json!("instant");
    let fetched = || {
        let app = &app;
        async move {
            app.stripe_requests(&format!("/v1/balance_transactions/txn_{po}"))
                .await
                .len()
        }
    };
    app.deliver(&event("payout.created", manual.clone(), 1_790_000_000))
        .await;
    app.apply_events().await;
    assert_eq!(fetched().await, 1, "its own transaction, fetched once");
    manual["status"] = json!("paid");
    app.deliver(&event("payout.paid", manual.clone(), 1_790_000_100))
        .await;
    app.deliver(&event("payout.updated", manual, 1_790_000_050))
        .await;
    app.apply_events().await;
    assert_eq!(fetched().await, 1, "never again");
    assert!(
        app.stripe_requests("/v1/balance_transactions")
            .await
            .is_empty(),
        "a manual payout's contents are never listed"
    );

    let ledger: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind, amount FROM ledger_entries WHERE source_id = $1 ORDER BY kind",
    )
    .bind(po)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        ledger,
        [
            ("payout".to_owned(), -10_000),
            ("stripe_fee".to_owned(), -150)
        ],
        "the money out and its fee"
    );
    let shown = reconciliation(&app, po).await;
    assert_eq!(shown["status"], "paid");
    assert_eq!(shown["method"], "instant");
    assert_eq!(shown["automatic"], false);
    assert_eq!(shown["contents"], "unknown");
    assert_eq!(shown["difference"], Value::Null, "never a false difference");
    assert_eq!(shown["payout_fee"], 150);
    assert_eq!(shown["unmatched"], json!([]));
    app.assert_books_hold().await;
}

#[tokio::test]
async fn a_gift_in_a_chain_of_failed_payouts_is_paid_out_by_the_one_that_paid() {
    let (app, stripe) = payouts_app().await;
    let (first, second, third) = ("po_chain_1", "po_chain_2", "po_chain_3");
    let (donation, _, net) = paid(&app, &stripe, 3000, 65, Some(first)).await;
    // The first payout fails: its money comes back in its failure transaction, which the
    // second takes; the second fails too, and the third takes its failure transaction.
    stripe.put(transaction(
        &format!("txn_{first}"),
        "payout",
        -net,
        0,
        first,
        Some(first),
    ));
    stripe.put(transaction(
        &format!("txn_fail_{first}"),
        "payout_failure",
        net,
        0,
        first,
        Some(second),
    ));
    stripe.put(transaction(
        &format!("txn_{second}"),
        "payout",
        -net,
        0,
        second,
        Some(second),
    ));
    stripe.put(transaction(
        &format!("txn_fail_{second}"),
        "payout_failure",
        net,
        0,
        second,
        Some(third),
    ));
    stripe.put(transaction(
        &format!("txn_{third}"),
        "payout",
        -net,
        0,
        third,
        Some(third),
    ));
    for (i, (id, status)) in [(first, "failed"), (second, "failed"), (third, "paid")]
        .into_iter()
        .enumerate()
    {
        let mut object = payout(id, net, status, "completed");
        if status == "failed" {
            object["failure_balance_transaction"] = json!(format!("txn_fail_{id}"));
            object["failure_code"] = json!("account_closed");
        }
        app.deliver(&event(
            &format!("payout.{status}"),
            object,
            1_790_000_000 + i as i64,
        ))
        .await;
        app.apply_events().await;
    }
    // The gift went to the bank with the third: it is not overdue, and finance says so.
    let overdue = read(&app, "/v1/finance/payouts/overdue-donations?days=0").await;
    assert!(
        !overdue["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == json!(donation)),
        "{overdue}"
    );
    let (payout_id,): (String,) = sqlx::query_as(
        "SELECT t.payout_id FROM paid_out_transactions t
         JOIN donations d ON d.balance_transaction_id = t.balance_transaction_id
         WHERE d.id = $1",
    )
    .bind(donation)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(payout_id, third);
    assert_eq!(reconciliation(&app, third).await["difference"], 0);
}

#[tokio::test]
async fn a_fee_no_event_brought_is_looked_up_once_and_the_payout_reconciles() {
    let (app, stripe) = payouts_app().await;
    // An endpoint that receives payment_intent.* events only: the gift succeeds, its charge
    // and balance transaction never arrive in an event.
    let (donation, pi) = app.create_donation(4000).await;
    let charge = format!("ch_{}", &pi[3..]);
    let txn = format!("txn_{charge}");
    let po = "po_after_lookup";
    let mut intent = objects::payment_intent(&pi, Some(donation), "succeeded", 4000);
    intent["latest_charge"] = json!(charge);
    stripe.put(intent.clone());
    stripe.put(objects::charge(&charge, &pi, 4000, 0, Some(&txn)));
    stripe.put(transaction(&txn, "charge", 4000, 80, &charge, Some(po)));
    app.deliver(&event(
        "payment_intent.succeeded",
        intent,
        OffsetDateTime::now_utc().unix_timestamp() - 30,
    ))
    .await;
    app.apply_events().await;
    let fee = || {
        let app = &app;
        async move {
            sqlx::query_as::<_, (Option<i64>, Option<i64>)>(
                "SELECT fee, net FROM donations WHERE id = $1",
            )
            .bind(donation)
            .fetch_one(&app.db)
            .await
            .unwrap()
        }
    };
    let lookups = || {
        let app = &app;
        let path = format!("/v1/payment_intents/{pi}");
        async move { app.stripe_requests(&path).await.len() }
    };
    assert_eq!(fee().await, (None, None), "no event said the fee");
    let before = lookups().await;

    // Not before FEE_LOOKUP_AFTER (10 minutes): the charge's own events may still come.
    assert_eq!(app.worker.look_up_fees().await.unwrap(), 0);
    assert_eq!(lookups().await, before);
    sqlx::query(
        "UPDATE donations SET payment_status_at = payment_status_at - interval '11 minutes'
         WHERE id = $1",
    )
    .bind(donation)
    .execute(&app.db)
    .await
    .unwrap();
    assert_eq!(app.worker.look_up_fees().await.unwrap(), 1);
    assert_eq!(lookups().await, before + 1, "one call");
    assert_eq!(fee().await, (Some(80), Some(3920)));
    // Once only.
    assert_eq!(app.worker.look_up_fees().await.unwrap(), 0);
    assert_eq!(lookups().await, before + 1);

    // Its payout reconciles to the penny.
    stripe.put(transaction(
        &format!("txn_{po}"),
        "payout",
        -3920,
        0,
        po,
        Some(po),
    ));
    app.deliver(&event(
        "payout.paid",
        payout(po, 3920, "paid", "completed"),
        1_790_000_000,
    ))
    .await;
    app.apply_events().await;
    let shown = reconciliation(&app, po).await;
    assert_eq!(shown["difference"], 0, "{shown}");
    app.assert_books_hold().await;

    // Once, even when Stripe had no fee to give: a charge with no balance transaction yet.
    let (bare, bare_pi) = app.create_donation(1500).await;
    let bare_charge = format!("ch_{}", &bare_pi[3..]);
    let mut bare_intent = objects::payment_intent(&bare_pi, Some(bare), "succeeded", 1500);
    bare_intent["latest_charge"] = json!(bare_charge);
    stripe.put(bare_intent.clone());
    stripe.put(objects::charge(&bare_charge, &bare_pi, 1500, 0, None));
    app.deliver(&event(
        "payment_intent.succeeded",
        bare_intent,
        OffsetDateTime::now_utc().unix_timestamp() - 30,
    ))
    .await;
    app.apply_events().await;
    sqlx::query(
        "UPDATE donations SET payment_status_at = payment_status_at - interval '11 minutes'
         WHERE id = $1",
    )
    .bind(bare)
    .execute(&app.db)
    .await
    .unwrap();
    let bare_path = format!("/v1/payment_intents/{bare_pi}");
    let bare_before = app.stripe_requests(&bare_path).await.len();
    assert_eq!(app.worker.look_up_fees().await.unwrap(), 1);
    assert_eq!(app.worker.look_up_fees().await.unwrap(), 0);
    assert_eq!(app.stripe_requests(&bare_path).await.len(), bare_before + 1);
}
