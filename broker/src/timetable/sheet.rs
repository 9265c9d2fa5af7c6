//! The timetable sheet: twelve columns, headers in Chinese and English
//! (either, or both as in the template, are recognised), one class's weekly
//! lesson per row. Each row becomes a series: `FREQ=WEEKLY;BYDAY=<weekday>`
//! at the start time, from the first to the last date, less the exception
//! dates.

use crate::{
    domain::{
        FieldError,
        lesson::RawBooking,
        spec::{RawDataset, RawGpu, RawSeat, Workload},
    },
    series::request::RawSeries,
};

/// The columns, in the template's order: (English, Chinese).
pub const COLUMNS: [(&str, &str); 12] = [
    ("class", "班级"),
    ("school", "学校"),
    ("weekday", "星期"),
    ("start time", "开始时间"),
    ("duration (min)", "时长(分钟)"),
    ("seats", "座位数"),
    ("seat spec", "座位规格"),
    ("dataset", "数据集"),
    ("max RTT (ms)", "最大时延(毫秒)"),
    ("first date", "首次日期"),
    ("last date", "末次日期"),
    ("exception dates", "例外日期"),
];

/// The downloadable template: headers in both languages and one example row.
pub fn template() -> String {
    let header: Vec<String> = COLUMNS
        .iter()
        .map(|(en, zh)| format!("{zh} {en}"))
        .collect();
    format!(
        "{}\n7-3,demo-school,TU,10:00,40,45,cpu=500 mem=2048 gpu=nvidia/T4:2048:10,,30,2031-02-17,2031-06-30,2031-05-06\n",
        header.join(",")
    )
}

pub use super::cells::{Cell, MAX_ROWS, cell_error};

/// A timetable file as uploaded: CSV text, or an .xlsx workbook (its first
/// sheet is read).
#[derive(Debug, Clone, Copy)]
pub enum Upload<'a> {
    Csv(&'a str),
    Xlsx(&'a [u8]),
}

impl<'a> Upload<'a> {
    /// An .xlsx workbook when `bytes` start as one (a zip archive), CSV
    /// otherwise; `Err` when CSV is not UTF-8.
    pub fn detect(bytes: &'a [u8]) -> Result<Self, std::str::Utf8Error> {
        if super::workbook::is_workbook(bytes) {
            Ok(Upload::Xlsx(bytes))
        } else {
            std::str::from_utf8(bytes).map(Upload::Csv)
        }
    }
}

/// The rows of `file`, each a series running `workload`, or every bad cell.
pub fn read_upload(file: Upload<'_>, workload: &Workload) -> Result<Vec<Row>, Vec<FieldError>> {
    match file {
        Upload::Csv(text) => read(text, workload),
        Upload::Xlsx(bytes) => read_workbook(bytes, workload),
    }
}

/// The rows of the .xlsx workbook's first sheet, by the same rules as CSV:
/// the first non-empty row is the header, and each row's line is its row
/// number in the sheet.
pub fn read_workbook(bytes: &[u8], workload: &Workload) -> Result<Vec<Row>, Vec<FieldError>> {
    let sheet = super::workbook::first_sheet(bytes)?;
    let mut rows = sheet.rows.into_iter();
    let Some((header_line, header)) = rows.next() else {
        return Err(vec![FieldError::new(
            "file",
            format!(
                "the first sheet `{}` is empty; the timetable is read from the workbook's first sheet",
                sheet.name
            ),
        )]);
    };
    read_rows(
        header_line,
        &header,
        rows.map(|(l, r)| (l, Ok(r))),
        workload,
    )
}

/// One row read: its line and the series it books.
#[derive(Debug, Clone)]
pub struct Row {
    pub line: usize,
    pub series: RawSeries,
}

/// Which column each header names; an error per missing or unknown one.
fn columns(line: usize, header: &[Cell]) -> Result<[usize; 12], Vec<FieldError>> {
    let mut at = [usize::MAX; 12];
    let mut errors = Vec::new();
    for (i, cell) in header.iter().enumerate() {
        let cell = match cell {
            Ok(c) => c.trim().trim_start_matches('\u{feff}'),
            Err(rule) => {
                errors.push(cell_error(line, &format!("{}", i + 1), rule.clone()));
                continue;
            }
        };
        let lower = cell.to_lowercase();
        // The longest English name that the cell contains wins ("seat spec"
        // contains "seats"' prefix but not "seats").
        let found = COLUMNS
            .iter()
            .enumerate()
            .filter(|(_, (en, zh))| lower.contains(&en.to_lowercase()) || cell.contains(zh))
            .max_by_key(|(_, (en, _))| en.len());
        match found {
            Some((c, _)) if at[c] == usize::MAX => at[c] = i,
            Some((_, (en, _))) => errors.push(cell_error(line, en, "appears twice")),
            None if cell.is_empty() => {}
            None => errors.push(cell_error(
                line,
                &format!("{}", i + 1),
                format!("`{cell}` is not a column of the template"),
            )),
        }
    }
    for (c, (en, zh)) in COLUMNS.iter().enumerate() {
        if at[c] == usize::MAX {
            errors.push(cell_error(
                line,
                en,
                format!("is missing (header `{zh} {en}`)"),
            ));
        }
    }
    if errors.is_empty() {
        Ok(at)
    } else {
        Err(errors)
    }
}

/// `MO`…`SU`, 1–7 (Monday is 1), English names, or 周一…周日 / 星期一….
pub fn weekday(s: &str) -> Option<&'static str> {
    const DAYS: [&str; 7] = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"];
    const ZH: [&str; 7] = ["一", "二", "三", "四", "五", "六", "日"];
    let t = s.trim();
    let lower = t.to_lowercase();
    if let Ok(n) = t.parse::<usize>() {
        return (1..=7).contains(&n).then(|| DAYS[n - 1]);
    }
    let zh = t.trim_start_matches("星期").trim_start_matches('周');
    if let Some(i) = ZH
        .iter()
        .position(|d| *d == zh)
        .or((zh == "天").then_some(6))
    {
        return Some(DAYS[i]);
    }
    if let Some(i) = DAYS.iter().position(|d| d.eq_ignore_ascii_case(t)) {
        return Some(DAYS[i]);
    }
    const EN: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    EN.iter()
        .position(|d| lower.starts_with(d))
        .map(|i| DAYS[i])
}

/// `cpu=<millicores> mem=<MiB> gpu=<vendor>[/<model>]:<MiB>:<percent>
/// runtime=<name>`, any order, gpu optional.
fn seat_spec(s: &str) -> Result<RawSeat, String> {
    let mut seat = RawSeat::default();
    for part in s.split_whitespace() {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not key=value (cpu=, mem=, gpu=, runtime=)"))?;
        let num = |v: &str| {
            v.trim_end_matches('m')
                .parse::<i64>()
                .map_err(|_| format!("{k}={v}: not a whole number"))
        };
        match k {
            "cpu" => seat.cpu_millis = num(v)?,
            "mem" => seat.memory_mib = num(v)?,
            "runtime" => seat.runtime = v.to_string(),
            "gpu" => {
                let parts: Vec<&str> = v.split(':').collect();
                let [who, mem, pct] = parts[..] else {
                    return Err(format!("gpu={v}: must be vendor[/model]:MiB:percent"));
                };
                let (vendor, model) = who.split_once('/').unwrap_or((who, ""));
                seat.gpu = Some(RawGpu {
                    vendors: vec![vendor.to_string()],
                    model: model.to_string(),
                    memory_mib: num(mem)?,
                    compute_percent: num(pct)?,
                    count: 1,
                    min_isolation: String::new(),
                });
            }
            other => return Err(format!("`{other}` is not one of cpu, mem, gpu, runtime")),
        }
    }
    Ok(seat)
}

/// `name;url;sha256;size_bytes`, or empty for none.
fn dataset(s: &str) -> Result<Vec<RawDataset>, String> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = s.split(';').map(str::trim).collect();
    let [name, url, sha256, size] = parts[..] else {
        return Err("must be name;url;sha256;size_bytes".into());
    };
    let size_bytes = size
        .parse()
        .map_err(|_| format!("size `{size}` is not a whole number of bytes"))?;
    Ok(vec![RawDataset {
        name: name.into(),
        url: url.into(),
        sha256: sha256.into(),
        size_bytes,
    }])
}

fn whole(s: &str) -> Result<i64, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{}` is not a whole number", s.trim()))
}

/// The rows of `text` (CSV), each a series running `workload`, or every
/// bad cell.
pub fn read(text: &str, workload: &Workload) -> Result<Vec<Row>, Vec<FieldError>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let header: Vec<Cell> = reader
        .headers()
        .map_err(|e| vec![cell_error(1, "header", format!("cannot be read: {e}"))])?
        .iter()
        .map(|c| Ok(c.to_string()))
        .collect();
    let records = reader.records().enumerate().map(|(i, record)| {
        let cells = record
            .map(|r| r.iter().map(|c| Ok(c.to_string())).collect::<Vec<Cell>>())
            .map_err(|e| format!("cannot be read: {e}"));
        (i + 2, cells)
    });
    read_rows(1, &header, records, workload)
}

/// The rows below a header on `header_line`, each with its line and its
/// cells (or why the row cannot be read), read into series running
/// `workload`, or every bad cell. CSV and workbooks alike.
pub fn read_rows(
    header_line: usize,
    header: &[Cell],
    records: impl Iterator<Item = (usize, Result<Vec<Cell>, String>)>,
    workload: &Workload,
) -> Result<Vec<Row>, Vec<FieldError>> {
    let at = columns(header_line, header)?;
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (line, record) in records {
        let record = match record {
            Ok(r) => r,
            Err(rule) => {
                errors.push(cell_error(line, "row", rule));
                continue;
            }
        };
        if record
            .iter()
            .all(|c| c.as_ref().is_ok_and(|c| c.is_empty()))
        {
            continue;
        }
        if rows.len() + errors.len() >= MAX_ROWS {
            errors.push(cell_error(
                line,
                "row",
                format!("a file has at most {MAX_ROWS} rows"),
            ));
            break;
        }
        match row(line, &record, &at, workload) {
            Ok(r) => rows.push(r),
            Err(mut e) => errors.append(&mut e),
        }
    }
    if rows.is_empty() && errors.is_empty() {
        errors.push(cell_error(
            header_line + 1,
            "row",
            "the file has no row below its header",
        ));
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

fn row(
    line: usize,
    r: &[Cell],
    at: &[usize; 12],
    workload: &Workload,
) -> Result<Row, Vec<FieldError>> {
    let mut errors = Vec::new();
    // A cell that holds no value (a workbook's error value) is named once,
    // with its own rule, and read as empty by the checks below.
    let mut broken = [false; 12];
    for (c, &i) in at.iter().enumerate() {
        if let Some(Err(rule)) = r.get(i) {
            broken[c] = true;
            errors.push(cell_error(line, COLUMNS[c].0, rule.clone()));
        }
    }
    let cell = |c: usize| match r.get(at[c]) {
        Some(Ok(v)) => v.trim(),
        _ => "",
    };
    let mut bad = |c: usize, rule: String| {
        if !broken[c] {
            errors.push(cell_error(line, COLUMNS[c].0, rule));
        }
    };
    let day = weekday(cell(2)).unwrap_or_else(|| {
        bad(
            2,
            format!("`{}` is not a weekday (MO…SU, 1–7, 周一…周日)", cell(2)),
        );
        "MO"
    });
    let mut number = |c: usize, empty: i64| match cell(c) {
        "" => empty,
        v => whole(v).unwrap_or_else(|e| {
            bad(c, e);
            0
        }),
    };
    let minutes = number(4, 0);
    let seats = number(5, 0);
    let max_rtt_ms = number(8, 0);
    let seat = seat_spec(cell(6)).unwrap_or_else(|e| {
        bad(6, e);
        RawSeat::default()
    });
    let datasets = dataset(cell(7)).unwrap_or_else(|e| {
        bad(7, e);
        Vec::new()
    });
    if !errors.is_empty() {
        return Err(errors);
    }
    let exception_dates = cell(11)
        .split([' ', ';', '/'])
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect();
    Ok(Row {
        line,
        series: RawSeries {
            request_id: String::new(),
            lesson: RawBooking {
                school_site: cell(1).into(),
                title: cell(0).into(),
                duration_seconds: minutes * 60,
                seats,
                seat: Some(seat),
                workload: workload.clone(),
                datasets,
                max_rtt_ms,
                ..Default::default()
            },
            rrule: format!("FREQ=WEEKLY;BYDAY={day}"),
            start_time: cell(3).into(),
            term_start: cell(9).into(),
            term_end: cell(10).into(),
            exception_dates,
            policy: String::new(),
        },
    })
}

/// The column a series field came from, for naming a row's error.
pub fn column_of(field: &str) -> &'static str {
    let head = field.split(['.', '[']).next().unwrap_or(field);
    match head {
        "title" => "class",
        "school_site" => "school",
        "rrule" => "weekday",
        "start_time" => "start time",
        "duration_seconds" => "duration (min)",
        "seats" | "min_seats" => "seats",
        "seat" => "seat spec",
        "datasets" => "dataset",
        "max_rtt_ms" => "max RTT (ms)",
        "term_start" => "first date",
        "term_end" => "last date",
        "exception_dates" => "exception dates",
        _ => "row",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> Workload {
        Workload {
            command: "jupyter".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_template_reads_back_as_one_weekly_series() {
        let rows = read(&template(), &run()).unwrap();
        assert_eq!(rows.len(), 1);
        let s = &rows[0].series;
        assert_eq!(rows[0].line, 2);
        assert_eq!(s.rrule, "FREQ=WEEKLY;BYDAY=TU");
        assert_eq!(s.lesson.title, "7-3");
        assert_eq!(s.lesson.duration_seconds, 2400);
        assert_eq!(s.lesson.seats, 45);
        let gpu = s.lesson.seat.as_ref().unwrap().gpu.as_ref().unwrap();
        assert_eq!(
            (gpu.vendors[0].as_str(), gpu.model.as_str()),
            ("nvidia", "T4")
        );
        assert_eq!((gpu.memory_mib, gpu.compute_percent), (2048, 10));
        assert_eq!(s.exception_dates, ["2031-05-06"]);
        assert_eq!(s.lesson.workload.command, "jupyter");
    }

    #[test]
    fn headers_in_either_language_and_any_order() {
        let zh = "学校,班级,星期,开始时间,时长(分钟),座位数,座位规格,数据集,最大时延(毫秒),首次日期,末次日期,例外日期\n\
                  school-b,8-1,周三,14:00,45,30,cpu=250,,,2031-03-01,2031-06-30,\n";
        let rows = read(zh, &run()).unwrap();
        assert_eq!(rows[0].series.lesson.school_site, "school-b");
        assert_eq!(rows[0].series.rrule, "FREQ=WEEKLY;BYDAY=WE");
        assert!(rows[0].series.lesson.seat.as_ref().unwrap().gpu.is_none());
        for (s, want) in [
            ("1", "MO"),
            ("Friday", "FR"),
            ("星期日", "SU"),
            ("sa", "SA"),
        ] {
            assert_eq!(weekday(s), Some(want), "{s}");
        }
        assert_eq!(weekday("8"), None);
    }

    #[test]
    fn every_bad_cell_is_named_by_line_and_column() {
        let text = format!(
            "{}7-1,school-a,XX,10:00,forty,45,cpu=500 gpu=nvidia,,30,2031-02-17,2031-06-30,\n\
             7-2,school-a,MO,10:00,40,45,cpu=500,a;b,30,2031-02-17,2031-06-30,\n",
            template().lines().next().unwrap().to_string() + "\n"
        );
        let errors = read(&text, &run()).unwrap_err();
        let named: Vec<String> = errors.iter().map(|e| e.field.clone()).collect();
        assert_eq!(
            named,
            [
                "line 2, column weekday",
                "line 2, column duration (min)",
                "line 2, column seat spec",
                "line 3, column dataset"
            ]
        );
        assert!(
            errors[2].rule.contains("vendor[/model]:MiB:percent"),
            "{}",
            errors[2].rule
        );
        let missing = read("class,school\nx,y\n", &run()).unwrap_err();
        assert!(
            missing
                .iter()
                .any(|e| e.field == "line 1, column weekday" && e.rule.starts_with("is missing"))
        );
    }

    #[test]
    fn series_fields_map_to_the_columns_they_came_from() {
        assert_eq!(column_of("seat.gpu.memory_mib"), "seat spec");
        assert_eq!(column_of("exception_dates[2]"), "exception dates");
        assert_eq!(column_of("term_start"), "first date");
        assert_eq!(column_of("workload.command"), "row");
    }
}
