//! A school's term timetable imported through the CLI against a running
//! broker (issue 26): the template from `classgrid timetable template`,
//! filled with 40 classes (one lesson a week each, 18 weeks); a file with a
//! bad row is refused naming the line and column, and books nothing; the
//! dry run previews all 720 occurrences and writes nothing; the import then
//! books them, each lesson an occurrence of its class's series. A single
//! lesson's `--dry-run` is shown and not written.

use std::{path::Path, process::Output, time::Duration};

use classgrid_e2e::{Agent, Broker, TestDb, bin, tempdir};

const SCHOOL: &str = "tt-school";
const CLASSES: usize = 40;
const WEEKS: i64 = 18;

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
    let mut args = vec!["timetable", "import", file.as_str(), "--dry-run"];
    args.extend(run);
    let preview = cli(&broker, &args);
    assert!(preview.status.success(), "{}", text(&preview));
    let p: serde_json::Value = serde_json::from_slice(&preview.stdout).unwrap();
    let all = CLASSES as i64 * WEEKS;
    assert_eq!(p["dry_run"], true);
    assert_eq!(p["occurrences"], all, "{p}");
    assert_eq!(p["admitted"], all);
    assert_eq!(p["rows"].as_array().unwrap().len(), CLASSES);
    assert_eq!(p["rows"][0]["line"], 2);
    assert_eq!(lessons(&db).await, 0, "a dry run writes nothing");

    // The import: all 720 lessons, each an occurrence of its class's series.
    let mut args = vec!["timetable", "import", file.as_str()];
    args.extend(run);
    let imported = cli(&broker, &args);
    assert!(imported.status.success(), "{}", text(&imported));
    let i: serde_json::Value = serde_json::from_slice(&imported.stdout).unwrap();
    assert_eq!(i["dry_run"], false);
    assert_eq!(i["admitted"], all, "{i}");
    assert_eq!(lessons(&db).await, all);
    let series = i["rows"][3]["series"]["series"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = cli(&broker, &["series", "get", &series]);
    assert!(shown.status.success(), "{}", text(&shown));
    let s: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
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
}

/// `curl` against the broker's REST API: (status, body).
fn rest(b: &Broker, method: &str, path: &str, kind: &str, body: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .args(["-H", &format!("Authorization: Bearer {}", b.token)])
        .args(["-H", &format!("Content-Type: {kind}")])
        .args(["--data-binary", body])
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
