//! The charity the service raises money for, as configured: its name and registration number
//! (`CHARITY_NAME`, `CHARITY_NUMBER`), which every receipt and the donation page's Gift Aid
//! declaration say, checked when the settings are read.
//!
//! The built-in defaults are placeholders, so that `cargo run` works out of the box; production
//! refuses them, since a receipt naming "Example Charity 0000000" would mislead the donor and
//! HMRC. A registration number is also checked for its shape, loosely, so that a slip (a
//! digit short, a VAT or HMRC reference in its place) stops start-up rather than go out on
//! every receipt, while every real number passes:
//! - England and Wales: 6 to 8 digits (`1234567`), a linked charity with `-` and its
//!   subsidiary number (`1234567-1`);
//! - Scotland: `SC` and 6 digits (`SC012345`);
//! - Northern Ireland: `NIC` (or `NI`) and digits (`NIC100001`);
//! - a charity registered in more than one, each of its numbers, separated by commas, `/`,
//!   `;`, `&` or `and` (`1234567 and SC012345`).
//!
//! Letters may be in any case and a space may follow the prefix (`SC 012345`). Nothing else is
//! checked: the registers do not publish a check digit.

/// The built-in `CHARITY_NAME`, refused in production.
pub const PLACEHOLDER_NAME: &str = "Example Charity";
/// The built-in `CHARITY_NUMBER`, refused in production.
pub const PLACEHOLDER_NUMBER: &str = "0000000";

/// What [`check_number`] accepts, as said to whoever set it wrong.
pub const NUMBER_SHAPES: &str = "England and Wales: 6 to 8 digits (1234567, or 1234567-1 for a \
linked charity); Scotland: SC and 6 digits (SC012345); Northern Ireland: NIC and digits \
(NIC100001); several separated by commas or \"and\"";

/// Whether `number` looks like one or more UK charity registration numbers (see the module).
pub fn check_number(number: &str) -> bool {
    let upper = number.to_ascii_uppercase();
    let words: Vec<&str> = upper
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '/' | ';' | '&'))
        .filter(|word| !word.is_empty() && *word != "AND")
        .collect();
    let mut numbers = Vec::new();
    let mut words = words.into_iter().peekable();
    while let Some(word) = words.next() {
        // A prefix written apart from its digits: `SC 012345`.
        let joined = match (word, words.peek()) {
            ("SC" | "NI" | "NIC", Some(next)) if next.bytes().all(|b| b.is_ascii_digit()) => {
                let joined = format!("{word}{next}");
                words.next();
                joined
            }
            _ => word.to_owned(),
        };
        numbers.push(joined);
    }
    !numbers.is_empty() && numbers.iter().all(|n| one_number(n))
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn one_number(n: &str) -> bool {
    if let Some(rest) = n.strip_prefix("SC") {
        return rest.len() == 6 && digits(rest);
    }
    if let Some(rest) = n.strip_prefix("NIC").or_else(|| n.strip_prefix("NI")) {
        return (1..=8).contains(&rest.len()) && digits(rest);
    }
    let (main, linked) = n.split_once('-').unwrap_or((n, ""));
    (6..=8).contains(&main.len())
        && digits(main)
        && (linked.is_empty() && !n.contains('-') || (linked.len() <= 3 && digits(linked)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_registration_numbers_pass() {
        for number in [
            "1234567",
            "209131",
            "12345678",
            "1234567-1",
            "1234567-12",
            "SC012345",
            "sc012345",
            "SC 012345",
            "NIC100001",
            "NI100001",
            "nic 100001",
            "1234567 and SC012345",
            "1234567, SC012345",
            "1234567 / SC012345 / NIC100001",
            "1234567 & SC012345",
            " 1234567 ",
            PLACEHOLDER_NUMBER,
        ] {
            assert!(check_number(number), "{number:?} refused");
        }
    }

    #[test]
    fn slips_are_refused() {
        for number in [
            "",
            "  ",
            "and",
            "12345",
            "123456789",
            "123 4567",
            "1234567-",
            "1234567-1234",
            "-1",
            "SC12345",
            "SC0123456",
            "SC",
            "NIC",
            "NICX1",
            "GB123456789",
            "XR12345",
            "registered",
            "1234567 or SC012345",
            "1234567; 12",
        ] {
            assert!(!check_number(number), "{number:?} taken");
        }
    }
}
