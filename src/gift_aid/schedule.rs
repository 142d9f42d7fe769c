//! HMRC's Gift Aid schedule, as pure functions: eligible gifts in, the schedule's lines out,
//! each cell written as HMRC asks.
//!
//! Source: gov.uk, "Schedule spreadsheet to claim back tax on Gift Aid donations" (HMRC
//! guidance, updated 28 November 2025; the change that day added guidance for non-UK resident
//! donors). What it asks of each line, and how each rule is kept here:
//! - title, at most 4 characters ([`title`]);
//! - first name (or initial) and last name, at most 35 characters each; a double-barrelled
//!   surname with a space instead of the hyphen ([`first_name`], [`last_name`]);
//! - house name or number ([`house`]; the schedule's cell takes 40 characters);
//! - postcode in capitals with a space, e.g. `S19 2BD` ([`postcode`]); a donor living outside
//!   the UK gets `X` in the postcode cell and their address in the house cell (the schedule's
//!   own notes; HMRC's earlier page, hmrc.gov.uk/charities/online/giftaid-spreadsheet.htm, said
//!   the same, and so do tools built on the schedule);
//! - aggregated donations: "multiple donations under £30 grouped together" (2025 wording; it
//!   used to be £20 or less), no donor details on such a line, and "the total donation on one
//!   line" not more than £1,000 (the same page; [`lines`]);
//! - sponsored event: left blank ("if a field does not apply, leave it blank");
//! - donation date `DD/MM/YY`, the latest date for a series of donations ([`date`]);
//! - amount without `£` and with 2 decimal places, `200.00` not `£200` ([`amount`]).
//!
//! A schedule holds at most 1,000 lines ([`MAX_LINES`]); more make further parts, each its own
//! claim.

use serde::Serialize;
use time::Date;
use time::macros::format_description;
use uuid::Uuid;

use super::address::{is_uk, normalise_uk_postcode};

/// Lines in one schedule, so in one claim.
pub const MAX_LINES: usize = 1000;
/// Gifts under this many pence (£30) are aggregated.
pub const AGGREGATE_BELOW: i64 = 3000;
/// An aggregated line adds up to at most this many pence (£1,000).
pub const AGGREGATED_LINE_MAX: i64 = 100_000;

const TITLE_MAX: usize = 4;
const NAME_MAX: usize = 35;
const HOUSE_MAX: usize = 40;
const DESCRIPTION_MAX: usize = 35;

/// The schedule's columns, in HMRC's order and words.
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

/// The donor as their declaration has them.
#[derive(Clone, Default)]
pub struct Declared {
    pub title: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub house_name_or_number: String,
    pub postcode: Option<String>,
    pub country: String,
}

/// Donor data stays out of logs.
impl std::fmt::Debug for Declared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Declared { .. }")
    }
}

/// An eligible donation: its gift (never the fee cover), in pence, on its UK date, and the
/// declaration that covers it.
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

    fn single(gift: &Gift) -> Self {
        let donor = &gift.donor;
        Self {
            title: title(donor.title.as_deref()),
            first_name: first_name(&donor.first_name),
            last_name: last_name(&donor.last_name),
            house_name_or_number: house(donor),
            postcode: postcode(donor),
            aggregated_donations: String::new(),
            sponsored_event: String::new(),
            date: gift.date,
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
            amount: gifts.iter().map(|g| g.amount).sum(),
            donations: gifts.iter().map(|g| (g.donation_id, g.amount)).collect(),
        }
    }
}

/// The schedule's lines for `gifts`, given in the order they were made: a line of its own for
/// each gift of £30 or more; gifts under £30 added together, in order, each line filled up to
/// £1,000 and the next gift starting a new one. Lines come in date order (an aggregated line
/// at its latest date), so the oldest gifts are claimed first when there are several parts.
pub fn lines(gifts: &[Gift]) -> Vec<Line> {
    let mut lines = Vec::new();
    let mut group: Vec<&Gift> = Vec::new();
    let mut group_sum = 0;
    for gift in gifts {
        if gift.amount >= AGGREGATE_BELOW {
            lines.push(Line::single(gift));
            continue;
        }
        if group_sum + gift.amount > AGGREGATED_LINE_MAX {
            lines.push(Line::aggregated(&group));
            group.clear();
            group_sum = 0;
        }
        group.push(gift);
        group_sum += gift.amount;
    }
    if !group.is_empty() {
        lines.push(Line::aggregated(&group));
    }
    // Stable: lines of one date keep the order they were made in.
    lines.sort_by_key(|line| line.date);
    lines
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

/// At most 4 characters, as HMRC's examples write them (`Prof`, `Rev`): a trailing full stop
/// dropped, a few long titles shortened the usual way, any other cut to 4.
pub fn title(raw: Option<&str>) -> String {
    let Some(raw) = raw else {
        return String::new();
    };
    let cleaned = tidy(raw);
    let cleaned = cleaned.trim_end_matches('.');
    let short = match cleaned.to_lowercase().as_str() {
        "professor" => "Prof",
        "reverend" | "the reverend" | "revd" => "Rev",
        "doctor" => "Dr",
        "captain" => "Capt",
        "mister" => "Mr",
        "father" => "Fr",
        "sister" => "Sr",
        _ => cleaned,
    };
    cut(short, TITLE_MAX)
}

/// At most 35 characters.
pub fn first_name(raw: &str) -> String {
    cut(&tidy(raw), NAME_MAX)
}

/// At most 35 characters; a double-barrelled surname with a space, not a hyphen
/// (`Smith-Jones` is `Smith Jones`).
pub fn last_name(raw: &str) -> String {
    let spaced: String = raw
        .chars()
        .map(|c| if is_hyphen(c) { ' ' } else { c })
        .collect();
    cut(&tidy(&spaced), NAME_MAX)
}

fn is_hyphen(c: char) -> bool {
    matches!(
        c,
        '-' | '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}'
    )
}

/// The house name or number, at most 40 characters. For a donor outside the UK, their address
/// as far as we have it (house, postcode, country) when it fits, else the house alone.
pub fn house(donor: &Declared) -> String {
    let house = tidy(&donor.house_name_or_number);
    if is_uk(&donor.country) {
        return cut(&house, HOUSE_MAX);
    }
    let address = [
        house.clone(),
        donor.postcode.as_deref().map(tidy).unwrap_or_default(),
        tidy(&donor.country),
    ]
    .into_iter()
    .filter(|part| !part.is_empty())
    .collect::<Vec<_>>()
    .join(", ");
    if address.chars().count() <= HOUSE_MAX {
        address
    } else {
        cut(&house, HOUSE_MAX)
    }
}

/// In capitals with one space (`S19 2BD`); `X` for a donor outside the UK.
pub fn postcode(donor: &Declared) -> String {
    if !is_uk(&donor.country) {
        return "X".to_owned();
    }
    let raw = donor.postcode.as_deref().unwrap_or("");
    normalise_uk_postcode(raw).unwrap_or_else(|| tidy(raw).to_uppercase())
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
    cut(&format!("Gifts under £30 {dates}"), DESCRIPTION_MAX)
}

/// Trimmed, with every run of whitespace one space: HMRC asks for no spaces at either end of a
/// cell.
fn tidy(raw: &str) -> String {
    raw.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` characters, never ending in a space.
fn cut(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .collect::<String>()
        .trim_end()
        .to_owned()
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

    #[test]
    fn titles_longer_than_4_characters_are_shortened() {
        assert_eq!(title(Some("Professor")), "Prof");
        assert_eq!(title(Some("Reverend")), "Rev");
        assert_eq!(title(Some("Brigadier")), "Brig");
        assert_eq!(title(Some(" Mrs. ")), "Mrs");
        assert_eq!(title(Some("Dr")), "Dr");
        assert_eq!(title(None), "");
        assert!(title(Some("Lieutenant-Colonel")).chars().count() <= 4);
    }

    #[test]
    fn names_are_cut_to_35_characters() {
        let long = "Bartholomew Maximilian Fitzgerald-Smythe";
        assert_eq!(first_name(long), "Bartholomew Maximilian Fitzgerald-S");
        assert_eq!(first_name(long).chars().count(), 35);
        // Cut at a character, not a byte; never ending on the space the cut lands after.
        let accented = "Zoë ".repeat(12);
        assert_eq!(first_name(&accented).chars().count(), 35);
        assert_eq!(first_name("  Amina  "), "Amina");
        let surname = "Featherstonehaugh-Cholmondeley-Ffoulkes";
        assert_eq!(last_name(surname), "Featherstonehaugh Cholmondeley Ffou");
        assert_eq!(last_name("A".repeat(34).as_str()).len(), 34);
        assert_eq!(last_name(&"B".repeat(36)), "B".repeat(35));
    }

    #[test]
    fn a_double_barrelled_surname_has_a_space_not_a_hyphen() {
        assert_eq!(last_name("Smith-Jones"), "Smith Jones");
        assert_eq!(last_name("Smith - Jones"), "Smith Jones");
        assert_eq!(last_name("Smith\u{2013}Jones"), "Smith Jones");
        assert_eq!(first_name("Mary-Jane"), "Mary-Jane", "only the surname");
    }

    #[test]
    fn uk_postcodes_are_in_capitals_with_one_space() {
        let with = |postcode: &str| {
            postcode_of(Declared {
                postcode: Some(postcode.into()),
                ..donor()
            })
        };
        assert_eq!(with("s192bd"), "S19 2BD");
        assert_eq!(with("sw1a1aa"), "SW1A 1AA");
        assert_eq!(with(" m1   1ae "), "M1 1AE");
        assert_eq!(with("S19 2BD"), "S19 2BD");
    }

    fn postcode_of(donor: Declared) -> String {
        postcode(&donor)
    }

    #[test]
    fn a_donor_outside_the_uk_has_x_for_a_postcode_and_their_address_in_the_house_cell() {
        let french = Declared {
            house_name_or_number: "12 Rue de Rivoli".into(),
            postcode: Some("75001".into()),
            country: "France".into(),
            ..donor()
        };
        assert_eq!(postcode(&french), "X");
        assert_eq!(house(&french), "12 Rue de Rivoli, 75001, France");

        let long = Declared {
            house_name_or_number: "Apartment 4, 1600 Pennsylvania Avenue NW".into(),
            postcode: Some("20500".into()),
            country: "United States".into(),
            ..donor()
        };
        assert_eq!(house(&long), "Apartment 4, 1600 Pennsylvania Avenue NW");
        assert_eq!(postcode(&long), "X");

        assert_eq!(house(&donor()), "10", "a UK donor's house alone");
        assert_eq!(postcode(&donor()), "S19 2BD");
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
    fn gifts_of_30_pounds_or_more_have_lines_of_their_own_and_smaller_ones_are_aggregated() {
        let day = date!(2026 - 11 - 20);
        let gifts = [gift(3000, day), gift(2999, day), gift(2000, day)];
        let lines = lines(&gifts);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let single = &lines[0];
        assert_eq!(single.amount, 3000);
        assert_eq!(single.donation_ids(), [gifts[0].donation_id]);
        assert_eq!(
            single.cells(),
            [
                "Ms", "Amina", "Khan", "10", "S19 2BD", "", "", "20/11/26", "30.00"
            ]
            .map(String::from)
        );
        let aggregated = &lines[1];
        assert_eq!(aggregated.amount, 4999);
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
                "Gifts under £30 20/11/26",
                "",
                "20/11/26",
                "49.99"
            ]
            .map(String::from)
        );
    }

    #[test]
    fn an_aggregated_line_is_dated_by_its_latest_gift() {
        let gifts = [
            gift(1000, date!(2026 - 11 - 01)),
            gift(1000, date!(2026 - 11 - 15)),
        ];
        let lines = lines(&gifts);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].date, date!(2026 - 11 - 15));
        assert_eq!(
            lines[0].aggregated_donations,
            "Gifts under £30 01/11/26-15/11/26"
        );
        assert!(lines[0].aggregated_donations.chars().count() <= 35);
    }

    #[test]
    fn an_aggregated_line_holds_1000_pounds_at_most_and_the_next_gift_starts_a_new_one() {
        let day = date!(2026 - 11 - 20);
        // 40 gifts of £25 make exactly £1,000: one line.
        let mut gifts: Vec<Gift> = (0..40).map(|_| gift(2500, day)).collect();
        let exactly = lines(&gifts);
        assert_eq!(exactly.len(), 1);
        assert_eq!(exactly[0].amount, 100_000);
        assert_eq!(exactly[0].cells()[8], "1000.00");

        // A penny more rolls over to a second line.
        gifts.push(gift(1, day));
        let over = lines(&gifts);
        assert_eq!(
            over.iter().map(|l| l.amount).collect::<Vec<_>>(),
            [100_000, 1]
        );
        assert_eq!(over[1].donation_ids(), [gifts[40].donation_id]);
        assert!(over.iter().all(|l| l.amount <= AGGREGATED_LINE_MAX));
    }

    #[test]
    fn lines_come_in_date_order() {
        // The small gift's line is only complete after the larger, later gift's: it still
        // comes first, at its own date.
        let gifts = [
            gift(500, date!(2026 - 11 - 01)),
            gift(5000, date!(2026 - 11 - 02)),
        ];
        let lines = lines(&gifts);
        assert_eq!(
            lines.iter().map(|l| (l.date, l.amount)).collect::<Vec<_>>(),
            [(date!(2026 - 11 - 01), 500), (date!(2026 - 11 - 02), 5000)]
        );
    }

    #[test]
    fn parts_hold_1000_lines_each() {
        let day = date!(2026 - 11 - 20);
        let gifts: Vec<Gift> = (0..2001).map(|_| gift(3000, day)).collect();
        let lines = lines(&gifts);
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
        let lines = lines(&[gift(5000, date!(2026 - 11 - 20))]);
        let debug = format!("{lines:?} {:?}", donor());
        assert!(
            !debug.contains("Amina") && !debug.contains("S19"),
            "{debug}"
        );
    }
}
