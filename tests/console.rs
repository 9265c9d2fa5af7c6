//! The district admin console in a real browser: headless Chromium (Debian's
//! `chromium`) driven by playwright-core, against a real broker as deployed
//! (TLS, agents joined with join tokens, one of them awaiting approval) and
//! a live lesson. `tests/console/console.mjs` walks every page,
//! checks what is visible, saves a screenshot of each under
//! `$CARGO_TARGET_DIR/console-screenshots/`, and fails if any page asks a
//! host other than the broker for anything.

use std::{path::PathBuf, process::Command, time::Duration};

use classgrid_e2e::*;
use classgrid_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

const ADMIN_PASSWORD: &str = "console-admin-pw-1";
const SCHOOL_PASSWORD: &str = "school-admin-pw-1";

fn node_dir() -> PathBuf {
    std::env::var_os("CLASSGRID_CONSOLE_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
                .join(".cache/classgrid/console-node")
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn console_pages_work_in_a_real_browser_and_stay_on_the_broker() {
    let modules = node_dir().join("node_modules/playwright-core");
    assert!(
        modules.exists() && std::path::Path::new("/usr/bin/chromium").exists(),
        "the console tests need Debian's chromium and playwright-core in {}: run ./scripts/test.sh (ensure_chromium in scripts/lib.sh installs both)",
        node_dir().display()
    );
    // One sample a second, so node detail has a utilisation plot at once.
    // SAFETY: set before any thread of this test binary reads the environment.
    unsafe { std::env::set_var("CLASSGRID_CONSOLE_SAMPLE_S", "1") };

    let db = TestDb::new().await.unwrap();
    let dir = tempdir("console");
    let broker =
        Broker::start_secure(&db, &dir, &["--grace-s", "60", "--staging-lead-s", "120"]).await;
    broker.create_site("school-a").await;
    broker.create_site("school-b").await;
    let join_token = |site: &'static str, require_approval: bool| {
        let broker = &broker;
        async move {
            AdminServiceClient::new(broker.channel().await)
                .create_join_token(pb::CreateJoinTokenRequest {
                    site: site.into(),
                    kind: "agent".into(),
                    ttl_seconds: 600,
                    uses: 1,
                    require_approval: Some(require_approval),
                })
                .await
                .expect("join token")
                .into_inner()
                .secret
        }
    };
    let smi = fake_nvidia_smi(&dir);
    let tool = format!("nvidia-smi={}", smi.display());
    let join = |token: String, name: &str, extra: &[&str]| {
        Agent::join_and_start_with(&token, &broker, name, &dir, extra).expect("agent joins")
    };
    let _a = join(
        join_token("school-a", false).await,
        "gpu-a1",
        &["--tool", &tool],
    );
    let _b = join(join_token("school-b", false).await, "cpu-b1", &[]);
    // Joined with a token that asks for approval: the console approves it.
    let _w = join(join_token("school-a", true).await, "cpu-a2", &[]);
    for (site, name) in [
        ("school-a", "gpu-a1"),
        ("school-b", "cpu-b1"),
        ("school-a", "cpu-a2"),
    ] {
        assert!(
            broker
                .wait_connected(site, name, Duration::from_secs(30))
                .await,
            "{site}/{name} should connect"
        );
    }

    // The first console admin, the way an operator creates it.
    console_admin(&db.url, ADMIN_PASSWORD);
    AdminServiceClient::new(broker.channel().await)
        .create_user(pb::CreateUserRequest {
            username: "teacher-b".into(),
            password: SCHOOL_PASSWORD.into(),
            role: "school_admin".into(),
            sites: vec!["school-b".into()],
        })
        .await
        .expect("school admin created");

    // A peer region, so that the Regions page has one to show (issue 21):
    // peered by the two admins' commands, as the README says.
    let north_db = TestDb::new().await.unwrap();
    let north_dir = tempdir("console-north");
    let north = Broker::start_secure(&north_db, &north_dir, &[]).await;
    north.create_site("north-pop").await;
    let (ok, out, err) = cli(
        &broker,
        &broker.token,
        &[
            "peers",
            "offer",
            "north",
            "--as",
            "south",
            "--url",
            &broker.grpc_url,
            "--site",
            "school-a",
            "--rtt-ms",
            "6",
            "--lend-max-slices",
            "2",
        ],
    );
    assert!(ok, "peers offer: {out}{err}");
    let offer = out
        .lines()
        .find(|l| l.starts_with("cgpeer_"))
        .unwrap_or_else(|| panic!("the offer is printed: {out}"))
        .to_string();
    let (ok, out, err) = cli(
        &north,
        &north.token,
        &[
            "peers",
            "accept",
            &offer,
            "--as",
            "north",
            "--url",
            &north.grpc_url,
            "--site",
            "north-pop",
            "--rtt-ms",
            "6",
        ],
    );
    assert!(ok, "peers accept: {out}{err}");

    let mut booking = web_lesson("school-a", 2, 1.0, 600);
    booking.title = "Python 入门".into();
    let lesson = broker
        .lessons()
        .await
        .book(booking)
        .await
        .expect("lesson booked")
        .into_inner();
    let id = lesson.id.clone();
    assert!(
        broker
            .wait_seats_running(&id, Duration::from_secs(30))
            .await,
        "the lesson's seats should run"
    );

    // Later lessons of both schools fill the timetable.
    for (site, start_in, title) in [
        ("school-b", 3600.0, "机器学习 (B)"),
        ("school-a", 7200.0, "图像识别"),
    ] {
        let mut b = web_lesson(site, 1, start_in, 2400);
        b.title = title.into();
        broker
            .lessons()
            .await
            .book(b)
            .await
            .expect("later lesson booked");
    }

    let shots = bin_dir().parent().unwrap().join("console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let xlsx = shots.join("term.xlsx");
    std::fs::write(&xlsx, term_workbook()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/console/console.mjs");
    let out = tokio::task::spawn_blocking({
        let (url, shots, id) = (broker.http_url.clone(), shots.clone(), id.clone());
        move || {
            Command::new("node")
                .arg(script)
                .env("CONSOLE_URL", url)
                .env("CONSOLE_NODE_DIR", node_dir())
                .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
                .env("SCHOOL_PASSWORD", SCHOOL_PASSWORD)
                .env("LESSON_ID", id)
                .env("SHOT_DIR", shots)
                .env("TERM_XLSX", xlsx)
                .output()
                .expect("run node")
        }
    })
    .await
    .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "browser test failed:\n{log}\nbroker log:\n{}",
        broker.proc.log_text()
    );
    println!("{log}");

    // What the browser did is real: one node is cordoned for placement,
    // the other approved, and the audit log names the console user for each.
    let node = |id: &'static str| {
        let broker = &broker;
        async move {
            broker
                .fleet()
                .await
                .get_node(pb::GetNodeRequest { id: id.into() })
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert!(
        node("school-a/gpu-a1").await.cordoned,
        "the cordon clicked in the console should hold"
    );
    assert!(
        !node("school-a/cpu-a2").await.awaiting_approval,
        "the approval clicked in the console should hold"
    );
    for action in ["node.cordon", "node.approve"] {
        let audit = AdminServiceClient::new(broker.channel().await)
            .list_audit(pb::ListAuditRequest {
                action: action.into(),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            audit
                .entries
                .iter()
                .any(|e| e.actor == "user:admin" && e.result == "ok"),
            "{action}: {audit:?}"
        );
    }
    for name in [
        "login",
        "overview",
        "nodes",
        "node-cordoned",
        "node-awaiting-approval",
        "node-approved",
        "timetable",
        "term-preview",
        "series",
        "term-bad-file",
        "lesson",
        "jobs",
        "vouchers",
        "token-created",
        "token-revoked",
        "audit",
        "regions",
        "class-sheet",
        "english",
        "school-admin",
    ] {
        assert!(
            shots.join(format!("{name}.png")).exists(),
            "screenshot {name}.png missing"
        );
    }
}

/// A school's sheet as a spreadsheet keeps it (issue 26): the template's
/// header, and class 8-1 at school-a on Wednesdays at 11:00 for two weeks,
/// the time and dates as date cells and the numbers as numbers.
fn term_workbook() -> Vec<u8> {
    use chrono::Datelike;
    use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
    let day = |n: u64| {
        let d = chrono::Utc::now().date_naive() + chrono::Days::new(n);
        ExcelDateTime::from_ymd(d.year() as u16, d.month() as u8, d.day() as u8).unwrap()
    };
    let date = Format::new().set_num_format("yyyy-mm-dd");
    let time = Format::new().set_num_format("hh:mm");
    let mut book = Workbook::new();
    let ws = book.add_worksheet();
    let header = [
        "class",
        "school",
        "weekday",
        "start time",
        "duration (min)",
        "seats",
        "seat spec",
        "dataset",
        "max RTT (ms)",
        "first date",
        "last date",
        "exception dates",
    ];
    for (c, h) in header.iter().enumerate() {
        ws.write_string(0, c as u16, *h).unwrap();
    }
    ws.write_string(1, 0, "8-1").unwrap();
    ws.write_string(1, 1, "school-a").unwrap();
    ws.write_string(1, 2, "周三").unwrap();
    ws.write_datetime_with_format(1, 3, ExcelDateTime::from_hms(11, 0, 0).unwrap(), &time)
        .unwrap();
    ws.write_number(1, 4, 40).unwrap();
    ws.write_number(1, 5, 1).unwrap();
    ws.write_string(1, 6, "cpu=10 mem=16 runtime=process")
        .unwrap();
    ws.write_datetime_with_format(1, 9, day(2), &date).unwrap();
    ws.write_datetime_with_format(1, 10, day(15), &date)
        .unwrap();
    book.save_to_buffer().unwrap()
}
