//! Re-planning at start: a planned seat whose node is gone when the bell
//! rings is placed again under the same rules, or fails visibly, with the
//! reason, in `Watch`.

use std::time::Duration;

use classgrid_e2e::*;
use classgrid_proto::v1 as pb;

async fn connected(broker: &Broker, site: &str, name: &str) -> bool {
    wait_for(Duration::from_secs(20), || async {
        broker.node_state(site, name).await.as_deref() == Some("connected")
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn seat_whose_node_died_before_start_is_replaced_on_another_node() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("replan");
    let broker = Broker::start(&db, &dir, &["--grace-s", "1"]).await;
    broker.create_site("school-rp").await;
    let mut agents = vec![
        Agent::start(&broker, "school-rp", "n1", &dir, &[]),
        Agent::start(&broker, "school-rp", "n2", &dir, &[]),
    ];
    assert!(connected(&broker, "school-rp", "n1").await);
    assert!(connected(&broker, "school-rp", "n2").await);

    let booked = broker
        .lessons()
        .await
        .book(web_lesson("school-rp", 2, 8.0, 60))
        .await
        .expect("booked")
        .into_inner();
    // Packing puts the class on one node; that node dies before the bell.
    let planned = booked.seats[0].node_name.clone();
    assert!(booked.seats.iter().all(|s| s.node_name == planned));
    let victim = agents.iter().position(|a| a.name == planned).unwrap();
    let survivor = if victim == 0 { "n2" } else { "n1" };
    agents[victim].proc.kill9();
    assert!(
        wait_for(Duration::from_secs(15), || async {
            broker.node_state("school-rp", &planned).await.as_deref() == Some("disconnected")
        })
        .await
    );

    let id = booked.id.clone();
    let running = broker
        .wait_seats_running(&id, Duration::from_secs(30))
        .await;
    let l = broker.lesson(&id).await;
    assert!(running, "seats should run elsewhere: {:#?}", l.seats);
    for s in &l.seats {
        assert_eq!(s.node_name, survivor, "re-placed on the live node: {s:?}");
        assert!(s.message.contains("re-planned"), "{s:?}");
        assert!(
            s.rtt.as_ref().is_some_and(|r| r.source != 0),
            "the new placement keeps its RTT source: {s:?}"
        );
        assert_eq!(http_get(&format!("{}/", s.endpoint)).await.unwrap().0, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn seat_that_cannot_be_replaced_fails_with_reason_in_watch() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("replan-fail");
    let broker = Broker::start(&db, &dir, &["--grace-s", "1"]).await;
    broker.create_site("school-rf").await;
    let mut only = Agent::start(&broker, "school-rf", "only", &dir, &[]);
    assert!(connected(&broker, "school-rf", "only").await);

    let booked = broker
        .lessons()
        .await
        .book(web_lesson("school-rf", 2, 6.0, 60))
        .await
        .expect("booked")
        .into_inner();
    let mut watch = broker
        .lessons()
        .await
        .watch(pb::GetLessonRequest {
            id: booked.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    only.proc.kill9();

    // The platform learns from Watch alone: both seats failed, with why.
    let seen = tokio::time::timeout(Duration::from_secs(40), async {
        while let Ok(Some(l)) = watch.message().await {
            if l.seats.iter().all(|s| s.state == "failed") {
                return Some(l);
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let l = seen.unwrap_or_else(|| panic!("no failed seats in Watch: {:#?}", booked.seats));
    for s in &l.seats {
        assert!(
            s.message.contains("not connected at start")
                && s.message.contains("re-planning failed")
                && s.message.contains("0/1 nodes"),
            "the reason counts the nodes each filter removed: {}",
            s.message
        );
    }
}
