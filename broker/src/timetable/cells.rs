//! What the CSV reader (`sheet`) and the workbook reader (`workbook`)
//! share: a cell, the row limit and how a bad cell is named. Below both, so
//! that the sheet can read a workbook without the two depending on each
//! other.

use crate::domain::FieldError;

/// Rows at most in one file: a district's term (200 classes × 3 a week).
pub const MAX_ROWS: usize = 2000;

/// A row's bad cell: its line in the file (1 is the header), its column and
/// the rule it breaks.
pub fn cell_error(line: usize, column: &str, rule: impl Into<String>) -> FieldError {
    FieldError::new(format!("line {line}, column {column}"), rule)
}

/// A cell of the sheet: its text, or the rule it breaks (a workbook cell
/// holding a formula's error value).
pub type Cell = Result<String, String>;
