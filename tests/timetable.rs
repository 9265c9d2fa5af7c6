//! A school's term timetable imported through the CLI against a running
//! broker (issue 26): the template from `classgrid timetable template`,
//! filled with 40 classes (one lesson a week each, 18 weeks); a file with a
//! bad row is refused naming the line and column, and books nothing; the
//! dry run previews all 720 occurrences and writes nothing; the import then
//! books them, each lesson an occurrence of its class's series. A single
//! lesson's `--dry-run` is shown and not written. The same school's
//! Saturday classes then come as an .xlsx workbook (dates and times stored
//! as a spreadsheet keeps them): a bad cell is named by its sheet row and
//! column, the dry run (CLI and REST) writes nothing, and the import books
//! them.

use std::{path::Path, process::Output, time::Duration};

use classgrid_e2e::{Agent, Broker, TestDb, bin, tempdir};

const SCHOOL: &str = "tt-school";
const CLASSES: usize = 40;
const WEEKS: i64 = 18;
const XLSX_CLASSES: usize = 4;

/// `classgrid --output json ARGS…` against `b`.
fn cli(b: &Broker, args: &[&str]) -> Output {
    std::process::Command::new(bin("classgrid"))
        .args(["--context", "/nonexistent/classgrid-context.toml"])
        .args([
            "--broker",
            &b.grpc_url,
            "--token",
            &b.token,
            "--output",
            "json",
        ])
        .args(args)
        .output()
        .expect("run classgrid")
}

fn text(o: &Output) -> String {
    format!(
        "{:?}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The template's header and 40 classes: one slot each, Monday to Friday,
/// eight periods a day, so no two classes share the school's node at once.
fn sheet(header: &str, first: &str, last: &str) -> String {
    let mut s = format!("{header}\n");
    for c in 0..CLASSES {
        let day = ["MO", "TU", "WE", "TH", "FR"][c % 5];
        let minutes = 8 * 60 + (c / 5) * 50;
        s.push_str(&format!(
            "{}-{},{SCHOOL},{day},{:02}:{:02},40,4,cpu=50 mem=32 runtime=process,,,{first},{last},\n",
            7 + c / 10,
            c % 10 + 1,
            minutes / 60,
            minutes % 60,
        ));
    }
    s
}

/// The template's header and four Saturday classes as an .xlsx workbook,
/// the way a spreadsheet keeps them: the start time as a time cell, the
/// dates as date cells, numbers as numbers, the weekday in Chinese. With
/// `bad`, the class on that sheet row has no weekday one can read.
fn workbook(
    header: &str,
    first: chrono::NaiveDate,
    last: chrono::NaiveDate,
    bad: Option<u32>,
) -> Vec<u8> {
    use chrono::Datelike;
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
    let day = |d: chrono::NaiveDate| {
        ExcelDateTime::from_ymd(d.year() as u16, d.month() as u8, d.day() as u8).unwrap()
    };
    let date = Format::new().set_num_format("yyyy-mm-dd");
    let time = Format::new().set_num_format("hh:mm");
    let mut book = Workbook::new();
    let ws = book.add_worksheet();
    for (c, h) in header.split(',').enumerate() {
        ws.write_string(0, c as u16, h).unwrap();
    }
    for i in 0..XLSX_CLASSES as u32 {
        let row = i + 1;
        let minutes = 8 * 60 + i * 50;
        let weekday = if bad == Some(row + 1) {
            "Funday"
        } else {
            "周六"
        };
        ws.write_string(row, 0, format!("9-{}", i + 1)).unwrap();
        ws.write_string(row, 1, SCHOOL).unwrap();
        ws.write_string(row, 2, weekday).unwrap();
        let at = ExcelDateTime::from_hms((minutes / 60) as u16, (minutes % 60) as u8, 0).unwrap();
        ws.write_datetime_with_format(row, 3, at, &time).unwrap();
        ws.write_number(row, 4, 40).unwrap();
        ws.write_number(row, 5, 4).unwrap();
        ws.write_string(row, 6, "cpu=50 mem=32 runtime=process")
            .unwrap();
        ws.write_datetime_with_format(row, 9, day(first), &date)
            .unwrap();
        ws.write_datetime_with_format(row, 10, day(last), &date)
            .unwrap();
    }
    book.save_to_buffer().unwrap()
}

/// `classgrid timetable import FILE [--dry-run] -- sleep 3600`, which must
/// succeed: its answer.
fn import(b: &Broker, file: &str, dry_run: bool) -> serde_json::Value {
    let mut args = vec!["timetable", "import", file];
    if dry_run {
        args.push("--dry-run");
    }
    args.extend(["--", "sleep", "3600"]);
    let o = cli(b, &args);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The series booked for the import answer's `row`: its id, and the series
/// as `classgrid series get` shows it.
fn series_of(b: &Broker, answer: &serde_json::Value, row: usize) -> (String, serde_json::Value) {
    let id = answer["rows"][row]["series"]["series"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = cli(b, &["series", "get", &id]);
    assert!(shown.status.success(), "{}", text(&shown));
    (id, serde_json::from_slice(&shown.stdout).unwrap())
}

async fn lessons(db: &TestDb) -> i64 {
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM lessons")
        .fetch_one(&pool)
        .await
        .unwrap()
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forty_class_term_is_previewed_then_imported_through_the_cli() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("timetable");
    let broker = Broker::start(&db, &dir, &[]).await;
    broker.create_site(SCHOOL).await;
    let agent = Agent::start(&broker, SCHOOL, "tt-node", &dir, &[]);
    assert!(
        broker
            .wait_connected(SCHOOL, "tt-node", Duration::from_secs(60))
            .await,
        "{}",
        agent.proc.log_text()
    );

    let template = cli(&broker, &["timetable", "template"]);
    assert!(template.status.success(), "{}", text(&template));
    let template = String::from_utf8(template.stdout).unwrap();
    let header = template.lines().next().unwrap();
    assert!(
        header.contains("班级 class") && header.contains("例外日期 exception dates"),
        "{header}"
    );
    assert_eq!(template.lines().count(), 2, "a header and one example row");

    let today = chrono_today();
    let first = today + chrono::Duration::days(1);
    let last = first + chrono::Duration::weeks(WEEKS) - chrono::Duration::days(1);
    let good = sheet(header, &first.to_string(), &last.to_string());
    let run = ["--", "sleep", "3600"];

    // One bad cell: the whole file is refused, naming it, and nothing booked.
    let bad = good.replacen(",TH,", ",XX,", 1);
    let bad_file = write(&dir, "bad.csv", &bad);
    let mut args = vec!["timetable", "import", bad_file.as_str()];
    args.extend(run);
    let refused = cli(&broker, &args);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("line 5, column weekday"), "{said}");
    assert_eq!(lessons(&db).await, 0, "a bad file books nothing");

    // The preview: every occurrence fits; nothing is written.
    let file = write(&dir, "term.csv", &good);
    let p = import(&broker, &file, true);
    let all = CLASSES as i64 * WEEKS;
    assert_eq!(p["dry_run"], true);
    assert_eq!(p["occurrences"], all, "{p}");
    assert_eq!(p["admitted"], all);
    assert_eq!(p["rows"].as_array().unwrap().len(), CLASSES);
    assert_eq!(p["rows"][0]["line"], 2);
    assert_eq!(lessons(&db).await, 0, "a dry run writes nothing");

    // The import: all 720 lessons, each an occurrence of its class's series.
    let i = import(&broker, &file, false);
    assert_eq!(i["dry_run"], false);
    assert_eq!(i["admitted"], all, "{i}");
    assert_eq!(lessons(&db).await, all);
    let (series, s) = series_of(&broker, &i, 3);
    assert_eq!(s["occurrences"].as_array().unwrap().len(), WEEKS as usize);
    assert_eq!(s["rrule"], "FREQ=WEEKLY;BYDAY=TH");
    let lesson = s["occurrences"][0]["lesson_id"]
        .as_str()
        .unwrap()
        .to_string();
    let got = cli(&broker, &["lessons", "get", &lesson]);
    assert!(
        String::from_utf8_lossy(&got.stdout).contains(&series),
        "{}",
        text(&got)
    );

    // The same over REST: the template downloads with its bilingual header,
    // a bad sheet posted as text/csv is refused naming its line and column
    // and books nothing more, and a single lesson's dry run answers 200.
    let (code, body) = rest(&broker, "GET", "/v1/timetable/template", "text/plain", "");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("班级 class"), "{body}");
    let (code, body) = rest(
        &broker,
        "POST",
        "/v1/timetable/import?dry_run=true",
        "text/csv",
        &bad,
    );
    assert!((400..500).contains(&code), "{code} {body}");
    assert!(
        body.contains("line 5") && body.contains("weekday"),
        "{body}"
    );
    assert_eq!(lessons(&db).await, all, "a refused sheet books nothing");
    let start = (chrono::Utc::now() + chrono::Duration::days(200)).to_rfc3339();
    let lesson = format!(
        r#"{{"school_site":"{SCHOOL}","start":"{start}","seats":2,"seat":{{"cpu_millis":50,"memory_mib":32}},"workload":{{"command":"sleep","args":["3600"]}}}}"#
    );
    let (code, body) = rest(
        &broker,
        "POST",
        "/v1/lessons?dry_run=true",
        "application/json",
        &lesson,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("dry_run"), "{body}");
    assert_eq!(lessons(&db).await, all, "a dry run writes nothing");

    // Saturday classes from an .xlsx workbook. A bad cell is named by its
    // row in the sheet and its column, with the file, and books nothing.
    let bad = dir.join("bad.xlsx");
    std::fs::write(&bad, workbook(header, first, last, Some(4))).unwrap();
    let bad = bad.display().to_string();
    let mut args = vec!["timetable", "import", bad.as_str(), "--dry-run"];
    args.extend(run);
    let refused = cli(&broker, &args);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("bad.xlsx: line 4, column weekday") && said.contains("`Funday`"),
        "{said}"
    );
    assert_eq!(lessons(&db).await, all, "a bad workbook books nothing");

    // Its preview through the CLI, then over REST as the .xlsx media type:
    // every Saturday fits, read from date and time cells; nothing written.
    let xlsx = dir.join("saturdays.xlsx");
    std::fs::write(&xlsx, workbook(header, first, last, None)).unwrap();
    let xlsx = xlsx.display().to_string();
    let saturdays = XLSX_CLASSES as i64 * WEEKS;
    let p = import(&broker, &xlsx, true);
    assert_eq!(p["dry_run"], true);
    assert_eq!(p["occurrences"], saturdays, "{p}");
    assert_eq!(p["admitted"], saturdays, "{p}");
    assert_eq!(p["rows"][1]["line"], 3);
    assert_eq!(p["rows"][1]["class"], "9-2");
    let (code, body) = rest_file(
        &broker,
        "/v1/timetable/import?dry_run=true&command=sleep&arg=3600",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        &xlsx,
    );
    assert_eq!(code, 200, "{body}");
    let r: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["admitted"], saturdays, "{r}");
    assert_eq!(
        lessons(&db).await,
        all,
        "a workbook's dry run writes nothing"
    );

    // The import books them, each series as its row's cells said.
    let i = import(&broker, &xlsx, false);
    assert_eq!(i["admitted"], saturdays, "{i}");
    assert_eq!(lessons(&db).await, all + saturdays);
    let (_, s) = series_of(&broker, &i, 1);
    assert_eq!(s["rrule"], "FREQ=WEEKLY;BYDAY=SA", "{s}");
    assert_eq!(s["start_time"], "08:50", "{s}");
    assert_eq!(s["term_start"], first.to_string(), "{s}");
    assert_eq!(s["term_end"], last.to_string(), "{s}");
    assert_eq!(s["occurrences"].as_array().unwrap().len(), WEEKS as usize);
}

/// `curl` against the broker's REST API: (status, body).
fn rest(b: &Broker, method: &str, path: &str, kind: &str, body: &str) -> (u16, String) {
    curl(b, method, path, kind, body)
}

/// `curl` posting the file at `file` to the broker's REST API: (status, body).
fn rest_file(b: &Broker, path: &str, kind: &str, file: &str) -> (u16, String) {
    curl(b, "POST", path, kind, &format!("@{file}"))
}

/// `curl` with `data` as `--data-binary` takes it (`@FILE` for a file's bytes).
fn curl(b: &Broker, method: &str, path: &str, kind: &str, data: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .args(["-H", &format!("Authorization: Bearer {}", b.token)])
        .args(["-H", &format!("Content-Type: {kind}")])
        .args(["--data-binary", data])
        .arg(format!("{}{path}", b.http_url))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Today in the region's zone (the broker's default, Asia/Shanghai).
fn chrono_today() -> chrono::NaiveDate {
    chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive()
}
