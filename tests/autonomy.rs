//! Autonomy: the broker is stopped for 60 s in the middle of a lesson. The
//! seats keep running, a seat whose process is killed is restarted on its
//! node with the same endpoint, the lesson ends on time with no broker, and
//! when the broker returns the lesson's record is complete and the usage of
//! the outage is metered — also when the agent itself restarted meanwhile.
//!
//! `CLASSGRID_OUTAGE_S=600` runs the long form: a site cut off from the
//! region for 10 minutes (docs/benchmarks.md).

use std::time::{Duration, Instant};

use classgrid_e2e::*;
use classgrid_proto::v1::{self as pb, voucher_service_client::VoucherServiceClient};

async fn answers(endpoint: &str) -> bool {
    http_get(&format!("{endpoint}/"))
        .await
        .is_ok_and(|(c, _)| c == 200)
}

/// A broker that settles charges 5 s after a lesson ends (not 90 s), a
/// school with a voucher, and one agent with a fake L40S.
struct Site {
    _db: TestDb,
    broker: Broker,
    agent: Agent,
}

async fn site(name: &str) -> Site {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir(name);
    let cfg = dir.join("broker.toml");
    std::fs::write(&cfg, "[vouchers]\nsettle_after_s = 5\n").unwrap();
    let broker = Broker::start(&db, &dir, &["--config", cfg.to_str().unwrap()]).await;
    broker.create_site("school-o").await;
    issue_voucher(&broker, "school-o", "outage-test", 10.0).await;
    let tool = format!("nvidia-smi={}", fake_nvidia_smi(&dir).display());
    let agent = Agent::start(&broker, "school-o", "n1", &dir, &["--tool", &tool]);
    assert!(
        broker
            .wait_connected("school-o", "n1", Duration::from_secs(30))
            .await,
        "agent did not connect"
    );
    Site {
        _db: db,
        broker,
        agent,
    }
}

/// Books `seats` quarter-L40S seats starting in 2 s for `duration_s` and
/// waits until they run; returns the lesson id and when it ends.
async fn running_lesson(broker: &Broker, seats: i32, duration_s: i64) -> (String, Instant) {
    let mut req = web_lesson("school-o", seats, 2.0, duration_s);
    req.seat.as_mut().unwrap().gpu = Some(quarter_l40s());
    let booked = broker
        .lessons()
        .await
        .book(req)
        .await
        .expect("booked")
        .into_inner();
    let ends = Instant::now() + Duration::from_secs(2 + duration_s as u64);
    let id = booked.id.clone();
    assert!(
        broker
            .wait_seats_running(&id, Duration::from_secs(30))
            .await,
        "seats should run: {:#?}",
        broker.lesson(&id).await.seats
    );
    (id, ends)
}

/// Slice-seconds charged for the lesson, once its holds are settled.
async fn charged(broker: &Broker, id: &str, limit: Duration) -> Option<f64> {
    let mut vouchers = VoucherServiceClient::new(broker.channel().await);
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let entries = vouchers
            .ledger(pb::LedgerRequest {
                lesson_id: id.to_string(),
                kinds: vec!["charge".into()],
                ..Default::default()
            })
            .await
            .expect("ledger")
            .into_inner()
            .entries;
        if !entries.is_empty() {
            return Some(entries.iter().map(|e| e.metered_slice_seconds).sum());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn a_60s_broker_outage_keeps_the_lesson_and_its_usage() {
    let Site {
        _db,
        mut broker,
        agent,
    } = site("outage").await;
    // Two seats, each a quarter of the L40S, ending 10 s before the broker
    // comes back.
    let outage_s: u64 = std::env::var("CLASSGRID_OUTAGE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s| *s >= 30)
        .unwrap_or(60);
    let duration_s = outage_s as i64 - 10;
    let (id, ends) = running_lesson(&broker, 2, duration_s).await;
    let before = broker.lesson(&id).await;
    let pids = agent.seat_pids();
    assert_eq!(pids.len(), 2);

    broker.proc.kill9();
    let outage = Instant::now();

    // Seats keep serving with no broker.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for s in &before.seats {
        assert!(
            answers(&s.endpoint).await,
            "seat {} stopped serving",
            s.number
        );
    }
    // A killed seat comes back on its node, at the same endpoint.
    unsafe { libc::kill(pids[0], libc::SIGKILL) };
    assert!(
        wait_for(Duration::from_secs(15), || async {
            let now = agent.seat_pids();
            now.len() == 2 && !now.contains(&pids[0]) && now.contains(&pids[1])
        })
        .await,
        "the killed seat was not restarted; agent log:\n{}",
        agent.proc.log_text()
    );
    let mut all_back = false;
    for _ in 0..40 {
        let mut ok = true;
        for s in &before.seats {
            ok &= answers(&s.endpoint).await;
        }
        if ok {
            all_back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(all_back, "a restarted seat must serve at its old endpoint");

    // The lesson ends on time, with no broker to say so.
    tokio::time::sleep(ends.saturating_duration_since(Instant::now()) + Duration::from_secs(3))
        .await;
    for s in &before.seats {
        assert!(
            !answers(&s.endpoint).await,
            "seat {} outlived its lesson",
            s.number
        );
    }
    assert!(
        wait_for(Duration::from_secs(15), || async {
            agent.seat_pids().is_empty()
        })
        .await,
        "the agent still lists seats after the end: {:?}; agent log:\n{}",
        agent.seat_pids(),
        agent.proc.log_text()
    );

    // The broker was away for the whole outage.
    tokio::time::sleep(Duration::from_secs(outage_s).saturating_sub(outage.elapsed())).await;
    broker.restart().await;
    assert!(
        broker
            .wait_connected("school-o", "n1", Duration::from_secs(30))
            .await,
        "agent did not connect"
    );

    let done = wait_for(Duration::from_secs(20), || async {
        let l = broker.lesson(&id).await;
        l.state == "ended" && l.seats.iter().all(|s| s.state == "released")
    })
    .await;
    let after = broker.lesson(&id).await;
    assert!(done, "lesson record incomplete: {after:#?}");
    for (b, a) in before.seats.iter().zip(&after.seats) {
        assert_eq!(
            a.assignment_id, b.assignment_id,
            "the original seats are kept"
        );
    }
    // The seats ran about duration_s seconds each on a quarter of a device.
    // Usage reports reach the broker every 15 s and the broker went away
    // within seconds of the start, so nearly all of it was metered during
    // the outage and arrived with the agent's reconnection; the charge says
    // how much it metered.
    let metered = charged(&broker, &id, Duration::from_secs(30))
        .await
        .expect("the lesson was charged after the broker returned");
    let full = 2.0 * 0.25 * duration_s as f64;
    eprintln!(
        "autonomy: {outage_s} s outage, lesson kept and ended on time, charged {metered:.1} of ~{full:.1} slice-seconds"
    );
    assert!(
        metered >= full - 2.0 * 0.25 * 8.0 && metered <= full + 2.0 * 0.25 * 5.0,
        "charged for {metered} slice-seconds, the seats used about {full}; broker log:\n{}",
        broker.proc.log_text()
    );
}

/// The seat ends while the region is away and the agent itself restarts
/// before it returns: the seat's final report, with its usage, was on disk,
/// and the broker waits for the node before it settles the charge.
#[tokio::test(flavor = "multi_thread")]
async fn usage_of_a_seat_that_ended_while_the_agent_restarted_in_an_outage_is_charged() {
    let Site {
        _db,
        mut broker,
        mut agent,
    } = site("outage-restart").await;
    const DURATION_S: i64 = 20;
    let (id, ends) = running_lesson(&broker, 1, DURATION_S).await;
    broker.proc.kill9();

    tokio::time::sleep(ends.saturating_duration_since(Instant::now()) + Duration::from_secs(3))
        .await;
    assert!(
        wait_for(Duration::from_secs(15), || async {
            agent.seat_pids().is_empty()
        })
        .await,
        "the seat outlived its lesson; agent log:\n{}",
        agent.proc.log_text()
    );
    // Whatever the agent queued in memory is gone with it.
    agent.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;

    broker.restart().await;
    let metered = charged(&broker, &id, Duration::from_secs(45))
        .await
        .expect("the lesson was charged after the broker returned");
    let full = 0.25 * DURATION_S as f64;
    assert!(
        metered >= full - 0.25 * 4.0 && metered <= full + 0.25 * 5.0,
        "charged for {metered} slice-seconds, the seat used about {full}; agent log:\n{}\nbroker log:\n{}",
        agent.proc.log_text(),
        broker.proc.log_text()
    );
}
