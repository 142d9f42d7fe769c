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

/// The day it is in the UK at `at`: GMT, or BST (UTC+1) from 01:00 UTC on the last Sunday of
/// March to 01:00 UTC on the last Sunday of October (the Summer Time Order 2002, as every year
/// since 1996). HMRC's dates are UK dates, as the database's `AT TIME ZONE 'Europe/London'`.
pub fn uk_date(at: OffsetDateTime) -> time::Date {
    let at = at.to_offset(UtcOffset::UTC);
    let last_sunday = |month: time::Month| {
        let last = time::Date::from_calendar_date(at.year(), month, 31).expect("31 days");
        last - time::Duration::days(i64::from(last.weekday().number_days_from_sunday()))
    };
    let starts = last_sunday(time::Month::March).midnight().assume_utc() + time::Duration::HOUR;
    let ends = last_sunday(time::Month::October).midnight().assume_utc() + time::Duration::HOUR;
    if at >= starts && at < ends {
        (at + time::Duration::HOUR).date()
    } else {
        at.date()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn uk_dates_follow_british_summer_time() {
        use time::macros::date;
        assert_eq!(
            uk_date(datetime!(2026-12-07 23:30 UTC)),
            date!(2026 - 12 - 07)
        );
        assert_eq!(
            uk_date(datetime!(2026-07-01 23:30 UTC)),
            date!(2026 - 07 - 02)
        );
        // 2026: BST from 29 March 01:00 UTC to 25 October 01:00 UTC.
        assert_eq!(
            uk_date(datetime!(2026-03-29 00:59 UTC)),
            date!(2026 - 03 - 29)
        );
        assert_eq!(
            uk_date(datetime!(2026-03-28 23:30 UTC)),
            date!(2026 - 03 - 28)
        );
        assert_eq!(
            uk_date(datetime!(2026-10-24 23:30 UTC)),
            date!(2026 - 10 - 25)
        );
        assert_eq!(
            uk_date(datetime!(2026-10-25 23:30 UTC)),
            date!(2026 - 10 - 25)
        );
        assert_eq!(
            uk_date(datetime!(2027-03-28 23:30 UTC)),
            date!(2027 - 03 - 29)
        );
    }

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
