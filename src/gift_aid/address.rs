//! A Gift Aid donor's address as HMRC takes it: whether they live in the UK, and their postcode
//! written as HMRC asks. The donation form checks a declaration with these, and the schedule
//! writes its lines with them.

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
    .contains(&country.to_ascii_lowercase().as_str())
}

/// HMRC wants postcodes in capitals with one space before the inward code: `S19 2BD`.
pub fn normalise_uk_postcode(raw: &str) -> Option<String> {
    let compact: String = raw
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase();
    if !(5..=7).contains(&compact.len()) || !compact.is_ascii() {
        return None;
    }
    let (outward, inward) = compact.split_at(compact.len() - 3);
    let inward_ok = {
        let b = inward.as_bytes();
        b[0].is_ascii_digit() && b[1].is_ascii_alphabetic() && b[2].is_ascii_alphabetic()
    };
    let outward_ok = outward.as_bytes()[0].is_ascii_alphabetic()
        && outward.bytes().all(|b| b.is_ascii_alphanumeric())
        && outward.bytes().any(|b| b.is_ascii_digit());
    (inward_ok && outward_ok).then(|| format!("{outward} {inward}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uk_postcodes_are_normalised_for_hmrc() {
        assert_eq!(
            normalise_uk_postcode("sw1a1aa").as_deref(),
            Some("SW1A 1AA")
        );
        assert_eq!(normalise_uk_postcode(" M1 1AE ").as_deref(), Some("M1 1AE"));
        assert_eq!(normalise_uk_postcode("B33 8TH").as_deref(), Some("B33 8TH"));
        assert_eq!(normalise_uk_postcode("12345"), None);
        assert_eq!(normalise_uk_postcode("SW1A"), None);
        assert_eq!(normalise_uk_postcode("ABCDE1AA"), None);
    }
}
