//! HMRC's Gift Aid schedule, as pure functions: eligible gifts in, the schedule's lines out,
//! each cell written as HMRC's checks take it ([`super::donor`] for the donor's cells).
//!
//! Sources: HMRC's claims validation service (`hmrc/charities-claims-validation`, 2025,
//! `GiftAidValidationService.scala`) for each cell's rule; gov.uk, "Schedule spreadsheet to
//! claim back tax on Gift Aid donations" (updated 28 November 2025) for aggregation.
//! - item numbers from 1 to 1,000: a schedule holds at most 1,000 lines ([`MAX_LINES`]); more
//!   make further parts, each its own claim and its own workbook;
//! - donation date `DD/MM/YY`, the latest date for a series of donations ([`date`]), never in
//!   the future;
//! - amount without `£`, exactly 2 decimal places, at least `0.01` ([`amount`]);
//! - aggregated donations: optional, and off unless `GIFT_AID_AGGREGATE_UP_TO` is set (an
//!   online gift always has its donor, and a line of its own loses nothing); an aggregated
//!   line has a description of at most 35 characters, no donor cells and no sponsored flag,
//!   adds up to at most £1,000, and never mixes gifts of two accounting periods ([`lines`]);
//! - sponsored event: left blank (these are not sponsorship).

use serde::Serialize;
use time::Date;
use time::macros::format_description;
use uuid::Uuid;

use super::donor::{Cells, Declared};
use super::periods::YearEnd;

/// Lines in one schedule, so in one claim.
pub const MAX_LINES: usize = 1000;
/// An aggregated line adds up to at most this many pence (£1,000).
pub const AGGREGATED_LINE_MAX: i64 = 100_000;
/// The most `GIFT_AID_AGGREGATE_UP_TO` may be: gifts of £20 or less (HMRC's schedule
/// guidance, and its template's own notes, say £20; gov.uk's 2025 page says under £30: the
/// narrower reading is the one both allow).
pub const AGGREGATE_UP_TO_MAX: i64 = 2000;

const DESCRIPTION_MAX: usize = 35;

/// The schedule's columns after the item number, in HMRC's order and words.
pub const COLUMNS: [&str; 9] = [
    "Title",
    "First name or initial",
    "Last name",
    "House name or number",
    "Postcode",
    "Aggregated donations",
    "Sponsored event",
    "Donation date",
    "Amount",
];

/// How the schedule is made: whether small gifts are aggregated, and the accounting year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Making {
    /// Gifts of at most this many pence are added together; `None`: every gift has its line.
    pub aggregate_up_to: Option<i64>,
    pub year_end: YearEnd,
}

/// An eligible donation: what of its gift is claimed (never the fee cover), in pence, on its UK
/// date, and the declaration that covers it.
#[derive(Debug, Clone)]
pub struct Gift {
    pub donation_id: Uuid,
    pub amount: i64,
    pub date: Date,
    pub donor: Declared,
}

/// One line of the schedule: its cells, and the donations it claims.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub title: String,
    pub first_name: String,
    pub last_name: String,
    pub house_name_or_number: String,
    pub postcode: String,
    pub aggregated_donations: String,
    pub sponsored_event: String,
    #[serde(skip)]
    pub date: Date,
    /// The earliest gift on the line (its only one, unless aggregated).
    #[serde(skip)]
    pub earliest: Date,
    /// Pence.
    #[serde(skip)]
    pub amount: i64,
    /// The donations the line claims, each with its gift in pence.
    #[serde(skip)]
    pub donations: Vec<(Uuid, i64)>,
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Line")
            .field("date", &self.date)
            .field("amount", &self.amount)
            .field("donations", &self.donations)
            .finish_non_exhaustive()
    }
}

/// A gift the schedule cannot write as HMRC reads it (a declaration taken before the form
/// checked names and addresses as HMRC does): held back, and named, until it is corrected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[schema(as = GiftAidHeldBack)]
pub struct HeldBack {
    pub donation_id: Uuid,
    /// What cannot be written: `name` or `address`.
    pub reason: &'static str,
}

/// The schedule: its lines in date order, and the gifts held back.
#[derive(Debug, Default)]
pub struct Schedule {
    pub lines: Vec<Line>,
    pub held_back: Vec<HeldBack>,
}

impl Line {
    pub fn donation_ids(&self) -> Vec<Uuid> {
        self.donations.iter().map(|(id, _)| *id).collect()
    }

    /// The line's cells, in [`COLUMNS`] order, as HMRC wants them written.
    pub fn cells(&self) -> [String; 9] {
        [
            self.title.clone(),
            self.first_name.clone(),
            self.last_name.clone(),
            self.house_name_or_number.clone(),
            self.postcode.clone(),
            self.aggregated_donations.clone(),
            self.sponsored_event.clone(),
            date(self.date),
            amount(self.amount),
        ]
    }

    fn single(gift: &Gift, donor: Cells) -> Self {
        Self {
            title: donor.title,
            first_name: donor.first_name,
            last_name: donor.last_name,
            house_name_or_number: donor.house_name_or_number,
            postcode: donor.postcode,
            aggregated_donations: String::new(),
            sponsored_event: String::new(),
            date: gift.date,
            earliest: gift.date,
            amount: gift.amount,
            donations: vec![(gift.donation_id, gift.amount)],
        }
    }

    /// Small gifts added together: no donor details, a description, the latest date, the sum.
    fn aggregated(gifts: &[&Gift]) -> Self {
        let first = gifts
            .iter()
            .map(|g| g.date)
            .min()
            .expect("a group has a gift");
        let last = gifts
            .iter()
            .map(|g| g.date)
            .max()
            .expect("a group has a gift");
        Self {
            title: String::new(),
            first_name: String::new(),
            last_name: String::new(),
            house_name_or_number: String::new(),
            postcode: String::new(),
            aggregated_donations: description(first, last),
            sponsored_event: String::new(),
            date: last,
            earliest: first,
            amount: gifts.iter().map(|g| g.amount).sum(),
            donations: gifts.iter().map(|g| (g.donation_id, g.amount)).collect(),
        }
    }
}

/// The schedule for `gifts`, given in the order they were made. By default each gift has a
/// line of its own with its donor. With `aggregate_up_to` set, gifts of at most that much are
/// added together, in order, per accounting period, each line filled up to £1,000 and the next
/// gift starting a new one. Lines come in date order (an aggregated line at its latest date),
/// so the oldest gifts are claimed first when there are several parts. A gift whose donor
/// cannot be written as HMRC reads it is held back, never written as a row HMRC refuses.
pub fn lines(gifts: &[Gift], making: &Making) -> Schedule {
    let mut schedule = Schedule::default();
    // Open groups of small gifts, one per accounting period (by its end), each with its sum.
    let mut groups: Vec<(Date, Vec<&Gift>, i64)> = Vec::new();
    for gift in gifts {
        if making
            .aggregate_up_to
            .is_some_and(|up_to| gift.amount <= up_to)
        {
            let period = making.year_end.period_end(gift.date);
            let at = match groups.iter().position(|(p, ..)| *p == period) {
                Some(at) => at,
                None => {
                    groups.push((period, Vec::new(), 0));
                    groups.len() - 1
                }
            };
            let (_, group, sum) = &mut groups[at];
            if *sum + gift.amount > AGGREGATED_LINE_MAX {
                schedule.lines.push(Line::aggregated(group));
                group.clear();
                *sum = 0;
            }
            group.push(gift);
            *sum += gift.amount;
            continue;
        }
        match gift.donor.cells() {
            Ok(donor) => schedule.lines.push(Line::single(gift, donor)),
            Err(reason) => schedule.held_back.push(HeldBack {
                donation_id: gift.donation_id,
                reason,
            }),
        }
    }
    for (_, group, _) in &groups {
        if !group.is_empty() {
            schedule.lines.push(Line::aggregated(group));
        }
    }
    // Stable: lines of one date keep the order they were made in.
    schedule.lines.sort_by_key(|line| line.date);
    schedule
}

/// The earliest donation date of `lines` (HMRC's box 1, cell D13): for an aggregated line, its
/// earliest gift, which may be earlier than any date in the donation date column.
pub fn earliest(lines: &[Line]) -> Option<Date> {
    lines.iter().map(|line| line.earliest).min()
}

/// How many parts of at most [`MAX_LINES`] lines `lines` make (one, even when empty).
pub fn part_count(lines: usize) -> usize {
    lines.div_ceil(MAX_LINES).max(1)
}

/// The lines of part `part` (from 1).
pub fn part(lines: &[Line], part: usize) -> &[Line] {
    let start = (part.saturating_sub(1) * MAX_LINES).min(lines.len());
    let end = (start + MAX_LINES).min(lines.len());
    &lines[start..end]
}

/// `DD/MM/YY`.
pub fn date(date: Date) -> String {
    date.format(format_description!("[day]/[month]/[year repr:last_two]"))
        .expect("a date formats")
}

/// Pounds with 2 decimal places and no `£`: 2500 pence is `25.00`.
pub fn amount(pence: i64) -> String {
    let sign = if pence < 0 { "-" } else { "" };
    let pence = pence.unsigned_abs();
    format!("{sign}{}.{:02}", pence / 100, pence % 100)
}

/// What an aggregated line says it is: at most 35 characters, as the schedule asks.
fn description(first: Date, last: Date) -> String {
    let dates = if first == last {
        date(last)
    } else {
        format!("{}-{}", date(first), date(last))
    };
    let text = format!("Small gifts {dates}");
    debug_assert!(text.chars().count() <= DESCRIPTION_MAX);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn donor() -> Declared {
        Declared {
            title: Some("Ms".into()),
            first_name: "Amina".into(),
            last_name: "Khan".into(),
            house_name_or_number: "10".into(),
            postcode: Some("S19 2BD".into()),
            country: "GB".into(),
        }
    }

    fn gift(amount: i64, day: Date) -> Gift {
        Gift {
            donation_id: Uuid::now_v7(),
            amount,
            date: day,
            donor: donor(),
        }
    }

    fn single_lines() -> Making {
        Making {
            aggregate_up_to: None,
            year_end: YearEnd::parse("03-31").unwrap(),
        }
    }

    fn aggregating(up_to: i64) -> Making {
        Making {
            aggregate_up_to: Some(up_to),
            ..single_lines()
        }
    }

    #[test]
    fn dates_are_dd_mm_yy() {
        assert_eq!(date(date!(2026 - 11 - 05)), "05/11/26");
        assert_eq!(date(date!(2030 - 01 - 31)), "31/01/30");
    }

    #[test]
    fn amounts_have_two_decimals_and_no_pound_sign() {
        assert_eq!(amount(2500), "25.00");
        assert_eq!(amount(2505), "25.05");
        assert_eq!(amount(5), "0.05");
        assert_eq!(amount(100_000), "1000.00");
        assert_eq!(amount(123_456_789), "1234567.89");
    }

    #[test]
    fn by_default_every_gift_has_a_line_of_its_own_with_its_donor() {
        let day = date!(2026 - 11 - 20);
        let gifts = [gift(300, day), gift(2000, day), gift(5000, day)];
        let schedule = lines(&gifts, &single_lines());
        assert_eq!(schedule.lines.len(), 3);
        assert!(schedule.held_back.is_empty());
        assert_eq!(
            schedule.lines[0].cells(),
            [
                "Ms", "Amina", "Khan", "10", "S19 2BD", "", "", "20/11/26", "3.00"
            ]
            .map(String::from)
        );
        assert!(
            schedule
                .lines
                .iter()
                .all(|l| l.aggregated_donations.is_empty())
        );
    }

    #[test]
    fn with_aggregation_small_gifts_are_added_together_without_donor_details() {
        let day = date!(2026 - 11 - 20);
        let gifts = [
            gift(3000, day),
            gift(2000, day),
            gift(1999, day),
            gift(2001, day),
        ];
        let schedule = lines(&gifts, &aggregating(2000));
        assert_eq!(schedule.lines.len(), 3, "{:?}", schedule.lines);
        let aggregated = schedule
            .lines
            .iter()
            .find(|l| !l.aggregated_donations.is_empty())
            .unwrap();
        assert_eq!(aggregated.amount, 3999);
        assert_eq!(
            aggregated.donation_ids(),
            [gifts[1].donation_id, gifts[2].donation_id]
        );
        assert_eq!(
            aggregated.cells(),
            [
                "",
                "",
                "",
                "",
                "",
                "Small gifts 20/11/26",
                "",
                "20/11/26",
                "39.99"
            ]
            .map(String::from)
        );
    }

    #[test]
    fn an_aggregated_line_is_dated_by_its_latest_gift_and_box_1_by_its_earliest() {
        let gifts = [
            gift(1000, date!(2026 - 11 - 01)),
            gift(1000, date!(2026 - 11 - 15)),
            gift(5000, date!(2026 - 11 - 10)),
        ];
        let schedule = lines(&gifts, &aggregating(2000));
        let aggregated = &schedule.lines[1];
        assert_eq!(aggregated.date, date!(2026 - 11 - 15));
        assert_eq!(
            aggregated.aggregated_donations,
            "Small gifts 01/11/26-15/11/26"
        );
        assert!(aggregated.aggregated_donations.chars().count() <= 35);
        // Box 1 is the earliest gift, earlier than any date in the donation date column.
        assert_eq!(earliest(&schedule.lines), Some(date!(2026 - 11 - 01)));
        assert!(
            schedule
                .lines
                .iter()
                .all(|l| l.date > date!(2026 - 11 - 01))
        );
    }

    #[test]
    fn an_aggregated_line_never_mixes_accounting_periods() {
        // The year ends on 31 March: the 31 March and 1 April gifts are in different periods.
        let gifts = [
            gift(1000, date!(2026 - 03 - 30)),
            gift(1000, date!(2026 - 04 - 01)),
            gift(1000, date!(2026 - 03 - 31)),
        ];
        let schedule = lines(&gifts, &aggregating(2000));
        let sums: Vec<_> = schedule.lines.iter().map(|l| (l.date, l.amount)).collect();
        assert_eq!(
            sums,
            [(date!(2026 - 03 - 31), 2000), (date!(2026 - 04 - 01), 1000)]
        );
        assert_eq!(
            schedule.lines[0].donation_ids(),
            [gifts[0].donation_id, gifts[2].donation_id]
        );
    }

    #[test]
    fn an_aggregated_line_holds_1000_pounds_at_most_and_the_next_gift_starts_a_new_one() {
        let day = date!(2026 - 11 - 20);
        // 50 gifts of £20 make exactly £1,000: one line.
        let mut gifts: Vec<Gift> = (0..50).map(|_| gift(2000, day)).collect();
        let exactly = lines(&gifts, &aggregating(2000)).lines;
        assert_eq!(exactly.len(), 1);
        assert_eq!(exactly[0].amount, 100_000);
        assert_eq!(exactly[0].cells()[8], "1000.00");

        // A penny more rolls over to a second line.
        gifts.push(gift(1, day));
        let over = lines(&gifts, &aggregating(2000)).lines;
        assert_eq!(
            over.iter().map(|l| l.amount).collect::<Vec<_>>(),
            [100_000, 1]
        );
        assert_eq!(over[1].donation_ids(), [gifts[50].donation_id]);
        assert!(over.iter().all(|l| l.amount <= AGGREGATED_LINE_MAX));
    }

    #[test]
    fn lines_come_in_date_order() {
        let gifts = [
            gift(500, date!(2026 - 11 - 01)),
            gift(5000, date!(2026 - 11 - 02)),
        ];
        let schedule = lines(&gifts, &aggregating(2000));
        assert_eq!(
            schedule
                .lines
                .iter()
                .map(|l| (l.date, l.amount))
                .collect::<Vec<_>>(),
            [(date!(2026 - 11 - 01), 500), (date!(2026 - 11 - 02), 5000)]
        );
    }

    #[test]
    fn a_donor_hmrc_cannot_read_is_held_back_never_written() {
        let mut arabic = gift(5000, date!(2026 - 11 - 20));
        arabic.donor.first_name = "محمد".into();
        let mut no_postcode = gift(5000, date!(2026 - 11 - 20));
        no_postcode.donor.postcode = Some("nowhere".into());
        let fine = gift(5000, date!(2026 - 11 - 21));
        let schedule = lines(
            &[arabic.clone(), no_postcode.clone(), fine.clone()],
            &single_lines(),
        );
        assert_eq!(schedule.lines.len(), 1);
        assert_eq!(schedule.lines[0].donation_ids(), [fine.donation_id]);
        assert_eq!(
            schedule.held_back,
            [
                HeldBack {
                    donation_id: arabic.donation_id,
                    reason: "name"
                },
                HeldBack {
                    donation_id: no_postcode.donation_id,
                    reason: "address"
                },
            ]
        );
    }

    #[test]
    fn parts_hold_1000_lines_each() {
        let day = date!(2026 - 11 - 20);
        let gifts: Vec<Gift> = (0..2001).map(|_| gift(3000, day)).collect();
        let lines = lines(&gifts, &single_lines()).lines;
        assert_eq!(part_count(lines.len()), 3);
        assert_eq!(part(&lines, 1).len(), 1000);
        assert_eq!(part(&lines, 2).len(), 1000);
        assert_eq!(part(&lines, 3).len(), 1);
        assert_eq!(part(&lines, 3)[0].donation_ids(), [gifts[2000].donation_id]);
        assert!(part(&lines, 4).is_empty());
        assert_eq!(part_count(0), 1);
        assert_eq!(part_count(1000), 1);
        assert_eq!(part_count(1001), 2);
    }

    #[test]
    fn donor_data_never_shows_in_debug_output() {
        let schedule = lines(&[gift(5000, date!(2026 - 11 - 20))], &single_lines());
        let debug = format!("{schedule:?}");
        assert!(
            !debug.contains("Amina") && !debug.contains("S19"),
            "{debug}"
        );
    }
}
