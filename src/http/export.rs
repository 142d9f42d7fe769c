//! How data leaves for a spreadsheet (finance's reads, Gift Aid's schedule, the audit log): the
//! format a request asks for (JSON, CSV or ODS, by `Accept`), CSV that a spreadsheet opens
//! safely, and bodies streamed as they are read from the database.
//!
//! **CSV**: RFC 4180 (the `csv` crate quotes commas, quotes and line breaks; records end in
//! CRLF), served as `text/csv; charset=utf-8` with `Content-Disposition: attachment`. Every
//! text cell goes through [`safe_cell`] against formula injection. Amounts and counts are
//! written as numbers ([`Cell::Int`], [`Cell::Money`]), never through `safe_cell`: `-500` is a refund or a
//! loss, and a spreadsheet must read it as the number it is. A number cannot carry a formula.

use std::borrow::Cow;
use std::io;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, TryStreamExt};
use serde::Serialize;
use tokio::sync::mpsc;

use super::query::{Params, bad_parameter};
use crate::http::problem::{Problem, ProblemType};

/// The problem of a read whose `Accept` takes none of its formats, for its documentation
/// (`responses(NotAcceptable, ...)`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum NotAcceptable {
    #[response(
        status = 406,
        description = "`/problems/not-acceptable`: `Accept` takes none of the formats served.",
        content_type = "application/problem+json"
    )]
    NotAcceptable(Problem),
}

pub const JSON: &str = "application/json";
pub const CSV: &str = "text/csv";
pub const ODS: &str = "application/vnd.oasis.opendocument.spreadsheet";

/// The formats an export can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
    Ods,
}

impl Format {
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Json => JSON,
            Format::Csv => CSV,
            Format::Ods => ODS,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Csv => "csv",
            Format::Ods => "ods",
        }
    }
}

/// The format to answer in, from the request's `Accept` and what the endpoint `offered`
/// (the first offered is the default). No `Accept`, `*/*` or `application/json`: JSON;
/// `text/csv`: CSV; the OpenDocument spreadsheet type: ODS, where offered. Quality values are
/// honoured (`q=0` refuses); between equals, a type named outright beats a wildcard, then the
/// endpoint's order decides. Nothing acceptable: a 406 problem.
pub fn negotiate(headers: &HeaderMap, offered: &[Format]) -> Result<Format, Problem> {
    let default = offered.first().copied().unwrap_or(Format::Json);
    let accept: Vec<&str> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|range| !range.is_empty())
        .collect();
    if accept.is_empty() {
        return Ok(default);
    }
    let ranges: Vec<(String, u8, f32)> = accept.iter().filter_map(|r| media_range(r)).collect();
    // Each offered format's quality is that of the most specific range matching it.
    let mut best: Option<(f32, u8, Format)> = None;
    for &format in offered {
        let Some((specificity, q)) = ranges
            .iter()
            .filter(|(range, _, _)| matches(range, format.media_type()))
            .map(|(_, specificity, q)| (*specificity, *q))
            .max_by_key(|(specificity, _)| *specificity)
        else {
            continue;
        };
        if q <= 0.0 {
            continue;
        }
        if best.is_none_or(|(best_q, best_specificity, _)| {
            q > best_q || (q == best_q && specificity > best_specificity)
        }) {
            best = Some((q, specificity, format));
        }
    }
    best.map(|(_, _, format)| format).ok_or_else(|| {
        let types: Vec<&str> = offered.iter().map(|f| f.media_type()).collect();
        Problem::new(
            ProblemType::NotAcceptable,
            format!(
                "This resource is served as {}; send an Accept header that takes one of them.",
                types.join(" or ")
            ),
        )
    })
}

/// `type/subtype;q=0.5` as (lower-case type/subtype, specificity 0 to 2, quality).
fn media_range(range: &str) -> Option<(String, u8, f32)> {
    let mut parts = range.split(';');
    let kind = parts.next()?.trim().to_ascii_lowercase();
    let (main, sub) = kind.split_once('/')?;
    let specificity = match (main, sub) {
        ("*", "*") => 0,
        (_, "*") => 1,
        _ => 2,
    };
    let mut q = 1.0;
    for param in parts {
        if let Some((name, value)) = param.split_once('=')
            && name.trim().eq_ignore_ascii_case("q")
        {
            q = value
                .trim()
                .parse::<f32>()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q))?;
        }
    }
    Some((kind, specificity, q))
}

fn matches(range: &str, media_type: &str) -> bool {
    match range.split_once('/') {
        Some(("*", "*")) => true,
        Some((main, "*")) => media_type.split_once('/').is_some_and(|(m, _)| m == main),
        _ => range == media_type,
    }
}

/// A text cell a spreadsheet will not run as a formula (OWASP's CSV injection rule): a value
/// starting with `=`, `+`, `-`, `@`, tab or carriage return (and, as newer guidance adds, line
/// feed, or the full-width `＝＋－＠` some spreadsheets also accept) gets a leading `'`, which
/// spreadsheets show as text. Everything else is left as it is.
pub fn safe_cell(value: &str) -> Cow<'_, str> {
    match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r' | '\n' | '＝' | '＋' | '－' | '＠') => {
            Cow::Owned(format!("'{value}"))
        }
        _ => Cow::Borrowed(value),
    }
}

/// One CSV cell: text goes through [`safe_cell`]; numbers and booleans are written as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell<'a> {
    Text(&'a str),
    Int(i64),
    /// Minor units of a currency written in its major unit with its decimals (`-7.00`), a
    /// number as a spreadsheet reads it: for accountants' files.
    Money(i64, &'a str),
    Bool(bool),
    Empty,
}

impl<'a> From<&'a str> for Cell<'a> {
    fn from(value: &'a str) -> Self {
        Cell::Text(value)
    }
}

impl<'a> From<&'a String> for Cell<'a> {
    fn from(value: &'a String) -> Self {
        Cell::Text(value)
    }
}

impl<'a> From<Option<&'a str>> for Cell<'a> {
    fn from(value: Option<&'a str>) -> Self {
        value.map_or(Cell::Empty, Cell::Text)
    }
}

impl From<i64> for Cell<'_> {
    fn from(value: i64) -> Self {
        Cell::Int(value)
    }
}

impl From<Option<i64>> for Cell<'_> {
    fn from(value: Option<i64>) -> Self {
        value.map_or(Cell::Empty, Cell::Int)
    }
}

impl From<bool> for Cell<'_> {
    fn from(value: bool) -> Self {
        Cell::Bool(value)
    }
}

/// CSV written into memory a chunk at a time: write rows, then [`take`](CsvChunks::take) what
/// they made to send it on.
pub struct CsvChunks {
    writer: csv::Writer<Vec<u8>>,
}

impl Default for CsvChunks {
    fn default() -> Self {
        Self::new()
    }
}

impl CsvChunks {
    pub fn new() -> Self {
        Self { writer: fresh() }
    }

    /// The header record: our own column names, written as they are.
    pub fn header(&mut self, names: &[&str]) -> io::Result<()> {
        self.writer.write_record(names).map_err(io::Error::other)?;
        self.writer.flush()
    }

    /// A record: text through [`safe_cell`], numbers and booleans as they are, empty for none.
    pub fn row(&mut self, cells: &[Cell<'_>]) -> io::Result<()> {
        let fields: Vec<Cow<'_, str>> = cells
            .iter()
            .map(|cell| match *cell {
                Cell::Text(text) => safe_cell(text),
                Cell::Int(n) => Cow::Owned(n.to_string()),
                Cell::Money(n, currency) => Cow::Owned(crate::money::decimal(n, currency)),
                Cell::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
                Cell::Empty => Cow::Borrowed(""),
            })
            .collect();
        self.writer
            .write_record(fields.iter().map(|f| f.as_bytes()))
            .map_err(io::Error::other)?;
        self.writer.flush()
    }

    /// Bytes written since the last take.
    pub fn len(&self) -> usize {
        self.writer.get_ref().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What has been written since the last take.
    pub fn take(&mut self) -> io::Result<Bytes> {
        let writer = std::mem::replace(&mut self.writer, fresh());
        let bytes = writer.into_inner().map_err(|e| e.into_error())?;
        Ok(Bytes::from(bytes))
    }
}

fn fresh() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::with_capacity(CHUNK_BYTES + 4096))
}

/// About how much a streamed body sends at a time.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// The sending half of a streamed body. Chunks wait in a short queue, so a slow client slows
/// the database read instead of filling memory.
#[derive(Debug, Clone)]
pub struct BodySender(mpsc::Sender<Result<Bytes, io::Error>>, std::time::Duration);

impl BodySender {
    /// Sends a chunk: `Ok(true)` once taken, `Ok(false)` once the client has gone, and a
    /// `TimedOut` error when the client has not taken anything for the stall it is allowed.
    pub async fn send_within(&self, chunk: Bytes) -> io::Result<bool> {
        if chunk.is_empty() {
            return Ok(true);
        }
        match tokio::time::timeout(self.1, self.0.send(Ok(chunk))).await {
            Ok(sent) => Ok(sent.is_ok()),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading (FINANCE_EXPORT_STALL)",
            )),
        }
    }

    /// Ends the body with an error: the client sees the transfer cut short, never a
    /// complete-looking file with rows missing.
    pub async fn fail(&self, error: io::Error) {
        // A stalled client may never take it: the body is dropped whole then.
        let _ = self.0.try_send(Err(error));
    }
}

/// A body streamed from what is sent on the returned [`BodySender`], which waits at most
/// `stall` for the client to take each chunk; it ends when every sender is dropped.
pub fn streamed_body(stall: std::time::Duration) -> (BodySender, Body) {
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(8);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    (BodySender(tx, stall), Body::from_stream(stream))
}

/// Where streamed rows go: an HTTP body, or the command line's stdout.
pub trait Sink {
    /// Passes a chunk on; an error once nobody is reading.
    fn send(&mut self, chunk: Bytes) -> impl Future<Output = io::Result<()>> + Send;
}

impl Sink for BodySender {
    async fn send(&mut self, chunk: Bytes) -> io::Result<()> {
        if self.send_within(chunk).await? {
            Ok(())
        } else {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }
}

/// A row that can be written as CSV.
pub trait CsvRow {
    /// The column names, in order.
    const HEADER: &'static [&'static str];
    /// Writes the row's cells, one per column.
    fn write(&self, csv: &mut CsvChunks) -> io::Result<()>;
}

/// Why a streamed export stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the rows failed.
    #[error("reading the rows failed: {0}")]
    Database(#[from] sqlx::Error),
    /// Nobody reads any more (the client left, stdout closed), or writing failed.
    #[error("writing the export failed: {0}")]
    Write(#[from] io::Error),
}

/// How a streamed export went: how many rows it sent, and whether it ended well.
#[derive(Debug)]
pub struct Streamed {
    pub rows: i64,
    pub outcome: Result<(), ExportError>,
}

/// Writes `rows` as CSV (the header first) to `sink` as they come, a chunk at a time; calls
/// `progress` with the rows sent so far after each chunk.
pub async fn write_csv<T: CsvRow>(
    rows: impl Stream<Item = sqlx::Result<T>>,
    sink: &mut impl Sink,
    mut progress: impl FnMut(i64),
) -> Streamed {
    let mut csv = CsvChunks::new();
    let mut count = 0;
    let mut sent = 0;
    let outcome = async {
        csv.header(T::HEADER)?;
        let mut rows = std::pin::pin!(rows);
        while let Some(row) = rows.try_next().await? {
            row.write(&mut csv)?;
            count += 1;
            if csv.len() >= CHUNK_BYTES {
                sink.send(csv.take()?).await?;
                sent = count;
                progress(sent);
            }
        }
        sink.send(csv.take()?).await?;
        sent = count;
        progress(sent);
        Ok(())
    }
    .await;
    Streamed {
        rows: sent,
        outcome,
    }
}

/// Writes `rows` to `sink` as one JSON array, a row to a line, as they come; calls `progress`
/// with the rows sent so far after each chunk.
pub async fn write_json_array<T: Serialize>(
    rows: impl Stream<Item = sqlx::Result<T>>,
    sink: &mut impl Sink,
    mut progress: impl FnMut(i64),
) -> Streamed {
    let mut buffer = Vec::with_capacity(CHUNK_BYTES + 4096);
    let mut count = 0;
    let mut sent = 0;
    let outcome = async {
        buffer.push(b'[');
        let mut rows = std::pin::pin!(rows);
        while let Some(row) = rows.try_next().await? {
            buffer.extend_from_slice(if count == 0 { &b"\n"[..] } else { &b",\n"[..] });
            serde_json::to_writer(&mut buffer, &row).map_err(io::Error::other)?;
            count += 1;
            if buffer.len() >= CHUNK_BYTES {
                sink.send(Bytes::from(std::mem::take(&mut buffer))).await?;
                sent = count;
                progress(sent);
            }
        }
        buffer.extend_from_slice(if count == 0 {
            &b"]\n"[..]
        } else {
            &b"\n]\n"[..]
        });
        sink.send(Bytes::from(buffer)).await?;
        sent = count;
        progress(sent);
        Ok(())
    }
    .await;
    Streamed {
        rows: sent,
        outcome,
    }
}

/// `cursor` and `limit` page JSON lists; an export is the whole filtered set, so they are
/// refused rather than ignored (a `limit=10` that sent a million rows would surprise).
pub fn refuse_paging(params: &Params) -> Result<(), Problem> {
    for name in ["cursor", "limit"] {
        if params.has(name) {
            return Err(bad_parameter(
                name,
                "pages JSON lists only; a CSV export is the whole filtered set",
            ));
        }
    }
    Ok(())
}

/// A CSV download: `text/csv; charset=utf-8`, saved as `{stem}-{UTC time}.csv`.
pub fn csv_response(stem: &str, body: Body) -> Response {
    download(stem, Format::Csv, body)
}

/// A download of `format` (CSV or ODS), saved as `{stem}-{UTC time}.{extension}`: every
/// download of the same thing has a name of its own, and sorts by when it was made.
pub fn download(stem: &str, format: Format, body: Body) -> Response {
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let extension = format.extension();
    let disposition = format!("attachment; filename=\"{stem}-{stamp}.{extension}\"");
    let media_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        other => other.media_type(),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&disposition).expect("a file name of our own is a header value"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn negotiation() {
        let both = [Format::Json, Format::Csv];
        let all = [Format::Json, Format::Csv, Format::Ods];
        let n = |a: Option<&str>, offered: &[Format]| negotiate(&accept(a), offered);
        assert_eq!(n(None, &both).unwrap(), Format::Json);
        assert_eq!(n(Some("*/*"), &both).unwrap(), Format::Json);
        assert_eq!(n(Some("application/json"), &both).unwrap(), Format::Json);
        assert_eq!(n(Some("text/csv"), &both).unwrap(), Format::Csv);
        assert_eq!(
            n(Some("Text/CSV; charset=utf-8"), &both).unwrap(),
            Format::Csv
        );
        assert_eq!(n(Some("text/*"), &both).unwrap(), Format::Csv);
        assert_eq!(n(Some("text/csv, */*"), &both).unwrap(), Format::Csv);
        assert_eq!(
            n(Some("application/json;q=0.5, text/csv"), &both).unwrap(),
            Format::Csv
        );
        assert_eq!(n(Some("text/csv;q=0, */*"), &both).unwrap(), Format::Json);
        assert_eq!(
            n(Some("text/html,application/xhtml+xml,*/*;q=0.8"), &both).unwrap(),
            Format::Json
        );
        assert_eq!(n(Some(ODS), &all).unwrap(), Format::Ods);
        for refused in [
            ODS,
            "text/html",
            "application/xml",
            "text/csv;q=0",
            "nonsense",
        ] {
            let problem = n(Some(refused), &both).unwrap_err();
            assert_eq!(
                problem.status(),
                axum::http::StatusCode::NOT_ACCEPTABLE,
                "{refused}"
            );
            assert_eq!(problem.kind.uri(), "/problems/not-acceptable");
        }
    }

    #[test]
    fn formulas_are_neutralised_and_text_is_not() {
        for (raw, safe) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+1", "'+1"),
            ("-2", "'-2"),
            ("@x", "'@x"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("\nx", "'\nx"),
            ("＝1+1", "'＝1+1"),
            ("Amina", "Amina"),
            ("O'Brien", "O'Brien"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(safe_cell(raw), safe, "{raw:?}");
        }
    }

    #[test]
    fn csv_quotes_by_rfc4180_neutralises_text_and_keeps_numbers() {
        let mut csv = CsvChunks::new();
        csv.header(&["name", "amount", "gift_aid", "note"]).unwrap();
        csv.row(&[
            Cell::Text("Khan, \"Amina\"\nline 2"),
            Cell::Int(-500),
            Cell::Bool(true),
            Cell::Empty,
        ])
        .unwrap();
        csv.row(&[
            Cell::Text("-2"),
            Cell::Int(2500),
            Cell::Bool(false),
            Cell::Text("=1+1"),
        ])
        .unwrap();
        csv.row(&[
            Cell::Money(-700, "gbp"),
            Cell::Money(2505, "gbp"),
            Cell::Money(1000, "jpy"),
            Cell::Empty,
        ])
        .unwrap();
        let bytes = csv.take().unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "name,amount,gift_aid,note\r\n\
             \"Khan, \"\"Amina\"\"\nline 2\",-500,true,\r\n\
             '-2,2500,false,'=1+1\r\n\
             -7.00,25.05,1000,\r\n"
        );
        assert!(csv.is_empty(), "taken");
    }
}
