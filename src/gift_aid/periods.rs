//! The charity's accounting periods, which decide two of HMRC's rules: gifts can be claimed
//! only within 4 years of the end of the accounting period they were received in, and only
//! gifts of one accounting period may be added together on an aggregated line; and the tax
//! year (6 April to 5 April), by which a donor's gifts are told to them.
//!
//! Source: gov.uk, "Claiming Gift Aid as a charity or CASC: time limits" ("within 4 years of
//! the end of the accounting period the donations were received in"), and the schedule
//! guidance on aggregated donations.

use time::{Date, Month};

/// How long after its accounting period ends a gift can still be claimed.
pub const CLAIM_WITHIN_YEARS: i32 = 4;

/// The accounting year's last day (`GIFT_AID_YEAR_END`, `MM-DD`; 31 March by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct YearEnd {
    pub month: Month,
    pub day: u8,
}

impl YearEnd {
    /// `MM-DD`, a day every year has (never 29 February).
    pub fn parse(raw: &str) -> Option<Self> {
        let (month, day) = raw.trim().split_once('-')?;
        let month = Month::try_from(month.parse::<u8>().ok()?).ok()?;
        Self::new(month, day.parse().ok()?)
    }

    /// `day` of `month`, if every year has it.
    pub fn new(month: Month, day: u8) -> Option<Self> {
        // 2023 is not a leap year: the day must exist in every year.
        Date::from_calendar_date(2023, month, day).ok()?;
        Some(Self { month, day })
    }

    /// The last day of the accounting period `date` falls in.
    pub fn period_end(self, date: Date) -> Date {
        let this_year = self.on(date.year());
        if date <= this_year {
            this_year
        } else {
            self.on(date.year() + 1)
        }
    }

    /// The last day a gift received on `date` can be claimed: 4 years after the end of its
    /// accounting period.
    pub fn claim_deadline(self, date: Date) -> Date {
        self.on(self.period_end(date).year() + CLAIM_WITHIN_YEARS)
    }

    /// Whether a gift received on `date` can still be claimed on `today`: until its deadline,
    /// that day included.
    pub fn claimable_on(self, date: Date, today: Date) -> bool {
        today <= self.claim_deadline(date)
    }

    /// The last day a gift can have been received on for its claim deadline to fall on or
    /// before `deadline`: every gift received on or before it has passed its limit by then,
    /// every later one has not. (Deadlines are year ends: the last one on or before
    /// `deadline`, 4 years back.)
    pub fn last_received_with_deadline_by(self, deadline: Date) -> Date {
        let year = if self.on(deadline.year()) <= deadline {
            deadline.year()
        } else {
            deadline.year() - 1
        };
        self.on(year - CLAIM_WITHIN_YEARS)
    }

    fn on(self, year: i32) -> Date {
        Date::from_calendar_date(year, self.month, self.day).expect("checked when parsed")
    }
}

impl std::fmt::Display for YearEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02}-{:02}", u8::from(self.month), self.day)
    }
}

/// The UK tax year a date falls in, by the year it starts: 6 April 2026 to 5 April 2027 is
/// 2026 (`2026-27`).
pub fn tax_year(date: Date) -> i32 {
    let start = Date::from_calendar_date(date.year(), Month::April, 6).expect("6 April exists");
    if date >= start {
        date.year()
    } else {
        date.year() - 1
    }
}

/// The first and last day of tax year `year` (`2026` is 6 April 2026 to 5 April 2027).
pub fn tax_year_days(year: i32) -> Option<(Date, Date)> {
    Some((
        Date::from_calendar_date(year, Month::April, 6).ok()?,
        Date::from_calendar_date(year + 1, Month::April, 5).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn a_year_end_is_a_day_every_year_has() {
        assert_eq!(
            YearEnd::parse("03-31"),
            Some(YearEnd {
                month: Month::March,
                day: 31
            })
        );
        assert_eq!(YearEnd::parse("12-31").unwrap().to_string(), "12-31");
        for refused in ["02-29", "13-01", "04-31", "3/31", "", "00-10", "03-00"] {
            assert_eq!(YearEnd::parse(refused), None, "{refused}");
        }
    }

    #[test]
    fn a_gift_is_claimable_until_4_years_after_its_accounting_period_ends() {
        let march = YearEnd::parse("03-31").unwrap();
        assert_eq!(
            march.period_end(date!(2026 - 03 - 31)),
            date!(2026 - 03 - 31)
        );
        assert_eq!(
            march.period_end(date!(2026 - 04 - 01)),
            date!(2027 - 03 - 31)
        );
        assert_eq!(
            march.period_end(date!(2026 - 12 - 07)),
            date!(2027 - 03 - 31)
        );
        assert_eq!(
            march.claim_deadline(date!(2022 - 04 - 01)),
            date!(2027 - 03 - 31)
        );
        assert_eq!(
            march.claim_deadline(date!(2022 - 03 - 31)),
            date!(2026 - 03 - 31)
        );
        // At the edge: the deadline day itself still claims; the day after does not.
        let gift = date!(2022 - 04 - 01);
        assert!(march.claimable_on(gift, date!(2027 - 03 - 31)));
        assert!(!march.claimable_on(gift, date!(2027 - 04 - 01)));
        assert!(!march.claimable_on(date!(2022 - 03 - 31), date!(2026 - 04 - 01)));
        let december = YearEnd::parse("12-31").unwrap();
        assert_eq!(
            december.period_end(date!(2026 - 01 - 01)),
            date!(2026 - 12 - 31)
        );
        assert_eq!(
            december.claim_deadline(date!(2026 - 12 - 31)),
            date!(2030 - 12 - 31)
        );
    }

    #[test]
    fn the_last_gift_past_its_limit_by_a_day_is_found_from_the_year_ends() {
        for year_end in ["03-31", "12-31", "09-30", "02-28"] {
            let year_end = YearEnd::parse(year_end).unwrap();
            let mut deadline = date!(2026 - 01 - 01);
            while deadline < date!(2028 - 01 - 01) {
                let last = year_end.last_received_with_deadline_by(deadline);
                assert!(
                    year_end.claim_deadline(last) <= deadline,
                    "{year_end} {deadline}: {last} is not past its limit"
                );
                assert!(
                    year_end.claim_deadline(last.next_day().unwrap()) > deadline,
                    "{year_end} {deadline}: the day after {last} is past its limit too"
                );
                deadline = deadline.next_day().unwrap();
            }
        }
        let march = YearEnd::parse("03-31").unwrap();
        assert_eq!(
            march.last_received_with_deadline_by(date!(2026 - 03 - 31)),
            date!(2022 - 03 - 31)
        );
        assert_eq!(
            march.last_received_with_deadline_by(date!(2026 - 03 - 30)),
            date!(2021 - 03 - 31)
        );
    }

    #[test]
    fn tax_years_run_from_6_april_to_5_april() {
        assert_eq!(tax_year(date!(2026 - 04 - 05)), 2025);
        assert_eq!(tax_year(date!(2026 - 04 - 06)), 2026);
        assert_eq!(tax_year(date!(2027 - 04 - 05)), 2026);
        assert_eq!(
            tax_year_days(2026),
            Some((date!(2026 - 04 - 06), date!(2027 - 04 - 05)))
        );
    }
}
