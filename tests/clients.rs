//! The Python platform clients in tests/clients/ against the real broker:
//! each books a lesson, watches it until its seats run, reads the
//! endpoints, and cancels it. The REST client needs only python3; the gRPC
//! client needs grpcio and grpcio-tools, which scripts/test.sh installs into
//! a virtual environment and names in CLASSGRID_PYTHON.

use std::{path::PathBuf, process::Command, time::Duration};

use classgrid_e2e::*;

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients")
}

fn python() -> String {
    std::env::var("CLASSGRID_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn has_grpc_tools(py: &str) -> bool {
    Command::new(py)
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

async fn broker_with_agent(name: &str) -> (TestDb, PathBuf, Broker, Agent) {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir(name);
    let broker = Broker::start(&db, &dir, &["--grace-s", "1"]).await;
    broker.create_site("school-a").await;
    let agent = Agent::start(&broker, "school-a", "n0", &dir, &[]);
    assert!(
        wait_for(Duration::from_secs(20), || async {
            broker.node_state("school-a", "n0").await.as_deref() == Some("connected")
        })
        .await,
        "agent should connect"
    );
    (db, dir, broker, agent)
}

fn run(py: &str, script: &str, args: &[&str]) {
    let out = Command::new(py)
        .arg(clients_dir().join(script))
        .args(args)
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed:\n{text}");
    assert!(text.contains("client: ok"), "{script}:\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_rest_client_books_watches_reads_endpoints_and_cancels() {
    let (_db, _dir, broker, _agent) = broker_with_agent("py-rest").await;
    let py = python();
    let (url, token) = (broker.http_url.clone(), broker.token.clone());
    tokio::task::spawn_blocking(move || {
        run(
            &py,
            "rest_client.py",
            &["--url", &url, "--token", &token, "--site", "school-a"],
        )
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn python_grpc_client_books_watches_reads_endpoints_and_cancels() {
    let py = python();
    if !has_grpc_tools(&py) {
        // CI always has them (scripts/test.sh); a bare `cargo test` may not.
        assert!(
            std::env::var("CI").is_err(),
            "CI must provide grpcio and grpcio-tools (CLASSGRID_PYTHON)"
        );
        eprintln!(
            "skipped: {py} lacks grpcio/grpcio-tools; run scripts/test.sh or set CLASSGRID_PYTHON"
        );
        return;
    }
    let (_db, _dir, broker, _agent) = broker_with_agent("py-grpc").await;
    let target = broker.grpc_url.trim_start_matches("http://").to_string();
    let token = broker.token.clone();
    tokio::task::spawn_blocking(move || {
        run(
            &py,
            "grpc_client.py",
            &["--target", &target, "--token", &token, "--site", "school-a"],
        )
    })
    .await
    .unwrap();
}
