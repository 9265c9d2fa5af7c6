//! Site relay: an agent whose broker URL names a port nothing listens on
//! reaches the region only through its school's edge. It joins and runs
//! through the edge's relay; the broker sees the node's own certificate and
//! records that the edge carries it; a lesson seat runs on it; another
//! node's certificate through the same relay is still refused, and so is
//! another school's node with a valid certificate of its own, as are
//! relay streams from a non-edge caller, without an agent address, or with
//! an oversized chunk; and when the edge restarts, the agent comes back
//! through it.

use std::{path::Path, time::Duration};

use classgrid_e2e::*;
use classgrid_proto::v1::{
    self as pb, admin_service_client::AdminServiceClient, agent_service_client::AgentServiceClient,
    edge_service_client::EdgeServiceClient,
};

const SITE: &str = "school-r";

/// Runs the edge with the relay on: joined with its own certificate when a
/// join token is given (a TLS broker), else named by flags (--insecure-dev).
/// `listen` is its content server's address (where `/metrics` is).
fn start_edge(broker: &Broker, token: Option<&str>, dir: &Path, relay: &str, listen: &str) -> Proc {
    let state = dir.join("edge");
    let mut args: Vec<String> = vec![
        "run".into(),
        "--state-dir".into(),
        state.display().to_string(),
    ];
    match token {
        Some(token) if !state.join("join.json").exists() => edge_join(broker, token, &state),
        Some(_) => {}
        None => {
            for a in [
                "--broker",
                &broker.grpc_url,
                "--site",
                SITE,
                "--name",
                "edge-1",
            ] {
                args.push(a.into());
            }
        }
    }
    for a in [
        "--listen",
        listen,
        "--relay-listen",
        relay,
        "--report-interval-ms",
        "500",
        "--log-format",
        "text",
    ] {
        args.push(a.into());
    }
    let n = std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    Proc::spawn(
        &bin("classgrid-edge"),
        &args,
        dir.join(format!("edge-{n}.log")),
        &[],
    )
}

async fn registered(edge: &Proc) {
    assert!(
        wait_for(Duration::from_secs(20), || async {
            edge.log_text().contains("edge registered")
        })
        .await,
        "edge should register: {}",
        edge.log_text()
    );
}

async fn connected(broker: &Broker, name: &str, want: bool) -> bool {
    wait_for(Duration::from_secs(30), || async {
        (broker.node_state(SITE, name).await.as_deref() == Some("connected")) == want
    })
    .await
}

fn register(site: &str, name: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Register(pb::Register {
            site: site.into(),
            name: name.into(),
            capacity: Some(pb::NodeCapacity {
                cpu_millis: 1000,
                memory_mib: 1024,
                devices: vec![],
            }),
            ..Default::default()
        })),
    }
}

/// A Relay call with the given metadata and chunks; the error it ends with.
async fn relay_error(
    ch: tonic::transport::Channel,
    headers: &[(&'static str, &str)],
    chunks: Vec<pb::RelayChunk>,
) -> tonic::Status {
    let mut req = tonic::Request::new(tokio_stream::iter(chunks));
    for (k, v) in headers {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    match EdgeServiceClient::new(ch).relay(req).await {
        Err(s) => s,
        Ok(r) => {
            let mut s = r.into_inner();
            loop {
                match s.message().await {
                    Err(e) => return e,
                    Ok(None) => panic!("the relay call ended without an error"),
                    Ok(Some(_)) => {}
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_without_a_route_to_the_region_runs_a_seat_through_its_edge_relay() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("edge-relay");
    let broker = Broker::start_secure(&db, &dir, &["--grace-s", "2"]).await;
    broker.create_site(SITE).await;

    let relay = format!("127.0.0.1:{}", free_port());
    let edge_token = join_token(&broker, SITE, "edge").await;
    let listen = format!("127.0.0.1:{}", free_port());
    let mut edge = start_edge(&broker, Some(&edge_token), &dir, &relay, &listen);
    registered(&edge).await;

    // The agent's broker URL names the broker's TLS name but a dead port:
    // the relay is its only way in, for the join and for every session.
    let unreachable = format!("https://127.0.0.1:{}", free_port());
    let agent_token = join_token(&broker, SITE, "agent").await;
    let agent =
        Agent::join_and_start_at(&agent_token, &unreachable, "n1", &dir, &["--relay", &relay])
            .expect("join through the relay");
    assert!(
        connected(&broker, "n1", true).await,
        "agent should connect through the relay: {}\nedge: {}",
        agent.proc.log_text(),
        edge.log_text()
    );

    // The broker checked the node's own certificate, and knows the edge
    // carries it.
    let audit = AdminServiceClient::new(broker.channel().await)
        .list_audit(pb::ListAuditRequest {
            action: "node.register".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let reg = audit
        .iter()
        .find(|e| e.actor == format!("node:{SITE}/n1"))
        .unwrap_or_else(|| panic!("no registration of n1 audited: {audit:#?}"));
    assert_eq!(
        reg.detail,
        format!("mTLS through the relay of edge {SITE}/edge-1"),
        "{reg:?}"
    );

    // Platforms and admins see the route over gRPC too.
    let n1 = broker.node(SITE, "n1").await.expect("n1 known");
    assert_eq!(n1.relay, format!("{SITE}/edge-1"), "{n1:?}");

    // A seat is placed on the relayed node and runs.
    let booked = broker
        .lessons()
        .await
        .book(web_lesson(SITE, 1, 1.0, 60))
        .await
        .expect("booked")
        .into_inner();
    assert_eq!(booked.seats[0].node_name, "n1");
    let running = wait_for(Duration::from_secs(30), || async {
        broker.lesson(&booked.id).await.seats[0].state == "running"
    })
    .await;
    let l = broker.lesson(&booked.id).await;
    assert!(running, "the seat should run: {:#?}", l.seats);
    let (code, _) = http_get(&format!("{}/", l.seats[0].endpoint))
        .await
        .expect("seat endpoint reachable");
    assert_eq!(code, 200);

    // n1's certificate through the relay still cannot register as another
    // node, nor act as an edge.
    let n1_via_relay =
        classgrid_common::join::channel(&unreachable, &agent.state_dir, Some(&relay))
            .await
            .expect("a channel with n1's certificate through the relay");
    let e = AgentServiceClient::new(n1_via_relay.clone())
        .connect(tokio_stream::iter(vec![register(SITE, "impostor")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains(&format!(
            "belongs to node {SITE}/n1; it cannot register as {SITE}/impostor"
        )),
        "{e:?}"
    );
    // Another school's node, with its own valid certificate, may not come
    // in through this school's edge.
    broker.create_site("school-o").await;
    let other_token = join_token(&broker, "school-o", "agent").await;
    let other_dir = dir.join("agent-o1");
    classgrid_common::join::join(&unreachable, &other_token, "o1", &other_dir, Some(&relay))
        .await
        .expect("a join through the relay");
    let other = classgrid_common::join::channel(&unreachable, &other_dir, Some(&relay))
        .await
        .unwrap();
    let e = AgentServiceClient::new(other)
        .connect(tokio_stream::iter(vec![register("school-o", "o1")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message()
            .starts_with("relay: node school-o/o1 reached the broker through another site's edge"),
        "{e:?}"
    );
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    let (edge_id,): (String,) = sqlx::query_as("SELECT id::text FROM edges WHERE name = 'edge-1'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let e = relay_error(
        n1_via_relay,
        &[
            ("classgrid-edge-id", &edge_id),
            ("classgrid-relay-from", "10.0.0.9:40000"),
        ],
        vec![],
    )
    .await;
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("not a edge one"), "{e:?}");

    // The edge's own certificate, straight to the broker: the relay's rules.
    let edge_ch = classgrid_common::join::channel(&broker.grpc_url, &dir.join("edge"), None)
        .await
        .expect("a channel with the edge's certificate");
    let e = relay_error(edge_ch.clone(), &[("classgrid-edge-id", &edge_id)], vec![]).await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("classgrid-relay-from:"), "{e:?}");
    let e = relay_error(
        edge_ch,
        &[
            ("classgrid-edge-id", &edge_id),
            ("classgrid-relay-from", "10.0.0.9:40001"),
        ],
        vec![pb::RelayChunk {
            data: vec![0; 70_000],
        }],
    )
    .await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .contains("data: a relay chunk carries at most 65536 bytes, not 70000"),
        "{e:?}"
    );
    // The relayed node was not disturbed by any of it.
    assert_eq!(
        broker.node_state(SITE, "n1").await.as_deref(),
        Some("connected")
    );

    // The relay goes down: the agent loses the region; it returns through
    // the restarted edge, and its seat kept running meanwhile.
    edge.kill9();
    assert!(
        connected(&broker, "n1", false).await,
        "without its relay the agent is cut off"
    );
    let down = format!("cannot reach the broker through the site relay at {relay}");
    assert!(
        wait_for(Duration::from_secs(10), || async {
            agent.proc.log_text().contains(&down)
        })
        .await,
        "the agent says why it cannot connect: {}",
        agent.proc.log_text()
    );
    let edge = start_edge(&broker, Some(&edge_token), &dir, &relay, &listen);
    assert!(
        connected(&broker, "n1", true).await,
        "the agent should come back through the restarted relay: {}\nedge: {}",
        agent.proc.log_text(),
        edge.log_text()
    );
    let (code, _) = http_get(&format!("{}/", l.seats[0].endpoint))
        .await
        .expect("seat endpoint still reachable");
    assert_eq!(code, 200);
}

/// Under --insecure-dev the relay carries plain HTTP/2 the same way, `run
/// --relay` takes the relay without a join, and the REST view names the
/// edge that carries a relayed node and none for a direct one.
#[tokio::test(flavor = "multi_thread")]
async fn the_rest_view_names_the_edge_that_relays_a_node() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("edge-relay-dev");
    let broker = Broker::start(&db, &dir, &[]).await;
    broker.create_site(SITE).await;
    let relay = format!("127.0.0.1:{}", free_port());
    let listen = format!("127.0.0.1:{}", free_port());
    let edge = start_edge(&broker, None, &dir, &relay, &listen);
    registered(&edge).await;
    let _relayed = Agent::start(&broker, SITE, "n2", &dir, &["--relay", &relay]);
    let _direct = Agent::start(&broker, SITE, "n3", &dir, &[]);
    for name in ["n2", "n3"] {
        assert!(
            connected(&broker, name, true).await,
            "{name} should connect"
        );
    }
    // The edge's /metrics counts the one agent it carries, not the direct one.
    let metrics = format!("http://{listen}/metrics");
    let one = wait_for(Duration::from_secs(10), || async {
        http_get(&metrics)
            .await
            .is_ok_and(|(_, body)| body.contains("\nclassgrid_edge_relayed_agents 1\n"))
    })
    .await;
    assert!(
        one,
        "the edge should report one relayed agent: {:?}",
        http_get(&metrics).await
    );
    let (code, body) = http_get_as(
        &format!("{}/v1/nodes", broker.http_url),
        Some(&broker.token),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let nodes: serde_json::Value = serde_json::from_str(&body).unwrap();
    let relay_of = |name: &str| {
        nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .map(|n| n["relay"].clone())
    };
    assert_eq!(
        relay_of("n2"),
        Some(serde_json::json!(format!("{SITE}/edge-1"))),
        "{body}"
    );
    assert_eq!(relay_of("n3"), Some(serde_json::Value::Null), "{body}");
}
