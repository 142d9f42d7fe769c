//! The staff log: every invitation, enrolment, sign-in, failed sign-in, sign-out and revocation,
//! with the client's address where there was a request. Append-only (the database refuses
//! UPDATE, DELETE and TRUNCATE). What staff read and do once signed in goes to the finance audit
//! log as `staff:<name>`, as a token's reads do.

use std::net::IpAddr;

use sqlx::{PgExecutor, PgPool};
use time::OffsetDateTime;

/// Adds a line.
pub async fn write(
    db: impl PgExecutor<'_>,
    name: &str,
    what: &str,
    detail: &str,
    client: Option<IpAddr>,
) -> sqlx::Result<()> {
    // A name typed at the sign-in form is the client's to make up: kept short.
    let name: String = name.chars().take(64).collect();
    sqlx::query!(
        "INSERT INTO staff_log (name, what, detail, client_ip) VALUES ($1, $2, $3, $4)",
        name,
        what,
        detail,
        client.map(|ip| ip.to_string())
    )
    .execute(db)
    .await
    .map(drop)
}

/// A line of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub at: OffsetDateTime,
    pub name: String,
    pub what: String,
    pub detail: String,
    pub client_ip: Option<String>,
}

/// The latest `limit` lines, newest first.
pub async fn latest(db: &PgPool, limit: i64) -> sqlx::Result<Vec<Line>> {
    sqlx::query_as!(
        Line,
        r#"SELECT at, name, what, detail, client_ip
           FROM staff_log ORDER BY at DESC, id DESC LIMIT $1"#,
        limit
    )
    .fetch_all(db)
    .await
}
