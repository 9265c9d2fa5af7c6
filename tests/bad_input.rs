//! Bad input gets a clear error naming the field and the rule, and nothing is written.

use std::time::Duration;

use classgrid_e2e::*;
use classgrid_proto::v1::{self as pb, agent_service_client::AgentServiceClient};
use tonic_types::StatusExt;

fn violations(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_bookings_are_refused_with_field_errors_and_nothing_written() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("bad");
    let broker = Broker::start(&db, &dir, &[]).await;
    broker.create_site("school-x").await;
    let mut lessons = broker.lessons().await;

    let cases: Vec<(&str, Box<dyn Fn(&mut pb::BookLessonRequest)>)> = vec![
        ("seats", Box::new(|r| r.seats = 0)),
        ("seats", Box::new(|r| r.seats = -4)),
        (
            "start",
            Box::new(|r| {
                r.start = Some(ts_in(0.0)).map(|mut t| {
                    t.seconds -= 3600;
                    t
                })
            }),
        ),
        (
            "school_site",
            Box::new(|r| r.school_site = "no-such-school".into()),
        ),
        ("title", Box::new(|r| r.title = "x".repeat(5000))),
        (
            "seat.gpu.vendors[0]",
            Box::new(|r| {
                r.seat.as_mut().unwrap().gpu = Some(pb::GpuSpec {
                    vendors: vec!["voodoo".into()],
                    memory_mib: 1024,
                    compute_percent: 25,
                    ..Default::default()
                })
            }),
        ),
        (
            "seat.gpu.compute_percent",
            Box::new(|r| {
                r.seat.as_mut().unwrap().gpu = Some(pb::GpuSpec {
                    vendors: vec!["nvidia".into()],
                    memory_mib: 1024,
                    compute_percent: 150,
                    ..Default::default()
                })
            }),
        ),
        ("duration_seconds", Box::new(|r| r.duration_seconds = -40)),
        (
            "duration_seconds",
            Box::new(|r| r.duration_seconds = 10 * 24 * 3600),
        ),
    ];
    for (field, mutate) in cases {
        let mut req = web_lesson("school-x", 4, 60.0, 600);
        mutate(&mut req);
        let err = lessons.book(req).await.expect_err(field);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            violations(&err).iter().any(|f| f == field),
            "{field} not named in {:?} ({})",
            violations(&err),
            err.message()
        );
        assert!(
            err.message().contains(field),
            "message names the field: {}",
            err.message()
        );
    }
    let list = lessons
        .list(pb::ListLessonsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.lessons.is_empty(), "nothing written");

    // Malformed ids are refused by name too.
    let err = lessons
        .get(pb::GetLessonRequest {
            id: "not-a-uuid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_with_garbage_or_impossible_capacity_is_refused_and_broker_keeps_running() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("garbage");
    let broker = Broker::start(&db, &dir, &[]).await;
    broker.create_site("school-g").await;

    let register = |cap: pb::NodeCapacity, name: &str| pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Register(pb::Register {
            site: "school-g".into(),
            name: name.into(),
            capacity: Some(cap),
            ..Default::default()
        })),
    };
    let bad_caps = vec![
        (
            "capacity.cpu_millis",
            pb::NodeCapacity {
                cpu_millis: -5,
                memory_mib: 1024,
                devices: vec![],
            },
        ),
        (
            "capacity.memory_mib",
            pb::NodeCapacity {
                cpu_millis: 1000,
                memory_mib: i64::MAX,
                devices: vec![],
            },
        ),
        (
            "capacity.devices[0].memory_mib",
            pb::NodeCapacity {
                cpu_millis: 1000,
                memory_mib: 1024,
                devices: vec![pb::DeviceInfo {
                    vendor: "nvidia".into(),
                    memory_mib: 16384,
                    memory_used_mib: 99999,
                    ..Default::default()
                }],
            },
        ),
        (
            "capacity.devices[0].vendor",
            pb::NodeCapacity {
                cpu_millis: 1000,
                memory_mib: 1024,
                devices: vec![pb::DeviceInfo {
                    vendor: "\u{0}\u{1}garbage".into(),
                    memory_mib: 16,
                    ..Default::default()
                }],
            },
        ),
    ];
    let mut bad: Vec<(&str, pb::AgentMessage)> = bad_caps
        .into_iter()
        .map(|(field, cap)| (field, register(cap, "evil")))
        .collect();
    // Commands a PATH cannot hold: a name with a '/', and too many names.
    let commands = |names: Vec<String>| pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Register(pb::Register {
            site: "school-g".into(),
            name: "evil".into(),
            capacity: Some(pb::NodeCapacity {
                cpu_millis: 1000,
                memory_mib: 1024,
                devices: vec![],
            }),
            commands: Some(pb::InstalledCommands { names }),
            ..Default::default()
        })),
    };
    bad.push((
        "register.commands.names[1]",
        commands(vec!["python3".into(), "../../bin/sh".into()]),
    ));
    bad.push((
        "register.commands.names",
        commands((0..20_001).map(|i| format!("c{i}")).collect()),
    ));
    for (field, msg) in bad {
        let mut client = AgentServiceClient::new(broker.channel().await);
        let stream = tokio_stream::iter(vec![msg]);
        let err = client.connect(stream).await.expect_err(field);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            violations(&err).iter().any(|f| f == field),
            "{field} not in {:?}",
            violations(&err)
        );
    }
    // A stream that starts with something other than register.
    let mut client = AgentServiceClient::new(broker.channel().await);
    let hb = pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat::default())),
    };
    let err = client
        .connect(tokio_stream::iter(vec![hb]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // The broker is fine and no node was recorded.
    assert_eq!(
        http_get(&format!("{}/healthz", broker.http_url))
            .await
            .unwrap()
            .0,
        200
    );
    let nodes = broker
        .fleet()
        .await
        .list_nodes(pb::ListNodesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(nodes.nodes.is_empty());

    // A real agent still joins.
    let _a = Agent::start(&broker, "school-g", "good", &dir, &[]);
    assert!(
        wait_for(Duration::from_secs(20), || async {
            broker.node_state("school-g", "good").await.as_deref() == Some("connected")
        })
        .await
    );
}

/// Streams that open and never say register must not hold up a node that
/// does: registrations take turns (about the database pool's size), and a
/// turn is only taken once the register message is in.
#[tokio::test(flavor = "multi_thread")]
async fn silent_connections_do_not_hold_up_registering_agents() {
    use futures::StreamExt;
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("silent");
    // The smallest pool the broker accepts: two turns.
    let broker = Broker::start(&db, &dir, &["--database-connections", "2"]).await;
    broker.create_site("school-s").await;

    // More silent streams than there are turns. Each waits up to 10 s for a
    // register that never comes.
    let mut silent = Vec::new();
    for _ in 0..4 {
        let ch = broker.channel().await;
        silent.push(tokio::spawn(async move {
            AgentServiceClient::new(ch)
                .connect(futures::stream::pending::<pb::AgentMessage>())
                .await
                .map(|_| ())
        }));
    }
    // All four are open at the broker, waiting for their register.
    let waiting = || async {
        let (code, body) = http_get(&format!("{}/metrics", broker.http_url))
            .await
            .unwrap_or_default();
        code == 200
            && body
                .lines()
                .any(|l| l.trim() == "classgrid_agent_handshakes 4")
    };
    assert!(
        wait_for(Duration::from_secs(30), waiting).await,
        "the broker never saw the four silent streams"
    );
    let register = pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Register(pb::Register {
            site: "school-s".into(),
            name: "prompt".into(),
            capacity: Some(pb::NodeCapacity {
                cpu_millis: 1000,
                memory_mib: 1024,
                devices: vec![],
            }),
            ..Default::default()
        })),
    };
    let outbound = futures::stream::iter(vec![register]).chain(futures::stream::pending());
    let mut answer = AgentServiceClient::new(broker.channel().await)
        .connect(outbound)
        .await
        .expect("a node that says register is let in")
        .into_inner();
    let first = answer.message().await.unwrap().unwrap();
    assert!(matches!(
        first.msg,
        Some(pb::broker_message::Msg::Registered(_))
    ));
    // Registered while every silent stream is still waiting for its 10 s:
    // none of them held a turn.
    for s in &silent {
        assert!(
            !s.is_finished(),
            "a silent stream ended before the real agent got in"
        );
    }
    for s in silent {
        s.abort();
    }
}
