//! PostgreSQL, not only the placement code, keeps capacity: many clients
//! hammer one small node at once, through the service layer of two brokers
//! (each with its own in-memory calendar) and straight through SQL, and no
//! instant of any window is ever over-committed.

mod common;

use std::sync::Arc;

use chrono::{Duration, Utc};
use classgrid_broker::{
    app::App,
    domain::{ServiceError, lesson::RawBooking, spec::RawGpu},
    service::vouchers::RawVoucher,
};
use classgrid_proto::v1 as pb;
use common::{TestDb, attached_node, broker, one_seat};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// The small node: 4 CPUs, 8 GiB, two T4s shared by at most 4 slices each.
const NODE_CPU: i32 = 4000;
const NODE_MEM: i64 = 8192;
const T4_MIB: i64 = 16384;
const SLICES: i32 = 4;
/// Every seat takes 500 millis and 1 GiB, so the node holds 8 seats.
const FITS: usize = 8;
/// GPU seats take 6 GiB and 30 % of a T4: two per device by memory.
const GPU_FITS: usize = 4;

/// Enough accelerator-hours that vouchers never refuse here.
async fn grant_hours(app: &App, school: &str) {
    app.issue_voucher(RawVoucher {
        school_site: school.into(),
        programme: "capacity-test".into(),
        issued_by: "test".into(),
        accelerator_hours: 1000.0,
        valid_until: Some(Utc::now() + Duration::days(30)),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Registers the small node on `app` and keeps its session open.
async fn small_node(app: &App, site: &str, name: &str) -> Uuid {
    let t4 = |index| pb::DeviceInfo {
        index,
        vendor: "nvidia".into(),
        model: "Tesla T4".into(),
        memory_mib: T4_MIB,
        healthy: true,
        max_slices: SLICES,
        isolation: pb::Isolation::Soft as i32,
        ..Default::default()
    };
    let cap = pb::NodeCapacity {
        cpu_millis: NODE_CPU,
        memory_mib: NODE_MEM,
        devices: vec![t4(0), t4(1)],
    };
    attached_node(app, site, name, cap).await
}

/// Booking `i` of the storm: even ones want a GPU slice, odd ones CPU only.
/// Starts step by one minute and every lesson lasts 40, so all windows share
/// the instant T0 + 39 min: at most `FITS` can ever be admitted, in any order.
fn booking(site: &str, i: usize, t0: chrono::DateTime<Utc>) -> RawBooking {
    let gpu = (i % 2 == 0).then(|| RawGpu {
        vendors: vec!["nvidia".into()],
        memory_mib: 6144,
        compute_percent: 30,
        count: 1,
        ..Default::default()
    });
    let start = t0 + Duration::minutes(i as i64);
    one_seat(site, &format!("storm {i}"), start, gpu)
}

/// The highest use of the node and of each device at any instant, computed
/// from the rows alone. The peak over time is reached where some
/// reservation starts.
async fn peaks(pool: &sqlx::PgPool, node: Uuid) -> ((i64, i64), Vec<(i32, i64, i64, i64)>) {
    let node_peak: (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT max(cpu), max(mem) FROM (
            SELECT sum(r.cpu_millis)::int8 AS cpu, sum(r.memory_mib)::int8 AS mem
            FROM (SELECT DISTINCT lower(during) AS t FROM reservations WHERE node_id = $1) p
            JOIN reservations r ON r.node_id = $1 AND r.during @> p.t
            GROUP BY p.t) s",
    )
    .bind(node)
    .fetch_one(pool)
    .await
    .unwrap();
    let devices: Vec<(i32, i64, i64, i64)> = sqlx::query_as(
        "SELECT d, max(mem)::int8, max(pct)::int8, max(n)::int8 FROM (
            SELECT r.device_idx AS d, sum(r.gpu_memory_mib) AS mem, sum(r.gpu_compute_pct) AS pct, count(*) AS n
            FROM (SELECT DISTINCT device_idx, lower(during) AS t FROM reservations
                  WHERE node_id = $1 AND device_idx IS NOT NULL) p
            JOIN reservations r ON r.node_id = $1 AND r.device_idx = p.device_idx AND r.during @> p.t
            GROUP BY r.device_idx, p.t) s GROUP BY d ORDER BY d",
    )
    .bind(node)
    .fetch_all(pool)
    .await
    .unwrap();
    (
        (node_peak.0.unwrap_or(0), node_peak.1.unwrap_or(0)),
        devices,
    )
}

fn assert_within_capacity(peaks: &((i64, i64), Vec<(i32, i64, i64, i64)>)) {
    let ((cpu, mem), devices) = peaks;
    assert!(*cpu <= NODE_CPU as i64, "node cpu over-committed: {cpu}");
    assert!(*mem <= NODE_MEM, "node memory over-committed: {mem}");
    for (d, gmem, pct, n) in devices {
        assert!(*gmem <= T4_MIB, "device {d} memory over-committed: {gmem}");
        assert!(*pct <= 100, "device {d} compute over-committed: {pct}");
        assert!(*n <= SLICES as i64, "device {d} slices over-committed: {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_concurrent_bookings_on_one_small_node_admit_exactly_what_fits() {
    let db = TestDb::new("cg_cap").await;
    // Two brokers on one database, like two replicas: neither sees the
    // other's in-memory calendar, so only PostgreSQL can stop an over-commit.
    let a = broker(&db).await;
    a.create_site("school-cap", "school", "d1").await.unwrap();
    grant_hours(&a, "school-cap").await;
    let node = small_node(&a, "school-cap", "small").await;
    let b = broker(&db).await;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    std::mem::forget(rx);
    b.fleet.attach(a.fleet.node(node).unwrap(), tx);

    let t0 = Utc::now() + Duration::hours(2);
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let app = Arc::clone(if i % 2 == 0 { &a } else { &b });
            tokio::spawn(async move { app.book_lesson(booking("school-cap", i, t0)).await })
        })
        .collect();
    let mut admitted = Vec::new();
    let mut refused = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(v) => admitted.push((i, v)),
            Err(ServiceError::Refused(e)) => {
                assert!(
                    e.summary.contains("0/1 nodes"),
                    "a refusal explains itself: {}",
                    e.summary
                );
                refused += 1;
            }
            Err(e) => panic!("booking {i} failed instead of being admitted or refused: {e}"),
        }
    }
    assert_eq!(admitted.len(), FITS, "exactly what fits is admitted");
    assert_eq!(refused, 40 - FITS);
    let gpu = admitted.iter().filter(|(i, _)| i % 2 == 0).count();
    assert!(gpu <= GPU_FITS, "{gpu} GPU seats on room for {GPU_FITS}");

    let pool = &db.pool().await;
    assert_within_capacity(&peaks(pool, node).await);
    // The database holds exactly the admitted lessons' seats and rows.
    let (lessons, seats, owners): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM lessons), (SELECT count(*) FROM seats),
                (SELECT count(DISTINCT owner_id) FROM reservations)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (lessons, seats, owners),
        (FITS as i64, FITS as i64, FITS as i64)
    );

    // Cancelling one frees its capacity at once, for either broker.
    let (_, first) = &admitted[0];
    a.cancel_lesson(first.lesson.id, "test").await.unwrap();
    let again = b.book_lesson(booking("school-cap", 1, t0)).await;
    assert!(
        again.is_ok(),
        "freed capacity is bookable: {:?}",
        again.err()
    );
    assert_within_capacity(&peaks(pool, node).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forty_concurrent_sql_writers_cannot_over_commit_one_node() {
    let db = TestDb::new("cg_cap").await;
    let app = broker(&db).await;
    app.create_site("school-sql", "school", "d1").await.unwrap();
    let node = small_node(&app, "school-sql", "small").await;
    let t0 = Utc::now() + Duration::hours(3);

    // Forty writers on forty connections, each one GPU slice in an
    // overlapping window; the trigger must serialise them on the node.
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let url = db.url.clone();
            tokio::spawn(async move {
                let mut c = PgConnection::connect(&url).await.unwrap();
                let start = t0 + Duration::minutes(i as i64);
                sqlx::query(
                    "INSERT INTO reservations (owner_kind, owner_id, node_id, device_idx, during,
                        cpu_millis, memory_mib, gpu_memory_mib, gpu_compute_pct)
                     VALUES ('lesson', $1, $2, $3, tstzrange($4, $5), 250, 512, 4096, 25)",
                )
                .bind(Uuid::now_v7())
                .bind(node)
                .bind((i % 2) as i32)
                .bind(start)
                .bind(start + Duration::minutes(40))
                .execute(&mut c)
                .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(sqlx::Error::Database(d)) => {
                assert_eq!(d.code().as_deref(), Some("CG001"), "{d}");
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    // Four slices per device, two devices: eight, whatever the order.
    assert_eq!(ok, 2 * SLICES as usize);
    assert_within_capacity(&peaks(&db.pool().await, node).await);
}

/// A statement the capacity trigger refused, with `what` in its message.
fn refused(r: Result<sqlx::postgres::PgQueryResult, sqlx::Error>, what: &str) {
    match r {
        Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("CG001") => {
            assert!(d.message().contains(what), "{what}: {}", d.message())
        }
        other => panic!("{what}: expected CG001, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn direct_over_committing_insert_is_refused_with_cg001() {
    let db = TestDb::new("cg_cap").await;
    let app = broker(&db).await;
    app.create_site("school-direct", "school", "d1")
        .await
        .unwrap();
    let node = small_node(&app, "school-direct", "small").await;
    let pool = &db.pool().await;
    let t0 = Utc::now() + Duration::hours(1);
    let insert = |dev: Option<i32>, cpu: i32, mem: i64, gmem: i64, pct: i32, from: i64, to: i64| {
        sqlx::query(
            "INSERT INTO reservations (owner_kind, owner_id, node_id, device_idx, during,
                cpu_millis, memory_mib, gpu_memory_mib, gpu_compute_pct)
             VALUES ('job', $1, $2, $3, tstzrange($4, $5), $6, $7, $8, $9)",
        )
        .bind(Uuid::now_v7())
        .bind(node)
        .bind(dev)
        .bind(t0 + Duration::minutes(from))
        .bind(t0 + Duration::minutes(to))
        .bind(cpu)
        .bind(mem)
        .bind(gmem)
        .bind(pct)
        .execute(pool)
    };
    insert(Some(0), 3000, 6000, 12000, 70, 0, 60).await.unwrap();
    // Each dimension alone, overlapping only partly.
    refused(
        insert(None, 1001, 0, 0, 0, 30, 90).await,
        "cpu over-committed",
    );
    refused(
        insert(None, 0, 2193, 0, 0, 59, 90).await,
        "memory over-committed",
    );
    refused(insert(Some(0), 0, 0, 4385, 0, 10, 20).await, "device");
    refused(
        insert(Some(0), 0, 0, 0, 31, 10, 20).await,
        "compute over-committed",
    );
    // A window that only touches the end is free: ranges are half-open.
    insert(Some(0), 4000, 8192, 16384, 100, 60, 90)
        .await
        .unwrap();
    // Slices: the other device takes four, not five.
    for _ in 0..SLICES {
        insert(Some(1), 0, 0, 1, 1, 100, 110).await.unwrap();
    }
    refused(insert(Some(1), 0, 0, 1, 1, 105, 106).await, "slice count");
    // An update is checked like an insert.
    let r = sqlx::query(
        "UPDATE reservations SET cpu_millis = 4001 WHERE node_id = $1 AND cpu_millis = 4000",
    )
    .bind(node)
    .execute(pool)
    .await;
    refused(r, "cpu over-committed");
    // A device or a node that does not exist holds nothing.
    refused(
        insert(Some(7), 0, 0, 1, 1, 200, 210).await,
        "does not exist",
    );
    let r = sqlx::query(
        "INSERT INTO reservations (owner_kind, owner_id, node_id, during)
         VALUES ('job', $1, $1, tstzrange(now(), now() + interval '1 hour'))",
    )
    .bind(Uuid::now_v7())
    .execute(pool)
    .await;
    refused(r, "does not exist");
    assert_within_capacity(&peaks(pool, node).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_with_the_same_window_add_up() {
    // The trigger sums rows with the same node, device and window before it
    // sweeps (migration 0025): each such row fits alone, together they do
    // not, in one statement or across two.
    let db = TestDb::new("cg_cap").await;
    let app = broker(&db).await;
    app.create_site("school-same", "school", "d1")
        .await
        .unwrap();
    let node = small_node(&app, "school-same", "small").await;
    let pool = &db.pool().await;
    let t0 = Utc::now() + Duration::hours(1);
    // `n` identical rows, ten minutes from minute `from`.
    let same = |n: i32, dev: Option<i32>, cpu: i32, mem: i64, gmem: i64, pct: i32, from: i64| {
        sqlx::query(
            "INSERT INTO reservations (owner_kind, owner_id, node_id, device_idx, during,
                cpu_millis, memory_mib, gpu_memory_mib, gpu_compute_pct)
             SELECT 'job', gen_random_uuid(), $1, $2, tstzrange($3, $4), $5, $6, $7, $8
             FROM generate_series(1, $9)",
        )
        .bind(node)
        .bind(dev)
        .bind(t0 + Duration::minutes(from))
        .bind(t0 + Duration::minutes(from + 10))
        .bind(cpu)
        .bind(mem)
        .bind(gmem)
        .bind(pct)
        .bind(n)
        .execute(pool)
    };
    refused(
        same(2, None, NODE_CPU / 2 + 1, 0, 0, 0, 0).await,
        "cpu over-committed",
    );
    refused(
        same(2, Some(0), 0, NODE_MEM / 2 + 1, 0, 0, 20).await,
        "memory over-committed",
    );
    refused(
        same(2, Some(0), 0, 0, T4_MIB / 2 + 1, 0, 40).await,
        "/0 memory over-committed",
    );
    refused(
        same(4, Some(1), 0, 0, 0, 26, 60).await,
        "compute over-committed",
    );
    refused(
        same(SLICES + 1, Some(1), 0, 0, 0, 0, 80).await,
        "slice count",
    );
    // Exactly full is admitted; one more row of the same window, in a
    // statement of its own, is not.
    same(SLICES, Some(1), NODE_CPU / SLICES, 0, T4_MIB / 4, 25, 100)
        .await
        .unwrap();
    refused(same(1, Some(1), 0, 0, 0, 0, 100).await, "slice count");
    refused(same(1, None, 1, 0, 0, 0, 100).await, "cpu over-committed");
    assert_within_capacity(&peaks(pool, node).await);
}

/// One row of `statements_are_refused_exactly_when_some_instant_would_be_over`:
/// a window in whole minutes and what it holds.
#[derive(Clone, Copy, Debug)]
struct Row {
    dev: Option<i32>,
    from: i64,
    to: i64,
    cpu: i32,
    mem: i64,
    gmem: i64,
    pct: i32,
}

/// Whether `rows` fit the small node at every minute (windows are whole
/// minutes, so checking each minute checks every instant).
fn fits(rows: &[Row]) -> bool {
    (0..180).all(|t| {
        let on: Vec<&Row> = rows.iter().filter(|r| r.from <= t && t < r.to).collect();
        let node_ok = on.iter().map(|r| r.cpu as i64).sum::<i64>() <= NODE_CPU as i64
            && on.iter().map(|r| r.mem).sum::<i64>() <= NODE_MEM;
        node_ok
            && (0..2).all(|d| {
                let dev: Vec<&&Row> = on.iter().filter(|r| r.dev == Some(d)).collect();
                dev.iter().map(|r| r.gmem).sum::<i64>() <= T4_MIB
                    && dev.iter().map(|r| r.pct as i64).sum::<i64>() <= 100
                    && dev.len() as i64 <= SLICES as i64
            })
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn statements_are_refused_exactly_when_some_instant_would_be_over() {
    // Random multi-row statements against the small node: the trigger
    // admits a statement exactly when, with it, no minute of any window is
    // over the node's or a device's capacity (checked here by brute force).
    let db = TestDb::new("cg_cap").await;
    let app = broker(&db).await;
    app.create_site("school-sweep", "school", "d1")
        .await
        .unwrap();
    let node = small_node(&app, "school-sweep", "small").await;
    let pool = &db.pool().await;
    let t0 = Utc::now() + Duration::hours(1);
    // A fixed-seed generator: the same statements every run.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut held: Vec<Row> = Vec::new();
    let (mut admitted, mut refused) = (0, 0);
    for _ in 0..300 {
        let mut rows: Vec<Row> = Vec::new();
        for _ in 0..1 + next(5) {
            let from = next(170) as i64;
            let dev = match next(3) {
                2 => None,
                d => Some(d as i32),
            };
            let mut row = Row {
                dev,
                from,
                to: from + 1 + next(40) as i64,
                cpu: next(1200) as i32,
                mem: next(2500) as i64,
                gmem: if dev.is_some() { next(6000) as i64 } else { 0 },
                pct: if dev.is_some() { next(40) as i32 } else { 0 },
            };
            // A third of the rows share the device and window of a row
            // already held or already in this statement, as a class's seats
            // on one device do: the trigger sums such rows as one group.
            let earlier = held.len() + rows.len();
            if earlier > 0 && next(3) == 0 {
                let i = next(earlier as u64) as usize;
                let same = if i < held.len() {
                    held[i]
                } else {
                    rows[i - held.len()]
                };
                row.from = same.from;
                row.to = same.to;
                if row.dev.is_some() != same.dev.is_some() {
                    row.gmem = if same.dev.is_some() {
                        next(6000) as i64
                    } else {
                        0
                    };
                    row.pct = if same.dev.is_some() {
                        next(40) as i32
                    } else {
                        0
                    };
                }
                row.dev = same.dev;
            }
            rows.push(row);
        }
        let col = |f: &dyn Fn(&Row) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
        let r = sqlx::query(
            "INSERT INTO reservations (owner_kind, owner_id, node_id, device_idx, during,
                cpu_millis, memory_mib, gpu_memory_mib, gpu_compute_pct)
             SELECT 'job', gen_random_uuid(), $1, d, tstzrange($2 + make_interval(mins => a::int), $2 + make_interval(mins => b::int)),
                    c::int, m, g, p::int
             FROM UNNEST($3::int[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[]) AS t(d, a, b, c, m, g, p)",
        )
        .bind(node)
        .bind(t0)
        .bind(rows.iter().map(|r| r.dev).collect::<Vec<_>>())
        .bind(col(&|r| r.from))
        .bind(col(&|r| r.to))
        .bind(col(&|r| r.cpu as i64))
        .bind(col(&|r| r.mem))
        .bind(col(&|r| r.gmem))
        .bind(col(&|r| r.pct as i64))
        .execute(pool)
        .await;
        let mut with = held.clone();
        with.extend(rows.iter().copied());
        let expect = fits(&with);
        match r {
            Ok(_) => {
                assert!(expect, "admitted but over capacity: {rows:?} on {held:?}");
                held = with;
                admitted += 1;
            }
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("CG001") => {
                assert!(
                    !expect,
                    "refused but fits ({}): {rows:?} on {held:?}",
                    d.message()
                );
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        admitted > 20 && refused > 20,
        "{admitted} admitted, {refused} refused"
    );
    assert_within_capacity(&peaks(pool, node).await);
}
