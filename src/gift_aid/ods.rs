//! The schedule as an OpenDocument spreadsheet, the format HMRC's own schedule is in: a sheet
//! with the schedule's columns and lines, and a sheet of the adjustments the claim carries.
//! Every cell is text, written exactly as the JSON and CSV answers write it (`25.00`,
//! `20/11/26`), and a cell that does not apply is left empty, as HMRC asks.

use spreadsheet_ods::{Sheet, WorkBook};

use super::schedule::{self, COLUMNS, Line};
use super::{ADJUSTMENT_COLUMNS, Adjustment};

pub const SCHEDULE_SHEET: &str = "Schedule";
pub const ADJUSTMENTS_SHEET: &str = "Adjustments";

/// The workbook's bytes.
pub fn workbook(lines: &[Line], adjustments: &[Adjustment]) -> anyhow::Result<Vec<u8>> {
    let mut book = WorkBook::default();

    let mut sheet = Sheet::new(SCHEDULE_SHEET);
    write_row(&mut sheet, 0, COLUMNS.iter().map(|c| c.to_string()));
    for (i, line) in lines.iter().enumerate() {
        write_row(&mut sheet, i as u32 + 1, line.cells());
    }
    book.push_sheet(sheet);

    let mut sheet = Sheet::new(ADJUSTMENTS_SHEET);
    write_row(
        &mut sheet,
        0,
        ADJUSTMENT_COLUMNS.iter().map(|c| c.to_string()),
    );
    for (i, adjustment) in adjustments.iter().enumerate() {
        let cells = [
            adjustment.donation_id.to_string(),
            adjustment.claim_id.to_string(),
            schedule::amount(adjustment.amount),
            adjustment.reason.to_owned(),
        ];
        write_row(&mut sheet, i as u32 + 1, cells);
    }
    book.push_sheet(sheet);

    spreadsheet_ods::write_ods_buf(&mut book, Vec::new())
        .map_err(|error| anyhow::anyhow!("writing the ODS workbook: {error}"))
}

fn write_row(sheet: &mut Sheet, row: u32, cells: impl IntoIterator<Item = String>) {
    for (col, cell) in cells.into_iter().enumerate() {
        if !cell.is_empty() {
            sheet.set_value(row, col as u32, cell);
        }
    }
}
