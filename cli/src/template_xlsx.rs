//! `classgrid timetable template --xlsx FILE`: the broker's template (CSV,
//! headers in Chinese and English, one example row) written as an .xlsx
//! workbook the way a spreadsheet keeps it: dates as date cells
//! (`yyyy-mm-dd`), the start time as a time cell (`hh:mm`), whole numbers
//! as numbers, everything else as text. The broker reads such a workbook
//! back into the same rows as the CSV.

use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};

/// The workbook for the CSV template `csv`.
pub fn workbook(csv: &str) -> anyhow::Result<Vec<u8>> {
    let date = Format::new().set_num_format("yyyy-mm-dd");
    let time = Format::new().set_num_format("hh:mm");
    let bold = Format::new().set_bold();
    let mut book = Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name("timetable")?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(csv.trim_start_matches('\u{feff}').as_bytes());
    for (r, record) in reader.records().enumerate() {
        let record = record?;
        let row = u32::try_from(r)?;
        for (c, cell) in record.iter().enumerate() {
            let col = u16::try_from(c)?;
            if r == 0 {
                sheet.write_string_with_format(row, col, cell, &bold)?;
                sheet.set_column_width(col, 16)?;
            } else if let Some((y, m, d)) = ymd(cell) {
                sheet.write_datetime_with_format(
                    row,
                    col,
                    ExcelDateTime::from_ymd(y, m, d)?,
                    &date,
                )?;
            } else if let Some((h, m)) = hm(cell) {
                sheet.write_datetime_with_format(
                    row,
                    col,
                    ExcelDateTime::from_hms(h, m, 0)?,
                    &time,
                )?;
            } else if let Ok(n) = cell.parse::<u32>() {
                sheet.write_number(row, col, n)?;
            } else if !cell.is_empty() {
                sheet.write_string(row, col, cell)?;
            }
        }
    }
    Ok(book.save_to_buffer()?)
}

/// `YYYY-MM-DD`, one date only.
fn ymd(s: &str) -> Option<(u16, u8, u8)> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    use chrono::Datelike;
    Some((
        u16::try_from(d.year()).ok()?,
        d.month() as u8,
        d.day() as u8,
    ))
}

/// `HH:MM`.
fn hm(s: &str) -> Option<(u16, u8)> {
    let (h, m) = s.split_once(':')?;
    let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u8>().ok()?);
    (h < 24 && m < 60 && s.len() == 5).then_some((h, m))
}

#[cfg(test)]
mod tests {
    use classgrid_broker::{domain::spec::Workload, timetable::sheet};

    #[test]
    fn the_workbook_template_reads_back_as_the_csv_template() {
        let csv = sheet::template();
        let bytes = super::workbook(&csv).unwrap();
        let run = Workload {
            command: "jupyter".into(),
            ..Default::default()
        };
        let from_csv = sheet::read(&csv, &run).unwrap();
        let from_xlsx = sheet::read_workbook(&bytes, &run).unwrap();
        assert_eq!(from_xlsx.len(), 1);
        assert_eq!(from_xlsx[0].line, from_csv[0].line);
        assert_eq!(
            format!("{:?}", from_xlsx[0].series),
            format!("{:?}", from_csv[0].series)
        );
        // The cells are typed as a spreadsheet keeps them.
        let s = classgrid_broker::timetable::workbook::first_sheet(&bytes).unwrap();
        assert_eq!(s.rows[1].1[3].as_deref(), Ok("10:00"));
    }
}
