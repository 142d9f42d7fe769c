//! Payouts: on a payout's events its balance transactions are listed from Stripe, every page,
//! and the payout is reconciled against the ledger to the penny; what the ledger cannot
//! account for is named, and gifts no payout has taken are found.

use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use quickdonate::operators::access::Role;

use crate::finance_access::{get_as, get_with, token};
use crate::helpers::{
    PAYOUT_PAGE, StripeObjects, TestApp, assert_problem, event, objects, spawn_app_with,
    stripe_creates_payment_intents,
};

pub async fn payouts_app() -> (TestApp, StripeObjects) {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;
    (app, stripe)
}

/// GET a finance path as a finance token, expecting 200 and JSON.
pub async fn read(app: &TestApp, path: &str) -> Value {
    let finance = token(app, &format!("finance-{}", Uuid::new_v4()), Role::Finance).await;
    let response = get_as(app, Some(&finance), path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

/// A balance transaction that payout `payout` (if any) contains, as the fake lists it.
pub fn transaction(
    id: &str,
    kind: &str,
    amount: i64,
    fee: i64,
    source: &str,
    payout: Option<&str>,
) -> Value {
    let mut t = objects::balance_transaction(id, amount, fee);
    t["type"] = json!(kind);
    t["reporting_category"] = json!(kind);
    t["source"] = json!(source);
    t["payouts"] = json!(payout.into_iter().collect::<Vec<_>>());
    t
}

/// A paid donation of `amount` with a fee of `fee`, its gift in `payout`; returns its id and
/// its balance transaction's net.
pub async fn paid(
    app: &TestApp,
    stripe: &StripeObjects,
    amount: i64,
    fee: i64,
    payout: Option<&str>,
) -> (Uuid, String, i64) {
    let (donation, pi) = app.create_donation(amount).await;
    let charge = format!("ch_{}", &pi[3..]);
    let txn = format!("txn_{charge}");
    let mut intent = objects::payment_intent(&pi, Some(donation), "succeeded", amount);
    intent["latest_charge"] = json!(charge);
    stripe.put(intent.clone());
    stripe.put(objects::charge(&charge, &pi, amount, 0, Some(&txn)));
    stripe.put(transaction(&txn, "charge", amount, fee, &charge, payout));
    let t = OffsetDateTime::now_utc().unix_timestamp() - 5000;
    app.deliver(&event("payment_intent.succeeded", intent, t))
        .await;
    app.deliver(&event(
        "charge.succeeded",
        objects::charge(&charge, &pi, amount, 0, Some(&txn)),
        t + 1,
    ))
    .await;
    app.apply_events().await;
    (donation, pi, amount - fee)
}

/// A payout of `amount` in `status`, with its own balance transaction, as Stripe sends it.
pub fn payout(id: &str, amount: i64, status: &str, reconciliation: &str) -> Value {
    json!({
        "id": id, "object": "payout", "amount": amount, "currency": "gbp", "status": status,
        "automatic": true, "arrival_date": 1_790_000_000, "created": 1_789_900_000,
        "balance_transaction": format!("txn_{id}"), "failure_balance_transaction": null,
        "reconciliation_status": reconciliation, "method": "standard", "type": "bank_account",
        "livemode": false, "metadata": {}
    })
}

/// A refund of `amount` of a paid gift of `charged` (PaymentIntent `pi`), succeeded at once,
/// its balance transaction in `payout`, delivered and applied.
pub async fn refund_in(
    app: &TestApp,
    stripe: &StripeObjects,
    pi: &str,
    charged: i64,
    id: &str,
    amount: i64,
    payout: &str,
) {
    let charge = format!("ch_{}", &pi[3..]);
    let txn = format!("txn_{id}");
    let mut refund = objects::refund(id, &charge, pi, amount, "succeeded");
    refund["balance_transaction"] = json!(txn);
    stripe.put(refund.clone());
    stripe.put(transaction(&txn, "refund", -amount, 0, id, Some(payout)));
    stripe.put(objects::charge(
        &charge,
        pi,
        charged,
        amount,
        Some(&format!("txn_{charge}")),
    ));
    let now = OffsetDateTime::now_utc().unix_timestamp();
    app.deliver(&event("refund.created", refund, now)).await;
    app.apply_events().await;
}

pub async fn reconciliation(app: &TestApp, id: &str) -> Value {
    read(app, &format!("/v1/finance/payouts/{id}")).await
}

async fn listings(app: &TestApp) -> usize {
    app.stripe_requests("/v1/balance_transactions").await.len()
}

#[tokio::test]
async fn a_payout_over_several_pages_reconciles_to_the_penny() {
    let (app, stripe) = payouts_app().await;
    let po = "po_several_pages";
    let mut total = 0;
    let mut donations = Vec::new();
    for (amount, fee) in [(2500, 58), (1000, 35), (5000, 95)] {
        let (donation, _, net) = paid(&app, &stripe, amount, fee, Some(po)).await;
        total += net;
        donations.push(donation);
    }
    // A refund of the second gift, taken from the same payout.
    let (refunded, pi, net) = paid(&app, &stripe, 2000, 50, Some(po)).await;
    total += net;
    refund_in(&app, &stripe, &pi, 2000, "re_payout_1", 700, po).await;
    total -= 700;

    stripe.put(transaction(
        &format!("txn_{po}"),
        "payout",
        -total,
        0,
        po,
        Some(po),
    ));
    let listed_before = listings(&app).await;
    app.deliver(&event(
        "payout.paid",
        payout(po, total, "paid", "completed"),
        1_790_000_000,
    ))
    .await;
    app.apply_events().await;

    let shown = reconciliation(&app, po).await;
    assert_eq!(shown["status"], "paid");
    assert_eq!(shown["amount"], total);
    assert_eq!(
        shown["transaction_count"], 5,
        "four gifts and a refund: {shown}"
    );
    assert_eq!(shown["transactions_total"], total);
    assert_eq!(shown["ledger_total"], total);
    assert_eq!(shown["difference"], 0, "{shown}");
    assert_eq!(shown["unmatched"], json!([]));
    assert_eq!(shown["donation_count"], 4);
    assert_eq!(shown["listing_complete"], true);
    // Six transactions (with the payout's own), two to a page: every page was read.
    let pages = 6usize.div_ceil(PAYOUT_PAGE);
    assert_eq!(listings(&app).await - listed_before, pages);

    // The money leaving for the bank is in the ledger, once.
    let payout_rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT kind, amount FROM ledger_entries WHERE source_id = $1")
            .bind(po)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(payout_rows, vec![("payout".to_owned(), -total)]);

    // Stripe says again that it is reconciled: the complete list is not read again.
    app.deliver(&event(
        "payout.reconciliation_completed",
        payout(po, total, "paid", "completed"),
        1_790_000_100,
    ))
    .await;
    app.apply_events().await;
    assert_eq!(
        listings(&app).await - listed_before,
        pages,
        "no second listing"
    );
    assert_eq!(reconciliation(&app, po).await["difference"], 0);
    let _ = refunded;
}

#[tokio::test]
async fn a_transaction_the_ledger_does_not_hold_is_named_with_the_difference_it_makes() {
    let (app, stripe) = payouts_app().await;
    let po = "po_with_a_stranger";
    let (_, _, net) = paid(&app, &stripe, 2500, 58, Some(po)).await;
    // The shop's sale on the same Stripe account, paid out with the donations.
    stripe.put(transaction(
        "txn_shop_sale",
        "charge",
        1200,
        40,
        "ch_shop_sale",
        Some(po),
    ));
    let amount = net + 1160;
    stripe.put(transaction(
        &format!("txn_{po}"),
        "payout",
        -amount,
        0,
        po,
        Some(po),
    ));
    app.deliver(&event(
        "payout.paid",
        payout(po, amount, "paid", "completed"),
        1_790_000_000,
    ))
    .await;
    app.apply_events().await;

    let shown = reconciliation(&app, po).await;
    assert_eq!(shown["difference"], 1160, "{shown}");
    assert_eq!(shown["transactions_total"], amount);
    assert_eq!(shown["ledger_total"], net);
    assert_eq!(
        shown["unmatched"],
        json!([{"id": "txn_shop_sale", "type": "charge", "net": 1160, "ledger": 0,
                "currency": "gbp", "source": "ch_shop_sale"}])
    );
}

#[tokio::test]
async fn a_payout_listed_before_stripe_finished_reconciling_is_listed_again_once_it_has() {
    let (app, stripe) = payouts_app().await;
    let po = "po_in_progress";
    let (_, _, first) = paid(&app, &stripe, 2500, 58, Some(po)).await;
    let second = 1000 - 35;
    let amount = first + second;
    app.deliver(&event(
        "payout.paid",
        payout(po, amount, "paid", "in_progress"),
        1_790_000_000,
    ))
    .await;
    app.apply_events().await;
    let early = reconciliation(&app, po).await;
    assert_eq!(early["listing_complete"], false);
    assert_eq!(early["transaction_count"], 1);
    assert_eq!(
        early["difference"], second,
        "a gift not listed yet: {early}"
    );

    // Stripe has found the payout's second gift by the time it says it is reconciled.
    paid(&app, &stripe, 1000, 35, Some(po)).await;
    app.deliver(&event(
        "payout.reconciliation_completed",
        payout(po, amount, "paid", "completed"),
        1_790_000_100,
    ))
    .await;
    // A late copy of an older snapshot changes nothing.
    app.deliver(&event(
        "payout.created",
        payout(po, amount, "pending", "not_applicable"),
        1_789_900_000,
    ))
    .await;
    app.apply_events().await;
    let done = reconciliation(&app, po).await;
    assert_eq!(
        done["status"], "paid",
        "an older snapshot never moves a payout back"
    );
    assert_eq!(done["listing_complete"], true);
    assert_eq!(done["reconciliation_status"], "completed");
    assert_eq!(done["transaction_count"], 2);
    assert_eq!(done["difference"], 0, "{done}");
}

#[tokio::test]
async fn a_failed_payout_returns_its_money_and_its_gifts_are_not_paid_out() {
    let (app, stripe) = payouts_app().await;
    let po = "po_failed";
    let (donation, _, net) = paid(&app, &stripe, 2500, 58, Some(po)).await;
    let (elsewhere, _, _) = paid(&app, &stripe, 1000, 35, Some("po_other")).await;
    let mut failed = payout(po, net, "failed", "completed");
    failed["failure_balance_transaction"] = json!(format!("txn_{po}_failure"));
    app.deliver(&event("payout.failed", failed, 1_790_000_000))
        .await;
    app.apply_events().await;

    let shown = reconciliation(&app, po).await;
    assert_eq!(shown["status"], "failed");
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind, amount FROM ledger_entries WHERE source_id = $1 ORDER BY kind",
    )
    .bind(po)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        rows,
        vec![
            ("payout".to_owned(), -net),
            ("payout_failure".to_owned(), net)
        ],
        "the money left and came back"
    );

    // Both gifts are in no paid payout: po_other has not been paid either. Nothing is overdue
    // by the default (PAYOUT_OVERDUE_DAYS): they succeeded just now.
    let overdue = |days: &str| format!("/v1/finance/payouts/overdue-donations{days}");
    assert_eq!(read(&app, &overdue("")).await["data"], json!([]));
    let ids = |shown: Value| -> Vec<String> {
        shown["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let missing = ids(read(&app, &overdue("?days=0")).await);
    assert!(
        missing.contains(&donation.to_string()) && missing.contains(&elsewhere.to_string()),
        "{missing:?}"
    );
    // Once po_other is paid, its gift is no longer overdue.
    let amount = 1000 - 35;
    stripe.put(transaction(
        "txn_po_other",
        "payout",
        -amount,
        0,
        "po_other",
        Some("po_other"),
    ));
    app.deliver(&event(
        "payout.paid",
        payout("po_other", amount, "paid", "completed"),
        1_790_000_000,
    ))
    .await;
    app.apply_events().await;
    assert_eq!(
        ids(read(&app, &overdue("?days=0")).await),
        vec![donation.to_string()]
    );
    // The finance export says which payout took each gift to the bank: a failed one did not.
    let rows = read(&app, "/v1/finance/donations").await;
    let payout_of = |id: Uuid| {
        rows["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id.to_string())
            .map(|r| r["payout_id"].clone())
            .unwrap()
    };
    assert_eq!(payout_of(elsewhere), "po_other");
    assert_eq!(payout_of(donation), Value::Null);

    // The failed payout's money came back in its failure transaction; the next payout takes
    // that to the bank, and with it the gift.
    let retry = "po_retry";
    let failure = format!("txn_{po}_failure");
    stripe.put(transaction(
        &failure,
        "payout_failure",
        net,
        0,
        po,
        Some(retry),
    ));
    stripe.put(transaction(
        &format!("txn_{retry}"),
        "payout",
        -net,
        0,
        retry,
        Some(retry),
    ));
    app.deliver(&event(
        "payout.paid",
        payout(retry, net, "paid", "completed"),
        1_790_100_000,
    ))
    .await;
    app.apply_events().await;
    assert_eq!(read(&app, &overdue("?days=0")).await["data"], json!([]));
    let rows = read(&app, "/v1/finance/donations").await;
    let paid_by = rows["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == donation.to_string())
        .map(|r| r["payout_id"].clone())
        .unwrap();
    assert_eq!(paid_by, retry);
    let shown = reconciliation(&app, retry).await;
    assert_eq!(
        shown["difference"], 0,
        "the failure transaction is the ledger's: {shown}"
    );
}

#[tokio::test]
async fn payouts_are_listed_newest_first_page_by_page_with_the_gifts_each_contains() {
    let (app, stripe) = payouts_app().await;
    let mut made = Vec::new();
    for (i, po) in ["po_list_a", "po_list_b", "po_list_c"]
        .into_iter()
        .enumerate()
    {
        let (donation, _, net) = paid(&app, &stripe, 1000 + i as i64, 30, Some(po)).await;
        let mut shown = payout(po, net, "paid", "completed");
        shown["created"] = json!(1_789_900_000 + i as i64 * 86_400);
        app.deliver(&event("payout.paid", shown, 1_790_000_000 + i as i64))
            .await;
        made.push((po, donation));
    }
    app.apply_events().await;

    let mut seen = Vec::new();
    let mut path = "/v1/finance/payouts?limit=2".to_owned();
    loop {
        let page = read(&app, &path).await;
        for p in page["data"].as_array().unwrap() {
            assert_eq!(p["difference"], 0, "{p}");
            seen.push(p["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/finance/payouts?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["po_list_c", "po_list_b", "po_list_a"],
        "newest first, each once"
    );

    let (po, donation) = made[1];
    let shown = reconciliation(&app, po).await;
    let gifts: Vec<&Value> = shown["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["type"] == "charge")
        .collect();
    assert_eq!(gifts.len(), 1);
    assert_eq!(gifts[0]["donation_id"], donation.to_string());
    assert_eq!(gifts[0]["campaign"], "kashmir");
    assert_eq!(gifts[0]["ledger"], gifts[0]["net"]);

    // As CSV, for a spreadsheet: one line per payout.
    let finance = token(&app, "csv-reader", Role::Finance).await;
    let response = get_with(
        &app,
        Some(&finance),
        "/v1/finance/payouts?status=paid",
        &[("accept", "text/csv")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let body = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let difference = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "difference")
        .unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| &r[difference] == "0.00"));
    assert!(
        read(&app, "/v1/finance/payouts?status=failed").await["data"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_unknown_payout_a_bad_status_and_a_bad_cursor_are_named() {
    let (app, _) = payouts_app().await;
    let finance = token(&app, "finance", Role::Finance).await;
    let problem = assert_problem(
        get_as(&app, Some(&finance), "/v1/finance/payouts/po_nowhere").await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "payout");
    for (path, field) in [
        ("/v1/finance/payouts?status=lost", "status"),
        ("/v1/finance/payouts?cursor=garbage", "cursor"),
        ("/v1/finance/payouts?from=yesterday", "from"),
        ("/v1/finance/payouts?payout=po_1", "payout"),
        ("/v1/finance/payouts/overdue-donations?days=-1", "days"),
    ] {
        let problem = assert_problem(
            get_as(&app, Some(&finance), path).await,
            400,
            "bad-parameter",
        )
        .await;
        assert_eq!(problem["errors"][0]["field"], field, "{path}");
    }
    assert_eq!(
        get_as(&app, None, "/v1/finance/payouts").await.status(),
        401,
        "a token is needed"
    );
}

#[tokio::test]
async fn a_payout_the_database_refuses_is_set_aside_and_holds_nothing_else_up() {
    let app = spawn_app_with(|s| {
        s.apply_events = false;
        s.event_max_attempts = 1;
    })
    .await;
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;
    // A manual payout (never listed) in a currency no ledger row may have, in the same batch
    // as a gift's events.
    let mut bad = payout("po_unwritable", 100, "paid", "not_applicable");
    bad["automatic"] = json!(false);
    bad["currency"] = json!("pounds");
    let bad_event = event("payout.paid", bad, 1_790_000_000);
    app.deliver(&bad_event).await;
    let (donation, _, _) = paid(&app, &stripe, 2500, 58, None).await;

    let (state, error): (String, Option<String>) =
        sqlx::query_as("SELECT state, last_error FROM stripe_events WHERE id = $1")
            .bind(bad_event["id"].as_str().unwrap())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(state, "failed", "set aside, not retried forever: {error:?}");
    assert_eq!(
        app.donation_facts(donation).await.fee,
        Some(58),
        "the gift was applied"
    );
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stripe_events WHERE state = 'pending'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(pending, 0);
}
