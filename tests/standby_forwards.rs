//! Any replica answers (decision 100): a standby forwards every API call to
//! the leader, splices agents' and the CLI's gRPC connections to it, and
//! still answers its own health and metrics. Clients that know only the
//! standby's address book, watch and run seats; when the leader dies the
//! same address keeps working once the standby leads.

use std::{process::Output, time::Duration};

use classgrid_e2e::{
    Agent, Broker, TestDb, bin, http_get, http_get_as, http_get_with, tempdir, wait_for,
};

/// A short lease, so the failover takes a few seconds.
const LEASE: &[&str] = &["--lease-s", "2"];

/// `classgrid lessons book` of one small seat starting now, through `url`
/// (with `ca` for a TLS broker).
fn book(url: &str, ca: Option<&std::path::Path>, token: &str, school: &str, id: &str) -> Output {
    let mut c = std::process::Command::new(bin("classgrid"));
    c.args(["--context", "/nonexistent/classgrid-context.toml"])
        .args(["--broker", url, "--token", token, "--output", "json"]);
    if let Some(ca) = ca {
        c.arg("--ca").arg(ca);
    }
    c.args(["lessons", "book", "--school", school, "--start", "now"])
        .args(["--duration", "10m", "--seats", "1", "--cpu-millis", "10"])
        .args(["--memory-mib", "16", "--request-id", id])
        .args(["--", "sleep", "3600"])
        .output()
        .expect("run classgrid lessons book")
}

fn lesson_id(out: &Output) -> String {
    let text = format!(
        "{:?} {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "booking failed: {text}");
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no lesson id in {text}"))
}

/// Reads a Server-Sent Events stream until its first event has arrived
/// whole (a blank line after `data:`), or 20 s have passed.
async fn first_event(url: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(
        format!(
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 8192];
    while !(text.contains("data:")
        && text
            .split("data:")
            .nth(1)
            .is_some_and(|d| d.contains("\n\n")))
    {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => break,
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_know_only_a_standby_book_watch_and_run_seats_through_it() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("standby-fwd");
    for r in ["r0", "r1"] {
        std::fs::create_dir_all(dir.join(r)).unwrap();
    }
    let mut r0 = Broker::start(&db, &dir.join("r0"), LEASE).await;
    let r1 = Broker::start_replica(&db, &dir.join("r1"), LEASE).await;
    assert!(r0.leads().await && !r1.leads().await);
    r0.create_site("school-sf").await;
    let token = r0.token.clone();

    // The standby answers its own health: alive, not the leader, role 0.
    let (code, body) = http_get(&format!("{}/readyz", r1.http_url)).await.unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"role\":\"standby\""), "{body}");
    let (_, metrics) = http_get(&format!("{}/metrics", r1.http_url)).await.unwrap();
    assert!(
        metrics.contains("classgrid_broker_leader 0"),
        "the standby's own metrics: {metrics}"
    );

    // REST through the standby is the leader's answer, scoped as ever.
    let (code, body) = http_get_as(&format!("{}/v1/lessons", r1.http_url), Some(&token))
        .await
        .unwrap();
    assert_eq!(code, 200, "REST through the standby: {body}");
    let (code, body) = http_get(&format!("{}/v1/lessons", r1.http_url))
        .await
        .unwrap();
    assert_eq!(
        code, 401,
        "no token through the standby is still refused: {body}"
    );
    // A request another standby already forwarded is never passed round.
    let (code, text) = http_get_with(
        &format!("{}/v1/lessons", r1.http_url),
        "x-classgrid-forwarded-by: elsewhere\r\n",
    )
    .await
    .unwrap();
    assert_eq!(code, 503, "{text}");

    // An agent and the CLI given only the standby's address.
    let agent = Agent::start_at(&r1.grpc_url, "school-sf", "n1", &dir, &[]);
    assert!(
        r0.wait_connected("school-sf", "n1", Duration::from_secs(60))
            .await,
        "the agent reached the leader through the standby:\n{}",
        agent.proc.log_text()
    );
    let first = lesson_id(&book(&r1.grpc_url, None, &token, "school-sf", "sf-1"));
    assert!(
        r0.wait_seats_running(&first, Duration::from_secs(60)).await,
        "a lesson booked through the standby runs on the agent behind it"
    );
    // Watching through the standby (SSE): the stream is the leader's, its
    // first event the lesson with its running seat.
    let event = first_event(
        &format!("{}/v1/lessons/{first}/events", r1.http_url),
        &token,
    )
    .await;
    assert!(
        event.contains("event: lesson") && event.contains(&first) && event.contains("running"),
        "the SSE stream through the standby: {event}"
    );

    // The leader dies; the standby's own address keeps working once it leads.
    r0.proc.kill9();
    assert!(
        wait_for(Duration::from_secs(30), || r1.leads()).await,
        "the standby leads once the dead leader's lease ran out:\n{}",
        r1.proc.log_text()
    );
    // The platform's rule: the same request id until answered (the new
    // leader's gRPC port opens a moment after its /readyz).
    let after = std::sync::Mutex::new(None);
    wait_for(Duration::from_secs(20), || {
        let out = book(&r1.grpc_url, None, &token, "school-sf", "sf-2");
        let ok = out.status.success();
        *after.lock().unwrap() = Some(out);
        async move { ok }
    })
    .await;
    let second = lesson_id(&after.into_inner().unwrap().expect("booked at least once"));
    assert!(
        r1.wait_seats_running(&second, Duration::from_secs(60))
            .await,
        "the agent reconnected through the same address and runs the next lesson:\n{}",
        agent.proc.log_text()
    );
    assert_eq!(
        r1.lesson(&first).await.id,
        first,
        "nothing acknowledged is lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_standby_forwards_rest_and_splices_mtls_agents_to_the_leader() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("standby-fwd-tls");
    for r in ["r0", "r1"] {
        std::fs::create_dir_all(dir.join(r)).unwrap();
    }
    let r0 = Broker::start_secure(&db, &dir.join("r0"), LEASE).await;
    let r1 = Broker::start_replica_secure(&db, &dir.join("r1"), LEASE, &r0).await;
    r0.create_site("school-st").await;
    let token = r0.token.clone();
    let ca = r0.ca_file();

    // REST over TLS through the standby, verified by the region CA.
    let curl = |path: &str, auth: bool| {
        let mut c = std::process::Command::new("curl");
        c.args([
            "-sS",
            "-o",
            "/dev/stdout",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(&ca)
        .arg(format!(
            "{}{path}",
            r1.http_url.replace("127.0.0.1", "localhost")
        ));
        if auth {
            c.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        let out = c.output().expect("run curl");
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    };
    let lessons = curl("/v1/lessons", true);
    assert!(
        lessons.trim_end().ends_with("200"),
        "REST over TLS through the standby: {lessons}"
    );
    let ready = curl("/readyz", false);
    assert!(
        ready.trim_end().ends_with("503") && ready.contains("standby"),
        "the standby's own readiness over TLS: {ready}"
    );

    // A node joins and runs with mTLS through the standby's gRPC port: the
    // splice leaves its certificate to the leader.
    let mut admin =
        classgrid_proto::v1::admin_service_client::AdminServiceClient::new(r0.channel().await);
    let join = admin
        .create_join_token(classgrid_proto::v1::CreateJoinTokenRequest {
            site: "school-st".into(),
            kind: "agent".into(),
            ttl_seconds: 600,
            uses: 1,
            require_approval: None,
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    let standby_url = r1.grpc_url.replace("127.0.0.1", "localhost");
    let agent = Agent::join_and_start_at(&join, &standby_url, "n1", &dir, &[])
        .expect("join through the standby");
    assert!(
        wait_for(Duration::from_secs(30), || async {
            r0.node_state("school-st", "n1").await.as_deref() == Some("connected")
        })
        .await,
        "the agent's mTLS stream reached the leader through the standby:\n{}",
        agent.proc.log_text()
    );
    let id = lesson_id(&book(&standby_url, Some(&ca), &token, "school-st", "st-1"));
    assert!(
        r0.wait_seats_running(&id, Duration::from_secs(60)).await,
        "a lesson booked over TLS through the standby runs"
    );
}
