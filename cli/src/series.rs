//! `classgrid series …` and `classgrid timetable …`: recurring lessons over
//! a term, and a school's timetable imported from its spreadsheet, each with
//! a dry run that shows every occurrence's outcome and the term's voucher
//! cost before anything is written.

use clap::Subcommand;
use classgrid_proto::v1::{
    self as pb, series_service_client::SeriesServiceClient,
    timetable_service_client::TimetableServiceClient,
};
use serde_json::{Value, json};

use crate::{
    client::{Global, Output, input},
    commands::SpecArgs,
    output::{self, print_json, table},
    parse::{parse_duration, parse_time, ts},
    tz::show,
};

#[derive(Subcommand)]
pub enum Series {
    /// Book a lesson every week (or by any RRULE) over a term. Example:
    /// classgrid series book --school demo-school --title "AI 7-3" --rrule FREQ=WEEKLY;BYDAY=TU --start-time 10:00 --term-start 2031-02-17 --term-end 2031-06-30 --except 2031-05-06 --seats 45 --dry-run -- jupyter lab --port '$(PORT)'
    Book {
        #[arg(long)]
        school: String,
        #[arg(long, default_value = "")]
        title: String,
        /// RFC 5545 RRULE without DTSTART.
        #[arg(long)]
        rrule: String,
        /// Local start time, HH:MM, in the region's time zone.
        #[arg(long)]
        start_time: String,
        /// First day of the term, YYYY-MM-DD.
        #[arg(long)]
        term_start: String,
        /// Last day of the term, YYYY-MM-DD (included).
        #[arg(long)]
        term_end: String,
        /// A date with no lesson (repeatable).
        #[arg(long = "except")]
        exceptions: Vec<String>,
        #[arg(long, default_value = "40m")]
        duration: String,
        #[arg(long)]
        seats: i32,
        #[arg(long, default_value_t = 0)]
        max_rtt_ms: i32,
        /// all_or_nothing or book_what_fits.
        #[arg(long, default_value = "all_or_nothing")]
        policy: String,
        /// Decide as a booking would, write nothing, hold nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, default_value = "")]
        request_id: String,
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// A series and each occurrence's lesson and state.
    Get { id: String },
    /// Series of a school (or all you see).
    List {
        #[arg(long, default_value = "")]
        school: String,
    },
    /// Cancel one occurrence (its voucher hold is refunded).
    CancelOccurrence {
        series: String,
        lesson: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Move one occurrence to another time.
    Move {
        series: String,
        lesson: String,
        /// RFC 3339, `now`, or relative (+2h).
        #[arg(long)]
        start: String,
    },
    /// Change every future occurrence (all or none): time, duration, seats, RTT limit.
    Change {
        id: String,
        /// Occurrences from then on change (default now).
        #[arg(long)]
        from: Option<String>,
        /// New local start time, HH:MM.
        #[arg(long, default_value = "")]
        start_time: String,
        #[arg(long)]
        duration: Option<String>,
        #[arg(long, default_value_t = 0)]
        seats: i32,
        #[arg(long, default_value_t = 0)]
        max_rtt_ms: i32,
    },
    /// End a series early: occurrences from --from (default now) on are cancelled.
    End {
        id: String,
        #[arg(long)]
        from: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum Timetable {
    /// Print the CSV template (headers in Chinese and English, one example
    /// row), or write it as an .xlsx workbook with --xlsx FILE.
    Template {
        /// Write the template as an .xlsx workbook to FILE instead.
        #[arg(long, value_name = "FILE")]
        xlsx: Option<std::path::PathBuf>,
    },
    /// Import a timetable sheet (CSV, or an .xlsx workbook: its first sheet
    /// is read): check every row, then book every class's weekly series as
    /// one set, or preview it with --dry-run.
    Import {
        file: std::path::PathBuf,
        /// Preview: each occurrence's outcome and the term's voucher cost; nothing written.
        #[arg(long)]
        dry_run: bool,
        /// all_or_nothing or book_what_fits, for the whole sheet.
        #[arg(long, default_value = "all_or_nothing")]
        policy: String,
        /// What every seat runs, after `--` (not needed for runtime=notebook seats).
        #[arg(last = true)]
        command: Vec<String>,
    },
}

pub async fn series(g: &Global, c: Series) -> anyhow::Result<()> {
    let mut client = SeriesServiceClient::new(g.channel().await?);
    match c {
        Series::Book {
            school,
            title,
            rrule,
            start_time,
            term_start,
            term_end,
            exceptions,
            duration,
            seats,
            max_rtt_ms,
            policy,
            dry_run,
            request_id,
            spec,
        } => {
            let req = pb::BookSeriesRequest {
                request_id,
                lesson: Some(pb::BookLessonRequest {
                    school_site: school,
                    title,
                    duration_seconds: parse_duration("--duration", &duration)?,
                    seats,
                    seat: Some(spec.spec()?),
                    workload: Some(spec.workload()?),
                    max_rtt_ms,
                    ..Default::default()
                }),
                rrule,
                start_time,
                term_start,
                term_end,
                exception_dates: exceptions,
                policy,
                dry_run,
            };
            let b = client.book(req).await?.into_inner();
            booking(g.output, &b);
        }
        Series::Get { id } => {
            let s = client.get(pb::GetSeriesRequest { id }).await?.into_inner();
            one(g.output, &s);
        }
        Series::List { school } => {
            let r = client
                .list(pb::ListSeriesRequest {
                    school_site: school,
                    ..Default::default()
                })
                .await?
                .into_inner();
            if g.output == Output::Json {
                return Ok(print_json(Value::Array(
                    r.series.iter().map(series_json).collect(),
                )));
            }
            table(
                &[
                    "ID", "SCHOOL", "TITLE", "RULE", "AT", "TERM", "SEATS", "POLICY",
                ],
                r.series
                    .iter()
                    .map(|s| {
                        vec![
                            s.id.clone(),
                            s.school_site.clone(),
                            s.title.clone(),
                            s.rrule.clone(),
                            s.start_time.clone(),
                            format!("{} – {}", s.term_start, s.term_end),
                            s.seats.to_string(),
                            s.policy.clone(),
                        ]
                    })
                    .collect(),
            );
        }
        Series::CancelOccurrence {
            series,
            lesson,
            reason,
        } => {
            let l = client
                .cancel_occurrence(pb::OccurrenceRequest {
                    series_id: series,
                    lesson_id: lesson,
                    reason,
                })
                .await?
                .into_inner();
            output::lesson(g.output, &l);
        }
        Series::Move {
            series,
            lesson,
            start,
        } => {
            let l = client
                .move_occurrence(pb::MoveOccurrenceRequest {
                    series_id: series,
                    lesson_id: lesson,
                    start: Some(ts(parse_time("--start", &start)?)),
                })
                .await?
                .into_inner();
            output::lesson(g.output, &l);
        }
        Series::Change {
            id,
            from,
            start_time,
            duration,
            seats,
            max_rtt_ms,
        } => {
            let from = from.map(|f| parse_time("--from", &f)).transpose()?.map(ts);
            let duration_seconds = match duration {
                Some(d) => parse_duration("--duration", &d)?,
                None => 0,
            };
            let s = client
                .change_future(pb::ChangeFutureRequest {
                    id,
                    from,
                    start_time,
                    duration_seconds,
                    seats,
                    max_rtt_ms,
                })
                .await?
                .into_inner();
            one(g.output, &s);
        }
        Series::End { id, from } => {
            let from = from.map(|f| parse_time("--from", &f)).transpose()?.map(ts);
            let s = client
                .end(pb::EndSeriesRequest { id, from })
                .await?
                .into_inner();
            one(g.output, &s);
        }
    }
    Ok(())
}

pub async fn timetable(g: &Global, c: Timetable) -> anyhow::Result<()> {
    let mut client = TimetableServiceClient::new(g.channel().await?);
    match c {
        Timetable::Template { xlsx } => {
            let t = client
                .template(pb::TimetableTemplateRequest {})
                .await?
                .into_inner();
            match xlsx {
                None => print!("{}", t.csv),
                Some(path) => {
                    let bytes = crate::template_xlsx::workbook(&t.csv)?;
                    std::fs::write(&path, bytes).map_err(|e| {
                        input(format!("{}: cannot be written: {e}", path.display()))
                    })?;
                }
            }
        }
        Timetable::Import {
            file,
            dry_run,
            policy,
            command,
        } => {
            let content = std::fs::read(&file)
                .map_err(|e| input(format!("{}: cannot be read: {e}", file.display())))?;
            sheet_file(&file, &content).map_err(input)?;
            let workload = command.split_first().map(|(c, a)| pb::Workload {
                command: c.clone(),
                args: a.to_vec(),
                ..Default::default()
            });
            let r = client
                .import(pb::ImportTimetableRequest {
                    content,
                    policy,
                    dry_run,
                    workload,
                })
                .await
                .map_err(|s| named(&file, s))?
                .into_inner();
            imported(g.output, &r);
        }
    }
    Ok(())
}

/// Whether `path` can be sent as a timetable: CSV, or an .xlsx workbook
/// (the broker tells them apart by the workbook's first bytes, a zip
/// archive). A file named .xlsx that is not one, and spreadsheet formats
/// the broker does not read, are refused here, naming the file.
fn sheet_file(path: &std::path::Path, content: &[u8]) -> Result<(), String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let workbook = classgrid_broker::timetable::workbook::is_workbook(content);
    match ext.as_str() {
        "xlsx" | "xlsm" if !workbook => Err(format!(
            "{}: is named .{ext} but is not an .xlsx workbook (it does not start as a zip archive); save it again as .xlsx, or as CSV UTF-8",
            path.display()
        )),
        "xls" | "ods" | "numbers" | "et" => Err(format!(
            "{}: .{ext} files are not read; save the sheet as .xlsx (Excel workbook) or as CSV UTF-8",
            path.display()
        )),
        _ => Ok(()),
    }
}

/// A refused sheet's answer names the file: `term.xlsx: line 4, column …`.
fn named(path: &std::path::Path, s: tonic::Status) -> tonic::Status {
    if s.code() != tonic::Code::InvalidArgument {
        return s;
    }
    let message = format!("{}: {}", path.display(), s.message());
    tonic::Status::with_details(s.code(), message, s.details().to_vec().into())
}

fn cost_json(c: Option<&pb::VoucherCost>) -> Value {
    let c = c.cloned().unwrap_or_default();
    json!({
        "accelerator_hours": c.accelerator_hours,
        "amount_uah": c.amount_uah,
        "vouchers": c.vouchers.iter().map(|v| json!({"voucher_id": v.voucher_id, "accelerator_hours": v.accelerator_hours})).collect::<Vec<_>>(),
    })
}

fn occurrence_json(o: &pb::Occurrence) -> Value {
    json!({
        "start": show(o.start.as_ref()),
        "admitted": o.admitted,
        "lesson_id": o.lesson_id,
        "lesson_state": o.lesson_state,
        "lesson_start": show(o.lesson_start.as_ref()),
        "reason": o.reason,
        "cost": cost_json(o.cost.as_ref()),
    })
}

fn series_json(s: &pb::Series) -> Value {
    json!({
        "id": s.id, "school_site": s.school_site, "title": s.title, "rrule": s.rrule,
        "time_zone": s.time_zone, "start_time": s.start_time, "duration_seconds": s.duration_seconds,
        "term_start": s.term_start, "term_end": s.term_end, "exception_dates": s.exception_dates,
        "policy": s.policy, "seats": s.seats, "ended": show(s.ended.as_ref()),
        "occurrences": s.occurrences.iter().map(occurrence_json).collect::<Vec<_>>(),
    })
}

fn booking_json(b: &pb::SeriesBooking) -> Value {
    json!({
        "dry_run": b.dry_run, "admitted": b.admitted, "refused": b.refused, "past": b.past,
        "cost": cost_json(b.cost.as_ref()),
        "occurrences": b.occurrences.iter().map(occurrence_json).collect::<Vec<_>>(),
        "series": b.series.as_ref().map(series_json),
    })
}

fn occurrences(os: &[pb::Occurrence]) {
    table(
        &[
            "OCCURRENCE",
            "OUTCOME",
            "LESSON",
            "STATE",
            "HOURS",
            "REASON",
        ],
        os.iter()
            .map(|o| {
                vec![
                    show(o.start.as_ref()),
                    if o.admitted { "fits" } else { "REFUSED" }.into(),
                    o.lesson_id.clone(),
                    o.lesson_state.clone(),
                    o.cost
                        .as_ref()
                        .map(|c| c.accelerator_hours.clone())
                        .unwrap_or_default(),
                    o.reason.clone(),
                ]
            })
            .collect(),
    );
}

fn headline(dry_run: bool, admitted: i32, refused: i32, cost: Option<&pb::VoucherCost>) {
    let hours = cost.map(|c| c.accelerator_hours.as_str()).unwrap_or("0");
    let what = if dry_run {
        "dry run (nothing written or held)"
    } else {
        "booked"
    };
    println!(
        "{what}: {admitted} occurrence(s) fit, {refused} do not; voucher cost of the term: {hours} accelerator-hours"
    );
}

fn booking(o: Output, b: &pb::SeriesBooking) {
    if o == Output::Json {
        return print_json(booking_json(b));
    }
    if let Some(s) = &b.series {
        println!("series {}  {}  school={}", s.id, s.rrule, s.school_site);
    }
    headline(b.dry_run, b.admitted, b.refused, b.cost.as_ref());
    occurrences(&b.occurrences);
}

fn one(o: Output, s: &pb::Series) {
    if o == Output::Json {
        return print_json(series_json(s));
    }
    println!(
        "series {}  {}  school={}  {} at {} for {}s  term {} – {}  seats={}  policy={}",
        s.id,
        s.title,
        s.school_site,
        s.rrule,
        s.start_time,
        s.duration_seconds,
        s.term_start,
        s.term_end,
        s.seats,
        s.policy
    );
    if s.ended.is_some() {
        println!("ended from {}", show(s.ended.as_ref()));
    }
    occurrences(&s.occurrences);
}

fn imported(o: Output, r: &pb::TimetableImport) {
    if o == Output::Json {
        return print_json(json!({
            "dry_run": r.dry_run, "policy": r.policy, "occurrences": r.occurrences,
            "admitted": r.admitted, "refused": r.refused, "cost": cost_json(r.cost.as_ref()),
            "rows": r.rows.iter().map(|row| json!({
                "line": row.line, "class": row.class,
                "series": row.series.as_ref().map(booking_json),
            })).collect::<Vec<_>>(),
        }));
    }
    headline(r.dry_run, r.admitted, r.refused, r.cost.as_ref());
    table(
        &[
            "LINE",
            "CLASS",
            "SERIES",
            "FIT",
            "REFUSED",
            "HOURS",
            "FIRST REFUSAL",
        ],
        r.rows
            .iter()
            .map(|row| {
                let s = row.series.clone().unwrap_or_default();
                let first = s
                    .occurrences
                    .iter()
                    .find(|o| !o.admitted)
                    .map(|o| format!("{}: {}", show(o.start.as_ref()), o.reason))
                    .unwrap_or_default();
                vec![
                    row.line.to_string(),
                    row.class.clone(),
                    s.series.map(|x| x.id).unwrap_or_default(),
                    s.admitted.to_string(),
                    s.refused.to_string(),
                    s.cost.map(|c| c.accelerator_hours).unwrap_or_default(),
                    first,
                ]
            })
            .collect(),
    );
}

#[cfg(test)]
mod sheet_file_tests {
    use std::path::Path;

    use super::sheet_file;

    #[test]
    fn workbooks_and_csv_pass_and_misnamed_files_are_named() {
        let zip = b"PK\x03\x04rest";
        assert_eq!(sheet_file(Path::new("term.xlsx"), zip), Ok(()));
        assert_eq!(sheet_file(Path::new("term.csv"), b"class,school\n"), Ok(()));
        // Told by content: a workbook saved without its extension still goes.
        assert_eq!(sheet_file(Path::new("term"), zip), Ok(()));
        let e = sheet_file(Path::new("term.XLSX"), b"class,school\n").unwrap_err();
        assert!(
            e.starts_with("term.XLSX: is named .xlsx but is not an .xlsx workbook"),
            "{e}"
        );
        let e = sheet_file(Path::new("old.xls"), b"\xd0\xcf\x11\xe0").unwrap_err();
        assert!(e.contains("old.xls: .xls files are not read"), "{e}");
    }
}
