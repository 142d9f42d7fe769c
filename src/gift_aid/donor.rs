//! A Gift Aid donor as HMRC's schedule takes them: one set of rules, used by the donation form
//! to refuse a declaration HMRC could not read, and by the schedule to write its cells. What
//! the form accepts, the schedule writes as a row HMRC's checks pass.
//!
//! Sources: HMRC's claims validation service (`hmrc/charities-claims-validation`, 2025:
//! `GiftAidValidationService.scala` for each field's rule, `CommonFileValidation.scala` for
//! `removeNonWesternCharacters`, which drops every character outside printable Latin-1 before
//! a field is checked); gov.uk, "Schedule spreadsheet to claim back tax on Gift Aid donations"
//! (updated 28 November 2025) for a double-barrelled surname with a space and a donor outside
//! the UK written as `X` with their address in the house cell.
//!
//! - **Title**: optional; when given, `^[A-Za-z][A-Za-z'-]{1,3}$`. A title that does not fit
//!   after the usual shortening (`Professor` is `Prof`, `Dr.` is `Dr`) is left out ([`title`]).
//! - **Names**: required, at most 35 characters once HMRC has removed every character outside
//!   Latin-1. Letters of the Latin script beyond Latin-1 (`Ł`, `ő`, `ș`) are transliterated
//!   (`deunicode`); a name in another script (Arabic, Urdu, Chinese, Cyrillic, ...) would reach
//!   HMRC empty or as a guess, so the form asks for the name as on the donor's tax records
//!   ([`first_name`], [`last_name`]).
//! - **House**: required, at most 40 characters ([`house`]).
//! - **Postcode**: in the UK, HMRC's pattern in capitals with one space ([`uk_postcode`]);
//!   outside it, `X` ([`postcode`]).

use std::fmt;

/// A title when given: a letter, then 1 to 3 letters, apostrophes or hyphens.
const TITLE_MIN: usize = 2;
const TITLE_MAX: usize = 4;
/// HMRC's limits on the name and house cells.
pub const NAME_MAX: usize = 35;
pub const HOUSE_MAX: usize = 40;

/// What the donation form refuses in a Gift Aid declaration's name or address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwritable {
    /// Nothing left once written as HMRC reads it.
    Empty,
    /// Written (in part) in a script other than the Latin one.
    OtherScript,
}

impl Unwritable {
    /// What the form says of a name.
    pub fn name_message(self) -> &'static str {
        match self {
            Unwritable::Empty => {
                "is required for Gift Aid: give the name as on your tax records, in Latin letters"
            }
            Unwritable::OtherScript => {
                "HMRC reads names in Latin letters only: for Gift Aid, give the name as on your \
                 tax records, in Latin letters"
            }
        }
    }

    /// What the form says of an address.
    pub fn address_message(self) -> &'static str {
        match self {
            Unwritable::Empty => "is required for a Gift Aid declaration",
            Unwritable::OtherScript => {
                "HMRC reads addresses in Latin letters only: for Gift Aid, write it in Latin \
                 letters"
            }
        }
    }
}

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
impl fmt::Debug for Declared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Declared { .. }")
    }
}

/// The donor's cells on a schedule line.
#[derive(Clone, PartialEq, Eq)]
pub struct Cells {
    pub title: String,
    pub first_name: String,
    pub last_name: String,
    pub house_name_or_number: String,
    pub postcode: String,
}

impl Declared {
    /// The donor's cells as HMRC reads them, or what of a declaration made before these rules
    /// cannot be written, `name` or `address` (the schedule holds such a gift back).
    pub fn cells(&self) -> Result<Cells, &'static str> {
        Ok(Cells {
            title: title(self.title.as_deref()),
            first_name: first_name(&self.first_name).map_err(|_| "name")?,
            last_name: last_name(&self.last_name).map_err(|_| "name")?,
            house_name_or_number: house(self).map_err(|_| "address")?,
            postcode: postcode(self).ok_or("address")?,
        })
    }
}

/// The title as HMRC's pattern takes it, or empty: trimmed, a trailing full stop dropped, a
/// few long titles shortened the usual way (`Professor` is `Prof`); anything else that does
/// not fit the pattern (`Rt Hon`, `M.`, `Lieutenant Colonel`) is left out, as a title is
/// optional.
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
    if is_hmrc_title(short) {
        short.to_owned()
    } else {
        String::new()
    }
}

/// HMRC's title pattern, `^[A-Za-z][A-Za-z'-]{1,3}$`.
pub fn is_hmrc_title(title: &str) -> bool {
    let bytes = title.as_bytes();
    (TITLE_MIN..=TITLE_MAX).contains(&bytes.len())
        && bytes[0].is_ascii_alphabetic()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphabetic() || *b == b'\'' || *b == b'-')
}

/// The first name (or initial) as HMRC reads it: Latin letters, at most 35 characters.
pub fn first_name(raw: &str) -> Result<String, Unwritable> {
    written(raw, NAME_MAX)
}

/// The last name as HMRC reads it: Latin letters, at most 35 characters, a double-barrelled
/// surname with a space, not a hyphen (`Smith-Jones` is `Smith Jones`).
pub fn last_name(raw: &str) -> Result<String, Unwritable> {
    let spaced: String = raw
        .chars()
        .map(|c| if is_hyphen(c) { ' ' } else { c })
        .collect();
    written(&spaced, NAME_MAX)
}

fn is_hyphen(c: char) -> bool {
    matches!(
        c,
        '-' | '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}'
    )
}

/// The house name or number, at most 40 characters. For a donor outside the UK, their address
/// as far as we have it (house, postcode, country) when it fits, else the house alone.
pub fn house(donor: &Declared) -> Result<String, Unwritable> {
    let house = written(&donor.house_name_or_number, usize::MAX)?;
    if is_uk(&donor.country) {
        return Ok(cut(&house, HOUSE_MAX));
    }
    let part = |raw: &str| written(raw, usize::MAX).unwrap_or_default();
    let address = [
        house.clone(),
        donor.postcode.as_deref().map(part).unwrap_or_default(),
        part(&donor.country),
    ]
    .into_iter()
    .filter(|part| !part.is_empty())
    .collect::<Vec<_>>()
    .join(", ");
    Ok(if address.chars().count() <= HOUSE_MAX {
        address
    } else {
        cut(&house, HOUSE_MAX)
    })
}

/// The postcode cell: a UK postcode as HMRC's pattern takes it (`None` if it does not fit); `X`
/// for a donor outside the UK.
pub fn postcode(donor: &Declared) -> Option<String> {
    if !is_uk(&donor.country) {
        return Some("X".to_owned());
    }
    uk_postcode(donor.postcode.as_deref().unwrap_or(""))
}

/// A UK postcode in capitals with one space before its inward code (`s192bd` is `S19 2BD`),
/// if it then fits HMRC's pattern.
pub fn uk_postcode(raw: &str) -> Option<String> {
    let compact: String = raw
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    if compact.len() < 5 || !compact.is_ascii() {
        return None;
    }
    let (outward, inward) = compact.split_at(compact.len() - 3);
    let postcode = format!("{outward} {inward}");
    is_hmrc_postcode(&postcode).then_some(postcode)
}

/// HMRC's postcode pattern, `GIR 0AA` or an outward code `A9`, `A99`, `AA9`, `AA99`, `A9A` or
/// `AA9A` (the second letter never `I` or `Z`), a space, and an inward code `9AA`. (One version
/// of HMRC's pattern also lets an outward code of three letters through, which no postcode
/// has; the other does not: this takes what both take.)
pub fn is_hmrc_postcode(postcode: &str) -> bool {
    if postcode == "GIR 0AA" {
        return true;
    }
    let Some((outward, inward)) = postcode.split_once(' ') else {
        return false;
    };
    let letter = |b: &u8| b.is_ascii_uppercase();
    let digit = |b: &u8| b.is_ascii_digit();
    let second = |b: &u8| letter(b) && *b != b'I' && *b != b'Z';
    let inward_ok = matches!(inward.as_bytes(), [d, a, b] if digit(d) && letter(a) && letter(b));
    let outward_ok = match outward.as_bytes() {
        [a, b] => letter(a) && digit(b),
        [a, b, c] => {
            letter(a) && ((digit(b) && (digit(c) || letter(c))) || (second(b) && digit(c)))
        }
        [a, b, c, d] => letter(a) && second(b) && digit(c) && (digit(d) || letter(d)),
        _ => false,
    };
    inward_ok && outward_ok
}

/// Whether `country` names the UK (or one of its nations), as a donor may write it.
pub fn is_uk(country: &str) -> bool {
    [
        "gb",
        "uk",
        "united kingdom",
        "great britain",
        "england",
        "scotland",
        "wales",
        "northern ireland",
    ]
    .contains(&country.trim().to_ascii_lowercase().as_str())
}

/// `raw` as HMRC reads it, at most `max` characters: printable Latin-1 kept as it is (HMRC
/// keeps it), other letters of the Latin script and typographic marks transliterated, any
/// whitespace or control character a space, runs of spaces one, none at either end.
fn written(raw: &str, max: usize) -> Result<String, Unwritable> {
    let mut text = String::with_capacity(raw.len());
    for c in raw.chars() {
        if c.is_whitespace() || c.is_control() {
            text.push(' ');
        } else if is_hmrc_character(c) {
            text.push(c);
        } else if is_latin_script(c) {
            text.push_str(deunicode::deunicode_char(c).unwrap_or(""));
        } else {
            return Err(Unwritable::OtherScript);
        }
    }
    let text = cut(&tidy(&text), max);
    if text.is_empty() {
        Err(Unwritable::Empty)
    } else {
        Ok(text)
    }
}

/// What HMRC's `removeNonWesternCharacters` keeps: `\x20-\x7E` and `\xA1-\xFF`.
pub fn is_hmrc_character(c: char) -> bool {
    matches!(c, '\u{20}'..='\u{7E}' | '\u{A1}'..='\u{FF}')
}

/// Letters of the Latin script beyond Latin-1, combining accents, and typographic punctuation
/// (curly apostrophes, dashes): what transliterates to the same name, not a guess at one.
fn is_latin_script(c: char) -> bool {
    matches!(c,
        '\u{0100}'..='\u{024F}'   // Latin Extended-A and -B
        | '\u{0300}'..='\u{036F}' // combining diacritical marks
        | '\u{1E00}'..='\u{1EFF}' // Latin Extended Additional
        | '\u{2000}'..='\u{206F}' // general punctuation
        | '\u{2C60}'..='\u{2C7F}' // Latin Extended-C
        | '\u{A720}'..='\u{A7FF}' // Latin Extended-D
    )
}

/// Trimmed, with every run of whitespace one space: HMRC asks for no spaces at either end of a
/// cell.
pub fn tidy(raw: &str) -> String {
    raw.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// At most `max` characters, never ending in a space.
pub fn cut(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .collect::<String>()
        .trim_end()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_title_is_shortened_the_usual_way_or_left_out() {
        assert_eq!(title(Some("Professor")), "Prof");
        assert_eq!(title(Some("Reverend")), "Rev");
        assert_eq!(title(Some(" Mrs. ")), "Mrs");
        assert_eq!(title(Some("Dr.")), "Dr");
        assert_eq!(title(Some("O'Ne")), "O'Ne");
        assert_eq!(title(None), "");
        // HMRC's pattern refuses these: a title is optional, so they are left out.
        for refused in [
            "Rt Hon",
            "M.",
            "M",
            "Lieutenant Colonel",
            "Brigadier",
            "Dr1",
            "Mme.",
            "Señor",
        ] {
            let written = title(Some(refused));
            assert!(
                written.is_empty() || is_hmrc_title(&written),
                "{refused}: {written}"
            );
        }
        assert_eq!(title(Some("Rt Hon")), "");
        assert_eq!(title(Some("M.")), "");
        assert_eq!(title(Some("Mme.")), "Mme");
    }

    #[test]
    fn names_keep_latin_1_transliterate_the_latin_script_and_refuse_other_scripts() {
        assert_eq!(first_name("Zoë").as_deref(), Ok("Zoë"));
        assert_eq!(first_name("José").as_deref(), Ok("José"));
        assert_eq!(first_name("Łukasz").as_deref(), Ok("Lukasz"));
        assert_eq!(
            last_name("Ďurčová").as_deref(),
            Ok("Durcová"),
            "á is Latin-1"
        );
        // A combining accent (a decomposed é) falls away, leaving its letter.
        assert_eq!(first_name("Rene\u{301}e").as_deref(), Ok("Renee"));
        assert_eq!(last_name("O’Brien").as_deref(), Ok("O'Brien"));
        assert_eq!(first_name("محمد"), Err(Unwritable::OtherScript));
        assert_eq!(last_name("خان"), Err(Unwritable::OtherScript));
        assert_eq!(first_name("Amina خان"), Err(Unwritable::OtherScript));
        assert_eq!(first_name("Алексей"), Err(Unwritable::OtherScript));
        assert_eq!(first_name("  "), Err(Unwritable::Empty));
        assert_eq!(first_name("\u{200B}"), Err(Unwritable::Empty));
    }

    #[test]
    fn names_are_at_most_35_characters_and_a_double_barrelled_surname_has_a_space() {
        let exactly = "A".repeat(35);
        assert_eq!(first_name(&exactly).as_deref(), Ok(exactly.as_str()));
        assert_eq!(first_name(&"B".repeat(36)), Ok("B".repeat(35)));
        let accented = "Zoë ".repeat(12);
        assert_eq!(first_name(&accented).unwrap().chars().count(), 35);
        assert_eq!(last_name("Smith-Jones").as_deref(), Ok("Smith Jones"));
        assert_eq!(last_name("Smith - Jones").as_deref(), Ok("Smith Jones"));
        assert_eq!(
            last_name("Smith\u{2013}Jones").as_deref(),
            Ok("Smith Jones")
        );
        assert_eq!(first_name("Mary-Jane").as_deref(), Ok("Mary-Jane"));
    }

    #[test]
    fn uk_postcodes_fit_hmrcs_pattern_in_capitals_with_one_space() {
        for (raw, written) in [
            ("s192bd", "S19 2BD"),
            ("sw1a1aa", "SW1A 1AA"),
            (" m1   1ae ", "M1 1AE"),
            ("B33 8TH", "B33 8TH"),
            ("cr26xh", "CR2 6XH"),
            ("dn551pt", "DN55 1PT"),
            ("W1A 0AX", "W1A 0AX"),
            ("gir0aa", "GIR 0AA"),
        ] {
            assert_eq!(uk_postcode(raw).as_deref(), Some(written), "{raw}");
        }
        for refused in [
            "12345", "SW1A", "ABCDE1AA", "AI1 1AA", "1A1 1AA", "SW1A 1A1", "ABC 1AA", "",
        ] {
            assert_eq!(uk_postcode(refused), None, "{refused}");
        }
    }

    #[test]
    fn a_donor_outside_the_uk_has_x_for_a_postcode_and_their_address_in_the_house_cell() {
        let french = Declared {
            house_name_or_number: "12 Rue de Rivoli".into(),
            postcode: Some("75001".into()),
            country: "France".into(),
            ..donor()
        };
        assert_eq!(postcode(&french).as_deref(), Some("X"));
        assert_eq!(
            house(&french).as_deref(),
            Ok("12 Rue de Rivoli, 75001, France")
        );
        let long = Declared {
            house_name_or_number: "Apartment 4, 1600 Pennsylvania Avenue NW".into(),
            postcode: Some("20500".into()),
            country: "United States".into(),
            ..donor()
        };
        assert_eq!(
            house(&long).as_deref(),
            Ok("Apartment 4, 1600 Pennsylvania Avenue NW")
        );
        assert_eq!(house(&donor()).as_deref(), Ok("10"));
        assert_eq!(postcode(&donor()).as_deref(), Some("S19 2BD"));
        let arabic = Declared {
            house_name_or_number: "شارع".into(),
            ..donor()
        };
        assert_eq!(house(&arabic), Err(Unwritable::OtherScript));
    }

    #[test]
    fn donor_data_never_shows_in_debug_output() {
        let debug = format!("{:?}", donor());
        assert!(
            !debug.contains("Amina") && !debug.contains("S19"),
            "{debug}"
        );
    }
}
