//! Measured RTT changes placement: an edge at the school probes the region's
//! agents, one of which answers its probes 40 ms late (injected in its probe
//! responder; the probes still cross loopback). A lesson with a 30 ms RTT
//! limit placed before the measurement lands on the school's own node; the
//! same lesson placed after it goes to the district node, and its seat and
//! explanation say `measured`.

use std::{path::Path, time::Duration};

use classgrid_e2e::*;
use classgrid_proto::v1 as pb;

pub fn start_edge(broker: &Broker, site: &str, dir: &Path, extra: &[&str]) -> (Proc, String) {
    let port = free_port();
    let mut args: Vec<String> = vec![
        "run".into(),
        "--broker".into(),
        broker.grpc_url.clone(),
        "--site".into(),
        site.into(),
        "--name".into(),
        "edge-1".into(),
        "--state-dir".into(),
        dir.join("edge").display().to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--probe-interval-ms".into(),
        "300".into(),
        "--report-interval-ms".into(),
        "500".into(),
        "--log-format".into(),
        "text".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    (
        Proc::spawn(&bin("classgrid-edge"), &args, dir.join("edge.log"), &[]),
        format!("http://127.0.0.1:{port}"),
    )
}

async fn seat_of(broker: &Broker, start_in: f64) -> (pb::Lesson, pb::Explanation) {
    let mut req = web_lesson("school-a", 1, start_in, 120);
    req.max_rtt_ms = 30;
    let l = broker
        .lessons()
        .await
        .book(req)
        .await
        .expect("booked")
        .into_inner();
    let x = broker
        .lessons()
        .await
        .explain(pb::GetLessonRequest { id: l.id.clone() })
        .await
        .expect("explain")
        .into_inner();
    (l, x)
}

#[tokio::test(flavor = "multi_thread")]
async fn probed_rtt_with_injected_delay_moves_a_seat_and_is_explained_as_measured() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("edge-rtt");
    let broker = Broker::start(&db, &dir, &[]).await;
    broker.create_site("school-a").await;
    broker
        .fleet()
        .await
        .create_site(pb::CreateSiteRequest {
            name: "pop-d1".into(),
            kind: "district_pop".into(),
            district: "d1".into(),
        })
        .await
        .expect("create pop");
    let _near = Agent::start(
        &broker,
        "school-a",
        "near",
        &dir,
        &["--probe-delay-ms", "40"],
    );
    let _far = Agent::start(&broker, "pop-d1", "far", &dir, &[]);
    for (site, name) in [("school-a", "near"), ("pop-d1", "far")] {
        assert!(
            wait_for(Duration::from_secs(20), || async {
                broker.node_state(site, name).await.as_deref() == Some("connected")
            })
            .await,
            "{name} should connect"
        );
    }

    // Nothing measured yet: the school's own node is 2 ms by configuration.
    let (before, x) = seat_of(&broker, 3600.0).await;
    assert_eq!(before.seats[0].node_name, "near", "{before:#?}");
    let rtt = x.seats[0].rtt.unwrap();
    assert_eq!(rtt.source, pb::RttSource::Configured as i32);
    assert_eq!(rtt.error_bound_ms, None, "only estimates carry a bound");

    let (mut edge, _) = start_edge(&broker, "school-a", &dir, &[]);
    let measured = wait_for(Duration::from_secs(30), || async {
        let (l, _) = seat_of(&broker, 7200.0).await;
        let _ = broker
            .lessons()
            .await
            .cancel(pb::CancelLessonRequest {
                id: l.id.clone(),
                ..Default::default()
            })
            .await;
        // Both nodes' probes must have arrived: the delayed one excluded and
        // the far one chosen on a measured value, not its configured class.
        l.seats[0].node_name == "far"
            && l.seats[0]
                .rtt
                .is_some_and(|r| r.source == pb::RttSource::Measured as i32)
    })
    .await;
    assert!(
        measured,
        "the seat never moved off the delayed node; edge log:\n{}",
        edge.log_text()
    );

    let (after, x) = seat_of(&broker, 10_800.0).await;
    assert_eq!(after.seats[0].node_name, "far");
    let rtt = after.seats[0].rtt.unwrap();
    assert_eq!(rtt.source, pb::RttSource::Measured as i32, "{after:#?}");
    let why = x.seats[0].rtt.unwrap();
    assert_eq!(why.source, pb::RttSource::Measured as i32);
    assert_eq!((rtt.error_bound_ms, why.error_bound_ms), (None, None));
    assert!(why.ms < 30.0, "far node measured at {} ms", why.ms);
    let text = format!("{x:?}");
    assert!(
        x.filters
            .iter()
            .any(|f| f.filter == "rtt" && f.removed >= 1),
        "the delayed node is removed by the rtt filter: {text}"
    );
    edge.kill9();
}
