//! HMRC's own checks of an uploaded Gift Aid schedule (ODS), written again here, independently
//! of `src/`, so that a workbook the service makes can be held to the rules HMRC applies when
//! a charity uploads it. The rules are those of HMRC's open-source validation service
//! (`hmrc/charities-claims-validation`: `GiftAidValidationService.scala`,
//! `CommonFileValidation.scala`, `DocumentRow.scala`, `OdsReaderService.scala`); the tests
//! run them on HMRC's own example workbooks, copied into `tests/fixtures/hmrc/` (Apache 2.0,
//! see the README and LICENSE there).
//!
//! [`check`] returns every problem found, each naming its cell or row; [`cell`] and [`rows`]
//! read a workbook's content the same way, for tests that compare it.

use std::io::Cursor;

use calamine::{Data, Ods, Range, Reader, open_workbook_from_rs};
use time::{Date, Month};

/// What the first sheet's name starts with in HMRC's Gift Aid template.
const SHEET_PREFIX: &str = "R68GAD_V1_00_0";
/// D13, 0-based (row, column): the earliest donation date.
const EARLIEST_DATE: (usize, usize) = (12, 3);
/// D17, 0-based: the amount overclaimed in earlier claims.
const OVERCLAIMED: (usize, usize) = (16, 3);
/// The donation rows, 0-based: sheet rows 25 to 1025.
const DONATION_ROWS: std::ops::RangeInclusive<usize> = 24..=1024;
/// The donation columns, 0-based: B to K.
const FIRST_COLUMN: usize = 1;
/// Column K, 0-based: the amount.
const AMOUNT_COLUMN: usize = 10;
/// The most an aggregated line may be, in pence: 1000.00.
const MOST_AGGREGATED: i64 = 100_000;
/// The most any amount may be, in pence: 9999999999999.99.
const MOST_AMOUNT: i64 = 999_999_999_999_999;

// Positions in a donation row (columns B..K).
const ITEM: usize = 0;
const TITLE: usize = 1;
const FIRST_NAME: usize = 2;
const LAST_NAME: usize = 3;
const HOUSE: usize = 4;
const POSTCODE: usize = 5;
const AGGREGATED: usize = 6;
const SPONSORED: usize = 7;
const DATE: usize = 8;
const AMOUNT: usize = 9;

/// Every problem HMRC's checks find in the Gift Aid schedule `ods`, taking `today` as the
/// latest date a donation may have; empty when HMRC would accept it.
pub fn check(ods: &[u8], today: Date) -> Vec<String> {
    let (name, range) = match first_sheet(ods) {
        Ok(sheet) => sheet,
        Err(problem) => return vec![problem],
    };
    if !java_trim(&name).starts_with(SHEET_PREFIX) {
        return vec![format!(
            "sheet: the first sheet is named {name:?}, not {SHEET_PREFIX}... as in HMRC's template"
        )];
    }
    let rows = donation_rows(&range);
    if rows.is_empty() {
        return vec!["no donation rows: enter details for at least one Gift Aid donation".into()];
    }

    let mut errors = Vec::new();
    check_earliest_date(&text_at(&range, EARLIEST_DATE), &mut errors);
    check_overclaimed(&text_at(&range, OVERCLAIMED), &mut errors);
    for (row, cells) in &rows {
        check_row(*row, cells, today, &mut errors);
    }
    errors
}

/// The text of one cell of the first sheet (`"D13"`, `"K25"`), trimmed, read the way
/// [`check`] reads it.
pub fn cell(ods: &[u8], cell: &str) -> String {
    let (_, range) = first_sheet(ods).unwrap_or_else(|problem| panic!("{problem}"));
    let position = parse_address(cell).unwrap_or_else(|| panic!("{cell:?} is not a cell address"));
    text_at(&range, position)
}

/// The donation rows of the first sheet that HMRC reads (those with anything in C..K), each as
/// the trimmed text of its cells B..K: item, title, first name, last name, house, postcode,
/// aggregated donations, sponsored event, date, amount.
pub fn rows(ods: &[u8]) -> Vec<[String; 10]> {
    let (_, range) = first_sheet(ods).unwrap_or_else(|problem| panic!("{problem}"));
    donation_rows(&range)
        .into_iter()
        .map(|(_, cells)| cells)
        .collect()
}

fn first_sheet(ods: &[u8]) -> Result<(String, Range<Data>), String> {
    let mut workbook = open_workbook_from_rs::<Ods<_>, _>(Cursor::new(ods))
        .map_err(|e| format!("workbook: not a readable ODS file: {e}"))?;
    let name = workbook
        .sheet_names()
        .into_iter()
        .next()
        .ok_or_else(|| "workbook: it has no sheet".to_string())?;
    let range = workbook
        .worksheet_range(&name)
        .map_err(|e| format!("sheet {name:?}: cannot be read: {e}"))?;
    Ok((name, range))
}

/// The 0-based sheet row of each donation row HMRC reads, with its cells B..K.
fn donation_rows(range: &Range<Data>) -> Vec<(usize, [String; 10])> {
    DONATION_ROWS
        .filter_map(|row| {
            let cells: [String; 10] =
                std::array::from_fn(|i| text_at(range, (row, FIRST_COLUMN + i)));
            // HMRC skips a row whose cells after the item (C..K) are all blank.
            let used = cells[TITLE..].iter().any(|c| !c.is_empty());
            used.then_some((row, cells))
        })
        .collect()
}

/// A cell as text, the way HMRC's reader sees it: money cells (K, D17) are numbers to the
/// penny, whole numbers have no decimals, dates are DD/MM/YYYY; trimmed as HMRC does.
fn text_at(range: &Range<Data>, (row, column): (usize, usize)) -> String {
    let money = column == AMOUNT_COLUMN || (row, column) == OVERCLAIMED;
    let (Ok(r), Ok(c)) = (u32::try_from(row), u32::try_from(column)) else {
        return String::new();
    };
    let text = match range.get_value((r, c)) {
        None | Some(Data::Empty) => String::new(),
        Some(Data::String(s)) => s.clone(),
        Some(Data::Float(f)) => number(*f, money),
        Some(Data::Int(i)) if money => format!("{i}.00"),
        Some(Data::Int(i)) => i.to_string(),
        Some(Data::DateTimeIso(iso)) => iso_date(iso).unwrap_or_else(|| iso.clone()),
        Some(other) => other.to_string(),
    };
    java_trim(&text).to_string()
}

fn number(f: f64, money: bool) -> String {
    if money {
        format!("{f:.2}")
    } else if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
        // Whole and below 1e15: exact as an i64.
        (f as i64).to_string()
    } else {
        f.to_string()
    }
}

/// `2017-11-10` or `2017-11-10T00:00:00` as `10/11/2017`.
fn iso_date(iso: &str) -> Option<String> {
    let b = iso.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let shape = digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && (b.len() == 10 || b[10] == b'T');
    shape.then(|| format!("{}/{}/{}", &iso[8..10], &iso[5..7], &iso[0..4]))
}

/// `"D13"` as 0-based (row 12, column 3).
fn parse_address(address: &str) -> Option<(usize, usize)> {
    let split = address.find(|c: char| c.is_ascii_digit())?;
    let (letters, digits) = address.split_at(split);
    if letters.is_empty() || !letters.chars().all(|c| c.is_ascii_uppercase()) {
        return None;
    }
    let column = letters.bytes().try_fold(0usize, |n, l| {
        n.checked_mul(26)?.checked_add(usize::from(l - b'A' + 1))
    })?;
    let row: usize = digits.parse().ok()?;
    Some((row.checked_sub(1)?, column - 1))
}

fn check_earliest_date(raw: &str, errors: &mut Vec<String>) {
    let input = remove_non_western(raw, false);
    if input.is_empty() {
        errors.push("D13: earliest donation date is missing".into());
    } else if parse_date(&input).is_none() {
        errors.push(format!(
            "D13: earliest donation date {input:?} is not a date as DD/MM/YY or DD/MM/YYYY"
        ));
    }
}

fn check_overclaimed(raw: &str, errors: &mut Vec<String>) {
    let input = remove_non_western(raw, false).replace(',', "");
    if input.is_empty() {
        return;
    }
    let ok =
        parse_decimal(&input).is_some_and(|d| d.scale == 2 && d.digits() <= 15 && d.is_positive());
    if !ok {
        errors.push(format!(
            "D17: previously overclaimed amount {input:?} is not a positive amount with 2 decimals"
        ));
    }
}

fn check_row(row: usize, cells: &[String; 10], today: Date, errors: &mut Vec<String>) {
    let item_text = remove_non_western(&cells[ITEM], false);
    let label = if item_text.is_empty() {
        format!("row {} (no item)", row + 1)
    } else {
        format!("row {} (item {item_text})", row + 1)
    };
    let mut error =
        |field: &str, message: String| errors.push(format!("{label} {field}: {message}"));

    if !is_item(&item_text) {
        error(
            "item",
            format!("{item_text:?} is not a whole number from 1 to 1000"),
        );
    }

    let aggregated = !remove_non_western(&cells[AGGREGATED], false).is_empty();
    if aggregated {
        for (position, field) in [
            (SPONSORED, "sponsored event"),
            (TITLE, "title"),
            (FIRST_NAME, "first name"),
            (LAST_NAME, "last name"),
            (HOUSE, "house"),
            (POSTCODE, "postcode"),
        ] {
            if !java_trim(&cells[position]).is_empty() {
                error(field, "must be blank on an aggregated donation".into());
            }
        }
    }

    if !aggregated {
        let title = remove_non_western(&cells[TITLE], false);
        if !title.is_empty() && !is_title(&title) {
            error("title", format!("{title:?} is not 2 to 4 letters"));
        }
        for (position, field, most) in [
            (FIRST_NAME, "first name", 35),
            (LAST_NAME, "last name", 35),
            (HOUSE, "house", 40),
        ] {
            let value = remove_non_western(&cells[position], true);
            let length = value.chars().count();
            if value.is_empty() {
                error(field, "missing".into());
            } else if length > most {
                error(field, format!("longer than {most} characters ({length})"));
            }
        }
        let postcode = remove_non_western(java_trim(&cells[POSTCODE]), false);
        if postcode.is_empty() {
            error("postcode", "missing".into());
        } else if postcode != "X" && !is_postcode(&postcode.to_uppercase()) {
            error(
                "postcode",
                format!("{postcode:?} is neither a UK postcode nor X"),
            );
        }
    }

    let description = remove_non_western(&cells[AGGREGATED], true);
    let length = description.chars().count();
    if length > 35 {
        error(
            "aggregated donations",
            format!("longer than 35 characters ({length})"),
        );
    }

    if !aggregated {
        let sponsored = remove_non_western(&java_trim(&cells[SPONSORED]).to_lowercase(), false);
        if !sponsored.is_empty() && sponsored != "yes" {
            error(
                "sponsored event",
                format!("{sponsored:?} is neither Yes nor blank"),
            );
        }
    }

    let date = remove_non_western(&cells[DATE], false);
    if date.is_empty() {
        error("date", "missing".into());
    } else {
        match parse_date(&date) {
            None => error(
                "date",
                format!("{date:?} is not a date as DD/MM/YY or DD/MM/YYYY"),
            ),
            Some(d) if d > today => error("date", format!("{date} is after today, {today}")),
            Some(_) => {}
        }
    }

    let amount = remove_non_western(&cells[AMOUNT], false);
    if amount.is_empty() {
        error("amount", "missing".into());
    } else {
        let invalid = format!("{amount:?} is not an amount with 2 decimals from 0.01");
        match parse_decimal(&amount.replace(',', "")) {
            Some(d) if d.scale == 2 && d.digits() <= 15 => {
                let pence = d.signed_unscaled();
                if pence < 1 {
                    error("amount", invalid);
                } else if aggregated && pence > MOST_AGGREGATED {
                    error(
                        "amount",
                        format!("{amount} is over 1000.00, the most for an aggregated donation"),
                    );
                } else if pence > MOST_AMOUNT {
                    error("amount", invalid);
                }
            }
            _ => error("amount", invalid),
        }
    }
}

/// Java's `String.trim`: strips every character up to U+0020 from both ends.
fn java_trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

/// HMRC's `removeNonWesternCharacters`: keeps only `\x20-\x7E` and `\xA1-\xFF`, trims, and
/// with `collapse` makes each run of whitespace one space.
fn remove_non_western(s: &str, collapse: bool) -> String {
    let kept: String = s
        .chars()
        .filter(|c| matches!(c, '\x20'..='\x7E' | '\u{A1}'..='\u{FF}'))
        .collect();
    let trimmed = java_trim(&kept);
    if !collapse {
        return trimmed.to_string();
    }
    let mut out = String::with_capacity(trimmed.len());
    let mut in_space = false;
    for c in trimmed.chars() {
        // Java's `\s`: [ \t\n\x0B\f\r].
        if matches!(c, ' ' | '\t' | '\n' | '\x0B' | '\x0C' | '\r') {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// `^[1-9][0-9]{0,3}$` and from 1 to 1000.
fn is_item(s: &str) -> bool {
    let b = s.as_bytes();
    matches!(b.first(), Some(b'1'..=b'9'))
        && b.len() <= 4
        && b.iter().all(u8::is_ascii_digit)
        && s.parse::<u32>().is_ok_and(|n| (1..=1000).contains(&n))
}

/// `^[A-Za-z][A-Za-z'-]{1,3}$`.
fn is_title(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    (2..=4).contains(&chars.len())
        && chars[0].is_ascii_alphabetic()
        && chars[1..]
            .iter()
            .all(|c| c.is_ascii_alphabetic() || *c == '\'' || *c == '-')
}

/// HMRC's postcode pattern, upper case, as a whole string:
/// `^(GIR 0AA)|((([A-Z][0-9][0-9]?)|(([A-Z][A-HJ-Y][0-9][0-9]?)|(([A-Z][0-9][A-Z])|([A-Z][A-HJ-Y][0-9]?[A-Z])))) [0-9][A-Z]{2})$`.
fn is_postcode(s: &str) -> bool {
    if s == "GIR 0AA" {
        return true;
    }
    let b = s.as_bytes();
    let Some(split) = b.len().checked_sub(4) else {
        return false;
    };
    let (outward, inward) = b.split_at(split);
    let letter = |c: &u8| c.is_ascii_uppercase();
    let digit = |c: &u8| c.is_ascii_digit();
    // The second letter of an outward code: A-H or J-Y.
    let second = |c: &u8| letter(c) && *c != b'I' && *c != b'Z';
    let inward_ok = matches!(inward, [b' ', d, l1, l2] if digit(d) && letter(l1) && letter(l2));
    let outward_ok = match outward {
        [a, b] => letter(a) && digit(b),
        [a, b, c] => {
            letter(a)
                && ((digit(b) && (digit(c) || letter(c))) || (second(b) && (digit(c) || letter(c))))
        }
        [a, b, c, d] => letter(a) && second(b) && digit(c) && (digit(d) || letter(d)),
        _ => false,
    };
    inward_ok && outward_ok
}

/// `DD/MM/YY` (20YY) or `DD/MM/YYYY`, a real calendar date.
fn parse_date(s: &str) -> Option<Date> {
    let b = s.as_bytes();
    let two = |i: usize| -> Option<u8> {
        match b.get(i..i + 2)? {
            [x @ b'0'..=b'9', y @ b'0'..=b'9'] => Some((x - b'0') * 10 + (y - b'0')),
            _ => None,
        }
    };
    if b.get(2) != Some(&b'/') || b.get(5) != Some(&b'/') {
        return None;
    }
    let (day, month) = (two(0)?, two(3)?);
    let year = match b.len() {
        8 => 2000 + i32::from(two(6)?),
        10 => i32::from(two(6)?) * 100 + i32::from(two(8)?),
        _ => return None,
    };
    Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()
}

/// A number as Java's `BigDecimal(String)` reads it: its digits and its scale.
struct Decimal {
    negative: bool,
    /// The unscaled value's digits, without leading zeros (`"0"` for zero).
    unscaled: String,
    scale: i64,
}

impl Decimal {
    fn digits(&self) -> usize {
        self.unscaled.len()
    }

    fn is_positive(&self) -> bool {
        !self.negative && self.unscaled != "0"
    }

    /// The unscaled value with its sign; only called when it has at most 15 digits.
    fn signed_unscaled(&self) -> i64 {
        let n: i64 = self.unscaled.parse().unwrap_or(i64::MAX);
        if self.negative { -n } else { n }
    }
}

/// `[+-]?digits[.digits][(e|E)[+-]?digits]`, with at least one digit before the exponent.
fn parse_decimal(s: &str) -> Option<Decimal> {
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((w, f)) => (w, f),
        None => (mantissa, ""),
    };
    let all_digits = |t: &str| t.bytes().all(|c| c.is_ascii_digit());
    if whole.len() + fraction.len() == 0 || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    let exponent: i64 = match exponent {
        None => 0,
        Some(e) => {
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !all_digits(digits) || digits.len() > 9 {
                return None;
            }
            e.parse().ok()?
        }
    };
    let joined = format!("{whole}{fraction}");
    let unscaled = joined.trim_start_matches('0');
    Some(Decimal {
        negative,
        unscaled: if unscaled.is_empty() {
            "0".into()
        } else {
            unscaled.into()
        },
        scale: i64::try_from(fraction.len()).ok()? - exponent,
    })
}

/// Not a test but the checker as a tool, for a workbook of your own (one downloaded from a
/// running service, say): `HMRC_WORKBOOK=claim.ods cargo test --test api hmrc::check_a_workbook
/// -- --ignored --nocapture` prints what HMRC's checks would say of it, and fails if anything.
#[test]
#[ignore = "a tool, run by hand on the workbook named by HMRC_WORKBOOK"]
fn check_a_workbook() {
    let path = std::env::var("HMRC_WORKBOOK").expect("HMRC_WORKBOOK names a workbook");
    let ods = std::fs::read(&path).expect("the workbook reads");
    let today = quickdonate::timestamps::uk_date(time::OffsetDateTime::now_utc());
    let problems = check(&ods, today);
    println!(
        "{path}: sheet {:?}, D13 {:?}, D17 {:?}, {} donation row(s)",
        calamine::open_workbook_from_rs::<Ods<_>, _>(Cursor::new(ods.clone()))
            .map(|book| book.sheet_names())
            .unwrap_or_default(),
        cell(&ods, "D13"),
        cell(&ods, "D17"),
        rows(&ods).len()
    );
    for problem in &problems {
        println!("  {problem}");
    }
    println!("{} problem(s)", problems.len());
    assert!(problems.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    /// The day the tests take as today: HMRC's bad example has a donation on 18/11/27.
    const TODAY: Date = date!(2026 - 12 - 07);

    fn fixture(name: &str) -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hmrc/");
        std::fs::read(format!("{dir}{name}")).unwrap()
    }

    #[test]
    fn hmrc_accepts_its_good_example() {
        let ods = fixture("good-schedule.ods");
        assert_eq!(check(&ods, TODAY), Vec::<String>::new());

        assert_eq!(cell(&ods, "D13"), "10/11/2017");
        assert_eq!(cell(&ods, "D17"), "");
        assert_eq!(cell(&ods, "B25"), "1");
        assert_eq!(cell(&ods, "K27"), "880.00");
        let rows = rows(&ods);
        let row = |cells: [&str; 10]| cells.map(String::from);
        assert_eq!(
            rows,
            [
                row([
                    "1",
                    "Prof",
                    "Henry",
                    "House Martin",
                    "152A",
                    "M99 2QD",
                    "",
                    "",
                    "24/03/2015",
                    "240.00"
                ]),
                row([
                    "2",
                    "Mr",
                    "John",
                    "Smith",
                    "100 Champs Elysees, Paris",
                    "X",
                    "",
                    "",
                    "24/06/2015",
                    "250.00"
                ]),
                row([
                    "3",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "One off Gift Aid donations",
                    "",
                    "31/03/2015",
                    "880.00"
                ]),
                row([
                    "4",
                    "Miss",
                    "B",
                    "Chaudry",
                    "21",
                    "L43 4FB",
                    "",
                    "Yes",
                    "26/04/2015",
                    "80.00"
                ]),
            ]
        );
    }

    #[test]
    fn the_good_example_has_future_dates_before_they_happen() {
        let errors = check(&fixture("good-schedule.ods"), date!(2015 - 04 - 01));
        assert_eq!(
            errors,
            [
                "row 26 (item 2) date: 24/06/2015 is after today, 2015-04-01",
                "row 28 (item 4) date: 26/04/2015 is after today, 2015-04-01",
            ]
        );
    }

    #[test]
    fn hmrc_refuses_a_first_sheet_with_another_name_and_reads_nothing_else() {
        let errors = check(&fixture("bad-sheet-name.ods"), TODAY);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].starts_with("sheet: "), "{errors:#?}");
        assert!(errors[0].contains("\"P68GAD_V1_00_0_EN\""), "{errors:#?}");
    }

    #[test]
    fn hmrc_refuses_every_bad_cell_of_its_bad_example() {
        let errors = check(&fixture("bad-rows.ods"), TODAY);
        // Every error, in HMRC's order: D13, D17, then each row's fields from B to K.
        let expected = [
            "D13: earliest donation date is missing",
            "D17: previously overclaimed amount \"-0.01\" is not a positive amount",
            "row 25 (item 1) first name: missing",
            "row 26 (item 2) last name: missing",
            "row 27 (item 3) house: missing",
            "row 28 (item 4) postcode: missing",
            "row 29 (item 5) date: missing",
            "row 30 (item 6) amount: missing",
            "row 31 (item 7) date: \"test\" is not a date",
            "row 32 (item 8) date: 18/11/2027 is after today, 2026-12-07",
            "row 33 (item 9) amount: \"test\" is not an amount",
            "row 34 (item 10) title: \"testuser\" is not 2 to 4 letters",
            "row 35 (item 11) first name: longer than 35 characters",
            "row 36 (item 12) last name: longer than 35 characters",
            "row 37 (item 13) house: longer than 40 characters",
            "row 38 (item 14) sponsored event: \"test\" is neither Yes nor blank",
            "row 39 (item 15) sponsored event: must be blank on an aggregated donation",
            "row 39 (item 15) amount: 1016.00 is over 1000.00",
            "row 40 (item 16) title: must be blank on an aggregated donation",
            "row 40 (item 16) amount: 1017.00 is over 1000.00",
            "row 41 (item 17) first name: must be blank on an aggregated donation",
            "row 41 (item 17) amount: 1018.00 is over 1000.00",
            "row 42 (item 18) last name: must be blank on an aggregated donation",
            "row 42 (item 18) amount: 1019.00 is over 1000.00",
            "row 43 (item 19) house: must be blank on an aggregated donation",
            "row 43 (item 19) amount: 1020.00 is over 1000.00",
            "row 44 (item 20) postcode: must be blank on an aggregated donation",
            "row 44 (item 20) amount: 1021.00 is over 1000.00",
            "row 45 (item 21) aggregated donations: longer than 35 characters",
            "row 46 (item 22) amount: 1001.00 is over 1000.00",
            "row 47 (no item) item: \"\" is not a whole number from 1 to 1000",
            "row 48 (item 024) item: \"024\" is not a whole number from 1 to 1000",
            // Chinese text in every cell: none of it survives HMRC's removal of characters
            // outside Latin-1, so the row is an individual's with nothing filled in.
            "row 49 (item 25) first name: missing",
            "row 49 (item 25) last name: missing",
            "row 49 (item 25) house: missing",
            "row 49 (item 25) postcode: missing",
            "row 49 (item 25) date: missing",
            "row 49 (item 25) amount: missing",
            // Chinese text as the aggregated description: gone, so not an aggregated line.
            "row 50 (item 26) first name: missing",
            "row 50 (item 26) last name: missing",
            "row 50 (item 26) house: missing",
            "row 50 (item 26) postcode: missing",
        ];
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
        for (error, expected) in errors.iter().zip(expected) {
            assert!(
                error.starts_with(expected),
                "{error:?} is not {expected:?}...; all: {errors:#?}"
            );
        }
    }

    #[test]
    fn postcodes_as_hmrc_matches_them() {
        for good in [
            "SW1A 1AA", "M1 1AE", "GIR 0AA", "CR2 6XH", "B33 8TH", "DN55 1PT", "W1A 0AX",
            "EC1A 1BB",
        ] {
            assert!(is_postcode(good), "{good}");
        }
        for bad in [
            "AI1 1AA",
            "SW1A1AA",
            "1A1 1AA",
            "",
            "X",
            "sw1a 1aa",
            "M1  1AE",
            "M1 1A",
            "SW1AB 1AA",
            "Z1 1AA1",
        ] {
            assert!(!is_postcode(bad), "{bad}");
        }
    }

    #[test]
    fn titles_as_hmrc_matches_them() {
        for good in ["Mr", "Mrs", "Miss", "Dr", "Prof", "Ms", "O'B", "Re-v"] {
            assert!(is_title(good), "{good}");
        }
        for bad in [
            "testuser", "M", "Mr.", "Sir Dr", "-Mr", "'Mr", "Mr1", "Herr!", "Mé",
        ] {
            assert!(!is_title(bad), "{bad}");
        }
    }

    #[test]
    fn items_dates_and_amounts_as_hmrc_reads_them() {
        for good in ["1", "9", "10", "999", "1000"] {
            assert!(is_item(good), "{good}");
        }
        for bad in ["", "0", "024", "1001", "9999", "10000", "1.0", "-1", "+1"] {
            assert!(!is_item(bad), "{bad}");
        }

        assert_eq!(parse_date("29/02/24"), Some(date!(2024 - 02 - 29)));
        assert_eq!(parse_date("10/11/2017"), Some(date!(2017 - 11 - 10)));
        assert_eq!(parse_date("01/01/99"), Some(date!(2099 - 01 - 01)));
        for bad in [
            "29/02/23",
            "31/04/2024",
            "1/1/24",
            "01/1/24",
            "01/01/024",
            "2024-01-01",
            "00/01/24",
            "01/13/24",
            "test",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }

        let read = |s: &str| parse_decimal(s).map(|d| (d.signed_unscaled(), d.scale, d.digits()));
        assert_eq!(read("1000.00"), Some((100_000, 2, 6)));
        assert_eq!(read("-0.01"), Some((-1, 2, 1)));
        assert_eq!(read("0.00"), Some((0, 2, 1)));
        assert_eq!(read(".50"), Some((50, 2, 2)));
        assert_eq!(read("1E+3"), Some((1, -3, 1)));
        assert_eq!(read("100e-2"), Some((100, 2, 3)));
        assert_eq!(read("240"), Some((240, 0, 3)));
        for bad in ["", "test", "1,000.00", "1.0.0", "£5.00", "1e", "-", "."] {
            assert!(read(bad).is_none(), "{bad}");
        }
    }
}
