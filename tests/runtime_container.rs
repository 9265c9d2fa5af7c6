//! The container runtime runs a seat end to end through a real
//! Docker-compatible engine (Podman's service, which scripts/test.sh starts):
//! booked through the real broker, served from the container on its PORT,
//! and stopped and removed at the lesson's end.

use std::time::Duration;

use classgrid_e2e::*;
use classgrid_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The engine's socket and a local image, from scripts/lib.sh's ensure_podman.
fn engine() -> Option<(String, String)> {
    let socket = std::env::var("CLASSGRID_TEST_CONTAINER_SOCKET").ok()?;
    let image = std::env::var("CLASSGRID_TEST_CONTAINER_IMAGE")
        .unwrap_or_else(|_| "localhost/classgrid-mini:1".into());
    Some((socket, image))
}

/// Containers carrying an assignment label, from the engine's own API.
async fn labelled_containers(socket: &str) -> String {
    let mut s = tokio::net::UnixStream::connect(socket)
        .await
        .expect("engine socket");
    let filter = "%7B%22label%22%3A%5B%22classgrid.assignment-id%22%5D%7D";
    s.write_all(
        format!("GET /v1.41/containers/json?all=1&filters={filter} HTTP/1.0\r\nHost: d\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    buf.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Seats outlive their agent by design, so a failed run would leave its
/// container behind: remove this test's containers whatever happens.
struct RemoveContainers(String);

impl Drop for RemoveContainers {
    fn drop(&mut self) {
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "podman --url unix://{} rm -f -t 0 $(podman --url unix://{} ps -aq --filter label=classgrid.assignment-id) >/dev/null 2>&1",
                self.0, self.0
            ))
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn container_seat_serves_on_its_port_is_adopted_after_agent_restart_and_removed_at_the_end() {
    let Some((socket, image)) = engine() else {
        eprintln!(
            "SKIPPED: CLASSGRID_TEST_CONTAINER_SOCKET is not set; scripts/test.sh starts Podman's Docker-compatible API and sets it"
        );
        return;
    };
    let _cleanup = RemoveContainers(socket.clone());
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("container");
    let broker = Broker::start(&db, &dir, &["--grace-s", "2"]).await;
    broker.create_site("school-c").await;
    let mut agent = Agent::start(
        &broker,
        "school-c",
        "box",
        &dir,
        &[
            "--runtimes",
            "process,container",
            "--container-socket",
            &socket,
        ],
    );
    let node = wait_for(Duration::from_secs(30), || async {
        broker
            .fleet()
            .await
            .get_node(pb::GetNodeRequest {
                id: "school-c/box".into(),
            })
            .await
            .map(|n| n.into_inner().runtimes.iter().any(|r| r == "container"))
            .unwrap_or(false)
    })
    .await;
    assert!(
        node,
        "the agent should offer the container runtime; log:\n{}",
        agent.proc.log_text()
    );

    let mut req = web_lesson("school-c", 1, 2.0, 25);
    req.seat.as_mut().unwrap().runtime = "container".into();
    req.workload = Some(pb::Workload {
        image: image.clone(),
        command: "httpd".into(),
        args: vec![
            "-f".into(),
            "-p".into(),
            "$(PORT)".into(),
            "-h".into(),
            "/www".into(),
        ],
        ..Default::default()
    });
    let booked = broker
        .lessons()
        .await
        .book(req)
        .await
        .expect("booking admitted")
        .into_inner();
    let id = booked.id.clone();

    let running = broker
        .wait_seats_running(&id, Duration::from_secs(40))
        .await;
    let l = broker.lesson(&id).await;
    assert!(
        running,
        "the container seat should run: {:#?}\nagent log:\n{}",
        l.seats,
        agent.proc.log_text()
    );
    let endpoint = l.seats[0].endpoint.clone();
    let (code, body) = http_get(&format!("{endpoint}/"))
        .await
        .expect("seat endpoint reachable");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("classgrid seat"),
        "served from the image: {body}"
    );

    // The container is labelled with its assignment, and the agent's state
    // records its container id for adoption.
    let state = std::fs::read_to_string(agent.state_dir.join("assignments.json")).unwrap();
    let recs: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(recs[0]["runtime"], "container", "{state}");
    assert!(
        recs[0]["container_id"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{state}"
    );
    let assignment = recs[0]["id"].as_str().unwrap().to_string();
    let listed = labelled_containers(&socket).await;
    assert!(
        listed.contains(&assignment),
        "labelled with its assignment: {listed}"
    );

    // A restarted agent adopts the running container instead of starting
    // another: same container id, the seat keeps serving.
    let container_id = recs[0]["container_id"].as_str().unwrap().to_string();
    agent.restart();
    let adopted = wait_for(Duration::from_secs(20), || async {
        agent.proc.log_text().contains("adopted running assignment")
    })
    .await;
    assert!(adopted, "agent log:\n{}", agent.proc.log_text());
    let state = std::fs::read_to_string(agent.state_dir.join("assignments.json")).unwrap();
    assert!(state.contains(&container_id), "{state}");
    assert_eq!(
        http_get(&format!("{endpoint}/")).await.map(|r| r.0).ok(),
        Some(200)
    );

    let ended = wait_for(Duration::from_secs(40), || async {
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
    let gone = wait_for(Duration::from_secs(20), || async {
        http_get(&format!("{endpoint}/")).await.is_err()
            && !labelled_containers(&socket).await.contains(&assignment)
    })
    .await;
    assert!(
        gone,
        "the container should be stopped and removed at the end: {}",
        labelled_containers(&socket).await
    );
}
