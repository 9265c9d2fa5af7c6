//! `classgrid bench term`: a district's whole term imported as one
//! timetable. The real broker's service layer and PostgreSQL, in this
//! process: N simulated nodes attached to the live fleet as agent sessions
//! attach (one T4 each, at the district's point of presence), a voucher per
//! school, and a sheet of C classes × L lessons a week over W weeks, first
//! previewed (the dry run), then booked. Its last line is
//! `term classes=C occurrences=N seats=S nodes=K dry_run_s=X commit_s=Y admitted=A`.

use std::time::Instant;

use chrono::{Duration, Utc};
use classgrid_broker::{
    app::App,
    config::{BrokerConfig, ServeArgs},
    domain::spec::Workload,
    service::vouchers::RawVoucher,
    store::Store,
};
use classgrid_proto::v1 as pb;

use crate::bench_db::{create_database, drop_database};

#[derive(Debug, Clone, clap::Args)]
pub struct TermArgs {
    /// Classes in the district.
    #[arg(long, default_value_t = 200)]
    pub classes: u32,
    /// Lessons a week per class (1–5, on different days).
    #[arg(long, default_value_t = 3)]
    pub per_week: u32,
    #[arg(long, default_value_t = 18)]
    pub weeks: u32,
    /// Students per class: quarter-T4 seats per lesson.
    #[arg(long, default_value_t = 45)]
    pub class_size: u32,
    /// Simulated nodes, one T4 each.
    #[arg(long, default_value_t = 2000)]
    pub nodes: u32,
    /// PostgreSQL server; a fresh database is made on it and dropped after.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub database_url: String,
    /// Stop after the dry run (commit_s is then 0 and admitted the dry
    /// run's): for profiling the preview alone.
    #[arg(long)]
    pub dry_run_only: bool,
    /// Leave the benchmark's database in place (its name is printed), to
    /// look at what the commit wrote or to replay its statements.
    #[arg(long)]
    pub keep_database: bool,
}

/// Classes per school.
const PER_SCHOOL: u32 = 10;
/// Lesson periods a day (08:00, 08:50, …), each 40 minutes.
const PERIODS: u32 = 8;

pub async fn run(a: TermArgs) -> anyhow::Result<()> {
    if !(1..=5).contains(&a.per_week) || a.classes == 0 || a.nodes == 0 || a.weeks == 0 {
        anyhow::bail!("--per-week must be 1–5 and --classes, --nodes, --weeks at least 1");
    }
    let (url, name) = create_database(&a.database_url).await?;
    let result = run_on(&a, &url).await;
    if a.keep_database {
        eprintln!("database kept: {name}");
    } else {
        drop_database(&a.database_url, &name).await;
    }
    println!("{}", result?);
    Ok(())
}

async fn run_on(a: &TermArgs, url: &str) -> anyhow::Result<String> {
    let mut args = ServeArgs {
        database_url: Some(url.to_string()),
        log_format: Some("text".into()),
        ..Default::default()
    };
    args.security.insecure_dev = true;
    let cfg = BrokerConfig::resolve(&args)?;
    let store = Store::connect(&cfg.database_url).await?;
    store.migrate().await?;
    let app = classgrid_broker::app::open(cfg, store).await?;
    let schools = a.classes.div_ceil(PER_SCHOOL);
    app.create_site("term-pop", "district_pop", "term").await?;
    for s in 0..schools {
        app.create_site(&format!("term-school-{s}"), "school", "term")
            .await?;
    }
    let t0 = Instant::now();
    for n in 0..a.nodes {
        node(&app, n).await?;
    }
    eprintln!(
        "{} nodes attached in {:.1}s",
        a.nodes,
        t0.elapsed().as_secs_f64()
    );
    for s in 0..schools {
        app.issue_voucher(RawVoucher {
            school_site: format!("term-school-{s}"),
            programme: "bench term".into(),
            issued_by: "bench".into(),
            accelerator_hours: 1_000_000.0,
            valid_until: Some(Utc::now() + Duration::days(366)),
            ..Default::default()
        })
        .await?;
    }
    let csv = sheet(a);
    let workload = Workload {
        command: "jupyter".into(),
        args: vec!["lab".into(), "--port=$(PORT)".into()],
        ..Default::default()
    };
    let all = |_| true;
    let t = Instant::now();
    let preview = app
        .import_timetable(&csv, &workload, "all_or_nothing", true, &all)
        .await?;
    let dry_run_s = t.elapsed().as_secs_f64();
    let occurrences = preview.occurrences();
    eprintln!(
        "dry run: {}/{occurrences} occurrences fit in {dry_run_s:.2}s",
        preview.admitted()
    );
    let (commit_s, admitted) = if a.dry_run_only {
        (0.0, preview.admitted())
    } else {
        let t = Instant::now();
        let booked = app
            .import_timetable(&csv, &workload, "all_or_nothing", false, &all)
            .await?;
        (t.elapsed().as_secs_f64(), booked.admitted())
    };
    Ok(format!(
        "term classes={} occurrences={occurrences} seats={} nodes={} dry_run_s={dry_run_s:.2} commit_s={commit_s:.2} admitted={}",
        a.classes,
        occurrences as u64 * u64::from(a.class_size),
        a.nodes,
        admitted
    ))
}

/// Node `n`: one T4 at the district's point of presence, attached to the
/// live fleet as an agent's session is (its messages are not read: nothing
/// in a term starts within the bench).
async fn node(app: &App, n: u32) -> anyhow::Result<()> {
    let live = app
        .register_node(&pb::Register {
            site: "term-pop".into(),
            name: format!("term-node-{n}"),
            tier: "edge".into(),
            runtimes: vec!["process".into()],
            capacity: Some(pb::NodeCapacity {
                cpu_millis: 64_000,
                memory_mib: 256 * 1024,
                devices: vec![pb::DeviceInfo {
                    index: 0,
                    vendor: "nvidia".into(),
                    model: "Tesla T4".into(),
                    memory_mib: 16 * 1024,
                    healthy: true,
                    max_slices: 64,
                    isolation: pb::Isolation::Soft as i32,
                    ..Default::default()
                }],
            }),
            ..Default::default()
        })
        .await?;
    let id = live.id;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::mem::forget(rx);
    let sid = app.fleet.attach(live, tx);
    app.fleet.caught_up(id, sid);
    Ok(())
}

/// The sheet: class c at school c/10, on `per_week` different weekdays at
/// one period, from tomorrow for `weeks` weeks.
fn sheet(a: &TermArgs) -> String {
    let first = (Utc::now() + Duration::days(1)).date_naive();
    let last = first + Duration::weeks(i64::from(a.weeks)) - Duration::days(1);
    let mut s = classgrid_broker::timetable::sheet::template()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    s.push('\n');
    const DAYS: [&str; 5] = ["MO", "TU", "WE", "TH", "FR"];
    for c in 0..a.classes {
        let minutes = 8 * 60 + (c / 5 % PERIODS) * 50;
        for k in 0..a.per_week {
            let day = DAYS[((c + 2 * k) % 5) as usize];
            s.push_str(&format!(
                "{}-{},term-school-{},{day},{:02}:{:02},40,{},cpu=500 mem=2048 gpu=nvidia/T4:2048:25,,,{first},{last},\n",
                c / 10 + 1,
                c % 10 + 1,
                c / PER_SCHOOL,
                minutes / 60,
                minutes % 60,
                a.class_size,
            ));
        }
    }
    s
}
