//! The ledger: every movement of money recorded once from Stripe's balance transactions, never
//! changed, and the sums every figure is made of. Generated histories (a payment, its fee,
//! refunds that may fail, a dispute that ends any way), delivered in generated orders with
//! duplicates and split into batches anyhow, must all end in the same ledger, with each
//! donation's fee, net, refunded and lost amounts and each campaign's totals equal to the sums
//! of their rows.

use std::collections::BTreeSet;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use quickdonate::operators::access::Role;

use crate::finance_access::{get_as, get_with, token};
use crate::helpers::{
    StripeObjects, TestApp, assert_problem, event, objects, shuffle, spawn_app_with,
    stripe_creates_payment_intents,
};

/// How a generated dispute ends.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// An inquiry that closed: no money moves.
    InquiryClosed,
    /// A chargeback still under review: the money is withdrawn.
    UnderReview,
    /// Won: the money comes back, and the fee too if `fee_returned`.
    Won {
        fee_returned: bool,
    },
    Lost,
}

/// A donation's whole history at Stripe.
#[derive(Debug, Clone)]
struct History {
    amount: i64,
    fee: i64,
    /// Each refund's amount, and whether it fails after succeeding.
    refunds: Vec<(i64, bool)>,
    dispute: Option<(Ending, i64)>,
    /// Whether Stripe settles the gift in another currency (US dollars, at 1.25 to the
    /// pound) than the gift's: the ledger is in the settlement currency.
    abroad: bool,
    /// Orders the deliveries, picks the duplicates and splits the batches.
    seed: u64,
}

impl History {
    /// What `amount` pence of the gift's currency are in the settlement currency.
    fn settled(&self, amount: i64) -> i64 {
        if self.abroad { amount * 5 / 4 } else { amount }
    }

    fn settlement_currency(&self) -> &'static str {
        if self.abroad { "usd" } else { "gbp" }
    }
}

fn histories() -> impl Strategy<Value = History> {
    (500i64..=50_000)
        .prop_flat_map(|amount| {
            let refund = (1..=amount / 3, any::<bool>());
            let ending = prop_oneof![
                Just(Ending::InquiryClosed),
                Just(Ending::UnderReview),
                any::<bool>().prop_map(|fee_returned| Ending::Won { fee_returned }),
                Just(Ending::Lost),
            ];
            (
                Just(amount),
                0..=amount / 10,
                proptest::collection::vec(refund, 0..=2),
                proptest::option::of((ending, 0i64..=2_000)),
                proptest::bool::weighted(0.2),
                any::<u64>(),
            )
        })
        .prop_map(|(amount, fee, refunds, dispute, abroad, seed)| History {
            amount,
            fee,
            refunds,
            dispute,
            abroad,
            seed,
        })
}

/// One ledger row: (kind, balance transaction, amount).
type Row = (String, String, i64);

/// A history played out at Stripe: the events on the way, Stripe's objects as they stand
/// after each event, and the ledger rows the history must leave.
struct Played {
    donation: Uuid,
    events: Vec<Value>,
    /// `snapshots[i]`: every object as Stripe holds it once event `i` has happened.
    snapshots: Vec<Vec<Value>>,
    rows: BTreeSet<Row>,
    refunded: i64,
    lost: i64,
}

/// Stripe as the history goes: objects change, then the event saying so is sent.
struct Timeline {
    t: i64,
    now: std::collections::BTreeMap<String, Value>,
    events: Vec<Value>,
    snapshots: Vec<Vec<Value>>,
}

impl Timeline {
    fn set(&mut self, object: &Value) {
        self.now
            .insert(object["id"].as_str().unwrap().to_owned(), object.clone());
    }

    fn emit(&mut self, kind: &str, object: &Value) {
        self.t += 10;
        self.events.push(event(kind, object.clone(), self.t));
        self.snapshots.push(self.now.values().cloned().collect());
    }
}

fn play(h: &History, donation: Uuid, pi: &str, t0: i64) -> Played {
    let charge_id = format!("ch_{}", &pi[3..]);
    let charge_txn = format!("txn_{charge_id}");
    let mut rows = BTreeSet::new();
    let mut stripe = Timeline {
        t: t0,
        now: Default::default(),
        events: Vec::new(),
        snapshots: Vec::new(),
    };

    let mut intent = objects::payment_intent(pi, Some(donation), "succeeded", h.amount);
    intent["latest_charge"] = json!(charge_id);
    let mut charge = objects::charge(&charge_id, pi, h.amount, 0, Some(&charge_txn));
    charge["metadata"] = json!({"donation_id": donation.to_string()});
    stripe.set(&intent);
    stripe.set(&charge);
    stripe.set(&settled(
        h,
        objects::balance_transaction(&charge_txn, h.amount, h.fee),
    ));
    stripe.emit("payment_intent.succeeded", &intent);
    stripe.emit("charge.succeeded", &charge);
    rows.insert(("gift".into(), charge_txn.clone(), h.settled(h.amount)));
    if h.fee != 0 {
        rows.insert(("stripe_fee".into(), charge_txn.clone(), -h.fee));
    }

    let mut refunded = 0;
    for (i, (amount, fails)) in h.refunds.iter().enumerate() {
        let id = format!("re_{}_{i}", &pi[3..]);
        let txn = format!("txn_{id}");
        let mut refund = objects::refund(&id, &charge_id, pi, *amount, "succeeded");
        refund["balance_transaction"] = json!(txn);
        let mut taken = settled(h, objects::balance_transaction(&txn, -amount, 0));
        taken["type"] = json!("refund");
        refunded += amount;
        charge["amount_refunded"] = json!(refunded);
        stripe.set(&refund);
        stripe.set(&taken);
        stripe.set(&charge);
        stripe.emit("refund.created", &refund);
        stripe.emit("charge.refunded", &charge);
        rows.insert(("refund".into(), txn.clone(), -h.settled(*amount)));
        if *fails {
            let failure = format!("txn_{id}_failure");
            refund["status"] = json!("failed");
            refund["failure_balance_transaction"] = json!(failure);
            let mut back = settled(h, objects::balance_transaction(&failure, *amount, 0));
            back["type"] = json!("refund_failure");
            refunded -= amount;
            charge["amount_refunded"] = json!(refunded);
            stripe.set(&refund);
            stripe.set(&back);
            stripe.set(&charge);
            stripe.emit("refund.failed", &refund);
            stripe.emit("charge.refund.updated", &refund);
            rows.insert(("refund_failure".into(), failure, h.settled(*amount)));
        }
    }

    let mut lost = 0;
    if let Some((ending, fee)) = h.dispute {
        let id = format!("dp_{}", &pi[3..]);
        let withdrawn = [fee];
        let snapshot = |status: &str, fees: &[i64]| {
            let mut dispute = objects::dispute(&id, &charge_id, pi, h.amount, status, fees);
            for txn in dispute["balance_transactions"].as_array_mut().unwrap() {
                *txn = settled(h, txn.take());
            }
            dispute
        };
        let record = |i: usize, amount: i64, fee: i64, rows: &mut BTreeSet<Row>| {
            let txn = format!("txn_{id}_{i}");
            let kind = if amount < 0 {
                "dispute_withdrawal"
            } else {
                "dispute_reinstatement"
            };
            rows.insert((kind.into(), txn.clone(), h.settled(amount)));
            if fee != 0 {
                rows.insert(("dispute_fee".into(), txn, -fee));
            }
        };
        match ending {
            Ending::InquiryClosed => {
                stripe.emit(
                    "charge.dispute.created",
                    &snapshot("warning_needs_response", &[]),
                );
                stripe.emit("charge.dispute.closed", &snapshot("warning_closed", &[]));
            }
            Ending::UnderReview | Ending::Lost | Ending::Won { .. } => {
                stripe.emit(
                    "charge.dispute.created",
                    &snapshot("needs_response", &withdrawn),
                );
                stripe.emit(
                    "charge.dispute.funds_withdrawn",
                    &snapshot("needs_response", &withdrawn),
                );
                stripe.emit(
                    "charge.dispute.updated",
                    &snapshot("under_review", &withdrawn),
                );
                record(0, -h.amount, fee, &mut rows);
                match ending {
                    Ending::Lost => {
                        stripe.emit("charge.dispute.closed", &snapshot("lost", &withdrawn));
                        lost = h.amount;
                    }
                    Ending::Won { fee_returned } => {
                        let back = if fee_returned { -fee } else { 0 };
                        let both = [fee, back];
                        stripe.emit("charge.dispute.funds_reinstated", &snapshot("won", &both));
                        stripe.emit("charge.dispute.closed", &snapshot("won", &both));
                        record(1, h.amount, back, &mut rows);
                    }
                    _ => {}
                }
            }
        }
    }
    Played {
        donation,
        events: stripe.events,
        snapshots: stripe.snapshots,
        rows,
        refunded,
        lost,
    }
}

/// A balance transaction of the gift's currency (pounds) as Stripe settles it for `h`: the
/// amount converted, the fee (Stripe's, charged in the settlement currency) as it is.
fn settled(h: &History, mut txn: Value) -> Value {
    let amount = h.settled(txn["amount"].as_i64().unwrap());
    let fee = txn["fee"].as_i64().unwrap();
    txn["amount"] = json!(amount);
    txn["net"] = json!(amount - fee);
    txn["currency"] = json!(h.settlement_currency());
    txn
}

/// Plays `h` on a fresh donation of `app`, delivering its events in the order, duplicates
/// and batches its seed gives, and checks the ledger it leaves.
async fn check(app: &TestApp, stripe: &StripeObjects, h: History) -> Result<(), TestCaseError> {
    let (donation, pi) = app.create_donation(h.amount).await;
    let t0 = OffsetDateTime::now_utc().unix_timestamp() - 10_000;
    let played = play(&h, donation, &pi, t0);
    // Each delivery with its place in the history.
    let mut deliveries: Vec<(usize, &Value)> = played.events.iter().enumerate().collect();
    // Stripe delivers at least once: some events twice.
    for (i, event) in played.events.iter().enumerate() {
        if (h.seed >> (i % 64)) & 1 == 1 && i % 3 == 0 {
            deliveries.push((i, event));
        }
    }
    shuffle(&mut deliveries, h.seed);
    // Stripe's present is at least as late as the latest event delivered so far: what the
    // worker fetches is Stripe as of then.
    let mut present = 0;
    let mut split = h.seed.rotate_left(17) | 1;
    for (i, event) in deliveries {
        prop_assert_eq!(app.deliver(event).await.status(), 200);
        present = present.max(i);
        split = split.wrapping_mul(6364136223846793005).wrapping_add(1);
        if split >> 62 == 0 {
            for object in &played.snapshots[present] {
                stripe.put(object.clone());
            }
            app.apply_events().await;
        }
    }
    for object in &played.snapshots[present] {
        stripe.put(object.clone());
    }
    app.apply_events().await;

    let unapplied: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT id, last_error FROM stripe_events WHERE state NOT IN ('applied', 'ignored')",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    prop_assert!(unapplied.is_empty(), "events left unapplied: {unapplied:?}");

    let rows: BTreeSet<Row> = sqlx::query_as(
        "SELECT kind, balance_transaction_id, amount FROM ledger_entries WHERE donation_id = $1",
    )
    .bind(donation)
    .fetch_all(&app.db)
    .await
    .unwrap()
    .into_iter()
    .collect();
    prop_assert_eq!(&rows, &played.rows, "the ledger holds each movement once");

    let facts = app.donation_facts(donation).await;
    prop_assert_eq!(facts.fee, Some(h.fee));
    prop_assert_eq!(facts.net, Some(h.settled(h.amount) - h.fee));
    prop_assert_eq!(facts.refunded_amount, played.refunded);
    prop_assert_eq!(facts.dispute_lost_amount, played.lost);
    assert_sums_match_rows(app).await?;
    Ok(())
}

/// Every donation's figures, and every campaign's, are the sums of their ledger rows.
async fn assert_sums_match_rows(app: &TestApp) -> Result<(), TestCaseError> {
    let mismatched: Vec<(Uuid, String)> = sqlx::query_as(
        r#"WITH sums AS (
               SELECT donation_id,
                      sum(amount) FILTER (WHERE kind = 'gift') AS gift,
                      coalesce(sum(amount) FILTER (WHERE kind = 'stripe_fee'), 0) AS fee,
                      coalesce(sum(amount) FILTER (WHERE kind IN ('refund', 'refund_failure')), 0) AS refunds,
                      coalesce(sum(amount) FILTER (WHERE kind = 'dispute_fee'), 0) AS dispute_fee,
                      coalesce(sum(amount) FILTER (WHERE kind IN ('dispute_withdrawal', 'dispute_reinstatement')
                          AND source_id IN (SELECT id FROM disputes WHERE status = 'lost')), 0) AS lost
               FROM ledger_entries WHERE donation_id IS NOT NULL GROUP BY donation_id)
           SELECT d.id, format('fee %s/%s net %s/%s refunded %s/%s dispute fee %s/%s lost %s/%s',
                               d.fee, -s.fee, d.net, s.gift + s.fee, d.refunded_amount, -s.refunds,
                               d.dispute_fee, -s.dispute_fee, d.dispute_lost_amount, -s.lost)
           FROM donations d JOIN sums s ON s.donation_id = d.id
           WHERE d.fee IS DISTINCT FROM -s.fee OR d.net IS DISTINCT FROM s.gift + s.fee
              OR d.dispute_fee <> -s.dispute_fee
              -- Refunds and disputes are counted in the gift's currency, the ledger in the
              -- settlement currency: the same figures when those are the same.
              OR (d.settlement_currency = d.currency
                  AND (d.refunded_amount <> -s.refunds OR d.dispute_lost_amount <> -s.lost))"#,
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    prop_assert!(
        mismatched.is_empty(),
        "donations differ from their rows: {mismatched:?}"
    );

    // Each campaign's figures in each settlement currency, from its rows and its donations.
    let campaigns: Vec<(String, String, i64, i64, i64, i64)> = sqlx::query_as(
        r#"SELECT c.slug, x.currency,
                  coalesce((SELECT sum(amount) FROM ledger_entries l
                            WHERE l.campaign = c.slug AND l.currency = x.currency
                              AND kind IN ('gift', 'stripe_fee')), 0)::bigint,
                  coalesce((SELECT sum(net) FROM donations d
                            WHERE d.campaign = c.slug AND d.settlement_currency = x.currency), 0)::bigint,
                  coalesce((SELECT -sum(amount) FROM ledger_entries l
                            WHERE l.campaign = c.slug AND l.currency = x.currency
                              AND kind = 'dispute_fee'), 0)::bigint,
                  coalesce((SELECT sum(dispute_fee) FROM donations d
                            WHERE d.campaign = c.slug AND d.settlement_currency = x.currency), 0)::bigint
           FROM campaigns c, (SELECT DISTINCT currency FROM ledger_entries) x"#,
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    for (slug, currency, net_rows, net_donations, fees_rows, fees_donations) in campaigns {
        prop_assert_eq!(
            net_rows,
            net_donations,
            "campaign {} net in {}",
            slug,
            currency
        );
        prop_assert_eq!(
            fees_rows,
            fees_donations,
            "campaign {} dispute fees in {}",
            slug,
            currency
        );
    }
    app.assert_totals_match_rows().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_history_in_every_order_leaves_one_ledger_whose_sums_are_the_figures() {
    let app = Arc::new(spawn_app_with(|s| s.apply_events = false).await);
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;
    let cases = std::env::var("LEDGER_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(48);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let result = runner.run(&histories(), |history| {
        tokio::task::block_in_place(|| handle.block_on(check(&app, &stripe, history)))
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }

    // The campaign's summary, read from the ledger, says what its donations say.
    let finance = token(&app, "finance", Role::Finance).await;
    let summary: Value = get_as(
        &app,
        Some(&finance),
        "/v1/finance/campaigns/kashmir/summary",
    )
    .await
    .json()
    .await
    .unwrap();
    let totals = summary["totals"].as_array().unwrap();
    for currency in ["gbp", "usd"] {
        let shown = totals
            .iter()
            .find(|t| t["currency"] == currency)
            .unwrap_or_else(|| panic!("{currency} in {summary}"));
        let (count, gross, fees, dispute_fees): (i64, i64, i64, i64) = sqlx::query_as(
            r#"SELECT count(*), sum(net + fee)::bigint, sum(fee)::bigint,
                      sum(dispute_fee)::bigint
               FROM donations WHERE fee IS NOT NULL AND settlement_currency = $1"#,
        )
        .bind(currency)
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert_eq!(
            [
                &shown["count"],
                &shown["gross"],
                &shown["fees"],
                &shown["dispute_fees"]
            ],
            [count, gross, fees, dispute_fees]
                .map(|n| json!(n))
                .each_ref(),
            "{currency}: {summary}"
        );
        if currency == "gbp" {
            // Settled in the gift's own currency, refunds and lost disputes agree too.
            let (refunds, lost): (i64, i64) = sqlx::query_as(
                r#"SELECT sum(refunded_amount)::bigint, sum(dispute_lost_amount)::bigint
                   FROM donations WHERE fee IS NOT NULL AND settlement_currency = 'gbp'"#,
            )
            .fetch_one(&app.db)
            .await
            .unwrap();
            assert_eq!(shown["refunds"], refunds, "{summary}");
            assert_eq!(shown["dispute_losses"], lost, "{summary}");
        }
    }
}

#[tokio::test]
async fn the_ledger_refuses_to_change_or_lose_a_row() {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;
    let h = History {
        amount: 2500,
        fee: 58,
        refunds: vec![],
        dispute: None,
        abroad: false,
        seed: 0,
    };
    let (donation, pi) = app.create_donation(h.amount).await;
    let played = play(
        &h,
        donation,
        &pi,
        OffsetDateTime::now_utc().unix_timestamp(),
    );
    for object in played.snapshots.last().unwrap() {
        stripe.put(object.clone());
    }
    for event in &played.events {
        app.deliver(event).await;
    }
    app.apply_events().await;
    assert_eq!(
        app.donation_facts(donation).await.fee,
        Some(58),
        "the fee came from the fetched balance transaction"
    );
    for statement in [
        "UPDATE ledger_entries SET amount = 0",
        "DELETE FROM ledger_entries",
        "TRUNCATE ledger_entries",
    ] {
        let error = sqlx::query(statement)
            .execute(&app.db)
            .await
            .expect_err(statement);
        assert!(
            error.to_string().contains("append-only"),
            "{statement}: {error}"
        );
    }
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger_entries WHERE donation_id = $1")
            .bind(donation)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(rows, 2, "gift and fee, still there");
}

#[tokio::test]
async fn a_campaign_summary_gives_each_day_and_the_period_asked_for() {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;
    // 2026-11-01, 02 and 03, at noon UTC.
    let day = |n: i64| 1_793_534_400 + (n - 1) * 86_400;
    let mut plays = Vec::new();
    for (amount, fee, refund) in [(2500, 58, 0), (1000, 35, 400)] {
        let h = History {
            amount,
            fee,
            refunds: if refund > 0 {
                vec![(refund, false)]
            } else {
                vec![]
            },
            dispute: None,
            abroad: false,
            seed: 0,
        };
        let (donation, pi) = app.create_donation(amount).await;
        plays.push((play(&h, donation, &pi, day(1)), plays.len() as i64 + 1));
    }
    for (played, n) in &plays {
        for object in played.snapshots.last().unwrap() {
            let mut object = object.clone();
            // The gift on day n, the refund on day 3.
            if object["object"] == "balance_transaction" {
                let when = if object["type"] == "refund" {
                    day(3)
                } else {
                    day(*n)
                };
                object["created"] = json!(when);
            }
            stripe.put(object);
        }
        for event in &played.events {
            app.deliver(event).await;
        }
    }
    app.apply_events().await;

    // The first donor covered the fee: 59 of the 2500 Stripe received.
    let covered = plays[0].0.donation;
    sqlx::query("UPDATE donations SET amount = 2441, cover_fees_amount = 59 WHERE id = $1")
        .bind(covered)
        .execute(&app.db)
        .await
        .unwrap();
    let finance = token(&app, "finance", Role::Finance).await;
    let summary = |query: &'static str| {
        let (app, finance) = (&app, &finance);
        async move {
            let path = format!("/v1/finance/campaigns/kashmir/summary{query}");
            let response = get_as(app, Some(finance), &path).await;
            assert_eq!(response.status(), 200, "{path}");
            response.json::<Value>().await.unwrap()
        }
    };
    let all = summary("").await;
    let totals = &all["totals"][0];
    assert_eq!(totals["currency"], "gbp");
    assert_eq!(totals["count"], 2);
    assert_eq!(totals["gross"], 3500);
    assert_eq!(totals["fee_cover"], 59);
    assert_eq!(totals["fees"], 93);
    assert_eq!(totals["refunds"], 400);
    assert_eq!(totals["net"], 3500 - 93 - 400);
    let days: Vec<(&str, i64)> = all["days"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["date"].as_str().unwrap(), d["net"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        days,
        [
            ("2026-11-01", 2442),
            ("2026-11-02", 965),
            ("2026-11-03", -400)
        ]
    );

    let second = summary("?from=2026-11-02T00:00:00Z&to=2026-11-03T00:00:00%2B00:00").await;
    assert_eq!(second["totals"][0]["gross"], 1000);
    assert_eq!(second["totals"][0]["count"], 1);
    assert_eq!(second["days"].as_array().unwrap().len(), 1);

    let csv = get_with(
        &app,
        Some(&finance),
        "/v1/finance/campaigns/kashmir/summary",
        &[("accept", "text/csv")],
    )
    .await
    .text()
    .await
    .unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(&reader.headers().unwrap()[0], "date");
    assert_eq!(reader.records().count(), 3);

    let problem = assert_problem(
        get_as(
            &app,
            Some(&finance),
            "/v1/finance/campaigns/nowhere/summary",
        )
        .await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "campaign");
    let problem = assert_problem(
        get_as(
            &app,
            Some(&finance),
            "/v1/finance/campaigns/kashmir/summary?from=2026-11-03T00:00:00Z&to=2026-11-02T00:00:00Z",
        )
        .await,
        400,
        "bad-parameter",
    )
    .await;
    assert_eq!(problem["errors"][0]["field"], "from");
}
