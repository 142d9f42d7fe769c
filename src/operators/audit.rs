//! The finance audit log: every read of finance data, by whom (token name and role), what,
//! with which filters (the query parameters, never donor data), and how many rows it gave.
//! Rows are only ever added (the database refuses UPDATE, DELETE and TRUNCATE). A page is
//! recorded before it is sent, so a read that could not be recorded sends nothing; a streamed
//! export is recorded before its first byte, and again when it ends, by a second row naming the
//! first and holding the rows actually sent (fewer if the client went away first). The view
//! `finance_reads` shows each read once, with the row count of its end.
//!
//! `GET /v1/finance/audit` shows it, newest first, to admins only; reading it is audited too.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::stream::BoxStream;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgExecutor, PgPool};
use time::OffsetDateTime;
use tracing::Instrument;

use super::access::{Admin, Caller, Role};
use crate::db::Reads;
use crate::http::export::{self, Cell, CsvRow, Format};
use crate::http::problem::{ApiResult, Problem};
use crate::http::query::{Cursor, Params, next_page};

/// Records one read of `rows` rows.
pub async fn record(
    db: impl PgExecutor<'_>,
    caller: &Caller,
    what: &str,
    filters: &Value,
    rows: i64,
) -> sqlx::Result<()> {
    begin_with(db, caller, what, filters, rows).await.map(drop)
}

/// Records a streamed read before it starts (with no rows yet); returns its entry's id, for
/// [`finish`].
pub async fn begin(
    db: impl PgExecutor<'_>,
    caller: &Caller,
    what: &str,
    filters: &Value,
) -> sqlx::Result<i64> {
    begin_with(db, caller, what, filters, 0).await
}

async fn begin_with(
    db: impl PgExecutor<'_>,
    caller: &Caller,
    what: &str,
    filters: &Value,
    rows: i64,
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"INSERT INTO finance_audit_log (token_name, role, what, filters, row_count)
           VALUES ($1, $2, $3, $4, $5) RETURNING id"#,
        caller.name,
        caller.role as Role,
        what,
        filters,
        rows
    )
    .fetch_one(db)
    .await
}

/// Records that the streamed read [`begin`] recorded as `id` has ended, having sent `rows`.
pub async fn finish(db: impl PgExecutor<'_>, id: i64, rows: i64) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO finance_audit_log (token_name, role, what, filters, row_count, ends)
           SELECT token_name, role, what, filters, $2, id FROM finance_audit_log WHERE id = $1"#,
        id,
        rows
    )
    .execute(db)
    .await
    .map(drop)
}

/// One entry, as `GET /v1/finance/audit` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = AuditEntry)]
pub struct Entry {
    pub id: i64,
    /// RFC 3339.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The name of the token that read.
    pub token_name: String,
    pub role: Role,
    /// What was read: the method and route, `(csv)` for an export.
    pub what: String,
    /// The query parameters as given.
    #[schema(value_type = Object)]
    pub filters: Value,
    /// The rows it gave; for an export, the rows sent once it ended (0 until then).
    pub row_count: i64,
    /// When an export ended (null for a page, and for an export still running or cut off
    /// before it could be recorded).
    #[serde(with = "time::serde::rfc3339::option")]
    pub ended_at: Option<OffsetDateTime>,
}

/// A page of `GET /v1/finance/audit`.
#[derive(utoipa::ToSchema)]
#[schema(as = AuditPage)]
#[allow(dead_code)]
pub struct Page {
    data: Vec<Entry>,
    /// For the next page (`cursor=`); null on the last.
    next_cursor: Option<String>,
}

impl CsvRow for Entry {
    const HEADER: &'static [&'static str] = &[
        "id",
        "at",
        "token_name",
        "role",
        "what",
        "filters",
        "row_count",
        "ended_at",
    ];

    fn write(&self, csv: &mut export::CsvChunks) -> std::io::Result<()> {
        let filters = self.filters.to_string();
        let ended_at = self.ended_at.map(crate::timestamps::rfc3339);
        csv.row(&[
            Cell::Int(self.id),
            Cell::Text(&crate::timestamps::rfc3339(self.at)),
            Cell::Text(&self.token_name),
            Cell::Text(self.role.as_str()),
            Cell::Text(&self.what),
            Cell::Text(&filters),
            Cell::Int(self.row_count),
            ended_at.as_deref().map_or(Cell::Empty, Cell::Text),
        ])
    }
}

/// The entries newest first, in [from, to), after `cursor`, at most `limit` (all if none).
macro_rules! entries {
    ($from:expr, $to:expr, $cursor:expr, $limit:expr) => {{
        let cursor: Option<&Cursor<i64>> = $cursor;
        sqlx::query_as!(
            Entry,
            r#"SELECT id AS "id!", at AS "at!", token_name AS "token_name!", role AS "role!: Role",
                      what AS "what!", filters AS "filters!", row_count AS "row_count!", ended_at
               FROM finance_reads
               WHERE ($1::timestamptz IS NULL OR at >= $1)
                 AND ($2::timestamptz IS NULL OR at < $2)
                 AND ($3::timestamptz IS NULL OR (at, id) < ($3, $4))
               ORDER BY at DESC, id DESC
               LIMIT $5"#,
            $from,
            $to,
            cursor.map(|c| c.at),
            cursor.map(|c| c.id),
            $limit
        )
    }};
}

const WHAT: &str = "GET /v1/finance/audit";

/// `GET /v1/finance/audit?from=&to=&cursor=&limit=`: admins only.
#[utoipa::path(
    get,
    path = "/v1/finance/audit",
    operation_id = "listAuditEntries",
    tag = "finance",
    summary = "The audit log of finance reads",
    description = "Every finance read, newest first: who (the token's name and role), what, \
                   with which parameters, and how many rows. JSON pages, or the whole log as \
                   CSV (`Accept: text/csv`). Admin tokens only.",
    security(("bearerAuth" = [])),
    params(crate::http::query::RangeParams, crate::http::query::PageParams),
    responses(
        (status = 200, description = "A page, or the CSV.", content(
            (Page = "application/json"),
            (String = "text/csv"),
        )),
        (status = 403, description = "`/problems/forbidden`: not an admin token.", body = Problem,
         content_type = "application/problem+json"),
        super::access::Refusals,
        crate::http::export::NotAcceptable,
        crate::http::query::BadParameter,
    ),
)]
pub async fn list(
    State(db): State<PgPool>,
    State(reads): State<Reads>,
    Admin(caller): Admin,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let params = Params::parse(query.as_deref(), &["from", "to", "cursor", "limit"])?;
    let format = export::negotiate(&headers, &[Format::Json, Format::Csv])?;
    let (from, to) = params.range()?;
    if format != Format::Json {
        export::refuse_paging(&params)?;
        let what = format!("{WHAT} (csv)");
        return csv_export(
            &db,
            &reads,
            &caller,
            &what,
            &params.filters(),
            "audit",
            move |conn| entries!(from, to, None, None::<i64>).fetch(conn),
        )
        .await;
    }
    let cursor = params.cursor::<i64>()?;
    let limit = params.limit()?;
    let mut rows = entries!(from, to, cursor.as_ref(), Some(limit + 1))
        .fetch_all(&mut *crate::db::reading(&reads).await?)
        .await?;
    let next_cursor = next_page(&mut rows, limit, |e| Cursor::new(e.at, e.id));
    record(&db, &caller, WHAT, &params.filters(), rows.len() as i64).await?;
    Ok(Json(json!({"data": rows, "next_cursor": next_cursor})).into_response())
}

/// Serves the rows `rows` reads as a CSV download saved as `stem-<time>.csv`, streamed from a
/// read-only transaction on `reads`: recorded in the audit log (on `db`, as `what`) before the
/// first byte, and again once the last is sent, or the client has gone, or it was cut off: a
/// client that stops reading for `reads.stall`, or an export longer than `reads.deadline`,
/// is cut off, its connection and snapshot released.
pub async fn csv_export<T, F>(
    db: &PgPool,
    reads: &Reads,
    caller: &Caller,
    what: &str,
    filters: &Value,
    stem: &str,
    rows: F,
) -> ApiResult<Response>
where
    T: CsvRow + Send + 'static,
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxStream<'c, sqlx::Result<T>> + Send + 'static,
{
    let audit = begin(db, caller, what, filters).await?;
    let mut tx = crate::db::reading(reads).await?;
    let (sender, body) = export::streamed_body(reads.stall);
    let db = db.clone();
    let deadline = reads.deadline;
    tokio::spawn(
        async move {
            let mut sent = 0;
            let written = tokio::time::timeout(
                deadline,
                export::write_csv(rows(&mut tx), &mut sender.clone(), |rows| sent = rows),
            )
            .await;
            drop(tx);
            let streamed = written.unwrap_or_else(|_| export::Streamed {
                rows: sent,
                outcome: Err(export::ExportError::Write(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the export ran past FINANCE_EXPORT_DEADLINE",
                ))),
            });
            finish_stream(&db, audit, streamed, &sender).await;
        }
        .in_current_span(),
    );
    Ok(export::csv_response(stem, body))
}

/// Ends a streamed export: its row count into the audit log, and a failed read logged and
/// made to cut the body short.
pub async fn finish_stream(
    db: &PgPool,
    audit: i64,
    streamed: export::Streamed,
    sender: &export::BodySender,
) {
    match &streamed.outcome {
        Ok(()) => {}
        Err(export::ExportError::Write(error)) if error.kind() == std::io::ErrorKind::TimedOut => {
            tracing::warn!(
                rows = streamed.rows,
                %error,
                "an export was cut off: its client stopped reading, or it ran too long"
            );
            sender
                .fail(std::io::Error::other("the export was cut off"))
                .await;
        }
        Err(export::ExportError::Write(_)) => {
            tracing::info!(
                rows = streamed.rows,
                "the client left before the export ended"
            )
        }
        Err(export::ExportError::Database(error)) => {
            tracing::error!(%error, rows = streamed.rows, "an export failed part way");
            sender
                .fail(std::io::Error::other("the export failed part way"))
                .await;
        }
    }
    if let Err(error) = finish(db, audit, streamed.rows).await {
        tracing::error!(%error, audit, "could not record an export's row count");
    }
}
