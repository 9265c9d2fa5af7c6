//! A lesson booked by a course platform runs on real agents and is released
//! at its end.

use std::time::Duration;

use classgrid_e2e::*;
use classgrid_proto::v1 as pb;

#[tokio::test(flavor = "multi_thread")]
async fn six_seat_lesson_runs_on_agents_and_is_released_at_end() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("flow");
    let broker = Broker::start(&db, &dir, &["--grace-s", "2"]).await;
    broker.create_site("school-a").await;
    let _agents: Vec<Agent> = (0..3)
        .map(|i| Agent::start(&broker, "school-a", &format!("n{i}"), &dir, &[]))
        .collect();
    assert!(
        wait_for(Duration::from_secs(20), || async {
            let r = broker
                .fleet()
                .await
                .list_nodes(pb::ListNodesRequest::default())
                .await
                .unwrap()
                .into_inner();
            r.nodes.iter().filter(|n| n.state == "connected").count() == 3
        })
        .await,
        "three agents should connect"
    );

    let booked = broker
        .lessons()
        .await
        .book(web_lesson("school-a", 6, 2.0, 20))
        .await
        .expect("booking admitted")
        .into_inner();
    assert_eq!(booked.seats.len(), 6);
    assert!(
        booked
            .seats
            .iter()
            .all(|s| s.state == "planned" || s.state == "staged")
    );

    // Every seat runs, and its endpoint answers.
    let id = booked.id.clone();
    let running = wait_for(Duration::from_secs(20), || async {
        broker
            .lesson(&id)
            .await
            .seats
            .iter()
            .filter(|s| s.state == "running")
            .count()
            == 6
    })
    .await;
    let l = broker.lesson(&id).await;
    assert!(running, "all six seats should run: {:#?}", l.seats);
    assert_eq!(l.state, "live");
    for s in &l.seats {
        let (code, _) = http_get(&format!("{}/", s.endpoint))
            .await
            .expect("seat endpoint reachable");
        assert_eq!(code, 200, "seat {} endpoint {}", s.number, s.endpoint);
    }

    // Watch streams the same lesson, with endpoints.
    let mut watch = broker
        .lessons()
        .await
        .watch(pb::GetLessonRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.id, id);
    assert!(first.seats.iter().all(|s| !s.endpoint.is_empty()));

    // At the end every seat is released and its process is gone.
    let ended = wait_for(Duration::from_secs(30), || async {
        broker.lesson(&id).await.state == "ended"
    })
    .await;
    let l = broker.lesson(&id).await;
    assert!(ended, "lesson should end: {l:#?}");
    assert!(
        l.seats.iter().all(|s| s.state == "released"),
        "{:#?}",
        l.seats
    );
    let endpoints: Vec<String> = l.seats.iter().map(|s| s.endpoint.clone()).collect();
    let gone = wait_for(Duration::from_secs(10), || {
        let endpoints = endpoints.clone();
        async move {
            for e in &endpoints {
                if http_get(&format!("{e}/")).await.is_ok() {
                    return false;
                }
            }
            true
        }
    })
    .await;
    assert!(gone, "seat processes should be stopped at the end");

    // The Watch stream ends with the lesson.
    let mut last = first;
    while let Ok(Some(m)) = watch.message().await {
        last = m;
    }
    assert_eq!(last.state, "ended");
}

#[tokio::test(flavor = "multi_thread")]
async fn booking_that_cannot_be_placed_is_refused_with_an_explanation() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("refuse");
    let broker = Broker::start(&db, &dir, &[]).await;
    broker.create_site("school-b").await;
    let _a = Agent::start(&broker, "school-b", "only", &dir, &[]);
    assert!(
        wait_for(Duration::from_secs(20), || async {
            broker.node_state("school-b", "only").await.as_deref() == Some("connected")
        })
        .await
    );

    // A seat larger than any node is refused at validation, naming the field.
    let mut req = web_lesson("school-b", 3, 60.0, 600);
    req.seat.as_mut().unwrap().memory_mib = 8 * 1024 * 1024;
    let err = broker.lessons().await.book(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("seat.memory_mib"),
        "{}",
        err.message()
    );

    // A class no node can serve within its RTT limit is refused by placement,
    // which counts the nodes each filter removed and names the RTT source.
    let mut req = web_lesson("school-b", 3, 60.0, 600);
    req.max_rtt_ms = 1;
    let err = broker.lessons().await.book(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("0/1 nodes"),
        "explanation counts nodes: {}",
        err.message()
    );
    assert!(
        err.message().contains("rtt > 1 ms"),
        "explanation names the filter: {}",
        err.message()
    );
    assert!(
        err.message().contains("configured"),
        "explanation names the rtt source: {}",
        err.message()
    );

    // Nothing was written.
    let list = broker
        .lessons()
        .await
        .list(pb::ListLessonsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.lessons.is_empty());
}
