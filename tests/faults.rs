//! The fault suite: the real broker and agents on loopback, killed or cut
//! off from PostgreSQL in the middle of work, and the database checked with
//! SQL afterwards (`support::invariants`): every acknowledged lesson is there
//! with all its seats, no device or node is over-committed at any instant,
//! no seat has two live assignments, and every seat of a live lesson is
//! running, or failed with a reason, within a bound.
//!
//! These are the few-round forms that fit CI; `CLASSGRID_FAULT_ROUNDS=N`
//! runs N rounds of each (the long form in `docs/benchmarks.md`).

use std::time::Duration;

use classgrid_e2e::{Broker, TestDb, faults::*, pg::PgServer, tempdir};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_killed_during_a_booking_stream_loses_no_acknowledged_lesson() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("fault-stream");
    let mut broker = Broker::start(&db, &dir, &[]).await;
    broker.create_site("school-f").await;
    let _agents = connected_agents(&broker, "school-f", &["n1"], &dir).await;
    let stream = Stream::start(&broker, "school-f", 4);
    let kills = rounds(3);
    for _round in 0..kills {
        stream.wait_acks(15).await;
        broker.proc.kill9();
        broker.restart().await;
    }
    stream.wait_acks(10).await;
    let (acked, retried) = stream.finish().await;
    eprintln!(
        "faults stream: {kills} kills of the broker, acknowledged {}, retried {retried} calls: 0 lost, 0 over-committed",
        acked.len()
    );
    check_contract(&pool(&db).await, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_killed_at_the_bell_strands_no_seat() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("fault-bell");
    let mut broker = Broker::start(&db, &dir, &[]).await;
    broker.create_site("school-b").await;
    let _agents = connected_agents(&broker, "school-b", &["n1", "n2"], &dir).await;
    let pool = pool(&db).await;
    let mut all = Vec::new();
    for round in 0..rounds(2) {
        let bell = book_bell(&broker, "school-b", 150, 20.0, &round.to_string()).await;
        wait_bell(&pool, &bell).await;
        tokio::time::sleep(into_the_bell()).await;
        broker.proc.kill9();
        broker.restart().await;
        all.extend(bell);
        assert_none_stranded(&pool, &format!("round {round}")).await;
        check_contract(&pool, &all).await;
    }
    eprintln!(
        "faults bell: {} kills at a bell, {} lessons: 0 lost, 0 over-committed, 0 stranded",
        all.len() / 150,
        all.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_at_the_bell_strands_no_seat() {
    let dir = tempdir("fault-pg-bell");
    let mut pg = PgServer::start(&dir).expect("a PostgreSQL server of the test's own");
    let db = TestDb::on(&pg.admin_url()).await.unwrap();
    let broker = Broker::start(&db, &dir, &[]).await;
    broker.create_site("school-r").await;
    let _agents = connected_agents(&broker, "school-r", &["n1", "n2"], &dir).await;
    let pool = pool(&db).await;
    let mut all = Vec::new();
    let restarts = rounds(1);
    for round in 0..restarts {
        let bell = book_bell(&broker, "school-r", 150, 20.0, &format!("pg{round}")).await;
        wait_bell(&pool, &bell).await;
        tokio::time::sleep(into_the_bell()).await;
        pg.restart()
            .unwrap_or_else(|e| panic!("{e:#}\n{}", pg.log_text()));
        all.extend(bell);
        assert_none_stranded(
            &pool,
            &format!("after a PostgreSQL restart at bell {round}"),
        )
        .await;
        check_contract(&pool, &all).await;
    }
    assert!(
        !broker.proc.log_text().contains("internal error"),
        "no request failed as an internal error"
    );
    eprintln!(
        "faults pg-restart: {restarts} restarts at a bell, {} lessons: 0 lost, 0 over-committed, 0 stranded",
        all.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_8s_postgres_outage_loses_no_acknowledged_booking_and_answers_no_500() {
    let dir = tempdir("fault-pg-outage");
    let mut pg = PgServer::start(&dir).expect("a PostgreSQL server of the test's own");
    let db = TestDb::on(&pg.admin_url()).await.unwrap();
    let broker = Broker::start(&db, &dir, &[]).await;
    broker.create_site("school-o").await;
    let _agents = connected_agents(&broker, "school-o", &["n1"], &dir).await;
    let stream = Stream::start(&broker, "school-o", 4);
    stream.wait_acks(15).await;
    pg.stop().unwrap();
    // The outage itself lasts 8 s: a fault's length, not a wait for an event.
    tokio::time::sleep(Duration::from_secs(8)).await;
    pg.start_again()
        .unwrap_or_else(|e| panic!("{e:#}\n{}", pg.log_text()));
    stream.wait_acks(15).await;
    let (acked, retried) = stream.finish().await;
    eprintln!(
        "faults pg-outage: an 8 s outage, acknowledged {}, retried {retried} calls, no 500: 0 lost, 0 over-committed",
        acked.len()
    );
    let pool = pool(&db).await;
    check_contract(&pool, &acked).await;
    assert!(
        !broker.proc.log_text().contains("internal error"),
        "no request failed as an internal error:\n{}",
        broker.proc.log_text()
    );
}
