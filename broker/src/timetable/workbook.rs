//! An .xlsx workbook's first sheet read into the cells a CSV file carries,
//! pure: every cell becomes the text a spreadsheet saved as CSV would write
//! (dates `YYYY-MM-DD`, times `HH:MM`, whole numbers without a decimal
//! point, text as it is), or the rule it breaks (a formula's error value).
//! `sheet::read_rows` then applies every rule of the CSV reader, so a bad
//! cell is named by its row in the sheet (the line) and its column exactly
//! as in a CSV file.
//!
//! Only the cells a timetable can need are kept: at most `MAX_COLUMNS`
//! columns and `sheet::MAX_ROWS` rows below the header; the sheet is read
//! cell by cell, so a huge sparse sheet costs no memory, and reading stops
//! after `MAX_CELLS` cells.

use std::{collections::BTreeMap, io::Cursor};

use calamine::{Data, ExcelDateTime, Reader, Xlsx};
use chrono::Timelike;

use super::cells::{Cell, MAX_ROWS, cell_error};
use crate::domain::FieldError;

/// An .xlsx file (a zip archive) starts with a zip local file header.
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// The media type of an .xlsx workbook.
pub const MEDIA_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// Columns read: the template has twelve; a wider sheet is refused.
pub const MAX_COLUMNS: u32 = 64;

/// Cells read at most (empty and styled ones included).
pub const MAX_CELLS: usize = 1_000_000;

/// Bytes a workbook's parts may unpack to, as its zip directory declares
/// them: a small upload that would unpack to gigabytes is refused before
/// any part is read.
pub const MAX_UNPACKED_BYTES: u64 = 64 << 20;

/// Whether `bytes` look like an .xlsx workbook rather than CSV text.
pub fn is_workbook(bytes: &[u8]) -> bool {
    bytes.starts_with(ZIP_MAGIC)
}

/// The first sheet's non-empty rows, each with its line (row number in the
/// sheet, 1-based) and its cells from column A on.
#[derive(Debug)]
pub struct Sheet {
    pub name: String,
    pub rows: Vec<(usize, Vec<Cell>)>,
}

/// A workbook that cannot be read at all: named as the file, with the rule.
fn unreadable(rule: impl Into<String>) -> Vec<FieldError> {
    vec![FieldError::new("file", rule)]
}

/// The column's letters, as the spreadsheet shows them (0 is `A`).
pub fn column_letters(col: u32) -> String {
    let mut n = col + 1;
    let mut s = Vec::new();
    while n > 0 {
        let r = (n - 1) % 26;
        s.push(b'A' + r as u8);
        n = (n - 1) / 26;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

fn not_a_workbook(e: impl std::fmt::Display) -> Vec<FieldError> {
    unreadable(format!(
        "is not a readable .xlsx workbook ({e}); save the sheet as .xlsx or as CSV UTF-8"
    ))
}

/// Whether the parts of the workbook `bytes` unpack to at most `limit`
/// bytes, as its zip directory declares them.
fn unpacks_within(bytes: &[u8], limit: u64) -> Result<(), Vec<FieldError>> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(not_a_workbook)?;
    let mut total = 0u64;
    for i in 0..zip.len() {
        let part = zip.by_index_raw(i).map_err(not_a_workbook)?;
        total = total.saturating_add(part.size());
    }
    if total > limit {
        return Err(unreadable(format!(
            "would unpack to {total} bytes; a timetable workbook may unpack to at most {limit}"
        )));
    }
    Ok(())
}

/// Reads the first sheet of the .xlsx workbook `bytes`.
pub fn first_sheet(bytes: &[u8]) -> Result<Sheet, Vec<FieldError>> {
    unpacks_within(bytes, MAX_UNPACKED_BYTES)?;
    let mut book: Xlsx<_> = Xlsx::new(Cursor::new(bytes)).map_err(not_a_workbook)?;
    let Some(name) = book.sheet_names().first().cloned() else {
        return Err(unreadable(
            "the workbook has no sheet; the timetable is read from its first sheet",
        ));
    };
    let mut reader = book.worksheet_cells_reader(&name).map_err(|e| {
        unreadable(format!(
            "the first sheet `{name}` cannot be read ({e}); the timetable is read from the workbook's first sheet"
        ))
    })?;
    // Row → (column → cell), non-empty cells only.
    let mut rows: BTreeMap<u32, BTreeMap<u32, Cell>> = BTreeMap::new();
    let mut seen = 0usize;
    loop {
        let next = reader.next_cell().map_err(|e| {
            unreadable(format!(
                "the sheet `{name}` cannot be read after {seen} cells ({e})"
            ))
        })?;
        let Some(c) = next else { break };
        seen += 1;
        if seen > MAX_CELLS {
            return Err(unreadable(format!(
                "the sheet `{name}` has more than {MAX_CELLS} cells"
            )));
        }
        let (row, col) = c.get_position();
        let value = Data::from(c.get_value().clone());
        if value == Data::Empty {
            continue;
        }
        let cell = text(&value);
        if cell.as_ref().is_ok_and(|t| t.trim().is_empty()) {
            continue;
        }
        if col >= MAX_COLUMNS {
            return Err(vec![cell_error(
                row as usize + 1,
                &column_letters(col),
                format!("a timetable sheet has at most {MAX_COLUMNS} columns (A…BL)"),
            )]);
        }
        // The header and MAX_ROWS rows, and one more so that the reader
        // names the first row over the limit; the rest is never kept.
        if rows.len() > MAX_ROWS + 1
            && !rows.contains_key(&row)
            && rows.last_key_value().is_some_and(|(last, _)| *last < row)
        {
            break;
        }
        rows.entry(row).or_default().insert(col, cell);
    }
    let rows = rows
        .into_iter()
        .map(|(row, cells)| {
            let width = cells.keys().last().map_or(0, |c| *c as usize + 1);
            let mut line = vec![Ok(String::new()); width];
            for (col, cell) in cells {
                line[col as usize] = cell;
            }
            (row as usize + 1, line)
        })
        .collect();
    Ok(Sheet { name, rows })
}

/// The sheet as the CSV text a spreadsheet would save for it: its
/// non-empty rows in order, each cell as `text` gives it. A cell holding an
/// error value is written empty: `to_csv` is for a sheet whose rows have
/// been read without error (the console previews the workbook, then
/// commits this text), where such a cell can only be in a column the
/// reader ignores. Rows keep their order but not their numbers: CSV has no
/// gaps.
pub fn to_csv(sheet: &Sheet) -> String {
    let mut w = csv::WriterBuilder::new()
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    for (_, cells) in &sheet.rows {
        let record = cells.iter().map(|c| c.as_deref().unwrap_or(""));
        // Writing to a Vec cannot fail.
        let _ = w.write_record(record);
    }
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}

/// A cell's text, as the spreadsheet would save it in a CSV file, or the
/// rule it breaks.
pub fn text(value: &Data) -> Result<String, String> {
    Ok(match value {
        Data::Empty => String::new(),
        Data::String(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) => number(*f),
        Data::Bool(b) => String::from(if *b { "TRUE" } else { "FALSE" }),
        Data::DateTime(d) => date_time(d),
        Data::DateTimeIso(s) => iso(s),
        Data::DurationIso(s) => s.clone(),
        Data::Error(e) => {
            return Err(format!(
                "holds the spreadsheet error `{e}`, not a value (check the cell's formula)"
            ));
        }
    })
}

/// Whole numbers without a decimal point (`45`, not `45.0`).
fn number(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

fn clock(h: u32, m: u32, s: u32) -> String {
    if s == 0 {
        format!("{h:02}:{m:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// A date cell as `YYYY-MM-DD`, a time cell (a serial below one day) as
/// `HH:MM` (`HH:MM:SS` when it has seconds), both as `YYYY-MM-DD HH:MM`,
/// and a duration as hours and minutes. Excel keeps a fraction of a day, so
/// the value is rounded to the second first (10:00 is 0.41666…).
fn date_time(d: &ExcelDateTime) -> String {
    let serial = d.as_f64();
    if d.is_duration() {
        let total = (serial * 86_400.0).round() as i64;
        let (sign, total) = if total < 0 {
            ("-", -total)
        } else {
            ("", total)
        };
        let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
        return format!("{sign}{}", clock(h as u32, m as u32, s as u32));
    }
    let Some(at) = d.as_datetime() else {
        return number(serial);
    };
    let at = at + chrono::Duration::milliseconds(500);
    let time = clock(at.hour(), at.minute(), at.second());
    if (0.0..1.0).contains(&serial) {
        return time;
    }
    let date = at.format("%Y-%m-%d").to_string();
    if (at.hour(), at.minute(), at.second()) == (0, 0, 0) {
        date
    } else {
        format!("{date} {time}")
    }
}

/// ISO 8601 from the sheet (`2031-02-17T00:00:00`, `10:00:00`) the way the
/// CSV reader takes it: a date alone, a time as `HH:MM`.
fn iso(s: &str) -> String {
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, t),
        None if s.contains(':') => ("", s),
        None => (s, ""),
    };
    let time = time.split('.').next().unwrap_or("");
    let time = time.strip_suffix(":00").unwrap_or(time);
    match (date, time) {
        (d, "" | "00:00") if !d.is_empty() => d.to_string(),
        ("", t) => t.to_string(),
        (d, t) => format!("{d} {t}"),
    }
}

#[cfg(test)]
mod tests {
    use rust_xlsxwriter::{ExcelDateTime as W, Format, Formula, Workbook};

    use super::*;
    use crate::{domain::spec::Workload, timetable::sheet};

    /// The template's header row, English names only.
    fn header(ws: &mut rust_xlsxwriter::Worksheet, row: u32) {
        for (c, (en, _)) in sheet::COLUMNS.iter().enumerate() {
            ws.write_string(row, c as u16, *en).unwrap();
        }
    }

    /// One class's row with dates and a time stored as Excel serials, and
    /// numbers as numbers, the way a spreadsheet keeps them.
    fn class(ws: &mut rust_xlsxwriter::Worksheet, row: u32, name: &str) {
        let date = Format::new().set_num_format("yyyy-mm-dd");
        let time = Format::new().set_num_format("hh:mm");
        ws.write_string(row, 0, name).unwrap();
        ws.write_string(row, 1, "school-a").unwrap();
        ws.write_string(row, 2, "周二").unwrap();
        ws.write_datetime_with_format(row, 3, W::from_hms(10, 5, 0).unwrap(), &time)
            .unwrap();
        ws.write_number(row, 4, 40).unwrap();
        ws.write_number(row, 5, 45).unwrap();
        ws.write_string(row, 6, "cpu=500 mem=2048").unwrap();
        ws.write_number(row, 8, 30).unwrap();
        ws.write_datetime_with_format(row, 9, W::from_ymd(2031, 2, 17).unwrap(), &date)
            .unwrap();
        ws.write_datetime_with_format(row, 10, W::from_ymd(2031, 6, 30).unwrap(), &date)
            .unwrap();
        ws.write_datetime_with_format(row, 11, W::from_ymd(2031, 5, 6).unwrap(), &date)
            .unwrap();
    }

    fn run() -> Workload {
        Workload {
            command: "jupyter".into(),
            ..Default::default()
        }
    }

    fn book(fill: impl FnOnce(&mut rust_xlsxwriter::Worksheet)) -> Vec<u8> {
        let mut wb = Workbook::new();
        let ws = wb.add_worksheet();
        ws.set_name("课表").unwrap();
        fill(ws);
        wb.save_to_buffer().unwrap()
    }

    #[test]
    fn serial_dates_and_times_read_as_a_csv_would_carry_them() {
        let bytes = book(|ws| {
            header(ws, 0);
            class(ws, 1, "7-3");
        });
        assert!(is_workbook(&bytes));
        let s = first_sheet(&bytes).unwrap();
        assert_eq!(s.name, "课表");
        let (line, cells) = &s.rows[1];
        assert_eq!(*line, 2);
        let cells: Vec<&str> = cells.iter().map(|c| c.as_deref().unwrap()).collect();
        assert_eq!(
            cells,
            [
                "7-3",
                "school-a",
                "周二",
                "10:05",
                "40",
                "45",
                "cpu=500 mem=2048",
                "",
                "30",
                "2031-02-17",
                "2031-06-30",
                "2031-05-06"
            ]
        );
        let rows = sheet::read_workbook(&bytes, &run()).unwrap();
        let r = &rows[0].series;
        assert_eq!((rows[0].line, r.start_time.as_str()), (2, "10:05"));
        assert_eq!(r.rrule, "FREQ=WEEKLY;BYDAY=TU");
        assert_eq!(
            (r.term_start.as_str(), r.term_end.as_str()),
            ("2031-02-17", "2031-06-30")
        );
        assert_eq!(r.exception_dates, ["2031-05-06"]);
        assert_eq!((r.lesson.duration_seconds, r.lesson.seats), (2400, 45));
    }

    #[test]
    fn cells_become_the_text_of_a_csv_export() {
        let dt = |v: f64| {
            Data::DateTime(ExcelDateTime::new(
                v,
                calamine::ExcelDateTimeType::DateTime,
                false,
            ))
        };
        let cases = [
            (Data::Int(40), "40"),
            (Data::Float(45.0), "45"),
            (Data::Float(2.5), "2.5"),
            (Data::Bool(true), "TRUE"),
            (Data::Empty, ""),
            (Data::String(" 7-3 ".into()), " 7-3 "),
            // 2031-02-17 is serial 47896; 10:00 is 10/24 of a day.
            (dt(47896.0), "2031-02-17"),
            (dt(10.0 / 24.0), "10:00"),
            (dt(14.0 / 24.0 + 20.0 / 1440.0), "14:20"),
            // A time a hair under the minute (how 08:00 can be stored).
            (dt(8.0 / 24.0 - 1e-9), "08:00"),
            (dt(47896.0 + 0.5), "2031-02-17 12:00"),
            // A date stored a hair under midnight is still that date.
            (dt(47896.0 - 1e-9), "2031-02-17"),
            (
                Data::DateTimeIso("2031-02-17T00:00:00".into()),
                "2031-02-17",
            ),
            (Data::DateTimeIso("10:30:00".into()), "10:30"),
        ];
        for (value, want) in cases {
            assert_eq!(text(&value).as_deref(), Ok(want), "{value:?}");
        }
        assert!(
            text(&Data::Error(calamine::CellErrorType::NA))
                .unwrap_err()
                .contains("#N/A")
        );
        assert_eq!(column_letters(0), "A");
        assert_eq!(column_letters(27), "AB");
    }

    #[test]
    fn a_sheet_saved_as_csv_reads_back_as_the_same_rows() {
        // Rows below a gap, a cell with a comma and a quote, and a formula
        // error in a column the reader does not read.
        let bytes = book(|ws| {
            header(ws, 2);
            class(ws, 3, "7-3");
            class(ws, 7, "7-4, \"B\"");
            ws.write_formula(7, 20, Formula::new("=1/0").set_result("#DIV/0!"))
                .unwrap();
        });
        let from_xlsx = sheet::read_workbook(&bytes, &run()).unwrap();
        let csv = to_csv(&first_sheet(&bytes).unwrap());
        let from_csv = sheet::read(&csv, &run()).unwrap();
        assert_eq!(from_xlsx.len(), 2);
        assert_eq!(from_csv.len(), 2);
        for (x, c) in from_xlsx.iter().zip(&from_csv) {
            assert_eq!(format!("{:?}", x.series), format!("{:?}", c.series));
        }
        assert!(csv.contains("\"7-4, \"\"B\"\"\""), "{csv}");
    }

    #[test]
    fn a_bad_cell_is_named_by_its_row_and_column() {
        // The header on row 3, an empty row 5: lines are the sheet's rows.
        let classes = |ws: &mut rust_xlsxwriter::Worksheet| {
            header(ws, 2);
            class(ws, 3, "7-1");
            ws.write_string(4, 0, "").unwrap();
            class(ws, 5, "7-2");
            ws.write_formula(5, 4, Formula::new("=1/0").set_result("#DIV/0!"))
                .unwrap();
            ws.write_string(5, 2, "Funday").unwrap();
            class(ws, 6, "7-4");
            ws.write_number(6, 5, 2.5).unwrap();
        };
        // The first non-empty row is the header, as for CSV: a title above
        // the header is named as a column that is not the template's.
        let titled = book(|ws| {
            ws.write_string(0, 0, "Term 2 timetable").unwrap();
            classes(ws);
        });
        let errors = sheet::read_workbook(&titled, &run()).unwrap_err();
        assert_eq!(errors[0].field, "line 1, column 1", "{errors:?}");
        let bytes = book(classes);
        let errors = sheet::read_workbook(&bytes, &run()).unwrap_err();
        let named: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.rule.as_str()))
            .collect();
        assert_eq!(
            named,
            [
                (
                    "line 6, column duration (min)",
                    "holds the spreadsheet error `#DIV/0!`, not a value (check the cell's formula)"
                ),
                (
                    "line 6, column weekday",
                    "`Funday` is not a weekday (MO…SU, 1–7, 周一…周日)"
                ),
                ("line 7, column seats", "`2.5` is not a whole number"),
            ]
        );
    }

    #[test]
    fn a_workbook_that_cannot_be_read_is_refused_naming_the_file() {
        let e = sheet::read_workbook(b"PK\x03\x04 not really a zip", &run()).unwrap_err();
        assert_eq!(e[0].field, "file");
        assert!(
            e[0].rule.starts_with("is not a readable .xlsx workbook"),
            "{}",
            e[0].rule
        );
        let e = sheet::read_workbook(&book(|_| {}), &run()).unwrap_err();
        assert_eq!(e[0].field, "file");
        assert!(
            e[0].rule.starts_with("the first sheet `课表` is empty"),
            "{}",
            e[0].rule
        );
        // A header and no class below it: as for CSV.
        let e = sheet::read_workbook(&book(|ws| header(ws, 0)), &run()).unwrap_err();
        assert_eq!(
            (e[0].field.as_str(), e[0].rule.as_str()),
            ("line 2, column row", "the file has no row below its header")
        );
        // A workbook that would unpack past the limit is never unpacked.
        let small = book(|ws| header(ws, 0));
        assert_eq!(unpacks_within(&small, MAX_UNPACKED_BYTES), Ok(()));
        let e = unpacks_within(&small, 1000).unwrap_err();
        assert_eq!(e[0].field, "file");
        assert!(e[0].rule.starts_with("would unpack to "), "{}", e[0].rule);
        let wide = book(|ws| {
            header(ws, 0);
            ws.write_string(0, 70, "notes").unwrap();
        });
        let e = sheet::read_workbook(&wide, &run()).unwrap_err();
        assert_eq!(e[0].field, "line 1, column BS");
    }
}
