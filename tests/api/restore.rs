//! Nothing lost after a restore from backup: the database is dumped with `pg_dump`, more gifts,
//! refunds and a payout happen, the dump is restored with `pg_restore` into a database of its
//! own, and `quickdonate events backfill --since 2h` brings the books back to what Stripe
//! holds: the events missed are stored and applied, and the donations made since the backup
//! are recreated from Stripe as `recovered`, without donor details or receipts.

use std::process::Command;
use std::sync::{Arc, Mutex};

use quickdonate::operators::access::Role;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use crate::helpers::{
    StripeObjects, TestApp, donation_body, event, fresh_database_url, objects, spawn_app_on,
    spawn_app_with, stripe_creates_payment_intents,
};
use crate::operators::quickdonate;

/// Stripe's events, as its events API lists them: newest first, from `created[gte]`, a page
/// of `limit` after `starting_after`.
#[derive(Clone, Default)]
struct EventsAtStripe(Arc<Mutex<Vec<Value>>>);

impl Respond for EventsAtStripe {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let param = |name: &str| {
            request
                .url
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let since: i64 = param("created[gte]").map_or(0, |s| s.parse().unwrap());
        let limit: usize = param("limit").map_or(10, |l| l.parse().unwrap());
        let mut listed: Vec<Value> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["created"].as_i64().unwrap() >= since)
            .cloned()
            .collect();
        listed.reverse();
        let start = match param("starting_after") {
            Some(after) => {
                listed
                    .iter()
                    .position(|e| e["id"] == after.as_str())
                    .unwrap()
                    + 1
            }
            None => 0,
        };
        let page: Vec<Value> = listed.iter().skip(start).take(limit).cloned().collect();
        let has_more = start + page.len() < listed.len();
        ResponseTemplate::new(200).set_body_json(
            json!({"object": "list", "data": page, "has_more": has_more, "url": "/v1/events"}),
        )
    }
}

/// A gift paid at Stripe.
struct Gift {
    donation: Uuid,
    pi: String,
    charge: String,
    total: i64,
    /// What the campaign counts of it.
    amount: i64,
}

/// The fake Stripe of this story: its objects (what a fetch sees), its events (what the events
/// API lists), and the clock of its events (from an hour and a half ago, a second a step).
struct Stripe {
    objects: StripeObjects,
    events: EventsAtStripe,
    /// Balance transactions not yet paid out.
    unpaid: Vec<Value>,
    t: i64,
}

impl Stripe {
    fn new() -> Self {
        Self {
            objects: StripeObjects::default(),
            events: EventsAtStripe::default(),
            unpaid: Vec::new(),
            t: OffsetDateTime::now_utc().unix_timestamp() - 5400,
        }
    }

    /// Serves `app`: fetches and the events API.
    async fn serve(&self, app: &TestApp) {
        Mock::given(method("GET"))
            .and(path("/v1/events"))
            .respond_with(self.events.clone())
            .with_priority(1)
            .mount(&app.stripe)
            .await;
        self.objects.serve(app).await;
    }

    /// An event of `kind` about `object` happens at Stripe, and is delivered to `app`.
    async fn emit(&mut self, app: &TestApp, kind: &str, object: Value) {
        self.t += 1;
        let event = event(kind, object, self.t);
        self.events.0.lock().unwrap().push(event.clone());
        assert_eq!(app.deliver(&event).await.status(), 200);
    }

    fn transaction(&mut self, id: &str, kind: &str, amount: i64, fee: i64, source: &str) {
        let mut t = objects::balance_transaction(id, amount, fee);
        t["type"] = json!(kind);
        t["reporting_category"] = json!(kind);
        t["source"] = json!(source);
        t["payouts"] = json!([]);
        self.objects.put(t.clone());
        self.unpaid.push(t);
    }

    /// A donation of `amount` made through `app` (with fee cover if `cover`), then paid.
    async fn give(&mut self, app: &TestApp, amount: i64, cover: bool) -> Gift {
        let mut body = donation_body();
        body["amount"] = json!(amount);
        body["cover_fees"] = json!(cover);
        let response = app.post_donation("kashmir", &body, None).await;
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.unwrap();
        let donation = Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();
        let pi = created["payment_intent_id"].as_str().unwrap().to_owned();
        let total = created["total_amount"].as_i64().unwrap();
        let charge = format!("ch_{}", &pi[3..]);
        let txn = format!("txn_{charge}");
        let mut intent = objects::payment_intent(&pi, Some(donation), "succeeded", total);
        intent["latest_charge"] = json!(charge);
        intent["metadata"]["cover_fees_amount"] = json!((total - amount).to_string());
        let mut paid = objects::charge(&charge, &pi, total, 0, Some(&txn));
        paid["metadata"] = intent["metadata"].clone();
        self.objects.put(intent.clone());
        self.objects.put(paid.clone());
        self.transaction(&txn, "charge", total, 20 + total / 50, &charge);
        self.emit(app, "payment_intent.succeeded", intent).await;
        self.emit(app, "charge.succeeded", paid).await;
        Gift {
            donation,
            pi,
            charge,
            total,
            amount,
        }
    }

    /// `amount` of `gift` refunded from the dashboard.
    async fn refund(&mut self, app: &TestApp, gift: &mut Gift, amount: i64) {
        let id = format!("re_{}", Uuid::new_v4().simple());
        let txn = format!("txn_{id}");
        let mut refund = objects::refund(&id, &gift.charge, &gift.pi, amount, "succeeded");
        refund["balance_transaction"] = json!(txn);
        self.objects.put(refund.clone());
        self.transaction(&txn, "refund", -amount, 0, &id);
        let refunded = objects::charge(
            &gift.charge,
            &gift.pi,
            gift.total,
            amount,
            Some(&format!("txn_{}", gift.charge)),
        );
        self.objects.put(refunded.clone());
        // A refund comes off the fee cover first.
        let cover = gift.total - gift.amount;
        gift.amount -= (amount - cover).max(0);
        self.emit(app, "refund.created", refund).await;
        self.emit(app, "charge.refunded", refunded).await;
    }

    /// An automatic payout of everything not yet paid out.
    async fn payout(&mut self, app: &TestApp) -> String {
        let id = format!("po_{}", Uuid::new_v4().simple());
        let mut total = 0;
        for mut t in std::mem::take(&mut self.unpaid) {
            total += t["net"].as_i64().unwrap();
            t["payouts"] = json!([id]);
            self.objects.put(t);
        }
        let mut own = objects::balance_transaction(&format!("txn_{id}"), -total, 0);
        own["type"] = json!("payout");
        own["source"] = json!(id);
        own["payouts"] = json!([id]);
        self.objects.put(own);
        let payout = json!({
            "id": id, "object": "payout", "amount": total, "currency": "gbp", "status": "paid",
            "automatic": true, "arrival_date": self.t + 86_400, "created": self.t,
            "balance_transaction": format!("txn_{id}"), "failure_balance_transaction": null,
            "reconciliation_status": "completed", "method": "standard",
            "type": "bank_account", "livemode": false, "metadata": {}
        });
        self.emit(app, "payout.paid", payout).await;
        id
    }
}

/// The books as the database holds them: campaigns, donations' money, the ledger, payouts.
async fn books(db: &sqlx::PgPool) -> Vec<Value> {
    let rows: Vec<(Value,)> = sqlx::query_as(
        r#"SELECT to_jsonb(c) FROM (SELECT slug, raised_amount, donation_count
                                   FROM campaigns ORDER BY slug) c
           UNION ALL
           SELECT to_jsonb(d) FROM (
               SELECT id, campaign, status, amount, cover_fees_amount, total_amount, currency,
                      payment_intent_id, charge_id, payment_status, amount_received, fee, net,
                      settlement_currency, refunded_amount, dispute_lost_amount,
                      counted_amount, balance_transaction_id
               FROM donations ORDER BY id) d
           UNION ALL
           SELECT to_jsonb(r) FROM (SELECT id, donation_id, amount, status FROM refunds
                                    ORDER BY id) r
           UNION ALL
           SELECT to_jsonb(l) FROM (
               SELECT kind, amount, currency, balance_transaction_id, source_id, donation_id,
                      campaign
               FROM ledger_entries ORDER BY balance_transaction_id, kind) l
           UNION ALL
           SELECT to_jsonb(p) FROM (
               SELECT id, amount, currency, status, balance_transaction_id,
                      reconciliation_status, listed_complete
               FROM payouts ORDER BY id) p
           UNION ALL
           SELECT to_jsonb(t) FROM (
               SELECT payout_id, balance_transaction_id, type, amount, fee, net, source_id
               FROM payout_transactions ORDER BY payout_id, balance_transaction_id) t"#,
    )
    .fetch_all(db)
    .await
    .unwrap();
    rows.into_iter().map(|(v,)| v).collect()
}

fn pg_tool(name: &str) -> std::path::PathBuf {
    quickdonate::db::local::find_bin_dir(None)
        .expect("the Postgres binaries")
        .join(name)
}

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn stripe_reads(app: &TestApp, prefix: &str) -> usize {
    app.stripe
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.method == wiremock::http::Method::GET && r.url.path().starts_with(prefix))
        .count()
}

#[tokio::test]
async fn a_database_restored_from_backup_is_brought_back_to_what_stripe_holds() {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    stripe_creates_payment_intents(&app).await;
    let mut stripe = Stripe::new();
    stripe.serve(&app).await;

    // Before the backup: two gifts, one with fee cover.
    let mut before = stripe.give(&app, 2500, true).await;
    let kept = stripe.give(&app, 4000, false).await;
    app.apply_events().await;

    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("backup.dump");
    run(Command::new(pg_tool("pg_dump"))
        .args(["--format=custom", "--file"])
        .arg(&dump)
        .arg(&app.database_url));

    // After it: two more gifts (one with fee cover), a refund of an old gift and one of a
    // new gift, and a payout of everything.
    let mut after = stripe.give(&app, 3000, true).await;
    let other = stripe.give(&app, 1500, false).await;
    stripe.refund(&app, &mut before, 1000).await;
    stripe.refund(&app, &mut after, 500).await;
    let payout = stripe.payout(&app).await;
    app.apply_events().await;
    let truth = books(&app.db).await;
    app.assert_books_hold().await;
    let raised: i64 = [&before, &kept, &after, &other]
        .iter()
        .map(|g| g.amount)
        .sum();
    assert_eq!(app.campaign().await["raised_amount"], raised);

    // The database is lost; last night's backup is restored into a database of its own.
    let (restored, url) = fresh_database_url().await;
    run(Command::new(pg_tool("pg_restore"))
        .args(["--no-owner", "--exit-on-error", "--dbname", &url])
        .arg(&dump));
    let app = spawn_app_on(restored, |s| s.apply_events = false).await;
    stripe.serve(&app).await;
    assert_ne!(
        books(&app.db).await,
        truth,
        "the restore lost what came after"
    );

    let said = quickdonate(&app, &["events", "backfill", "--since", "2h"]);
    assert!(
        said.contains("13 event(s) listed by Stripe, 9 new to the log"),
        "{said}"
    );
    assert!(said.contains("2 donation(s) recovered"), "{said}");
    for gift in [&after, &other] {
        assert!(said.contains(&gift.donation.to_string()), "{said}");
        assert!(said.contains(&gift.pi), "{said}");
    }
    assert_eq!(
        stripe_reads(&app, "/v1/payment_intents/").await,
        2,
        "one read of each PaymentIntent whose donation is gone, and no other"
    );
    app.apply_events().await;

    assert_eq!(books(&app.db).await, truth, "the books are Stripe's again");
    assert_eq!(app.campaign().await["raised_amount"], raised);
    app.assert_books_hold().await;
    let recovered: Vec<(Uuid, String, String, bool)> = sqlx::query_as(
        "SELECT id, donor_email, donor_first_name, anonymous FROM donations
         WHERE recovered_at IS NOT NULL ORDER BY id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    let mut expected = vec![
        (after.donation, String::new(), String::new(), true),
        (other.donation, String::new(), String::new(), true),
    ];
    expected.sort();
    assert_eq!(
        recovered, expected,
        "no donor details: Stripe never had them"
    );
    let receipts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM receipts r JOIN donations d ON d.id = r.donation_id
         WHERE d.recovered_at IS NOT NULL",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(receipts, 0, "no receipt without an address");
    let reconciled: Value = sqlx::query_scalar(
        "SELECT to_jsonb(p) FROM (SELECT status, listed_complete FROM payouts WHERE id = $1) p",
    )
    .bind(&payout)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        reconciled,
        json!({"status": "paid", "listed_complete": true})
    );

    // Finance sees which donations were recovered, and why they name no donor.
    let finance = crate::finance_access::token(&app, "treasurer", Role::Finance).await;
    let listed: Value =
        crate::finance_access::get_as(&app, Some(&finance), "/v1/finance/donations")
            .await
            .json()
            .await
            .unwrap();
    let mut recovered_ids: Vec<String> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["recovered"] == true)
        .map(|row| {
            assert_eq!(row["donor"]["email"], "", "{row}");
            row["id"].as_str().unwrap().to_owned()
        })
        .collect();
    recovered_ids.sort();
    let mut expected_ids = vec![after.donation.to_string(), other.donation.to_string()];
    expected_ids.sort();
    assert_eq!(recovered_ids, expected_ids);

    // Run again, it finds nothing more to do.
    let again = quickdonate(&app, &["events", "backfill", "--since", "2h"]);
    assert!(again.contains("0 new to the log"), "{again}");
    assert!(!again.contains("recovered"), "{again}");
}
