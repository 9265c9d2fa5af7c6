//! A school's timetable from its spreadsheet, pure: CSV rows, or the first
//! sheet of an .xlsx workbook (`workbook`, its cells read as the text a CSV
//! export carries), one class's weekly lesson each, read into series
//! bookings, every bad cell named by line and column with the rule it
//! breaks (`sheet`), and the downloadable template. `service::timetable`
//! books the rows as one set.

pub mod cells;
pub mod sheet;
pub mod workbook;
