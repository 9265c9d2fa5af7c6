//! A district without a load balancer (decision 091): the agent and the CLI
//! list both replicas' addresses (`--broker URL1,URL2`) and find the leader
//! by trying them in turn. The leader is killed: the agent reconnects to
//! the new leader, which starts a lesson on it, and the CLI still books.

use std::{process::Output, time::Duration};

use classgrid_e2e::{Agent, Broker, TestDb, bin, tempdir, wait_for};

/// A short lease, so the failover takes a few seconds.
const LEASE: &[&str] = &["--lease-s", "2"];

/// `classgrid … lessons book` of one small seat starting now, through the
/// broker address `grpc_url` (one URL or a list).
fn book(grpc_url: &str, token: &str, request_id: &str) -> Output {
    std::process::Command::new(bin("classgrid"))
        .args(["--context", "/nonexistent/classgrid-context.toml"])
        .args(["--broker", grpc_url, "--token", token, "--output", "json"])
        .args(["lessons", "book", "--school", "school-bl", "--start", "now"])
        .args(["--duration", "10m", "--seats", "1", "--cpu-millis", "10"])
        .args(["--memory-mib", "16", "--request-id", request_id])
        .args(["--", "sleep", "3600"])
        .output()
        .expect("run classgrid lessons book")
}

/// The lesson id from `book`'s JSON, or the command's words when it failed.
fn lesson_id(out: &Output) -> Result<String, String> {
    let text = format!(
        "{:?} {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(text);
    }
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string))
        .ok_or(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_cli_with_both_replicas_listed_follow_the_leader_when_it_dies() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("broker-list");
    for r in ["r0", "r1"] {
        std::fs::create_dir_all(dir.join(r)).unwrap();
    }
    let mut r0 = Broker::start(&db, &dir.join("r0"), LEASE).await;
    let r1 = Broker::start_replica(&db, &dir.join("r1"), LEASE).await;
    assert!(r0.leads().await && !r1.leads().await);
    r0.create_site("school-bl").await;
    let token = r0.token.clone();

    // The standby first: the agent and the CLI pass over it to the leader.
    let standby_first = format!("{},{}", r1.grpc_url, r0.grpc_url);
    let agent = Agent::start_at(&standby_first, "school-bl", "n1", &dir, &[]);
    assert!(
        r0.wait_connected("school-bl", "n1", Duration::from_secs(60))
            .await,
        "the agent found the leader in its list:\n{}",
        agent.proc.log_text()
    );
    let first = lesson_id(&book(&standby_first, &token, "bl-before"))
        .expect("the CLI books through a list whose first broker is a standby");
    assert!(
        r0.wait_seats_running(&first, Duration::from_secs(60)).await,
        "the first lesson runs"
    );

    r0.proc.kill9();
    assert!(
        wait_for(Duration::from_secs(30), || r1.leads()).await,
        "the standby leads once the dead leader's lease ran out:\n{}",
        r1.proc.log_text()
    );

    // The dead one alone cannot book: the list is what keeps the CLI going.
    let alone = book(&r0.grpc_url, &token, "bl-alone");
    assert_eq!(alone.status.code(), Some(5), "{alone:?}");
    // The dead leader first in the list. The new leader's gRPC port may
    // open a moment after its /readyz; the platform's rule (the same
    // request id until answered) covers that, and the one lesson it makes
    // is checked below.
    let dead_first = format!("{},{}", r0.grpc_url, r1.grpc_url);
    let mut answer = lesson_id(&book(&dead_first, &token, "bl-after"));
    let t0 = std::time::Instant::now();
    while answer.is_err() && t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        answer = lesson_id(&book(&dead_first, &token, "bl-after"));
    }
    let after = answer.unwrap_or_else(|e| panic!("the CLI booked after the failover: {e}"));

    // The agent reconnected to the new leader, which runs the new lesson
    // on it; the first lesson is still there.
    assert!(
        r1.wait_seats_running(&after, Duration::from_secs(60)).await,
        "the lesson booked after the failover runs on the reconnected agent:\n{}",
        agent.proc.log_text()
    );
    let log = agent.proc.log_text();
    assert!(
        log.matches("registered with the broker").count() >= 2,
        "the agent registered again after the kill:\n{log}"
    );
    assert_eq!(r1.lesson(&first).await.id, first);
    let again =
        lesson_id(&book(&dead_first, &token, "bl-after")).expect("a retried booking is answered");
    assert_eq!(again, after, "the same request id gives the same lesson");
}
