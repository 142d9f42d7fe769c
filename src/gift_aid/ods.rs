//! The schedule as HMRC's own workbook (template `R68GAD_V1_00_0_EN`), to upload to Charities
//! Online as it is: one sheet of that name, HMRC's headings, the earliest donation date in box 1
//! (D13), the tax previously overclaimed in box 2 (D17, blank when none), and the donation rows
//! from row 25, columns B (item number, from 1) to K (amount).
//!
//! Source: HMRC's claims validation service (`hmrc/charities-claims-validation`, 2025), which is
//! what an upload meets: it reads the first sheet only and checks its name
//! (`CommonFileValidation.scala`); rows 25 to 1,025, columns B to K, and cells D13 and D17
//! (`DocumentRow.scala`); it finds D13 and D17 as the fourth cell element of their rows without
//! expanding repeated cells (`OdsReaderService.cellFromDocument`), so every cell of a row
//! written here is written out, none repeated. Every cell is text, written exactly as the JSON
//! and CSV answers write it (`25.00`, `20/11/26`).

use spreadsheet_ods::{Sheet, WorkBook};
use time::Date;

use super::schedule::{self, Line};

/// The sheet's name, as HMRC's template has it.
pub const SHEET: &str = "R68GAD_V1_00_0_EN";
/// The first donation row (1-based, as a spreadsheet shows it).
pub const FIRST_ROW: u32 = 25;

/// The donation table's headings (row 23, columns B to K), HMRC's words.
const HEADINGS: [&str; 10] = [
    "Item",
    "Title",
    "First name",
    "Last name",
    "House name or number",
    "Postcode",
    "Aggregated donations",
    "Sponsored event",
    "Donation date",
    "Amount",
];

/// The workbook's bytes: `lines` (at most 1,000: one part), box 1 `earliest`, box 2 the tax
/// `overclaimed_tax` in pence (blank when 0).
pub fn workbook(
    lines: &[Line],
    earliest: Option<Date>,
    overclaimed_tax: i64,
) -> anyhow::Result<Vec<u8>> {
    assert!(lines.len() <= schedule::MAX_LINES, "one part at most");
    let mut sheet = Sheet::new(SHEET);
    let mut put = |row: u32, cells: &[(char, String)]| {
        // Every cell from A to the last one given, written out (none left to be repeated).
        let last = cells.iter().map(|(c, _)| column(*c)).max().unwrap_or(0);
        for col in 0..=last {
            let text = cells
                .iter()
                .find(|(c, _)| column(*c) == col)
                .map(|(_, text)| text.clone())
                .unwrap_or_default();
            sheet.set_value(row - 1, col, text);
        }
    };
    let text = |s: &str| s.to_owned();
    put(1, &[('B', text("Gift Aid donations schedule"))]);
    put(
        2,
        &[(
            'B',
            text("Made from the charity's records: upload it to Charities Online as it is."),
        )],
    );
    put(11, &[('B', text("Enter details from here"))]);
    put(
        12,
        &[(
            'D',
            text("Earliest donation date in the period of claim. (DD/MM/YY)"),
        )],
    );
    put(
        13,
        &[
            ('C', text("Box 1")),
            ('D', earliest.map(schedule::date).unwrap_or_default()),
        ],
    );
    put(
        16,
        &[
            (
                'D',
                text("Previously over-claimed amount. Leave blank if none"),
            ),
            (
                'F',
                text(
                    "Make sure you show the tax not the donation. This amount will be \
                     deducted from your claim.",
                ),
            ),
        ],
    );
    let overclaimed = if overclaimed_tax > 0 {
        schedule::amount(overclaimed_tax)
    } else {
        String::new()
    };
    put(17, &[('C', text("Box 2")), ('D', overclaimed)]);
    put(18, &[('D', text("Don't use a £ sign"))]);
    put(
        20,
        &[
            ('H', text("Total donations:")),
            (
                'J',
                schedule::amount(lines.iter().map(|l| l.amount).sum::<i64>()),
            ),
        ],
    );
    put(21, &[('B', text("Donations schedule table"))]);
    let headings: Vec<(char, String)> = ('B'..='K')
        .zip(HEADINGS)
        .map(|(c, h)| (c, h.to_owned()))
        .collect();
    put(23, &headings);
    put(24, &[('I', text("(Yes/blank)")), ('J', text("(DD/MM/YY)"))]);
    for (i, line) in lines.iter().enumerate() {
        let item = (i + 1).to_string();
        let cells: Vec<(char, String)> = ('B'..='K')
            .zip(std::iter::once(item).chain(line.cells()))
            .collect();
        put(FIRST_ROW + i as u32, &cells);
    }

    let mut book = WorkBook::default();
    book.push_sheet(sheet);
    spreadsheet_ods::write_ods_buf(&mut book, Vec::new())
        .map_err(|error| anyhow::anyhow!("writing the ODS workbook: {error}"))
}

/// A column's index from its letter (`A` is 0).
fn column(letter: char) -> u32 {
    u32::from(letter) - u32::from('A')
}
