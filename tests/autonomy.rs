//! Autonomy: the broker is stopped for 60 s in the middle of a lesson. The
//! seats keep running, a seat whose process is killed is restarted on its
//! node with the same endpoint, the lesson ends on time with no broker, and
//! when the broker returns the lesson's record is complete and the usage of
//! the outage is metered.

use std::time::{Duration, Instant};

use classgrid_e2e::*;
use classgrid_proto::v1::{self as pb, voucher_service_client::VoucherServiceClient};

async fn answers(endpoint: &str) -> bool {
    http_get(&format!("{endpoint}/"))
        .await
        .is_ok_and(|(c, _)| c == 200)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_60s_broker_outage_keeps_the_lesson_and_its_usage() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("outage");
    // Charges settle 5 s after the lesson ends rather than 90 s.
    let cfg = dir.join("broker.toml");
    std::fs::write(&cfg, "[vouchers]\nsettle_after_s = 5\n").unwrap();
    let mut broker = Broker::start(&db, &dir, &["--config", cfg.to_str().unwrap()]).await;
    broker.create_site("school-o").await;
    VoucherServiceClient::new(broker.channel().await)
        .issue(pb::IssueVoucherRequest {
            request_id: "outage-test".into(),
            school_site: "school-o".into(),
            programme: "e2e".into(),
            issued_by: "district".into(),
            accelerator_hours: 10.0,
            valid_until: Some(ts_in(86_400.0)),
            ..Default::default()
        })
        .await
        .expect("voucher issued");
    let tool = format!("nvidia-smi={}", fake_nvidia_smi(&dir).display());
    let agent = Agent::start(&broker, "school-o", "n1", &dir, &["--tool", &tool]);
    assert!(
        broker
            .wait_connected("school-o", "n1", Duration::from_secs(30))
            .await,
        "agent did not connect"
    );

    // Two seats, each a quarter of the L40S, for 50 s.
    const DURATION_S: i64 = 50;
    let mut req = web_lesson("school-o", 2, 2.0, DURATION_S);
    req.seat.as_mut().unwrap().gpu = Some(pb::GpuSpec {
        vendors: vec!["nvidia".into()],
        memory_mib: 4096,
        compute_percent: 25,
        count: 1,
        ..Default::default()
    });
    let booked = broker
        .lessons()
        .await
        .book(req)
        .await
        .expect("booked")
        .into_inner();
    let ends = Instant::now() + Duration::from_secs(2 + DURATION_S as u64);
    let id = booked.id.clone();
    assert!(
        broker
            .wait_seats_running(&id, Duration::from_secs(30))
            .await,
        "seats should run: {:#?}",
        broker.lesson(&id).await.seats
    );
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

    // The broker was away for 60 s.
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(outage.elapsed())).await;
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
    // The seats ran about DURATION_S seconds each on a quarter of a device.
    // Usage reports reach the broker every 15 s and the broker went away
    // within seconds of the start, so nearly all of it was metered during
    // the outage and arrived with the agent's reconnection; the charge says
    // how much it metered.
    let mut vouchers = VoucherServiceClient::new(broker.channel().await);
    let mut charged = None;
    for _ in 0..60 {
        let entries = vouchers
            .ledger(pb::LedgerRequest {
                lesson_id: id.clone(),
                kinds: vec!["charge".into()],
                ..Default::default()
            })
            .await
            .expect("ledger")
            .into_inner()
            .entries;
        if !entries.is_empty() {
            charged = Some(entries.iter().map(|e| e.metered_slice_seconds).sum::<f64>());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let metered = charged.expect("the lesson was charged after the broker returned");
    let full = 2.0 * 0.25 * DURATION_S as f64;
    assert!(
        metered >= full - 2.0 * 0.25 * 8.0 && metered <= full + 2.0 * 0.25 * 5.0,
        "charged for {metered} slice-seconds, the seats used about {full}; broker log:\n{}",
        broker.proc.log_text()
    );
}
