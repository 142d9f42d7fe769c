//! Times as text: RFC 3339 everywhere a time is written for a file, a log reader or an
//! operator. JSON answers write theirs through `time::serde::rfc3339`, which says the same.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// `at` as RFC 3339, to the microsecond and in the offset it has: a time read from the
/// database (always UTC, as Postgres keeps it: `2026-11-27T13:22:37.123456Z`), or one a
/// request gave (`2026-11-01T00:00:00+01:00` stays as given). What exports and one record in
/// full show.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339)
        .expect("a time from the database or a request formats as RFC 3339")
}

/// `at` in UTC, to the second: `2026-11-27T13:22:37Z`. What the command line's tables show.
pub fn rfc3339_seconds(at: OffsetDateTime) -> String {
    at.to_offset(UtcOffset::UTC)
        .replace_nanosecond(0)
        .ok()
        .and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn full_precision_keeps_the_offset_and_tables_show_seconds_in_utc() {
        let stored = datetime!(2026-11-27 13:22:37.123456 UTC);
        assert_eq!(rfc3339(stored), "2026-11-27T13:22:37.123456Z");
        assert_eq!(rfc3339_seconds(stored), "2026-11-27T13:22:37Z");
        let given = datetime!(2026-11-01 00:00:00 +01:00);
        assert_eq!(rfc3339(given), "2026-11-01T00:00:00+01:00");
        assert_eq!(rfc3339_seconds(given), "2026-10-31T23:00:00Z");
    }
}
