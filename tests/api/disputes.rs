//! Disputes, through their whole life: an inquiry, its escalation to a chargeback, evidence
//! due, the outcome; the money they move recorded from their balance transactions; and every
//! status shown for what it is, whatever order the events come in.

use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{
    StripeObjects, TestApp, event, objects, spawn_app_with, stripe_creates_payment_intents,
};

const AMOUNT: i64 = 2500;
const DISPUTE_FEE: i64 = 2000;

async fn disputes_app() -> TestApp {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    stripe_creates_payment_intents(&app).await;
    StripeObjects::default().serve(&app).await;
    app
}

/// A paid £25 donation, and a dispute on its charge.
struct Disputed<'a> {
    app: &'a TestApp,
    donation: Uuid,
    pi: String,
    charge: String,
    dispute: String,
    t0: i64,
}

impl<'a> Disputed<'a> {
    async fn new(app: &'a TestApp) -> Self {
        let (donation, pi) = app.create_donation(AMOUNT).await;
        let t0 = OffsetDateTime::now_utc().unix_timestamp() - 1000;
        let charge = format!("ch_{}", Uuid::new_v4().simple());
        let mut paid = objects::payment_intent(&pi, Some(donation), "succeeded", AMOUNT);
        paid["latest_charge"] = charge.clone().into();
        app.deliver(&event("payment_intent.succeeded", paid, t0))
            .await;
        app.apply_events().await;
        Self {
            app,
            donation,
            dispute: format!("dp_{pi}"),
            pi,
            charge,
            t0,
        }
    }

    /// The dispute as `status`, at `t` seconds in, having moved the money in `fees` (one
    /// balance transaction each: the withdrawal, then a reinstatement).
    fn snapshot(&self, kind: &str, status: &str, fees: &[i64], t: i64) -> Value {
        let dispute = objects::dispute(&self.dispute, &self.charge, &self.pi, AMOUNT, status, fees);
        event(kind, dispute, self.t0 + t)
    }

    async fn apply(&self, events: &[&Value]) {
        for event in events {
            assert_eq!(self.app.deliver(event).await.status(), 200);
        }
        self.app.apply_events().await;
    }

    async fn status(&self) -> Option<String> {
        self.app.donation_facts(self.donation).await.dispute_status
    }

    /// The dispute's money as the ledger records it: (amount, fee) per balance transaction.
    async fn money(&self) -> Vec<(String, i64, i64)> {
        sqlx::query_as(
            "SELECT balance_transaction_id,
                    sum(amount) FILTER (WHERE kind <> 'dispute_fee')::bigint,
                    coalesce(-sum(amount) FILTER (WHERE kind = 'dispute_fee'), 0)::bigint
             FROM ledger_entries WHERE donation_id = $1 AND kind LIKE 'dispute_%'
             GROUP BY balance_transaction_id ORDER BY balance_transaction_id",
        )
        .bind(self.donation)
        .fetch_all(&self.app.db)
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn an_inquiry_that_escalates_shows_evidence_due_at_once_and_ends_lost() {
    let app = disputes_app().await;
    let d = Disputed::new(&app).await;
    let inquiry = d.snapshot("charge.dispute.created", "warning_needs_response", &[], 10);
    let reviewing = d.snapshot("charge.dispute.updated", "warning_under_review", &[], 20);
    let escalated = d.snapshot(
        "charge.dispute.funds_withdrawn",
        "needs_response",
        &[DISPUTE_FEE],
        30,
    );
    let submitted = d.snapshot("charge.dispute.updated", "under_review", &[DISPUTE_FEE], 40);
    let lost = d.snapshot("charge.dispute.closed", "lost", &[DISPUTE_FEE], 50);

    d.apply(&[&inquiry]).await;
    assert_eq!(d.status().await.as_deref(), Some("inquiry"));
    assert_eq!(
        d.app.donation_facts(d.donation).await.counted_amount,
        AMOUNT,
        "an inquiry moves no money"
    );
    d.apply(&[&reviewing]).await;
    assert_eq!(d.status().await.as_deref(), Some("inquiry"));
    d.apply(&[&escalated]).await;
    assert_eq!(
        d.status().await.as_deref(),
        Some("needs_response"),
        "the escalation shows at once: evidence is due"
    );
    assert_eq!(
        d.app.donation_facts(d.donation).await.counted_amount,
        0,
        "the bank has taken the money back: the campaign no longer counts it"
    );
    d.app.assert_totals_match_rows().await;
    // A late copy of the inquiry's review does not hide it.
    d.apply(&[&reviewing]).await;
    assert_eq!(d.status().await.as_deref(), Some("needs_response"));
    d.apply(&[&submitted, &lost]).await;

    let row = d.app.donation_facts(d.donation).await;
    assert_eq!(row.dispute_status.as_deref(), Some("lost"));
    assert_eq!(
        (row.dispute_lost_amount, row.dispute_fee, row.counted_amount),
        (AMOUNT, DISPUTE_FEE, 0)
    );
    assert_eq!(
        d.money().await,
        vec![(format!("txn_{}_0", d.dispute), -AMOUNT, DISPUTE_FEE)],
        "one withdrawal, recorded once however many snapshots named it"
    );
    d.app.assert_totals_match_rows().await;
}

#[tokio::test]
async fn every_order_of_an_escalating_dispute_ends_the_same() {
    let app = disputes_app().await;
    for order in &crate::helpers::orders(5) {
        // A disputed donation of its own for each order.
        let d = Disputed::new(&app).await;
        let events = [
            d.snapshot("charge.dispute.created", "warning_needs_response", &[], 10),
            d.snapshot("charge.dispute.updated", "warning_closed", &[], 20),
            d.snapshot(
                "charge.dispute.funds_withdrawn",
                "needs_response",
                &[DISPUTE_FEE],
                30,
            ),
            d.snapshot("charge.dispute.updated", "under_review", &[DISPUTE_FEE], 40),
            d.snapshot(
                "charge.dispute.funds_reinstated",
                "won",
                &[DISPUTE_FEE, -DISPUTE_FEE],
                50,
            ),
        ];
        // Each event's status outranks the one before it, so at every step the donation shows
        // the furthest status delivered so far, whatever came late.
        let words = [
            "inquiry",
            "inquiry_closed",
            "needs_response",
            "under_review",
            "won",
        ];
        let mut furthest = 0;
        for &i in order {
            d.apply(&[&events[i]]).await;
            furthest = furthest.max(i);
            assert_eq!(
                d.status().await.as_deref(),
                Some(words[furthest]),
                "order {order:?}, after event {i}"
            );
            // Withdrawn while the chargeback is open, counted again once it is won.
            let open_chargeback = matches!(furthest, 2 | 3);
            assert_eq!(
                d.app.donation_facts(d.donation).await.counted_amount,
                if open_chargeback { 0 } else { AMOUNT },
                "order {order:?}, after event {i}"
            );
        }
        let row = d.app.donation_facts(d.donation).await;
        assert_eq!(
            (
                row.dispute_status.as_deref(),
                row.dispute_fee,
                row.dispute_lost_amount,
                row.counted_amount,
                row.status.as_str()
            ),
            (Some("won"), 0, 0, AMOUNT, "succeeded"),
            "order {order:?}"
        );
        assert_eq!(d.money().await.len(), 2, "order {order:?}");
    }
    app.assert_totals_match_rows().await;
}

#[tokio::test]
async fn a_closed_inquiry_never_masks_the_chargeback_it_became() {
    let app = disputes_app().await;
    let d = Disputed::new(&app).await;
    let closed = d.snapshot("charge.dispute.updated", "warning_closed", &[], 40);
    let chargeback = d.snapshot(
        "charge.dispute.funds_withdrawn",
        "needs_response",
        &[DISPUTE_FEE],
        30,
    );
    // The closed inquiry arrives last and is the latest by time; the chargeback still shows.
    d.apply(&[&chargeback]).await;
    d.apply(&[&closed]).await;
    assert_eq!(d.status().await.as_deref(), Some("needs_response"));
    assert_eq!(
        d.app.donation_facts(d.donation).await.dispute_fee,
        DISPUTE_FEE
    );
}

#[tokio::test]
async fn a_closed_inquiry_reads_as_closed_not_won_and_the_gift_still_counts() {
    let app = disputes_app().await;
    let d = Disputed::new(&app).await;
    d.apply(&[
        &d.snapshot("charge.dispute.created", "warning_needs_response", &[], 10),
        &d.snapshot("charge.dispute.closed", "warning_closed", &[], 20),
    ])
    .await;
    let row = d.app.donation_facts(d.donation).await;
    assert_eq!(row.dispute_status.as_deref(), Some("inquiry_closed"));
    assert_eq!((row.counted_amount, row.dispute_fee), (AMOUNT, 0));
    let shown: Value = d
        .app
        .get(&format!("/v1/donations/{}", d.donation))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["dispute_status"], "inquiry_closed");
}

#[tokio::test]
async fn a_prevented_dispute_and_one_of_a_status_we_do_not_know_read_as_what_they_are() {
    let app = disputes_app().await;
    let d = Disputed::new(&app).await;
    d.apply(&[&d.snapshot("charge.dispute.closed", "prevented", &[], 10)])
        .await;
    assert_eq!(d.status().await.as_deref(), Some("prevented"));

    let d = Disputed::new(&app).await;
    d.apply(&[&d.snapshot(
        "charge.dispute.updated",
        "pending_arbitration",
        &[DISPUTE_FEE],
        10,
    )])
    .await;
    let row = d.app.donation_facts(d.donation).await;
    assert_eq!(
        row.dispute_status.as_deref(),
        Some("open"),
        "never won, never lost"
    );
    assert_eq!(
        row.counted_amount, 0,
        "taken as an open chargeback: its money is withdrawn"
    );
    assert_eq!(row.dispute_fee, DISPUTE_FEE);
    // A later outcome still settles it.
    d.apply(&[&d.snapshot("charge.dispute.closed", "lost", &[DISPUTE_FEE], 20)])
        .await;
    assert_eq!(d.status().await.as_deref(), Some("lost"));
    d.app.assert_totals_match_rows().await;
}

/// A dispute that names only its charge (disputes on charges made without a PaymentIntent, and
/// older API versions, leave `payment_intent` empty) is found by that charge, in a batch whose
/// other events tie to their payments by PaymentIntent; a charge-only dispute of a charge not
/// ours is left alone.
#[tokio::test]
async fn a_dispute_naming_only_its_charge_is_found_by_the_charge() {
    let app = disputes_app().await;
    let d = Disputed::new(&app).await;
    let (other, other_pi) = app.create_donation(AMOUNT).await;
    let paid = objects::payment_intent(&other_pi, Some(other), "succeeded", AMOUNT);
    let mut ours = objects::dispute(
        &d.dispute,
        &d.charge,
        &d.pi,
        AMOUNT,
        "needs_response",
        &[DISPUTE_FEE],
    );
    ours["payment_intent"] = Value::Null;
    let mut theirs = objects::dispute(
        "dp_theirs",
        "ch_theirs",
        "pi_theirs",
        AMOUNT,
        "needs_response",
        &[DISPUTE_FEE],
    );
    theirs["payment_intent"] = Value::Null;
    let foreign = event("charge.dispute.created", theirs, d.t0 + 10);
    d.apply(&[
        &event("payment_intent.succeeded", paid, d.t0 + 10),
        &event("charge.dispute.created", ours, d.t0 + 10),
        &foreign,
    ])
    .await;

    assert_eq!(d.status().await.as_deref(), Some("needs_response"));
    assert_eq!(
        d.money().await,
        vec![(format!("txn_{}_0", d.dispute), -AMOUNT, DISPUTE_FEE)]
    );
    assert_eq!(
        app.donation_facts(other).await.counted_amount,
        AMOUNT,
        "the batch's other payment applied"
    );
    let state: String = sqlx::query_scalar("SELECT state FROM stripe_events WHERE id = $1")
        .bind(foreign["id"].as_str().unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(state, "ignored", "a dispute of a charge not ours");
    app.assert_totals_match_rows().await;
}
