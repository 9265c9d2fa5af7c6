//! Compute vouchers against a real PostgreSQL: the broker's own service
//! layer on a fresh database per test, with synthetic agents attached to the
//! live fleet exactly as `AgentService.Connect` attaches them (register, a
//! session channel for assignments, status reports with slice-seconds).

mod common;

use std::{collections::HashMap, path::PathBuf, time::Duration};

use chrono::{DateTime, Utc};
use classgrid_broker::{
    app::App,
    clock,
    config::{BrokerConfig, ServeArgs},
    domain::{
        ServiceError,
        lesson::RawBooking,
        spec::{RawGpu, RawSeat, Workload},
    },
    service::vouchers::{RawLedgerQuery, RawVoucher},
    store::Store,
    vouchers::{
        SeatCost, WeightTable, metered_uah,
        report::{self, GroupBy},
        worst_case_uah,
    },
};
use classgrid_proto::v1::{self as pb, broker_message::Msg};
use common::TestDb;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

const GRACE_S: i64 = 1;

struct Harness {
    app: App,
    /// The test's own connections, for reading and locking rows directly.
    pool: sqlx::PgPool,
    shutdown: watch::Sender<bool>,
    // Dropped after `drop` below has stopped the clock.
    _db: TestDb,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// A broker on a fresh database: no staging lead, 1 s grace, settlement
/// 1 s after the end. `with_clock` also runs the lifecycle clock.
async fn broker(with_clock: bool) -> Harness {
    let db = TestDb::new("cg_vouchers").await;
    let url = db.url.clone();
    let dir = std::env::temp_dir().join(db.name());
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join("broker.toml");
    std::fs::write(
        &toml,
        "[vouchers]\nsettle_after_s = 1\n\n[voucher_weights]\n\"910B\" = 5.0\n",
    )
    .unwrap();
    let mut args = ServeArgs {
        config: Some(PathBuf::from(&toml)),
        database_url: Some(url.clone()),
        staging_lead_s: Some(0),
        grace_s: Some(GRACE_S as u64),
        log_format: Some("text".into()),
        ..Default::default()
    };
    args.security.insecure_dev = true;
    args.security.data_dir = Some(dir);
    let cfg = BrokerConfig::resolve(&args).unwrap();
    let store = Store::connect(&url).await.unwrap();
    store.migrate().await.unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let app = classgrid_broker::app::open(cfg, store).await.unwrap();
    let (shutdown, rx) = watch::channel(false);
    if with_clock {
        tokio::spawn(clock::run(app.clone(), rx));
    }
    Harness {
        app,
        pool,
        shutdown,
        _db: db,
    }
}

/// Registers a node with the given device models and attaches a session;
/// the receiver gets what the broker sends the "agent".
async fn agent(
    app: &App,
    site: &str,
    name: &str,
    devices: &[(&str, &str)],
) -> (Uuid, mpsc::Receiver<Box<pb::BrokerMessage>>) {
    let reg = pb::Register {
        site: site.into(),
        name: name.into(),
        tier: "edge".into(),
        runtimes: vec!["process".into()],
        capacity: Some(pb::NodeCapacity {
            cpu_millis: 64_000,
            memory_mib: 256 * 1024,
            devices: devices
                .iter()
                .enumerate()
                .map(|(i, (vendor, model))| pb::DeviceInfo {
                    index: i as i32,
                    vendor: vendor.to_string(),
                    model: model.to_string(),
                    memory_mib: 16 * 1024,
                    healthy: true,
                    max_slices: 64,
                    isolation: pb::Isolation::Soft as i32,
                    ..Default::default()
                })
                .collect(),
        }),
        ..Default::default()
    };
    let live = app.register_node(&reg).await.unwrap();
    let id = live.id;
    let (tx, rx) = mpsc::channel(1024);
    let sid = app.fleet.attach(live, tx);
    // As the agent's first heartbeat would: it has nothing queued.
    app.fleet.caught_up(id, sid);
    (id, rx)
}

fn gpu_seat(vendor: &str, pct: i64) -> RawSeat {
    RawSeat {
        cpu_millis: 100,
        memory_mib: 128,
        gpu: Some(RawGpu {
            vendors: vec![vendor.into()],
            memory_mib: 1024,
            compute_percent: pct,
            count: 1,
            ..Default::default()
        }),
        runtime: "process".into(),
    }
}

fn booking(school: &str, start: DateTime<Utc>, secs: i64, seats: i64, seat: RawSeat) -> RawBooking {
    RawBooking {
        school_site: school.into(),
        title: "vouchers test".into(),
        start: Some(start),
        duration_seconds: secs,
        seats,
        seat: Some(seat),
        workload: Workload {
            command: "sleep".into(),
            args: vec!["600".into()],
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A minute's lesson starting in a second, paid from a fresh voucher.
async fn paid_lesson_in_a_second(
    app: &App,
    school: &str,
    seats: i64,
    seat: RawSeat,
) -> classgrid_broker::service::lessons::LessonView {
    issue(
        app,
        school,
        100_000_000,
        Utc::now() + chrono::Duration::days(30),
    )
    .await;
    let start = Utc::now() + chrono::Duration::seconds(1);
    app.book_lesson(booking(school, start, 60, seats, seat))
        .await
        .unwrap()
}

/// How many batches a `*_batch_size` histogram counted, and how many items
/// they carried.
fn batches(app: &App, metric: &str) -> (f64, f64) {
    let metrics = app.metrics.render();
    let value = |suffix: &str| -> f64 {
        let name = format!("classgrid_{metric}_{suffix}");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    (value("count"), value("sum"))
}

async fn issue(app: &App, school: &str, uah: i64, until: DateTime<Utc>) -> Uuid {
    app.issue_voucher(RawVoucher {
        school_site: school.into(),
        programme: "AI for every class".into(),
        issued_by: "district-admin".into(),
        accelerator_hours: uah as f64 / 1e6,
        valid_until: Some(until),
        ..Default::default()
    })
    .await
    .unwrap()
    .id
}

/// (kind, amount µAh, lesson, job) of every ledger row of a voucher, in order.
async fn rows(
    pool: &sqlx::PgPool,
    voucher: Uuid,
) -> Vec<(String, i64, Option<Uuid>, Option<Uuid>)> {
    sqlx::query_as(
        "SELECT kind, amount_uah, lesson_id, job_id FROM voucher_ledger WHERE voucher_id = $1 ORDER BY id",
    )
    .bind(voucher)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn balance(app: &App, voucher: Uuid) -> i64 {
    app.voucher(voucher).await.unwrap().balance_uah
}

async fn wait_for<F, Fut>(secs: u64, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < until {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn school(app: &App, name: &str) {
    app.create_site(name, "school", "d1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_bookings_against_a_voucher_for_ten_admit_exactly_ten() {
    let h = broker(false).await;
    school(&h.app, "north-school").await;
    agent(&h.app, "north-school", "gpu-1", &[("nvidia", "Tesla T4")]).await;
    let lesson_s = 2400;
    let one = worst_case_uah(
        &[SeatCost::of(&[(25, "Tesla T4")], &WeightTable::default())],
        lesson_s + GRACE_S,
    );
    let voucher = issue(
        &h.app,
        "north-school",
        10 * one,
        Utc::now() + chrono::Duration::days(120),
    )
    .await;

    // Fifty lessons in fifty separate hours: capacity never refuses, only
    // the voucher can.
    let base = Utc::now() + chrono::Duration::hours(1);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let app = h.app.clone();
        let start = base + chrono::Duration::minutes(50 * i);
        tasks.push(tokio::spawn(async move {
            app.book_lesson(booking(
                "north-school",
                start,
                lesson_s,
                1,
                gpu_seat("nvidia", 25),
            ))
            .await
        }));
    }
    let mut admitted = Vec::new();
    let mut refusals = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => admitted.push(v.lesson.id),
            Err(ServiceError::Refused(e)) => refusals.push(e.summary),
            Err(e) => panic!("a booking failed other than by refusal: {e}"),
        }
    }
    assert_eq!(admitted.len(), 10, "refusals: {refusals:?}");
    assert_eq!(refusals.len(), 40);
    assert!(
        refusals[0].contains("accelerator-hours needed")
            && refusals[0].contains("0.000000 available"),
        "a refusal names needed and available: {}",
        refusals[0]
    );

    let ledger = rows(&h.pool, voucher).await;
    assert_eq!(ledger[0], ("issue".into(), 10 * one, None, None));
    let holds: Vec<_> = ledger.iter().filter(|r| r.0 == "hold").collect();
    assert_eq!(holds.len(), 10, "one hold per admitted lesson");
    assert!(holds.iter().all(|r| r.1 == -one));
    let mut held_for: Vec<Uuid> = holds.iter().filter_map(|r| r.2).collect();
    held_for.sort();
    admitted.sort();
    assert_eq!(held_for, admitted, "every hold is an admitted lesson's");
    assert_eq!(balance(&h.app, voucher).await, 0);
    let lessons: i64 = sqlx::query_scalar("SELECT count(*) FROM lessons")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(lessons, 10, "a refused booking writes nothing");
}

#[tokio::test]
async fn the_ledger_refuses_updates_deletes_and_overspending() {
    let h = broker(false).await;
    school(&h.app, "north-school").await;
    let voucher = issue(
        &h.app,
        "north-school",
        1_000_000,
        Utc::now() + chrono::Duration::days(1),
    )
    .await;
    let pool = &h.pool;
    let code = |e: sqlx::Error| match e {
        sqlx::Error::Database(d) => d.code().unwrap_or_default().to_string(),
        other => panic!("{other}"),
    };
    let e = sqlx::query("UPDATE voucher_ledger SET amount_uah = 5")
        .execute(pool)
        .await
        .unwrap_err();
    assert_eq!(code(e), "CG002");
    let e = sqlx::query("DELETE FROM voucher_ledger")
        .execute(pool)
        .await
        .unwrap_err();
    assert_eq!(code(e), "CG002");
    let e = sqlx::query("UPDATE vouchers SET amount_uah = 99")
        .execute(pool)
        .await
        .unwrap_err();
    assert_eq!(code(e), "CG002");
    let school_id: Uuid = sqlx::query_scalar("SELECT id FROM sites WHERE name = 'north-school'")
        .fetch_one(pool)
        .await
        .unwrap();
    let e = sqlx::query(
        "INSERT INTO voucher_ledger (voucher_id, school_site_id, kind, amount_uah) VALUES ($1, $2, 'expiry', -1000001)",
    )
    .bind(voucher)
    .bind(school_id)
    .execute(pool)
    .await
    .unwrap_err();
    assert_eq!(
        code(e),
        "CG003",
        "the database itself refuses a negative balance"
    );
}

#[tokio::test]
async fn cancelling_a_lesson_releases_its_whole_hold() {
    let h = broker(false).await;
    school(&h.app, "north-school").await;
    agent(&h.app, "north-school", "gpu-1", &[("nvidia", "Tesla T4")]).await;
    let voucher = issue(
        &h.app,
        "north-school",
        5_000_000,
        Utc::now() + chrono::Duration::days(30),
    )
    .await;
    let start = Utc::now() + chrono::Duration::hours(2);
    let l = h
        .app
        .book_lesson(booking(
            "north-school",
            start,
            2400,
            4,
            gpu_seat("nvidia", 25),
        ))
        .await
        .unwrap();
    let held = 5_000_000 - balance(&h.app, voucher).await;
    assert!(held > 0);
    h.app.cancel_lesson(l.lesson.id, "snow day").await.unwrap();
    let ledger = rows(&h.pool, voucher).await;
    let kinds: Vec<&str> = ledger.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(kinds, ["issue", "hold", "release"]);
    assert_eq!(ledger[1].1, -held);
    assert_eq!(ledger[2].1, held, "the refund is the whole hold");
    assert_eq!(ledger[2].2, Some(l.lesson.id));
    assert_eq!(balance(&h.app, voucher).await, 5_000_000);
}

#[tokio::test]
async fn a_voucher_expires_on_its_date_and_holds_released_later_expire_too() {
    let h = broker(false).await;
    school(&h.app, "north-school").await;
    agent(&h.app, "north-school", "gpu-1", &[("nvidia", "Tesla T4")]).await;
    let until = Utc::now() + chrono::Duration::seconds(4);
    let voucher = issue(&h.app, "north-school", 2_000_000, until).await;
    let l = h
        .app
        .book_lesson(booking(
            "north-school",
            Utc::now() + chrono::Duration::milliseconds(500),
            1,
            1,
            gpu_seat("nvidia", 50),
        ))
        .await
        .unwrap();
    let held = 2_000_000 - balance(&h.app, voucher).await;
    assert!(held > 0);

    h.app.voucher_tick().await.unwrap();
    assert!(
        rows(&h.pool, voucher).await.iter().all(|r| r.0 != "expiry"),
        "nothing expires before its date"
    );
    tokio::time::sleep((until - Utc::now()).to_std().unwrap_or_default()).await;
    h.app.voucher_tick().await.unwrap();
    let (at, amount): (DateTime<Utc>, i64) = sqlx::query_as(
        "SELECT at, amount_uah FROM voucher_ledger WHERE voucher_id = $1 AND kind = 'expiry'",
    )
    .bind(voucher)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert!(
        at >= until && at - until < chrono::Duration::seconds(5),
        "expired at {at}, due {until}"
    );
    assert_eq!(
        amount,
        -(2_000_000 - held),
        "only the free balance expires; the hold stays held"
    );
    assert_eq!(balance(&h.app, voucher).await, 0);

    // The hold comes back after the date: it expires at once.
    h.app.cancel_lesson(l.lesson.id, "").await.unwrap();
    let kinds: Vec<String> = rows(&h.pool, voucher)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(kinds, ["issue", "hold", "expiry", "release", "expiry"]);
    assert_eq!(balance(&h.app, voucher).await, 0);
    let refused = h
        .app
        .book_lesson(booking(
            "north-school",
            Utc::now() + chrono::Duration::minutes(5),
            60,
            1,
            gpu_seat("nvidia", 10),
        ))
        .await
        .unwrap_err();
    assert!(matches!(refused, ServiceError::Refused(_)), "{refused}");
}

/// A lesson booked after its bell starts in its booking's transaction; a
/// voucher refusal there leaves no lesson, no seat and no assignment, and
/// sends the agent nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_lesson_after_its_bell_writes_and_sends_nothing() {
    let h = broker(false).await;
    school(&h.app, "late-school").await;
    let (_node, mut rx) = agent(&h.app, "late-school", "gpu-1", &[("nvidia", "Tesla T4")]).await;
    let refused = h
        .app
        .book_lesson(booking(
            "late-school",
            Utc::now(),
            600,
            2,
            gpu_seat("nvidia", 25),
        ))
        .await
        .unwrap_err();
    assert!(matches!(refused, ServiceError::Refused(_)), "{refused}");
    for table in ["lessons", "seats", "assignments", "reservations"] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&h.pool)
                .await
                .unwrap();
        assert_eq!(n, 0, "{table} after a refusal");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(m) = rx.try_recv() {
        assert!(!matches!(m.msg, Some(Msg::Assign(_))), "sent {m:?}");
    }
}

/// Bookings of eight schools at their bell, held back until they queue for
/// the writers, are written several to a transaction. Each keeps its own
/// verdict: a school whose voucher is too small is refused alone, and a
/// school whose node was filled behind the broker's back (so its batch fails
/// in the database) is re-planned on its own and refused, while the rest of
/// that batch is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bookings_written_together_keep_each_schools_own_verdict() {
    let h = broker(false).await;
    let one = worst_case_uah(
        &[SeatCost::of(&[(25, "Tesla T4")], &WeightTable::default())],
        600 + GRACE_S,
    );
    let until = Utc::now() + chrono::Duration::days(30);
    let mut nodes = Vec::new();
    let mut vouchers = Vec::new();
    for i in 0..8 {
        let name = format!("batch-school-{i}");
        school(&h.app, &name).await;
        nodes.push(agent(&h.app, &name, "gpu-1", &[("nvidia", "Tesla T4")]).await);
        // School 7 can pay for nothing.
        vouchers.push(issue(&h.app, &name, if i == 7 { 1 } else { one }, until).await);
    }

    // Every voucher locked: the first batches wait, the rest queue.
    let mut blocker = h.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM vouchers FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let app = h.app.clone();
        tasks.push(tokio::spawn(async move {
            let school = format!("batch-school-{i}");
            // Own-site nodes only (2 ms); the district's are 8 ms away.
            let b = RawBooking {
                max_rtt_ms: 5,
                ..booking(&school, Utc::now(), 600, 1, gpu_seat("nvidia", 25))
            };
            app.book_lesson(b).await
        }));
    }
    // Every class planned, waiting for its school's lock or for a writer.
    assert!(
        wait_for(30, || async { h.app.booking_writes.held() == 8 }).await,
        "all eight bookings planned"
    );
    // School 3's only device, taken whole by a writer the broker does not see.
    sqlx::query(
        "INSERT INTO reservations (owner_kind, owner_id, node_id, device_idx, during, gpu_memory_mib, gpu_compute_pct)
         VALUES ('job', $1, $2, 0, tstzrange(now() - interval '1 hour', now() + interval '1 day'), 16384, 100)",
    )
    .bind(Uuid::now_v7())
    .bind(nodes[3].0)
    .execute(&h.pool)
    .await
    .unwrap();
    blocker.rollback().await.unwrap();

    let mut verdicts = Vec::new();
    for t in tasks {
        verdicts.push(t.await.unwrap());
    }
    for (i, v) in verdicts.iter().enumerate() {
        match (i, v) {
            (3, Err(ServiceError::Refused(e))) => assert!(
                e.filters
                    .iter()
                    .any(|f| f.filter == "calendar" && f.removed == 1),
                "school 3 re-planned against its full node: {e:?}"
            ),
            (7, Err(ServiceError::Refused(e))) => {
                assert!(
                    e.summary.contains("accelerator-hours needed"),
                    "{}",
                    e.summary
                )
            }
            (3 | 7, other) => panic!(
                "school {i} should be refused, got {:?}",
                other.as_ref().map(|v| &v.lesson.state)
            ),
            (_, Ok(v)) => {
                assert_eq!(v.lesson.state, "live", "school {i}");
                assert_eq!(v.seats.len(), 1);
                assert_eq!(v.seats[0].state, "starting");
                assert_eq!(v.seats[0].node_id, Some(nodes[i].0));
                assert!(v.seats[0].assignment_id.is_some());
            }
            (_, Err(e)) => panic!("school {i} refused: {e}"),
        }
    }

    // Some transaction carried more than one booking.
    let (batches, written) = batches(&h.app, "booking_batch_size");
    assert!(
        written >= 8.0 && batches < written,
        "{batches} batches for {written} bookings"
    );

    // The database holds the admitted six and nothing of the refused two.
    let count = |sql: &'static str| {
        let pool = h.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(count("SELECT count(*) FROM lessons").await, 6);
    assert_eq!(
        count("SELECT count(*) FROM seats WHERE state = 'starting'").await,
        6
    );
    assert_eq!(count("SELECT count(*) FROM assignments").await, 6);
    assert_eq!(
        count("SELECT count(*) FROM reservations WHERE owner_kind = 'lesson'").await,
        6
    );
    for (i, (voucher, (_, rx))) in vouchers.iter().zip(nodes.iter_mut()).enumerate() {
        let holds: Vec<_> = rows(&h.pool, *voucher)
            .await
            .into_iter()
            .filter(|r| r.0 == "hold")
            .collect();
        let admitted = verdicts[i].is_ok();
        assert_eq!(holds.len(), usize::from(admitted), "school {i}'s holds");
        if let (Ok(v), Some(hold)) = (&verdicts[i], holds.first()) {
            assert_eq!(hold.2, Some(v.lesson.id));
        }
        let mut assigned = 0;
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Ok(m) = rx.try_recv() {
            if matches!(m.msg, Some(Msg::Assign(_))) {
                assigned += 1;
            }
        }
        assert_eq!(
            assigned,
            usize::from(admitted),
            "school {i}'s node got its Assign"
        );
    }
}

/// A school with a 3 accelerator-hour voucher, a node with one 910B, and a 3-second
/// lesson on half of it starting in 1 s.
async fn half_910b_lesson(
    h: &Harness,
    school_name: &str,
) -> (
    Uuid,
    mpsc::Receiver<Box<pb::BrokerMessage>>,
    Uuid,
    classgrid_broker::service::lessons::LessonView,
) {
    school(&h.app, school_name).await;
    let (node, rx) = agent(&h.app, school_name, "npu-1", &[("ascend", "Ascend 910B2C")]).await;
    let voucher = issue(
        &h.app,
        school_name,
        3_000_000,
        Utc::now() + chrono::Duration::days(30),
    )
    .await;
    let l = h
        .app
        .book_lesson(booking(
            school_name,
            Utc::now() + chrono::Duration::seconds(1),
            3,
            1,
            gpu_seat("ascend", 50),
        ))
        .await
        .unwrap();
    (node, rx, voucher, l)
}

/// The next Assign the "agent" receives, within 30 s.
async fn next_assign(rx: &mut mpsc::Receiver<Box<pb::BrokerMessage>>) -> pb::Assign {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("an assign within 30 s")
            .expect("session open");
        if let Some(Msg::Assign(a)) = msg.msg {
            return a;
        }
    }
}

/// Plays the agent for one assignment: waits for the Assign, reports it
/// running, and once the broker releases it reports it stopped with
/// `slice_seconds` (wall seconds × fraction, as the real agent computes).
async fn run_seat(
    app: &App,
    node: Uuid,
    rx: &mut mpsc::Receiver<Box<pb::BrokerMessage>>,
    slice_seconds: f64,
    exit: Option<i32>,
) {
    let mut current: HashMap<String, i64> = HashMap::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("the broker sent nothing for 30 s")
            .expect("session closed");
        match msg.msg {
            Some(Msg::Assign(a)) => {
                current.insert(a.assignment_id.clone(), a.generation);
                let st = pb::AssignmentStatus {
                    assignment_id: a.assignment_id.clone(),
                    generation: a.generation,
                    state: pb::AssignmentState::Running as i32,
                    endpoint: "http://127.0.0.1:1".into(),
                    slice_seconds: 0.1,
                    ..Default::default()
                };
                app.agent_status(node, &st).await.unwrap();
                if let Some(code) = exit {
                    let st = pb::AssignmentStatus {
                        state: pb::AssignmentState::Exited as i32,
                        exit_code: code,
                        has_exit_code: true,
                        slice_seconds,
                        ..st
                    };
                    app.agent_status(node, &st).await.unwrap();
                    return;
                }
            }
            Some(Msg::Release(r)) if current.contains_key(&r.assignment_id) => {
                let st = pb::AssignmentStatus {
                    assignment_id: r.assignment_id.clone(),
                    generation: current[&r.assignment_id],
                    state: pb::AssignmentState::Stopped as i32,
                    slice_seconds,
                    ..Default::default()
                };
                app.agent_status(node, &st).await.unwrap();
                return;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charges_equal_metered_slice_seconds_times_weight_and_csv_totals_equal_the_ledger() {
    let h = broker(true).await;
    // A 3-second lesson on half a 910B (weight 5.0, from the config file).
    let (node, mut rx, voucher, l) = half_910b_lesson(&h, "north-school").await;
    let lesson_slice = 1.4;
    run_seat(&h.app, node, &mut rx, lesson_slice, None).await;

    // A job on the same device that exits by itself.
    let job = h
        .app
        .submit_job(classgrid_broker::domain::lesson::RawJob {
            school_site: "north-school".into(),
            name: "homework".into(),
            spec: Some(gpu_seat("ascend", 50)),
            workload: Workload {
                command: "true".into(),
                ..Default::default()
            },
            max_runtime_seconds: 600,
            grace_seconds: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    let job_slice = 212.5;
    run_seat(&h.app, node, &mut rx, job_slice, Some(0)).await;

    let pool = h.pool.clone();
    let settled = wait_for(20, || {
        let pool = pool.clone();
        async move {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM voucher_ledger WHERE kind = 'release'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            n == 2
        }
    })
    .await;
    assert!(
        settled,
        "both holds settled: {:?}",
        rows(&h.pool, voucher).await
    );

    let charge = |owner: &'static str, id: Uuid| {
        let pool = pool.clone();
        async move {
            let (uah, secs, class): (i64, f64, String) =
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT -amount_uah, metered_slice_seconds, node_class FROM voucher_ledger
                  WHERE kind = 'charge' AND {owner}_id = $1"
                )))
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
            (uah, secs, class)
        }
    };
    let (uah, secs, class) = charge("lesson", l.lesson.id).await;
    assert_eq!(uah, metered_uah(lesson_slice, 5.0));
    assert_eq!(uah, 1944, "1.4 slice-seconds × 5.0 / 3600 h");
    assert!((secs - lesson_slice).abs() < 1e-9);
    assert_eq!(class, "edge");
    let (uah, _, _) = charge("job", job.id).await;
    assert_eq!(uah, metered_uah(job_slice, 5.0));
    assert_eq!(uah, 295_139);

    // Each hold was released whole; the balance is issue minus charges.
    let ledger = rows(&h.pool, voucher).await;
    let held: i64 = ledger.iter().filter(|r| r.0 == "hold").map(|r| r.1).sum();
    let released: i64 = ledger
        .iter()
        .filter(|r| r.0 == "release")
        .map(|r| r.1)
        .sum();
    assert_eq!(held, -released);
    assert_eq!(balance(&h.app, voucher).await, 3_000_000 - 1944 - 295_139);

    let charged_in_ledger: i64 = sqlx::query_scalar(
        "SELECT (-sum(amount_uah))::bigint FROM voucher_ledger WHERE kind = 'charge'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    for by in ["school", "voucher", "month", "node-class"] {
        let (group, usage) = h.app.usage_report(by, "", None, None).await.unwrap();
        let csv = report::csv(group, &usage);
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let col = header
            .iter()
            .position(|c| *c == "charged_micro_hours")
            .unwrap();
        let total: i64 = lines
            .map(|l| l.split(',').nth(col).unwrap().parse::<i64>().unwrap())
            .sum();
        assert_eq!(
            total, charged_in_ledger,
            "CSV by {by} sums to the ledger:\n{csv}"
        );
        assert_eq!(group, GroupBy::parse(by).unwrap());
    }
    let entries = h
        .app
        .voucher_ledger(RawLedgerQuery {
            lesson_id: l.lesson.id.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        entries.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["hold", "release", "charge"]
    );
}

/// "north-school" with one CPU node and a quota of `max` concurrent
/// seats; the seat its classes ask for.
async fn cpu_school_with_quota(h: &Harness, max: i64) -> RawSeat {
    school(&h.app, "north-school").await;
    agent(&h.app, "north-school", "cpu-1", &[]).await;
    h.app.set_quota("north-school", max).await.unwrap();
    RawSeat {
        cpu_millis: 100,
        memory_mib: 64,
        gpu: None,
        runtime: "process".into(),
    }
}

#[tokio::test]
async fn the_seat_quota_refuses_overlapping_seats_beyond_it() {
    let h = broker(false).await;
    let cpu = cpu_school_with_quota(&h, 3).await;
    let t = Utc::now() + chrono::Duration::hours(1);
    // CPU seats cost nothing, so no voucher is needed; the quota still counts them.
    h.app
        .book_lesson(booking("north-school", t, 2400, 2, cpu.clone()))
        .await
        .unwrap();
    let e = h
        .app
        .book_lesson(booking(
            "north-school",
            t + chrono::Duration::minutes(20),
            2400,
            2,
            cpu.clone(),
        ))
        .await
        .unwrap_err();
    match e {
        ServiceError::Refused(x) => {
            assert!(
                x.summary.contains("at most 3 concurrent seats"),
                "{}",
                x.summary
            );
            assert_eq!(x.filters[0].filter, "quota");
        }
        other => panic!("{other}"),
    }
    h.app
        .book_lesson(booking(
            "north-school",
            t + chrono::Duration::minutes(40),
            2400,
            3,
            cpu,
        ))
        .await
        .expect("back-to-back lessons do not add up");
}

/// Classes of one school that queue for the writers together are written
/// together (decision 123), and each one's quota check counts the seats of
/// those decided before it in the same transaction, not only the committed
/// ones: with room for four seats, two of four two-seat classes get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn classes_of_one_school_written_together_share_its_seat_quota() {
    let h = broker(false).await;
    let cpu = cpu_school_with_quota(&h, 4).await;
    let t = Utc::now() + chrono::Duration::hours(1);

    // The school's quota row locked: the first batch waits on it, and the
    // other classes queue behind it, their school busy.
    let mut blocker = h.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM school_quotas FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (app, b) = (
            h.app.clone(),
            booking("north-school", t, 2400, 2, cpu.clone()),
        );
        tasks.push(tokio::spawn(async move { app.book_lesson(b).await }));
    }
    assert!(
        wait_for(30, || async { h.app.booking_writes.held() == 4 }).await,
        "all four classes planned and waiting for the writers"
    );
    blocker.rollback().await.unwrap();

    let mut admitted = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => {
                assert_eq!(v.lesson.state, "booked");
                admitted += 1;
            }
            Err(ServiceError::Refused(x)) => {
                assert_eq!(x.filters[0].filter, "quota", "{}", x.summary);
                assert!(
                    x.summary.contains("at most 4 concurrent seats"),
                    "{}",
                    x.summary
                );
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(admitted, 2, "four seats of quota, two seats a class");
    let (batches, written) = batches(&h.app, "booking_batch_size");
    assert!(
        written == 4.0 && batches < written,
        "{batches} batches for {written} bookings: one school's classes went together"
    );
    let seats: i64 = sqlx::query_scalar("SELECT count(*) FROM seats")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(seats, 4, "only the admitted classes' seats are written");
}

#[tokio::test]
async fn bad_voucher_input_names_every_field_and_rule() {
    let h = broker(false).await;
    school(&h.app, "north-school").await;
    h.app
        .create_site("district-pop", "district_pop", "d1")
        .await
        .unwrap();
    let e = h
        .app
        .issue_voucher(RawVoucher {
            school_site: "district-pop".into(),
            programme: "".into(),
            accelerator_hours: -2.0,
            valid_until: Some(Utc::now() - chrono::Duration::days(1)),
            tiers: vec!["fog".into()],
            sites: vec!["nowhere".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    let ServiceError::Invalid(fields) = e else {
        panic!("{e}")
    };
    let names: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
    for f in [
        "programme",
        "school_site",
        "accelerator_hours",
        "valid_until",
        "tiers[0]",
        "sites[0]",
    ] {
        assert!(names.contains(&f), "{f} missing from {fields:?}");
    }
    let e = h
        .app
        .usage_report("week", "", None, None)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("by: must be school, voucher, month or node_class"),
        "{e}"
    );
    let e = h.app.set_quota("north-school", -1).await.unwrap_err();
    assert!(e.to_string().contains("max_concurrent_seats"), "{e}");
    let vs: i64 = sqlx::query_scalar("SELECT count(*) FROM vouchers")
        .fetch_one(&h.pool)
        .await
        .unwrap();
    assert_eq!(vs, 0, "nothing half-written");
}

/// A class starting sends its reports in bursts (starting, then running, for
/// every seat). The broker writes a burst in one go, and each report is still
/// judged on its own: another node's or an unknown assignment is refused, an
/// older generation's is ignored, and the rest take effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_status_reports_starts_every_seat_and_refuses_only_the_bad_ones() {
    let h = broker(true).await;
    school(&h.app, "burst-school").await;
    let (node, mut rx) = agent(&h.app, "burst-school", "gpu-1", &[("nvidia", "Tesla T4")]).await;
    let (other, _other_rx) = agent(&h.app, "burst-school", "cpu-1", &[]).await;
    let l = paid_lesson_in_a_second(&h.app, "burst-school", 4, gpu_seat("nvidia", 25)).await;

    let mut assigns = Vec::new();
    while assigns.len() < 4 {
        assigns.push(next_assign(&mut rx).await);
    }
    let report =
        |a: &pb::Assign, state: pb::AssignmentState, generation: i64| pb::AssignmentStatus {
            assignment_id: a.assignment_id.clone(),
            generation,
            state: state as i32,
            endpoint: String::new(),
            slice_seconds: 0.5,
            ..Default::default()
        };
    // Another node may not speak for these seats.
    let refused = h
        .app
        .agent_statuses(
            other,
            &[report(&assigns[0], pb::AssignmentState::Running, 1)],
        )
        .await;
    assert_eq!(refused.len(), 1, "another node's report is refused");

    let mut burst = Vec::new();
    for (i, a) in assigns.iter().enumerate() {
        burst.push(report(a, pb::AssignmentState::Starting, a.generation));
        let mut st = report(a, pb::AssignmentState::Running, a.generation);
        st.endpoint = format!("http://10.0.0.7:{}", 9000 + i);
        burst.push(st);
    }
    // An older generation's report changes nothing and is not an error.
    burst.push(report(
        &assigns[1],
        pb::AssignmentState::Running,
        assigns[1].generation - 1,
    ));
    burst.push(pb::AssignmentStatus {
        assignment_id: Uuid::new_v4().to_string(),
        ..report(&assigns[2], pb::AssignmentState::Running, 1)
    });
    burst.push(pb::AssignmentStatus {
        slice_seconds: f64::NAN,
        ..report(
            &assigns[3],
            pb::AssignmentState::Running,
            assigns[3].generation,
        )
    });
    // NUL cannot be stored: refused by name, not failed in the database.
    burst.push(pb::AssignmentStatus {
        endpoint: "http://10.0.0.7:1\0".into(),
        ..report(
            &assigns[0],
            pb::AssignmentState::Running,
            assigns[0].generation,
        )
    });
    // In a program's output it is replaced.
    burst.push(pb::AssignmentStatus {
        output_tail: "ready\0".into(),
        ..report(
            &assigns[2],
            pb::AssignmentState::Running,
            assigns[2].generation,
        )
    });
    let refused = h.app.agent_statuses(node, &burst).await;
    let refused: Vec<String> = refused.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        refused.len(),
        3,
        "the unknown id, the NaN and the NUL: {refused:?}"
    );
    assert!(
        refused.iter().any(|e| e.contains("slice_seconds")),
        "{refused:?}"
    );
    assert!(
        refused
            .iter()
            .any(|e| e.contains("status.endpoint") && e.contains("NUL")),
        "{refused:?}"
    );
    let tail: String =
        sqlx::query_scalar("SELECT output_tail FROM assignments WHERE id = $1::uuid")
            .bind(&assigns[2].assignment_id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(tail, "ready\u{FFFD}");

    let mut seats: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT s.state, s.endpoint FROM seats s WHERE s.lesson_id = $1 ORDER BY s.endpoint",
    )
    .bind(l.lesson.id)
    .fetch_all(&h.pool)
    .await
    .unwrap();
    seats.sort();
    let want: Vec<(String, Option<String>)> = (0..4)
        .map(|i| {
            (
                "running".to_string(),
                Some(format!("http://10.0.0.7:{}", 9000 + i)),
            )
        })
        .collect();
    assert_eq!(seats, want);
    let slices: Vec<f64> = sqlx::query_scalar(
        "SELECT slice_seconds FROM assignments WHERE seat_id IN (SELECT id FROM seats WHERE lesson_id = $1)",
    )
    .bind(l.lesson.id)
    .fetch_all(&h.pool)
    .await
    .unwrap();
    assert_eq!(slices, vec![0.5; 4], "usage from the burst is recorded");
}

/// At the bell many nodes report at once. Their bursts are written together,
/// and each node is still judged alone: a node speaking for another node's
/// seat is refused that report and changes nothing, and keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_nodes_reports_written_together_keep_each_nodes_own_verdict() {
    let h = broker(true).await;
    school(&h.app, "bell-school").await;
    let mut nodes = Vec::new();
    for i in 0..8 {
        let name = format!("gpu-{i}");
        nodes.push(agent(&h.app, "bell-school", &name, &[("nvidia", "Tesla T4")]).await);
    }
    // A whole T4 per seat: one seat on each node.
    let l = paid_lesson_in_a_second(&h.app, "bell-school", 8, gpu_seat("nvidia", 100)).await;
    let mut assigns = Vec::new();
    for (_, rx) in nodes.iter_mut() {
        assigns.push(next_assign(rx).await);
    }
    let running = |a: &pb::Assign, port: usize| pb::AssignmentStatus {
        assignment_id: a.assignment_id.clone(),
        generation: a.generation,
        state: pb::AssignmentState::Running as i32,
        endpoint: format!("http://10.0.0.9:{port}"),
        ..Default::default()
    };

    // Hold every seat's row, so the first bursts taken wait in the database
    // and the rest queue up behind them.
    let mut blocker = h.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM seats WHERE lesson_id = $1 FOR UPDATE")
        .bind(l.lesson.id)
        .execute(&mut *blocker)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for (i, ((node, _), a)) in nodes.iter().zip(&assigns).enumerate() {
        if i == 4 {
            // Node 4 stays silent; node 3 speaks for its seat.
            continue;
        }
        let mut burst = vec![running(a, 9000 + i)];
        if i == 3 {
            burst.push(running(&assigns[4], 6666));
        }
        let (app, node) = (h.app.clone(), *node);
        tasks.push((
            i,
            tokio::spawn(async move { app.agent_statuses(node, &burst).await }),
        ));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    blocker.commit().await.unwrap();
    for (i, t) in tasks {
        let refused: Vec<String> = t.await.unwrap().iter().map(|e| e.to_string()).collect();
        if i == 3 {
            assert_eq!(
                refused.len(),
                1,
                "node 3's report on node 4's seat: {refused:?}"
            );
            assert!(refused[0].contains("on this node"), "{refused:?}");
        } else {
            assert!(refused.is_empty(), "node {i}: {refused:?}");
        }
    }

    // Every seat but node 4's runs, at the endpoint its own node reported;
    // node 3's claim left node 4's seat as it was.
    let seat_of = |node: Uuid| {
        let pool = h.pool.clone();
        async move {
            sqlx::query_as::<_, (String, String)>(
                "SELECT s.state, s.endpoint || '/' || a.state FROM seats s
                   JOIN assignments a ON a.seat_id = s.id WHERE s.node_id = $1",
            )
            .bind(node)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    for (i, (node, _)) in nodes.iter().enumerate() {
        let (state, endpoint) = seat_of(*node).await;
        if i == 4 {
            assert_eq!(
                (state.as_str(), endpoint.as_str()),
                ("starting", "/pending")
            );
        } else {
            let want = format!("http://10.0.0.9:{}/running", 9000 + i);
            assert_eq!(
                (state.as_str(), endpoint.as_str()),
                ("running", want.as_str())
            );
        }
    }

    // Some statement carried more than one node's burst.
    let (batches, bursts) = batches(&h.app, "progress_batch_size");
    assert!(
        bursts >= 7.0 && batches < bursts,
        "{batches} statements for {bursts} bursts"
    );

    // Node 4's own report still counts.
    let refused = h
        .app
        .agent_statuses(nodes[4].0, &[running(&assigns[4], 9004)])
        .await;
    assert!(refused.is_empty(), "{refused:?}");
    let (state, endpoint) = seat_of(nodes[4].0).await;
    assert_eq!(
        (state.as_str(), endpoint.as_str()),
        ("running", "http://10.0.0.9:9004/running")
    );
}

/// A site cut off from the region keeps its lesson running and reports the
/// usage when it is back; settlement waits for the node rather than charging
/// only what arrived before the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_waits_for_a_disconnected_node_and_charges_its_late_usage() {
    let h = broker(true).await;
    let (node, mut rx, voucher, l) = half_910b_lesson(&h, "far-school").await;
    let assign = next_assign(&mut rx).await;
    let report = |state, slice_seconds| status_of(&assign, state, slice_seconds);
    h.app
        .agent_statuses(node, &[report(pb::AssignmentState::Running, 0.1)])
        .await;

    // The link drops; the lesson ends (3 s) and its settlement falls due
    // (1 s grace + 1 s) with the node still away.
    h.app.fleet.kick(node);
    tokio::time::sleep(Duration::from_secs(7)).await;
    let released = |kind: &'static str| ledger_count(&h.pool, l.lesson.id, kind);
    assert_eq!(
        released("release").await,
        0,
        "{:?}",
        rows(&h.pool, voucher).await
    );

    // Back: the agent reconnects and sends its final report.
    let live = h.app.fleet.node(node).unwrap();
    let (tx, _rx) = mpsc::channel(16);
    let sid = h.app.fleet.attach(live, tx);
    let refused = h
        .app
        .agent_statuses(node, &[report(pb::AssignmentState::Stopped, 1.4)])
        .await;
    assert!(refused.is_empty(), "{refused:?}");
    // Connected but with its backlog not yet delivered, the node is still
    // waited for.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(released("release").await, 0, "settled before the backlog");
    // Its first heartbeat follows the backlog.
    h.app.fleet.caught_up(node, sid);
    assert!(
        wait_for(10, || async { released("release").await == 1 }).await,
        "settled once the node was back: {:?}",
        rows(&h.pool, voucher).await
    );
    let metered: f64 = sqlx::query_scalar(
        "SELECT sum(metered_slice_seconds) FROM voucher_ledger WHERE lesson_id = $1 AND kind = 'charge'",
    )
    .bind(l.lesson.id)
    .fetch_one(&h.pool)
    .await
    .unwrap();
    assert!(
        (metered - 1.4).abs() < 1e-9,
        "charged the late usage: {metered}"
    );
}

/// A loaded machine or a long stop grace delays the agent's last report
/// past `settle_after`: the hold must wait for it rather than charge what
/// had arrived (here 0.1 of 1.4 slice-seconds; with no report at all it was
/// no charge, the suite's RowNotFound on a fresh machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_waits_for_the_final_report_past_settle_after() {
    let h = broker(true).await;
    let (node, mut rx, voucher, l) = half_910b_lesson(&h, "slow-school").await;
    let assign = next_assign(&mut rx).await;
    let report = |state, slice_seconds| status_of(&assign, state, slice_seconds);
    let refused = h
        .app
        .agent_statuses(node, &[report(pb::AssignmentState::Running, 0.1)])
        .await;
    assert!(refused.is_empty(), "{refused:?}");
    let pool = h.pool.clone();
    let count = |kind: &'static str| ledger_count(&pool, l.lesson.id, kind);
    // The lesson ends and its settlement falls due with the node connected
    // and caught up, but the stop's final report not yet sent: the clock
    // looks at the hold and puts it off (its due time moves on), charging
    // nothing yet.
    let first_due = wait_due(&pool, l.lesson.id)
        .await
        .expect("the lesson's hold was queued for settlement");
    let postponed = wait_for(30, || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
                "SELECT max(q.due_at) FROM voucher_settlements q JOIN voucher_ledger h ON h.id = q.hold_id
                  WHERE h.lesson_id = $1",
            )
            .bind(l.lesson.id)
            .fetch_one(&pool)
            .await
            .unwrap()
            .is_some_and(|d| d > first_due)
        }
    })
    .await;
    assert!(
        postponed,
        "the hold waited for the final report: {:?}",
        rows(&h.pool, voucher).await
    );
    assert_eq!(count("release").await, 0, "settled before the final report");

    // The agent's stop report comes, with the run's last slice-seconds.
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("a release within 30 s")
            .expect("session open");
        if matches!(msg.msg, Some(Msg::Release(_))) {
            break;
        }
    }
    let refused = h
        .app
        .agent_statuses(node, &[report(pb::AssignmentState::Stopped, 1.4)])
        .await;
    assert!(refused.is_empty(), "{refused:?}");
    assert!(
        wait_for(30, || async { count("charge").await == 1 }).await,
        "charged once the final report came: {:?}",
        rows(&h.pool, voucher).await
    );
    let metered: f64 = sqlx::query_scalar(
        "SELECT sum(metered_slice_seconds) FROM voucher_ledger WHERE lesson_id = $1 AND kind = 'charge'",
    )
    .bind(l.lesson.id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        (metered - 1.4).abs() < 1e-9,
        "charged the final usage: {metered}"
    );
}

/// The due time of a lesson's queued settlement, once it is queued.
async fn wait_due(pool: &sqlx::PgPool, lesson: Uuid) -> Option<DateTime<Utc>> {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < until {
        let due = sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
            "SELECT min(q.due_at) FROM voucher_settlements q JOIN voucher_ledger h ON h.id = q.hold_id
              WHERE h.lesson_id = $1",
        )
        .bind(lesson)
        .fetch_one(pool)
        .await
        .unwrap();
        if due.is_some() {
            return due;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// A status report on `a`, as its agent would send it.
fn status_of(
    a: &pb::Assign,
    state: pb::AssignmentState,
    slice_seconds: f64,
) -> pb::AssignmentStatus {
    pb::AssignmentStatus {
        assignment_id: a.assignment_id.clone(),
        generation: a.generation,
        state: state as i32,
        slice_seconds,
        ..Default::default()
    }
}

/// Ledger rows of one kind for a lesson.
async fn ledger_count(pool: &sqlx::PgPool, lesson: Uuid, kind: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM voucher_ledger WHERE lesson_id = $1 AND kind = $2")
        .bind(lesson)
        .bind(kind)
        .fetch_one(pool)
        .await
        .unwrap()
}
