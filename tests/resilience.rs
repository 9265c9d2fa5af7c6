//! Connections drop, agents and brokers restart: running work and
//! acknowledged state survive.

use std::time::{Duration, Instant};

use classgrid_e2e::*;
use classgrid_proto::v1 as pb;

async fn running_lesson(broker: &Broker, site: &str, seats: i32, duration_s: i64) -> pb::Lesson {
    let l = broker
        .lessons()
        .await
        .book(web_lesson(site, seats, 1.0, duration_s))
        .await
        .expect("booked")
        .into_inner();
    let id = l.id.clone();
    let ok = broker
        .wait_seats_running(&id, Duration::from_secs(20))
        .await;
    let l = broker.lesson(&id).await;
    assert!(ok, "seats should run: {:#?}", l.seats);
    l
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_agent_turns_its_node_disconnected_within_12s() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("kill");
    let broker = Broker::start(&db, &dir, &[]).await;
    broker.create_site("school-k").await;
    let mut agent = Agent::start(&broker, "school-k", "victim", &dir, &[]);
    assert!(
        wait_for(Duration::from_secs(20), || async {
            broker.node_state("school-k", "victim").await.as_deref() == Some("connected")
        })
        .await
    );

    agent.proc.kill9();
    let t0 = Instant::now();
    let ok = wait_for(Duration::from_secs(15), || async {
        broker.node_state("school-k", "victim").await.as_deref() == Some("disconnected")
    })
    .await;
    assert!(
        ok && t0.elapsed() <= Duration::from_secs(12),
        "disconnected after {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restarted_agent_reconciles_without_restarting_running_seats() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("agent-restart");
    let broker = Broker::start(&db, &dir, &[]).await;
    broker.create_site("school-r").await;
    let mut agent = Agent::start(&broker, "school-r", "n1", &dir, &[]);
    assert!(
        wait_for(Duration::from_secs(20), || async {
            broker.node_state("school-r", "n1").await.as_deref() == Some("connected")
        })
        .await
    );
    let before = running_lesson(&broker, "school-r", 2, 120).await;
    let pids_before = agent.seat_pids();
    assert_eq!(pids_before.len(), 2);

    agent.proc.kill9();
    // The seats keep serving while their agent is gone.
    for s in &before.seats {
        assert_eq!(http_get(&format!("{}/", s.endpoint)).await.unwrap().0, 200);
    }
    agent.restart();
    assert!(
        wait_for(Duration::from_secs(20), || async {
            broker.node_state("school-r", "n1").await.as_deref() == Some("connected")
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    let after = broker.lesson(&before.id).await;
    for (b, a) in before.seats.iter().zip(&after.seats) {
        assert_eq!(a.state, "running", "{a:?}");
        assert_eq!(a.assignment_id, b.assignment_id, "same assignment");
        assert_eq!(a.endpoint, b.endpoint, "same process, same port");
    }
    let mut pids_after = agent.seat_pids();
    let mut pids_before = pids_before;
    pids_after.sort();
    pids_before.sort();
    assert_eq!(
        pids_after, pids_before,
        "the same processes were adopted, none restarted"
    );
    assert!(agent.proc.log_text().contains("adopted running assignment"));
}

#[tokio::test(flavor = "multi_thread")]
async fn restarted_broker_loses_no_lesson_or_seat() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("broker-restart");
    let mut broker = Broker::start(&db, &dir, &[]).await;
    broker.create_site("school-p").await;
    let agent = Agent::start(&broker, "school-p", "n1", &dir, &[]);
    assert!(
        wait_for(Duration::from_secs(20), || async {
            broker.node_state("school-p", "n1").await.as_deref() == Some("connected")
        })
        .await
    );
    let live = running_lesson(&broker, "school-p", 2, 60).await;
    let future = broker
        .lessons()
        .await
        .book(web_lesson("school-p", 3, 3600.0, 600))
        .await
        .unwrap()
        .into_inner();
    let pids = agent.seat_pids();

    broker.proc.kill9();
    broker.restart().await;

    let f = broker.lesson(&future.id).await;
    assert_eq!(f.seats.len(), 3);
    assert_eq!(f.state, future.state);
    assert_eq!(f.start, future.start);
    let l = broker.lesson(&live.id).await;
    assert_eq!(l.seats.len(), 2);
    assert_eq!(l.state, "live");
    for (b, a) in live.seats.iter().zip(&l.seats) {
        assert_eq!(a.assignment_id, b.assignment_id);
        assert_eq!(a.endpoint, b.endpoint);
    }
    // The agent reconnects and its seats are still the same processes.
    assert!(
        wait_for(Duration::from_secs(20), || async {
            broker.node_state("school-p", "n1").await.as_deref() == Some("connected")
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let l = broker.lesson(&live.id).await;
    assert!(
        l.seats.iter().all(|s| s.state == "running"),
        "{:#?}",
        l.seats
    );
    let mut a = agent.seat_pids();
    let mut b = pids;
    a.sort();
    b.sort();
    assert_eq!(a, b);
}
