//! High availability, end to end: three broker replicas on one PostgreSQL
//! behind a real HAProxy, real agents and platforms talking only to the
//! load balancer. The leader is killed mid-stream (twice), or paused past
//! its lease; the database is checked by SQL afterwards.
//!
//! `CLASSGRID_HA_ROUNDS=N` kills the leader N times (CI: 2) and prints the
//! failover summary that docs/benchmarks.md records.

use std::time::{Duration, Instant};

use classgrid_e2e::{
    Agent, Broker, TestDb,
    faults::{Stream, assert_none_stranded, book_until_answered, check_contract, pool, sleeper},
    haproxy::HaProxy,
    invariants::Acked,
    tempdir, wait_for,
};

/// A short lease, so a test's failover takes a few seconds.
const LEASE: &[&str] = &["--lease-s", "2"];

/// Three replicas (the first leads) and HAProxy in front of them.
async fn region(db: &TestDb, dir: &std::path::Path) -> (Vec<Broker>, HaProxy) {
    let first = Broker::start(db, &dir.join("r0"), LEASE).await;
    let mut replicas = vec![first];
    for i in 1..3 {
        let d = dir.join(format!("r{i}"));
        std::fs::create_dir_all(&d).unwrap();
        replicas.push(Broker::start_replica(db, &d, LEASE).await);
    }
    let lb = HaProxy::start(&replicas.iter().collect::<Vec<_>>(), dir);
    assert!(
        wait_for(Duration::from_secs(30), || async {
            classgrid_e2e::http_get(&format!("{}/readyz", lb.http_url))
                .await
                .is_ok_and(|(c, _)| c == 200)
        })
        .await,
        "HAProxy never reached the leader: {}",
        lb.proc.log_text()
    );
    (replicas, lb)
}

/// The index of the replica that leads, waiting up to `limit` for one.
async fn leader(replicas: &[Broker], limit: Duration) -> Option<usize> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        for (i, r) in replicas.iter().enumerate() {
            if r.leads().await {
                return Some(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_mid_stream_loses_nothing_and_a_standby_leads() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("ha-kill");
    for i in 0..3 {
        std::fs::create_dir_all(dir.join(format!("r{i}"))).unwrap();
    }
    let (mut replicas, lb) = region(&db, &dir).await;
    let token = replicas[0].token.clone();
    replicas[0].create_site("school-ha").await;
    let _agents: Vec<Agent> = ["n1", "n2"]
        .iter()
        .map(|n| Agent::start_at(&lb.grpc_url, "school-ha", n, &dir, &[]))
        .collect();
    for n in ["n1", "n2"] {
        assert!(
            replicas[0]
                .wait_connected("school-ha", n, Duration::from_secs(60))
                .await
        );
    }
    let stream = Stream::start_at(&lb.grpc_url, &token, "school-ha", 4);
    let mut soon: Vec<Acked> = Vec::new();
    let retried = std::sync::atomic::AtomicUsize::new(0);
    // Run twice: kill the leader, see another lead, bring the dead one
    // back as a standby.
    let rounds: usize = std::env::var("CLASSGRID_HA_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let mut failover_ms = Vec::new();
    for round in 0..rounds {
        // Lessons whose bell rings after the failover: they must start.
        for i in 0..5 {
            let rid = format!("ha-soon-{round}-{i}");
            let l = book_until_answered(
                &lb.grpc_url,
                &token,
                &sleeper("school-ha", 12.0, 600, rid.clone()),
                &retried,
            )
            .await
            .expect("booked through the load balancer");
            soon.push(Acked {
                lesson_id: l.id.parse().unwrap(),
                request_id: rid,
                seats: 1,
            });
        }
        stream.wait_acks(15).await;
        let old = leader(&replicas, Duration::from_secs(5))
            .await
            .expect("a leader");
        replicas[old].proc.kill9();
        let killed = Instant::now();
        let new = leader(&replicas, Duration::from_secs(30))
            .await
            .expect("a standby took over within 30 s");
        assert_ne!(new, old);
        failover_ms.push(killed.elapsed().as_millis() as u64);
        eprintln!(
            "ha: round {round}: replica {new} leads {:?} after the kill",
            killed.elapsed()
        );
        // The operator's view through the load balancer names the new
        // leader (once HAProxy's check has seen it ready).
        let status_now = || {
            let out = std::process::Command::new(classgrid_e2e::bin("classgrid"))
                .args(["--context", "/nonexistent/classgrid-context.toml"])
                .args(["--grpc-url", &lb.grpc_url, "--token", &token])
                .args(["--output", "json", "status"])
                .output()
                .expect("run classgrid status");
            let text = format!(
                "{:?} {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (
                serde_json::from_slice::<serde_json::Value>(&out.stdout).ok(),
                text,
            )
        };
        let mut answer = status_now();
        let t0 = Instant::now();
        while answer.0.is_none() && t0.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            answer = status_now();
        }
        let status = answer
            .0
            .unwrap_or_else(|| panic!("classgrid status never answered: {}", answer.1));
        let leaders: Vec<&serde_json::Value> = status["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["role"] == "leader")
            .collect();
        assert_eq!(leaders.len(), 1, "{status}");
        assert_eq!(leaders[0]["name"], status["leader"], "{status}");
        assert_eq!(status["answered_by"], status["leader"], "{status}");
        stream.wait_acks(15).await;
        // The dead one comes back on its ports, as a standby.
        replicas[old].restart_replica().await;
    }
    let (acked, retried_stream) = stream.finish().await;
    eprintln!(
        "ha: acknowledged {} bookings and {} soon lessons across {rounds} leader kills; {retried_stream} calls retried",
        acked.len(),
        soon.len()
    );
    let pool = pool(&db).await;
    let mut all = acked;
    all.extend(soon.iter().cloned());
    check_contract(&pool, &all).await;
    // Every lesson booked to start after a failover has started, its seats
    // running.
    let ids: Vec<uuid::Uuid> = soon.iter().map(|a| a.lesson_id).collect();
    assert!(
        wait_for(Duration::from_secs(90), || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM lessons WHERE id = ANY($1) AND state = 'live'",
            )
            .bind(&ids)
            .fetch_one(&pool)
            .await
            .is_ok_and(|n| n == ids.len() as i64)
        })
        .await,
        "every lesson due after a failover went live"
    );
    assert_none_stranded(&pool, "after the leader kills").await;
    // How late the lessons due around a failover started: their first
    // assignment against their bell.
    let mut late_ms: Vec<i64> = sqlx::query_scalar(
        "SELECT GREATEST(0, (extract(epoch FROM min(a.created_at) - l.start_at) * 1000))::bigint
           FROM lessons l JOIN seats s ON s.lesson_id = l.id JOIN assignments a ON a.seat_id = s.id
          WHERE l.id = ANY($1) GROUP BY l.id, l.start_at",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await
    .unwrap();
    late_ms.sort();
    failover_ms.sort();
    let p50 = |v: &[u64]| v.get(v.len() / 2).copied().unwrap_or(0);
    let lost = classgrid_e2e::invariants::lost(&pool, &all)
        .await
        .unwrap()
        .len();
    let over = classgrid_e2e::invariants::over_committed(&pool)
        .await
        .unwrap()
        .len();
    println!(
        "failover replicas=3 rounds={rounds} acknowledged={} lost={lost} double_booked={over} failover_ms_p50={} failover_ms_max={} late_start_ms_p50={} late_start_ms_max={}",
        all.len(),
        p50(&failover_ms),
        failover_ms.last().copied().unwrap_or(0),
        late_ms.get(late_ms.len() / 2).copied().unwrap_or(0),
        late_ms.last().copied().unwrap_or(0),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_paused_past_its_lease_is_fenced_and_steps_down() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("ha-pause");
    for i in 0..2 {
        std::fs::create_dir_all(dir.join(format!("r{i}"))).unwrap();
    }
    let mut a = Broker::start(&db, &dir.join("r0"), LEASE).await;
    let b = Broker::start_replica(&db, &dir.join("r1"), LEASE).await;
    a.create_site("school-p").await;
    let epoch = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT epoch FROM broker_lease")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let pool = pool(&db).await;
    let before = epoch(pool.clone()).await;
    let pid = a.proc.child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let took_over = wait_for(Duration::from_secs(30), || b.leads()).await;
    assert!(
        took_over,
        "the standby leads once the paused leader's lease expired"
    );
    assert!(epoch(pool.clone()).await > before, "a new epoch");
    // The new leader serves writes.
    b.create_site("school-q").await;
    // The old leader wakes: the database refuses its epoch, and it stops
    // by itself rather than act on what it holds in memory.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let stopped = wait_for(Duration::from_secs(30), || {
        let exited = a.proc.child.try_wait().ok().flatten().is_some();
        async move { exited }
    })
    .await;
    assert!(
        stopped,
        "the deposed leader stopped:\n{}",
        a.proc.log_text()
    );
    let log = a.proc.log_text();
    assert!(log.contains("no longer the leader"), "{log}");
    assert!(b.leads().await, "the new leader still leads");
    check_contract(&pool, &[]).await;
}
