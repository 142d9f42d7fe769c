//! How the command line shows what it lists (events, receipts, tokens): tables whose columns are
//! as wide as their longest cell, times to the second in UTC, errors on one short line.

use crate::operators::access::TokenInfo;
use crate::receipts::admin::ReceiptSummary;
use crate::timestamps::rfc3339_seconds;
use crate::webhooks::admin::EventSummary;

/// `rows` (a header first) as a table whose columns are as wide as their longest cell
/// (`right`: aligned to the right, for numbers); the last column is not padded.
pub fn columns<const N: usize>(rows: &[[String; N]], right: &[bool; N]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(widths[i] - cell.chars().count());
            match (right[i], i + 1 == N) {
                (true, _) => line.extend([pad.as_str(), cell]),
                (false, false) => line.extend([cell, pad.as_str()]),
                (false, true) => line.push_str(cell),
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A last error as a table shows it: one line, at most 80 characters.
pub fn error_cell(error: Option<&str>) -> String {
    error
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(80)
        .collect()
}

/// A time as a table shows it: RFC 3339 in UTC, to the second.
pub fn time(at: time::OffsetDateTime) -> String {
    rfc3339_seconds(at)
}

/// The tokens `tokens list` found, as a table, and how many: never a token or its hash.
pub fn tokens(tokens: &[TokenInfo]) -> String {
    let mut rows = vec![["name", "role", "created", "revoked"].map(str::to_owned)];
    rows.extend(tokens.iter().map(|token| {
        [
            token.name.clone(),
            token.role.to_string(),
            time(token.created_at),
            token.revoked_at.map(time).unwrap_or_else(|| "-".to_owned()),
        ]
    }));
    let table = columns(&rows, &[false; 4]);
    format!("{table}{} token(s)", tokens.len())
}

/// The console's accounts, as `staff list` shows them.
pub fn staff(accounts: &[crate::staff::accounts::Account]) -> String {
    let mut rows = vec![
        [
            "name",
            "role",
            "passkeys",
            "sessions",
            "last sign-in",
            "created",
            "revoked",
        ]
        .map(str::to_owned),
    ];
    rows.extend(accounts.iter().map(|account| {
        [
            account.name.clone(),
            account.role.to_string(),
            account.passkeys.to_string(),
            account.live_sessions.to_string(),
            account
                .last_sign_in
                .map(time)
                .unwrap_or_else(|| "-".to_owned()),
            time(account.created_at),
            account
                .revoked_at
                .map(time)
                .unwrap_or_else(|| "-".to_owned()),
        ]
    }));
    let table = columns(&rows, &[false, false, true, true, false, false, false]);
    format!("{table}{} account(s)", accounts.len())
}

/// The events `events list` found, as a table, and how many.
pub fn events(events: &[EventSummary]) -> String {
    let mut rows = vec![
        [
            "id",
            "type",
            "state",
            "attempts",
            "deliveries",
            "received",
            "last error",
        ]
        .map(str::to_owned),
    ];
    rows.extend(events.iter().map(|event| {
        [
            event.id.clone(),
            event.kind.clone(),
            event.state.clone(),
            event.attempts.to_string(),
            event.delivery_count.to_string(),
            time(event.first_received_at),
            error_cell(event.last_error.as_deref()),
        ]
    }));
    let table = columns(&rows, &[false, false, false, true, true, false, false]);
    format!("{table}{} event(s)", events.len())
}

/// The receipts `receipts list` found, as a table, and how many.
pub fn receipts(receipts: &[ReceiptSummary]) -> String {
    let mut rows = vec![
        [
            "id",
            "donation",
            "kind",
            "state",
            "attempts",
            "next attempt",
            "last error",
        ]
        .map(str::to_owned),
    ];
    rows.extend(receipts.iter().map(|receipt| {
        [
            receipt.id.to_string(),
            receipt.donation_id.to_string(),
            receipt.kind.clone(),
            receipt.status.clone(),
            receipt.attempts.to_string(),
            // Only a pending receipt has a next attempt.
            if receipt.status == "pending" {
                time(receipt.next_attempt_at)
            } else {
                "-".to_owned()
            },
            error_cell(receipt.last_error.as_deref()),
        ]
    }));
    let table = columns(&rows, &[false, false, false, false, true, false, false]);
    format!("{table}{} receipt(s)", receipts.len())
}

/// The books' report: one line per check (`ok`, or how many differ and what it promises), each
/// difference beneath its check with its ids, and a last line that sums up.
pub fn books(report: &crate::books::verify::Report) -> String {
    let mut out = String::new();
    for check in &report.checks {
        if check.differences.is_empty() {
            out.push_str(&format!("ok    {}\n", check.check));
            continue;
        }
        out.push_str(&format!(
            "DIFF  {}: {} difference(s); {}\n",
            check.check,
            check.differences.len(),
            check.description
        ));
        for difference in &check.differences {
            out.push_str(&format!(
                "      {}: {}\n",
                difference.ids.join(" "),
                difference.detail
            ));
        }
    }
    match report.differences() {
        0 => out.push_str(&format!(
            "The books hold: {} checks, no difference.\n",
            report.checks.len()
        )),
        n => out.push_str(&format!("The books differ in {n} place(s).\n")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::access::Role;
    use time::macros::datetime;

    #[test]
    fn columns_are_as_wide_as_their_longest_cell_and_numbers_align_right() {
        let rows = [
            ["id", "attempts", "last error"].map(str::to_owned),
            ["evt_1", "2", "timed out"].map(str::to_owned),
            ["evt_12345", "10", ""].map(str::to_owned),
        ];
        assert_eq!(
            columns(&rows, &[false, true, false]),
            "id         attempts  last error\n\
             evt_1             2  timed out\n\
             evt_12345        10\n"
        );
        assert_eq!(error_cell(Some("line one\nline two")), "line oneline two");
        assert_eq!(error_cell(Some(&"x".repeat(100))).len(), 80);
    }

    #[test]
    fn the_token_list_keeps_its_columns_whatever_the_names() {
        let token = |name: &str, role, revoked| TokenInfo {
            name: name.to_owned(),
            role,
            created_at: datetime!(2026-12-01 10:00:00 UTC),
            revoked_at: revoked,
        };
        let long = "a".repeat(64);
        let listed = tokens(&[
            token("finance", Role::Finance, None),
            token(&long, Role::Admin, Some(datetime!(2026-12-02 11:30:00 UTC))),
        ]);
        let lines: Vec<&str> = listed.lines().collect();
        assert_eq!(lines.len(), 4, "{listed}");
        // Each column starts where its header does, on every line.
        for column in ["role", "created", "revoked"] {
            let at = lines[0].find(column).unwrap();
            for line in &lines[1..3] {
                assert_ne!(
                    line.as_bytes()[at - 1],
                    b'a',
                    "{column} after a long name: {listed}"
                );
                assert_eq!(line.as_bytes()[at - 2], b' ', "{column}: {listed}");
            }
        }
        assert!(
            lines[1].starts_with("finance ") && lines[1].ends_with(" -"),
            "{listed}"
        );
        assert!(lines[2].ends_with("2026-12-02T11:30:00Z"), "{listed}");
        assert_eq!(lines[3], "2 token(s)");
    }
}
