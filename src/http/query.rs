//! A request's query string, read strictly (the finance reads', Gift Aid's, the audit log's): a
//! parameter the endpoint does not take, or one given twice, is a 400 problem naming it, never
//! silently ignored (a misspelt `campiagn=` must not return every campaign's donations). Empty
//! values (`?campaign=`) count as not given.
//!
//! Times are RFC 3339 with an offset (`2026-11-29T00:00:00Z`, `...+01:00`). In a query string a
//! `+` means a space, so `+01:00` should be sent as `%2B01:00`; a space where a time's offset
//! sign belongs is read back as the `+` it was meant to be.
//!
//! Lists page with an opaque cursor ([`Cursor`]) and `limit` (1 to 1000, default 100).

use std::fmt::Display;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::http::problem::{FieldError, Problem, ProblemType};

/// Rows in a page when `limit` is not given.
pub const DEFAULT_LIMIT: i64 = 100;
/// The most rows a page may have.
pub const MAX_LIMIT: i64 = 1000;

/// The documentation of `from` and `to` (a period, [from, to)), for the routes that take them.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RangeParams {
    /// The start of the period, included: RFC 3339 with an offset (`2026-11-29T00:00:00Z`;
    /// send `+01:00` as `%2B01:00`).
    from: Option<String>,
    /// The end of the period, excluded: RFC 3339 with an offset.
    to: Option<String>,
}

/// The documentation of `cursor` and `limit`, for the JSON lists that page (a CSV answer has
/// every row and takes neither).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    /// The previous page's `next_cursor` (opaque).
    cursor: Option<String>,
    /// Rows in a page, 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// The query parameters of one request, each at most once, each one the endpoint takes.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// In the order given.
    pairs: Vec<(String, String)>,
}

/// The problem of a read given a query parameter it does not take, one twice, or a bad value,
/// for its documentation (`responses(BadParameter, ...)`).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum BadParameter {
    #[response(
        status = 400,
        description = "`/problems/bad-parameter`: `errors` names the parameter.",
        content_type = "application/problem+json"
    )]
    BadParameter(Problem),
}

/// A 400 problem about the query parameter `name`.
pub fn bad_parameter(name: &str, message: impl Into<String>) -> Problem {
    let message = message.into();
    let shown: String = name.chars().take(64).collect();
    Problem::new(
        ProblemType::BadParameter,
        format!("The query parameter `{shown}` {message}."),
    )
    .with_errors(vec![FieldError::new(shown, message)])
}

impl Params {
    /// Reads `query` (the raw query string, without `?`), allowing only the parameters in
    /// `allowed`, each at most once.
    pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Params, Problem> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if !allowed.contains(&name.as_ref()) {
                let takes = if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                };
                return Err(bad_parameter(
                    &name,
                    format!("is not a parameter of this endpoint (it takes: {takes})"),
                ));
            }
            if pairs.iter().any(|(given, _)| *given == name) {
                return Err(bad_parameter(&name, "is given more than once"));
            }
            pairs.push((name.into_owned(), value.into_owned()));
        }
        Ok(Params { pairs })
    }

    /// Parameters given some other way (the command line's flags), as if in a query string.
    pub fn from_pairs<N: Into<String>>(pairs: impl IntoIterator<Item = (N, String)>) -> Params {
        Params {
            pairs: pairs
                .into_iter()
                .map(|(name, value)| (name.into(), value))
                .collect(),
        }
    }

    /// The value of `name`, if it was given and is not empty.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(given, _)| given == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    }

    /// Whether `name` was given with a value.
    pub fn has(&self, name: &str) -> bool {
        self.text(name).is_some()
    }

    /// `name` as an RFC 3339 time with an offset; a 400 problem naming it otherwise.
    pub fn time(&self, name: &str) -> Result<Option<OffsetDateTime>, Problem> {
        match self.text(name) {
            None => Ok(None),
            Some(raw) => parse_time(raw)
                .map(Some)
                .map_err(|message| bad_parameter(name, message)),
        }
    }

    /// `from` (inclusive) and `to` (exclusive). `from` after `to` is a 400 naming `from`.
    pub fn range(&self) -> Result<(Option<OffsetDateTime>, Option<OffsetDateTime>), Problem> {
        let from = self.time("from")?;
        let to = self.time("to")?;
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            return Err(bad_parameter("from", "is after `to`"));
        }
        Ok((from, to))
    }

    /// Where to start a page: after the row the cursor names. `T` is the type of the rows' id;
    /// a cursor that does not decode, or names no id of that type, is a 400 naming `cursor`.
    pub fn cursor<T: FromStr>(&self) -> Result<Option<Cursor<T>>, Problem> {
        self.text("cursor").map(Cursor::decode).transpose()
    }

    /// How many rows a page may hold: `limit`, 1 to 1000, by default 100.
    pub fn limit(&self) -> Result<i64, Problem> {
        match self.text("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(raw) => match raw.parse::<i64>() {
                Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
                _ => Err(bad_parameter(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_LIMIT}"),
                )),
            },
        }
    }

    /// The parameters as given, for the audit log: `{"campaign": "kashmir", ...}`.
    pub fn filters(&self) -> Value {
        self.pairs
            .iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect::<Map<_, _>>()
            .into()
    }
}

/// Ends a page: `rows` was read with `limit + 1`; if that extra row came, it goes, and the
/// cursor of the page's last row is returned for the next page.
pub fn next_page<T, I: Display>(
    rows: &mut Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> Cursor<I>,
) -> Option<String> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() <= limit {
        return None;
    }
    rows.truncate(limit);
    rows.last().map(|row| cursor_of(row).encode())
}

/// An RFC 3339 time with its offset, or why not.
pub fn parse_time(raw: &str) -> Result<OffsetDateTime, String> {
    if let Ok(time) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(time);
    }
    // `+01:00` sent unencoded reaches us as ` 01:00`.
    if raw.len() > 6 && raw.as_bytes()[raw.len() - 6] == b' ' {
        let (time, offset) = raw.split_at(raw.len() - 6);
        if let Ok(time) = OffsetDateTime::parse(&format!("{time}+{}", &offset[1..]), &Rfc3339) {
            return Ok(time);
        }
    }
    if OffsetDateTime::parse(&format!("{raw}Z"), &Rfc3339).is_ok() {
        return Err(
            "has no UTC offset: add one, such as 2026-11-29T00:00:00Z or 2026-11-29T00:00:00%2B01:00"
                .to_owned(),
        );
    }
    Err("is not an RFC 3339 date-time with an offset, such as 2026-11-29T00:00:00Z".to_owned())
}

/// Where a page ends: the (time, id) of its last row, for the next page to start after. Opaque
/// to clients: the base64url of `unix_nanos|id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor<T> {
    pub at: OffsetDateTime,
    pub id: T,
}

impl<T> Cursor<T> {
    pub fn new(at: OffsetDateTime, id: T) -> Self {
        Self { at, id }
    }
}

impl<T: Display> Cursor<T> {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}|{}", self.at.unix_timestamp_nanos(), self.id))
    }
}

impl<T: FromStr> Cursor<T> {
    /// A cursor from a client; a 400 naming `cursor` unless it is one we made.
    pub fn decode(raw: &str) -> Result<Self, Problem> {
        let bad = || {
            bad_parameter(
                "cursor",
                "is not a cursor this list gave (use `next_cursor` from the previous page)",
            )
        };
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
        let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
        let (nanos, id) = text.split_once('|').ok_or_else(bad)?;
        let nanos: i128 = nanos.parse().map_err(|_| bad())?;
        let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).map_err(|_| bad())?;
        let id = id.parse().map_err(|_| bad())?;
        Ok(Self { at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use uuid::Uuid;

    fn field(problem: &Problem) -> &str {
        assert_eq!(problem.status(), axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(problem.kind.uri(), "/problems/bad-parameter");
        &problem.errors[0].field
    }

    #[test]
    fn unknown_and_repeated_parameters_are_named() {
        let allowed = ["campaign", "from"];
        let unknown = Params::parse(Some("campaign=a&campiagn=b"), &allowed).unwrap_err();
        assert_eq!(field(&unknown), "campiagn");
        let twice = Params::parse(Some("from=x&campaign=a&campaign=b"), &allowed).unwrap_err();
        assert_eq!(field(&twice), "campaign");
        assert!(twice.detail.contains("more than once"));
        let fine = Params::parse(Some("campaign=kash%20mir&from="), &allowed).unwrap();
        assert_eq!(fine.text("campaign"), Some("kash mir"));
        assert_eq!(fine.text("from"), None, "empty counts as not given");
        assert!(Params::parse(None, &[]).is_ok());
    }

    #[test]
    fn times_need_rfc3339_with_an_offset() {
        let p = |q: &str| Params::parse(Some(q), &["from", "to"]).unwrap();
        assert_eq!(
            p("from=2026-11-29T10:00:00%2B01:00").time("from").unwrap(),
            Some(datetime!(2026-11-29 09:00 UTC))
        );
        assert_eq!(
            p("from=2026-11-29T10:00:00+01:00").time("from").unwrap(),
            Some(datetime!(2026-11-29 09:00 UTC)),
            "an unencoded + (a space) is the offset's sign"
        );
        let no_offset = p("from=2026-11-29T10:00:00").time("from").unwrap_err();
        assert_eq!(field(&no_offset), "from");
        assert!(
            no_offset.detail.contains("no UTC offset"),
            "{}",
            no_offset.detail
        );
        for bad in [
            "2026-11-29",
            "yesterday",
            "29/11/2026",
            "2026-11-29T25:00:00Z",
        ] {
            let problem = p(&format!("to={bad}")).time("to").unwrap_err();
            assert_eq!(field(&problem), "to", "{bad}");
        }
    }

    #[test]
    fn from_after_to_names_from() {
        let p = Params::parse(
            Some("from=2026-11-30T00:00:00Z&to=2026-11-29T00:00:00Z"),
            &["from", "to"],
        )
        .unwrap();
        assert_eq!(field(&p.range().unwrap_err()), "from");
        let same = Params::parse(
            Some("from=2026-11-29T00:00:00Z&to=2026-11-29T00:00:00Z"),
            &["from", "to"],
        )
        .unwrap();
        assert!(same.range().is_ok());
    }

    #[test]
    fn cursors_round_trip_and_bad_ones_name_cursor() {
        let at = datetime!(2026-11-29 10:15:30.123456 UTC);
        let id = Uuid::now_v7();
        let encoded = Cursor::new(at, id).encode();
        let p = Params::parse(Some(&format!("cursor={encoded}")), &["cursor"]).unwrap();
        assert_eq!(p.cursor::<Uuid>().unwrap(), Some(Cursor::new(at, id)));
        assert_eq!(
            field(&p.cursor::<i64>().unwrap_err()),
            "cursor",
            "wrong id type"
        );
        for bad in [
            "x",
            "!!!",
            &URL_SAFE_NO_PAD.encode("12|"),
            &URL_SAFE_NO_PAD.encode("a|b"),
        ] {
            let p = Params::parse(Some(&format!("cursor={bad}")), &["cursor"]).unwrap();
            assert_eq!(field(&p.cursor::<Uuid>().unwrap_err()), "cursor", "{bad}");
        }
    }

    #[test]
    fn limit_is_1_to_1000() {
        let p = |q: &str| Params::parse(Some(q), &["limit"]).unwrap();
        assert_eq!(p("").limit().unwrap(), DEFAULT_LIMIT);
        assert_eq!(p("limit=1000").limit().unwrap(), 1000);
        for bad in ["0", "1001", "-1", "ten", "1.5"] {
            assert_eq!(
                field(&p(&format!("limit={bad}")).limit().unwrap_err()),
                "limit"
            );
        }
    }

    #[test]
    fn filters_are_the_parameters_as_given() {
        let p = Params::parse(
            Some("status=succeeded&campaign=kashmir"),
            &["campaign", "status"],
        )
        .unwrap();
        assert_eq!(
            p.filters(),
            serde_json::json!({"status": "succeeded", "campaign": "kashmir"})
        );
    }
}
