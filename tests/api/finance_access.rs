//! Finance access: bearer tokens made from the command line, the roles they carry, the audit
//! log every finance read is written to, and strict query parameters.

use std::process::{Command, Output};

use quickdonate::operators::access::{self, Role};
use reqwest::Response;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{
    TestApp, assert_problem, problem_fields, spawn_app, stripe_creates_payment_intents,
};

const BINARY: &str = env!("CARGO_BIN_EXE_quickdonate");

/// Runs `quickdonate args...` against `app`'s database.
pub fn quickdonate(app: &TestApp, args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env("DATABASE_URL", &app.database_url)
        .env(
            "CAMPAIGNS_FILE",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/campaigns.toml"),
        )
        .output()
        .unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A token of `role` named `name`, made through the library.
pub async fn token(app: &TestApp, name: &str, role: Role) -> String {
    access::create(&app.db, name, role).await.unwrap()
}

/// GET `path` with `Authorization: Bearer <token>` (none when `token` is None).
pub async fn get_as(app: &TestApp, token: Option<&str>, path: &str) -> Response {
    get_with(app, token, path, &[]).await
}

/// GET `path` with the bearer token and extra headers.
pub async fn get_with(
    app: &TestApp,
    token: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let mut request = app.http.get(format!("{}{path}", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("the request is sent")
}

/// The reads the audit log holds, oldest first, an export's with the row count of its end.
pub async fn audit_rows(app: &TestApp) -> Vec<(String, String, String, Value, i64)> {
    sqlx::query_as(
        "SELECT token_name, role, what, filters, row_count FROM finance_reads ORDER BY id",
    )
    .fetch_all(&app.db)
    .await
    .unwrap()
}

async fn assert_unauthorized(response: Response, why: &str) {
    let challenge = response
        .headers()
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("{why}: no WWW-Authenticate"))
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{why}: {challenge}");
    assert_problem(response, 401, "unauthorized").await;
}

#[tokio::test]
async fn every_finance_route_needs_a_live_token_and_the_audit_log_an_admin() {
    let app = spawn_app().await;
    let finance = token(&app, "finance-team", Role::Finance).await;
    let admin = token(&app, "auditor", Role::Admin).await;
    let revoked = token(&app, "old-laptop", Role::Admin).await;
    access::revoke(&app.db, "old-laptop").await.unwrap();
    let unknown = format!("qd_{}", "ab".repeat(32));

    // Every finance route: a handler without the token check fails here.
    for path in [
        "/v1/finance/donations",
        "/v1/finance/audit",
        "/v1/finance/payouts",
        "/v1/finance/payouts/po_1",
        "/v1/finance/payouts/overdue-donations",
        "/v1/finance/campaigns/kashmir/summary",
        "/v1/finance/gift-aid/schedule",
        "/v1/finance/gift-aid/claims/019ac3f2-0000-7000-8000-000000000000",
    ] {
        assert_unauthorized(get_as(&app, None, path).await, "no header").await;
        for header in [
            "Bearer".to_owned(),
            "Bearer ".to_owned(),
            "Bearer not-a-token".to_owned(),
            format!("Basic {finance}"),
            finance.clone(),
            format!("Bearer {}", &finance[..finance.len() - 1]),
            format!("Bearer {}", finance.to_uppercase()),
        ] {
            let response = get_with(&app, None, path, &[("authorization", &header)]).await;
            assert_unauthorized(response, &format!("malformed {header:?}")).await;
        }
        assert_unauthorized(get_as(&app, Some(&unknown), path).await, "unknown").await;
        assert_unauthorized(get_as(&app, Some(&revoked), path).await, "revoked").await;
    }
    for token in [None, Some(&unknown), Some(&revoked)] {
        let mut request = app
            .http
            .post(format!("{}/v1/finance/gift-aid/claims", app.address))
            .json(&json!({"from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z"}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        assert_unauthorized(request.send().await.unwrap(), "a claim").await;
    }
    assert!(
        audit_rows(&app).await.is_empty(),
        "a refused request reads nothing"
    );

    let forbidden = get_as(&app, Some(&finance), "/v1/finance/audit").await;
    let problem = assert_problem(forbidden, 403, "forbidden").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("admin"),
        "{problem}"
    );

    for (who, token) in [("finance", &finance), ("admin", &admin)] {
        let response = get_as(&app, Some(token), "/v1/finance/donations").await;
        assert_eq!(response.status(), 200, "{who} reads donations");
        let page: Value = response.json().await.unwrap();
        assert_eq!(page, json!({"data": [], "next_cursor": null}), "{who}");
    }
    let response = get_as(&app, Some(&admin), "/v1/finance/audit").await;
    assert_eq!(response.status(), 200);
    // Also case-insensitive in its scheme, as RFC 9110 has it.
    let lower = format!("bearer {finance}");
    let response = get_with(
        &app,
        None,
        "/v1/finance/donations",
        &[("authorization", &lower)],
    )
    .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn tokens_are_made_listed_and_revoked_from_the_command_line() {
    let app = spawn_app().await;

    let made = quickdonate(
        &app,
        &[
            "tokens",
            "create",
            "--name",
            "finance-team",
            "--role",
            "finance",
        ],
    );
    assert!(made.status.success(), "{}", stderr(&made));
    let out = stdout(&made);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "the token alone on stdout: {out:?}");
    let token = lines[0];
    assert!(
        token.starts_with("qd_") && token.len() == 67,
        "qd_ and 64 hex digits: {token}"
    );
    assert!(
        stderr(&made).contains("shown once"),
        "what to do with it, on stderr: {}",
        stderr(&made)
    );
    assert!(
        !stderr(&made).contains(token),
        "the token is not logged: {}",
        stderr(&made)
    );
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT token_hash FROM api_tokens WHERE name = 'finance-team'")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(
        stored,
        Sha256::digest(token.as_bytes()).to_vec(),
        "only the hash is kept"
    );
    assert_eq!(
        get_as(&app, Some(token), "/v1/finance/donations")
            .await
            .status(),
        200,
        "the printed token works"
    );

    let admin = quickdonate(
        &app,
        &["tokens", "create", "--name", "auditor", "--role", "admin"],
    );
    assert!(admin.status.success(), "{}", stderr(&admin));
    let admin_token = stdout(&admin).trim().to_owned();
    assert_eq!(
        get_as(&app, Some(&admin_token), "/v1/finance/audit")
            .await
            .status(),
        200
    );

    let again = quickdonate(
        &app,
        &[
            "tokens",
            "create",
            "--name",
            "finance-team",
            "--role",
            "admin",
        ],
    );
    assert!(!again.status.success(), "a name is never reused");
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert!(
        stdout(&again).is_empty(),
        "no token printed: {}",
        stdout(&again)
    );
    for bad in [
        vec!["tokens", "create", "--name", "x", "--role", "root"],
        vec!["tokens", "create", "--name", "cli:me", "--role", "finance"],
        vec!["tokens", "create", "--role", "finance"],
    ] {
        let refused = quickdonate(&app, &bad);
        assert!(!refused.status.success(), "{bad:?}");
        assert!(stdout(&refused).is_empty(), "{bad:?}: {}", stdout(&refused));
    }

    let listed = quickdonate(&app, &["tokens", "list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let list = stdout(&listed);
    assert!(
        list.starts_with("name "),
        "the answer alone on stdout: {list}"
    );
    let row = |name: &str| {
        list.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} listed: {list}"))
            .to_owned()
    };
    assert!(row("finance-team").contains(" finance "), "{list}");
    assert!(row("auditor").contains(" admin "), "{list}");
    assert!(
        row("finance-team").trim_end().ends_with(" -"),
        "not revoked: {list}"
    );
    for secret in [token, &admin_token] {
        let digest = Sha256::digest(secret.as_bytes());
        assert!(!list.contains(secret), "no token in the list: {list}");
        assert!(!list.contains(&hex::encode(digest)), "no hash: {list}");
        assert!(!list.contains(&secret[3..19]), "no part of it: {list}");
    }

    let revoked = quickdonate(&app, &["tokens", "revoke", "finance-team"]);
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    assert!(stdout(&revoked).contains("revoked"), "{}", stdout(&revoked));
    let refused = get_as(&app, Some(token), "/v1/finance/donations").await;
    assert_problem(refused, 401, "unauthorized").await;
    let list = stdout(&quickdonate(&app, &["tokens", "list"]));
    let line = list
        .lines()
        .find(|l| l.starts_with("finance-team"))
        .unwrap()
        .to_owned();
    assert!(
        line.trim_end().ends_with('Z'),
        "when it was revoked: {line}"
    );
    let twice = quickdonate(&app, &["tokens", "revoke", "finance-team"]);
    assert!(twice.status.success(), "revoking twice is harmless");
    assert!(
        stdout(&twice).contains("already revoked"),
        "{}",
        stdout(&twice)
    );

    let unknown = quickdonate(&app, &["tokens", "revoke", "nobody"]);
    assert!(!unknown.status.success(), "an unknown name fails");
    assert!(
        stderr(&unknown).contains("no token is named \"nobody\""),
        "{}",
        stderr(&unknown)
    );
    // The admin token still works.
    assert_eq!(
        get_as(&app, Some(&admin_token), "/v1/finance/audit")
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn every_read_is_audited_with_its_token_filters_and_row_count() {
    let app = spawn_app().await;
    stripe_creates_payment_intents(&app).await;
    for amount in [1000, 2500, 5000] {
        app.create_donation(amount).await;
    }
    let finance = token(&app, "finance-team", Role::Finance).await;
    let admin = token(&app, "auditor", Role::Admin).await;

    let page: Value = get_as(
        &app,
        Some(&finance),
        "/v1/finance/donations?campaign=kashmir&limit=2",
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    let next = page["next_cursor"].as_str().unwrap().to_owned();
    let rest: Value = get_as(
        &app,
        Some(&finance),
        &format!("/v1/finance/donations?campaign=kashmir&limit=2&cursor={next}"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    let none: Value = get_as(&app, Some(&admin), "/v1/finance/donations?status=refunded")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["data"], json!([]));

    let rows = audit_rows(&app).await;
    let donations = "GET /v1/finance/donations".to_owned();
    assert_eq!(
        rows,
        vec![
            (
                "finance-team".into(),
                "finance".into(),
                donations.clone(),
                json!({"campaign": "kashmir", "limit": "2"}),
                2
            ),
            (
                "finance-team".into(),
                "finance".into(),
                donations.clone(),
                json!({"campaign": "kashmir", "limit": "2", "cursor": next}),
                1
            ),
            (
                "auditor".into(),
                "admin".into(),
                donations.clone(),
                json!({"status": "refunded"}),
                0
            ),
        ]
    );
    let logged = serde_json::to_string(&rows).unwrap();
    assert!(
        !logged.contains("amina") && !logged.contains("Khan"),
        "no donor data in the audit log: {logged}"
    );

    // The admin reads the log, newest first; that read is audited too.
    let log: Value = get_as(&app, Some(&admin), "/v1/finance/audit?limit=2")
        .await
        .json()
        .await
        .unwrap();
    let entries = log["data"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["token_name"], "auditor");
    assert_eq!(entries[0]["filters"], json!({"status": "refunded"}));
    assert_eq!(entries[0]["row_count"], 0);
    assert_eq!(entries[1]["token_name"], "finance-team");
    assert_eq!(entries[1]["role"], "finance");
    assert_eq!(entries[1]["what"], donations);
    assert_eq!(entries[1]["row_count"], 1);
    assert!(
        time::OffsetDateTime::parse(
            entries[0]["at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok()
    );
    let cursor = log["next_cursor"].as_str().unwrap();
    let older: Value = get_as(
        &app,
        Some(&admin),
        &format!("/v1/finance/audit?limit=2&cursor={cursor}"),
    )
    .await
    .json()
    .await
    .unwrap();
    let older = older["data"].as_array().unwrap();
    assert_eq!(older.len(), 1, "the first read, then no more: {older:?}");
    assert_eq!(older[0]["row_count"], 2);

    let rows = audit_rows(&app).await;
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows[3],
        (
            "auditor".into(),
            "admin".into(),
            "GET /v1/finance/audit".into(),
            json!({"limit": "2"}),
            2
        )
    );
    assert_eq!(rows[4].4, 1);

    // As CSV: the whole log, recorded before it is sent, its row count once it has been.
    let response = get_with(
        &app,
        Some(&admin),
        "/v1/finance/audit",
        &[("accept", "text/csv")],
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/csv; charset=utf-8"
    );
    let csv = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(
        headers.iter().collect::<Vec<_>>(),
        [
            "id",
            "at",
            "token_name",
            "role",
            "what",
            "filters",
            "row_count",
            "ended_at"
        ]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(
        records.len(),
        6,
        "every entry, this one too (recorded first)"
    );
    assert_eq!(&records[0][4], "GET /v1/finance/audit (csv)");
    let filters: Value = serde_json::from_str(&records[5][5]).unwrap();
    assert_eq!(filters, json!({"campaign": "kashmir", "limit": "2"}));
    let mut counted = 0;
    for _ in 0..250 {
        counted = audit_rows(&app).await[5].4;
        if counted == 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(counted, 6, "the CSV read's row count");

    // The export's end is a row of its own, naming its start: nothing was rewritten.
    let (begun, ended): (i64, i64) = sqlx::query_as(
        "SELECT b.row_count, e.row_count FROM finance_audit_log b
         JOIN finance_audit_log e ON e.ends = b.id WHERE b.what = 'GET /v1/finance/audit (csv)'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!((begun, ended), (0, 6));
}

#[tokio::test]
async fn the_audit_log_refuses_to_be_changed_or_emptied() {
    let app = spawn_app().await;
    let admin = token(&app, "auditor", Role::Admin).await;
    assert_eq!(
        get_as(&app, Some(&admin), "/v1/finance/audit")
            .await
            .status(),
        200
    );
    for statement in [
        "UPDATE finance_audit_log SET row_count = 99",
        "UPDATE finance_audit_log SET token_name = 'someone-else'",
        "DELETE FROM finance_audit_log",
        "TRUNCATE finance_audit_log",
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
    assert_eq!(audit_rows(&app).await.len(), 1, "the entry is still there");
}

#[tokio::test]
async fn bad_parameters_are_each_a_problem_that_names_them() {
    let app = spawn_app().await;
    let admin = token(&app, "auditor", Role::Admin).await;
    let cases = [
        ("/v1/finance/donations?campiagn=kashmir", "campiagn"),
        (
            "/v1/finance/donations?campaign=kashmir&campaign=other",
            "campaign",
        ),
        ("/v1/finance/donations?from=yesterday", "from"),
        ("/v1/finance/donations?from=2026-11-29", "from"),
        ("/v1/finance/donations?to=2026-11-29T00:00:00", "to"),
        (
            "/v1/finance/donations?from=2026-11-30T00:00:00Z&to=2026-11-29T00:00:00Z",
            "from",
        ),
        ("/v1/finance/donations?cursor=not-a-cursor", "cursor"),
        ("/v1/finance/donations?cursor=MTIzfGFiYw", "cursor"),
        ("/v1/finance/donations?limit=0", "limit"),
        ("/v1/finance/donations?limit=1001", "limit"),
        ("/v1/finance/donations?status=paid", "status"),
        ("/v1/finance/audit?campaign=kashmir", "campaign"),
        ("/v1/finance/audit?from=2026-11-29T00:00:00", "from"),
        ("/v1/finance/audit?cursor=%21", "cursor"),
    ];
    for (path, parameter) in cases {
        let problem =
            assert_problem(get_as(&app, Some(&admin), path).await, 400, "bad-parameter").await;
        assert_eq!(problem_fields(&problem), [parameter], "{path}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(parameter),
            "{path}: {problem}"
        );
    }
    let unknown = get_as(&app, Some(&admin), "/v1/finance/donations?campaign=nowhere").await;
    let problem = assert_problem(unknown, 404, "not-found").await;
    assert_eq!(problem_fields(&problem), ["campaign"], "{problem}");

    let html = get_with(
        &app,
        Some(&admin),
        "/v1/finance/donations",
        &[("accept", "text/html")],
    )
    .await;
    assert_problem(html, 406, "not-acceptable").await;

    // An offset sent as %2B, or as a bare + (which a query string reads as a space), is fine.
    for from in ["2026-11-29T10:00:00%2B01:00", "2026-11-29T10:00:00+01:00"] {
        let response = get_as(
            &app,
            Some(&admin),
            &format!("/v1/finance/donations?from={from}"),
        )
        .await;
        assert_eq!(response.status(), 200, "{from}");
    }
    assert!(
        audit_rows(&app).await.len() == 2,
        "only the reads that read something are audited"
    );
}
