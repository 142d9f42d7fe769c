//! Money as people read it. Amounts are integers of minor units beside a lower-case ISO 4217
//! code everywhere in the service; these are the only places they become text, for donors
//! (receipts, the donation page) and for accountants (`decimal`).

/// How many decimal places `currency`'s minor units make, as Stripe counts them: 0 for its
/// zero-decimal currencies (the yen), else 2.
pub fn exponent(currency: &str) -> u32 {
    const ZERO_DECIMAL: &[&str] = &[
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
        "xaf", "xof", "xpf",
    ];
    if ZERO_DECIMAL.contains(&currency.to_ascii_lowercase().as_str()) {
        0
    } else {
        2
    }
}

/// `amount` minor units of `currency` as a donor reads it: `£25.59`, `€10.00`, `1000 JPY`.
pub fn format(amount: i64, currency: &str) -> String {
    let code = currency.to_ascii_lowercase();
    if exponent(&code) == 0 {
        return format!("{amount} {}", code.to_ascii_uppercase());
    }
    let sign = if amount < 0 { "-" } else { "" };
    let units = amount.unsigned_abs();
    let figure = format!("{}.{:02}", units / 100, units % 100);
    match code.as_str() {
        "gbp" => format!("{sign}£{figure}"),
        "eur" => format!("{sign}€{figure}"),
        "usd" => format!("{sign}${figure}"),
        _ => format!("{sign}{figure} {}", code.to_ascii_uppercase()),
    }
}

/// `amount` minor units of `currency` as a spreadsheet takes it, beside its currency: the
/// major unit with its decimals and no symbol (`25.59`, `-0.05`; `1000` for the yen).
pub fn decimal(amount: i64, currency: &str) -> String {
    if exponent(currency) == 0 {
        return amount.to_string();
    }
    let sign = if amount < 0 { "-" } else { "" };
    let units = amount.unsigned_abs();
    format!("{sign}{}.{:02}", units / 100, units % 100)
}

/// [`format`] with its thousands grouped, as the donation page's script and the staff console
/// write money: `£1,234.50`.
pub fn grouped(amount: i64, currency: &str) -> String {
    let full = format(amount, currency);
    let start = full.find(|c: char| c.is_ascii_digit()).unwrap_or(0);
    let digits = full[start..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(full.len(), |end| start + end);
    let mut grouped = String::with_capacity(full.len() + 4);
    grouped.push_str(&full[..start]);
    for (i, digit) in full[start..digits].chars().enumerate() {
        if i > 0 && (digits - start - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped.push_str(&full[digits..]);
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_as_decimals_for_a_spreadsheet() {
        assert_eq!(decimal(2559, "gbp"), "25.59");
        assert_eq!(decimal(-5, "gbp"), "-0.05");
        assert_eq!(decimal(0, "gbp"), "0.00");
        assert_eq!(decimal(1000, "jpy"), "1000");
    }

    #[test]
    fn amounts_read_as_money() {
        assert_eq!(format(2559, "gbp"), "£25.59");
        assert_eq!(format(5, "eur"), "€0.05");
        assert_eq!(format(1000, "jpy"), "1000 JPY");
        assert_eq!(format(1234, "sek"), "12.34 SEK");
    }
}
