//! `quickdonate donors erase --email ADDRESS`: the donor's email is then nowhere in the
//! database, their name and address only where HMRC requires them (Gift Aid already claimed),
//! another donor is untouched, the money is unchanged, and the audit log records it.

use std::collections::BTreeSet;

use quickdonate::operators::access::Role;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::event_retention::{billing, pay};
use crate::finance_access::token;
use crate::helpers::{
    StripeObjects, TestApp, event, objects, spawn_app_with, stripe_creates_payment_intents,
};
use crate::operators::quickdonate;

const EMAIL: &str = "Zebedee.Quuxington@Example.org";
const FIRST: &str = "Zebedee";
const LAST: &str = "Quuxington";
const HOUSE: &str = "Thistledown Cottage";
const POSTCODE: &str = "YO62 5XQ";

const OTHER_EMAIL: &str = "ottoline@example.net";
const OTHER_FIRST: &str = "Ottoline";
const OTHER_LAST: &str = "Brackenbury";
const OTHER_HOUSE: &str = "Marrowbone Farm";

/// A donation with a Gift Aid declaration through the API; its id, PaymentIntent and total.
async fn give(
    app: &TestApp,
    (email, first, last, house): (&str, &str, &str, &str),
    key: &str,
) -> (Uuid, String, i64) {
    let body = json!({
        "amount": 4000, "frequency": "one_off", "cover_fees": true,
        "donor": {"email": email, "first_name": first, "last_name": last},
        "gift_aid": {"declared": true, "title": "Dr", "house_name_or_number": house,
                     "postcode": POSTCODE, "country": "GB"}
    });
    let response = app.post_donation("kashmir", &body, Some(key)).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    (
        Uuid::parse_str(created["id"].as_str().unwrap()).unwrap(),
        created["payment_intent_id"].as_str().unwrap().to_owned(),
        created["total_amount"].as_i64().unwrap(),
    )
}

/// Every `table.column` of text or JSON, in every table, whose value contains `needle`
/// (whatever its case), with how many rows.
async fn search(app: &TestApp, needle: &str) -> BTreeSet<(String, String, i64)> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        r#"SELECT c.table_name::text, c.column_name::text
           FROM information_schema.columns c
           JOIN information_schema.tables t
             ON t.table_schema = c.table_schema AND t.table_name = c.table_name
           WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
             AND (c.data_type IN ('text', 'character varying', 'character', 'json', 'jsonb')
                  OR c.data_type = 'ARRAY')"#,
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(columns.len() > 50, "every table's columns: {columns:?}");
    let mut found = BTreeSet::new();
    for (table, column) in columns {
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            r#"SELECT count(*) FROM "{table}" WHERE "{column}"::text ILIKE '%' || $1 || '%'"#
        )))
        .bind(needle)
        .fetch_one(&app.db)
        .await
        .unwrap();
        if count > 0 {
            found.insert((table, column, count));
        }
    }
    found
}

fn places(found: &BTreeSet<(String, String, i64)>) -> BTreeSet<String> {
    found.iter().map(|(t, c, _)| format!("{t}.{c}")).collect()
}

/// What finance reads of the money: per donation, and the campaign's totals.
async fn money(app: &TestApp) -> Vec<Value> {
    let rows: Vec<(Value,)> = sqlx::query_as(
        r#"SELECT to_jsonb(x) FROM (
               SELECT id, status, amount, cover_fees_amount, total_amount, currency, fee, net,
                      refunded_amount, counted_amount, payment_intent_id, charge_id
               FROM donations ORDER BY id) x
           UNION ALL
           SELECT to_jsonb(c) FROM (SELECT slug, raised_amount, donation_count FROM campaigns) c
           UNION ALL
           SELECT to_jsonb(l) FROM (SELECT kind, amount, balance_transaction_id, donation_id
                                    FROM ledger_entries ORDER BY id) l
           UNION ALL
           SELECT to_jsonb(g) FROM (SELECT donation_id, amount FROM gift_aid_claimed_donations) g"#,
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    rows.into_iter().map(|(v,)| v).collect()
}

#[tokio::test]
async fn erasure_leaves_the_email_nowhere_and_names_only_in_claimed_gift_aid() {
    let app = spawn_app_with(|s| {
        s.apply_events = false;
        s.donation_limit_per_email = Some("50/10m".to_owned());
        s.gift_aid_claim_after_payout = false;
    })
    .await;
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;
    let finance = token(&app, "treasurer", Role::Finance).await;
    let admin = token(&app, "trustee", Role::Admin).await;
    let donor = (EMAIL, FIRST, LAST, HOUSE);
    let details = billing(&format!("{FIRST} {LAST}"), EMAIL, HOUSE, POSTCODE);

    // Three gifts of the donor: one paid 10 days ago and claimed, one paid today (unclaimed),
    // one never paid; and one of another donor, paid 10 days ago and claimed alongside.
    let (claimed, claimed_pi, total) = give(&app, donor, "erasure-key-1").await;
    pay(&app, &stripe, claimed, &claimed_pi, total, 10, &details).await;
    let (other, other_pi, other_total) = give(
        &app,
        (OTHER_EMAIL, OTHER_FIRST, OTHER_LAST, OTHER_HOUSE),
        "erasure-key-2",
    )
    .await;
    let other_details = billing(
        &format!("{OTHER_FIRST} {OTHER_LAST}"),
        OTHER_EMAIL,
        OTHER_HOUSE,
        POSTCODE,
    );
    pay(
        &app,
        &stripe,
        other,
        &other_pi,
        other_total,
        10,
        &other_details,
    )
    .await;
    app.apply_events().await;
    let now = OffsetDateTime::now_utc();
    let claim = app
        .http
        .post(format!("{}/v1/finance/gift-aid/claims", app.address))
        .bearer_auth(&admin)
        .json(&json!({
            "from": (now - time::Duration::days(20)).format(&Rfc3339).unwrap(),
            "to": (now - time::Duration::days(5)).format(&Rfc3339).unwrap()
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(claim.status(), 201, "{}", claim.text().await.unwrap());

    let (unclaimed, unclaimed_pi, total) = give(&app, donor, "erasure-key-3").await;
    pay(&app, &stripe, unclaimed, &unclaimed_pi, total, 0, &details).await;
    let (unpaid, _, _) = give(&app, donor, "erasure-key-4").await;
    app.apply_events().await;

    // Before: the donor is everywhere one would expect, the unclaimed gift on the schedule.
    let before = search(&app, EMAIL).await;
    for place in [
        "donations.donor_email",
        "gift_aid_declarations.donor_email",
        "stripe_events.payload",
    ] {
        assert!(places(&before).contains(place), "{place}: {before:?}");
    }
    let email_attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM donation_attempts WHERE scope = 'email'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(
        email_attempts, 4,
        "the card-testing counts hold the emails' hashes"
    );
    let schedule = |app: &TestApp| {
        let url = format!(
            "{}/v1/finance/gift-aid/schedule?from={}&to={}",
            app.address,
            (now - time::Duration::days(1)).format(&Rfc3339).unwrap(),
            (now + time::Duration::days(1)).format(&Rfc3339).unwrap()
        );
        let request = app.http.get(url).bearer_auth(&finance);
        async move {
            let body: Value = request.send().await.unwrap().json().await.unwrap();
            body["rows"].as_array().unwrap().len()
        }
    };
    assert_eq!(schedule(&app).await, 1, "the unclaimed gift is eligible");
    let other_before: Vec<_> = [OTHER_EMAIL, OTHER_FIRST, OTHER_LAST, OTHER_HOUSE]
        .iter()
        .map(|needle| search(&app, needle))
        .collect();
    let other_before = futures_util::future::join_all(other_before).await;
    let money_before = money(&app).await;
    let stripe_calls = app.stripe.received_requests().await.unwrap().len();

    // Erased, by the email in another case.
    let said = quickdonate(
        &app,
        &[
            "donors",
            "erase",
            "--email",
            " zebedee.QUUXINGTON@example.ORG ",
        ],
    );
    assert!(said.contains("3 donation(s)"), "{said}");
    assert!(!said.to_lowercase().contains("zebedee"), "{said}");

    // The email is nowhere, in any case, nor its local part.
    assert_eq!(search(&app, EMAIL).await, BTreeSet::new());
    assert_eq!(search(&app, "Zebedee.Quux").await, BTreeSet::new());
    // The name and address only where HMRC requires them: the claim's line, the claimed
    // donation and the declaration that backed it.
    let claimed_rows = BTreeSet::from([
        "gift_aid_claim_lines.first_name".to_owned(),
        "gift_aid_declarations.first_name".to_owned(),
        "donations.donor_first_name".to_owned(),
    ]);
    let found = search(&app, FIRST).await;
    assert_eq!(places(&found), claimed_rows, "{found:?}");
    assert!(found.iter().all(|(_, _, rows)| *rows == 1), "{found:?}");
    let named: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM donations WHERE donor_first_name = $1 OR donor_last_name = $2",
    )
    .bind(FIRST)
    .bind(LAST)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(named, [claimed], "only the claimed donation keeps the name");
    let declared: Vec<(Option<Uuid>, String, String, Option<String>)> = sqlx::query_as(
        r#"SELECT donation_id, donor_email, house_name_or_number, postcode
           FROM gift_aid_declarations WHERE house_name_or_number = $1"#,
    )
    .bind(HOUSE)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(
        declared,
        [(
            Some(claimed),
            "erased".to_owned(),
            HOUSE.to_owned(),
            Some(POSTCODE.to_owned())
        )]
    );
    for (needle, expected) in [
        (
            LAST,
            BTreeSet::from([
                "gift_aid_claim_lines.last_name".to_owned(),
                "gift_aid_declarations.last_name".to_owned(),
                "donations.donor_last_name".to_owned(),
            ]),
        ),
        (
            HOUSE,
            BTreeSet::from([
                "gift_aid_claim_lines.house_name_or_number".to_owned(),
                "gift_aid_declarations.house_name_or_number".to_owned(),
            ]),
        ),
    ] {
        let found = search(&app, needle).await;
        assert_eq!(places(&found), expected, "{needle}: {found:?}");
        assert!(found.iter().all(|(_, _, rows)| *rows == 1), "{found:?}");
    }
    let erased: Vec<(Uuid, String, String, String, bool)> = sqlx::query_as(
        r#"SELECT id, donor_email, donor_first_name, donor_last_name,
                  personal_data_erased_at IS NOT NULL
           FROM donations WHERE id = ANY($1) ORDER BY id"#,
    )
    .bind([unclaimed, unpaid])
    .fetch_all(&app.db)
    .await
    .unwrap();
    let mut expected = vec![
        (
            unclaimed,
            "erased".into(),
            "erased".into(),
            "erased".into(),
            true,
        ),
        (
            unpaid,
            "erased".into(),
            "erased".into(),
            "erased".into(),
            true,
        ),
    ];
    expected.sort();
    assert_eq!(erased, expected);

    // The other donor is untouched, the money unchanged, Stripe never called; the unclaimed
    // gift is never claimed now; the card-testing counts of the email are gone.
    for (needle, before) in [OTHER_EMAIL, OTHER_FIRST, OTHER_LAST, OTHER_HOUSE]
        .iter()
        .zip(&other_before)
    {
        assert_eq!(&search(&app, needle).await, before, "{needle}");
    }
    assert_eq!(money(&app).await, money_before);
    assert_eq!(
        app.stripe.received_requests().await.unwrap().len(),
        stripe_calls
    );
    assert_eq!(
        schedule(&app).await,
        0,
        "an erased donor's gift is not claimed"
    );
    let email_attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM donation_attempts WHERE scope = 'email'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(email_attempts, 1, "only the other donor's");

    // Recorded in the audit log, with counts and ids, never the email.
    let audit: Vec<(String, String, Value, i64)> = sqlx::query_as(
        "SELECT token_name, role, filters, row_count FROM finance_audit_log WHERE what = 'donors erase'",
    )
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    let (who, role, filters, rows) = &audit[0];
    assert!(who.starts_with("cli"), "{who}");
    assert_eq!((role.as_str(), *rows), ("admin", 3));
    assert_eq!(filters["donations"], 3);
    assert_eq!(filters["donations_claimed"], 1);
    assert_eq!(filters["declarations"], 2);
    assert_eq!(filters["declarations_kept"], 1);
    assert_eq!(filters["events"], 4);
    assert_eq!(filters["idempotency_keys"], 3);
    assert_eq!(filters["donation_ids"].as_array().unwrap().len(), 3);

    // Again: nothing more to erase, nothing changes but a second audit row.
    let snapshot = (
        search(&app, FIRST).await,
        search(&app, HOUSE).await,
        money(&app).await,
    );
    let said = quickdonate(&app, &["donors", "erase", "--email", EMAIL]);
    assert!(said.contains("Nothing to erase"), "{said}");
    assert_eq!(
        (
            search(&app, FIRST).await,
            search(&app, HOUSE).await,
            money(&app).await
        ),
        snapshot
    );
    let audits: i64 =
        sqlx::query_scalar("SELECT count(*) FROM finance_audit_log WHERE what = 'donors erase'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(audits, 2);
}

/// A dispute (its evidence names the donor) and a refund that arrive after the donor was
/// erased are applied, and their stored events hold nothing of the donor.
#[tokio::test]
async fn events_that_come_after_an_erasure_are_stripped_as_they_are_applied() {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;
    let donor = (EMAIL, FIRST, LAST, HOUSE);
    let details = billing(&format!("{FIRST} {LAST}"), EMAIL, HOUSE, POSTCODE);
    let (donation, pi, total) = give(&app, donor, "erasure-later-1").await;
    pay(&app, &stripe, donation, &pi, total, 0, &details).await;
    app.apply_events().await;
    quickdonate(&app, &["donors", "erase", "--email", EMAIL]);
    assert_eq!(search(&app, EMAIL).await, BTreeSet::new());

    let charge: String = sqlx::query_scalar("SELECT charge_id FROM donations WHERE id = $1")
        .bind(donation)
        .fetch_one(&app.db)
        .await
        .unwrap();
    let mut dispute = objects::dispute(
        &format!("dp_{charge}"),
        &charge,
        &pi,
        total,
        "needs_response",
        &[1500],
    );
    dispute["evidence"] = json!({
        "customer_name": format!("{FIRST} {LAST}"),
        "customer_email_address": EMAIL,
        "billing_address": format!("{HOUSE}, {POSTCODE}"),
        "customer_purchase_ip": "192.0.2.1"
    });
    let mut refund = objects::refund(&format!("re_{charge}"), &charge, &pi, 100, "pending");
    refund["metadata"] = json!({"note": format!("asked by {FIRST} {LAST}")});
    let now = OffsetDateTime::now_utc().unix_timestamp();
    for later in [
        event("charge.dispute.created", dispute, now),
        event("refund.created", refund, now),
    ] {
        assert_eq!(app.deliver(&later).await.status(), 200);
    }
    assert!(
        places(&search(&app, EMAIL).await).contains("stripe_events.payload"),
        "stored whole as it arrived"
    );
    app.apply_events().await;

    let facts = app.donation_facts(donation).await;
    assert_eq!(
        (facts.dispute_status.as_deref(), facts.refunded_amount),
        (Some("needs_response"), 100),
        "applied"
    );
    for needle in [EMAIL, FIRST, LAST, HOUSE, "192.0.2.1"] {
        assert_eq!(search(&app, needle).await, BTreeSet::new(), "{needle}");
    }
    let stripped: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stripe_events WHERE personal_data_removed_at IS NULL",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        stripped, 0,
        "every event of the erased donor is marked stripped"
    );
}
