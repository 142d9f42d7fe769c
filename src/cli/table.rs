//! How the command line shows what it lists: tables whose columns are as wide as their longest
//! cell, times to the second in UTC, errors on one short line.

use crate::timestamps::rfc3339_seconds;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
