//! One trace from a platform's booking call to the agent's RUNNING report,
//! across the broker and the agent processes: a broker and an agent, both
//! started with `--otlp-endpoint` pointing at a real OTLP/gRPC receiver
//! (opentelemetry-proto and grpcio in the test virtualenv), get a REST
//! booking that starts now, with a W3C `traceparent`. The receiver must
//! get, in the caller's trace, the broker's request span and its steps
//! (tenancy → plan, write, dispatch) and the agent's spans (assign received
//! → runtime start → report running), each the child of the one before:
//! the agent's first span is the child of the broker's dispatch span, whose
//! context the Assign carried.

use std::{path::PathBuf, time::Duration};

use classgrid_e2e::*;
use classgrid_proto::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The test virtualenv's python when it has the OTLP protos and grpcio;
/// CI must have them, a bare `cargo test` skips, saying so.
fn python_with_otlp() -> Option<PathBuf> {
    let py = PathBuf::from(std::env::var("CLASSGRID_PYTHON").unwrap_or_else(|_| "python3".into()));
    let ok = std::process::Command::new(&py)
        .args([
            "-c",
            "import grpc; from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "CI must provide opentelemetry-proto and grpcio (CLASSGRID_PYTHON)"
        );
        eprintln!(
            "skipped: no opentelemetry-proto and grpcio in {}",
            py.display()
        );
        return None;
    }
    Some(py)
}

/// A real OTLP/gRPC receiver writing the spans it gets to a file: the
/// process, that file and the endpoint to export to.
async fn start_receiver(
    python: &std::path::Path,
    dir: &std::path::Path,
) -> (Proc, PathBuf, String) {
    let port = free_port();
    let out = dir.join("spans.jsonl");
    let receiver = Proc::spawn(
        python,
        &[
            concat!(env!("CARGO_MANIFEST_DIR"), "/support/otlp_receiver.py").to_string(),
            port.to_string(),
            out.display().to_string(),
        ],
        dir.join("receiver.log"),
        &[],
    );
    assert!(
        wait_for(Duration::from_secs(20), || async {
            receiver.log_text().contains("listening")
        })
        .await,
        "receiver did not start: {}",
        receiver.log_text()
    );
    (receiver, out, format!("http://127.0.0.1:{port}"))
}

/// POSTs `body` to /v1/lessons as raw HTTP/1.0 with `traceparent`;
/// returns the status and the body.
async fn post_booking(base: &str, token: &str, traceparent: &str, body: &str) -> (u16, String) {
    let host = base.trim_start_matches("http://");
    let req = format!(
        "POST /v1/lessons HTTP/1.0\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         traceparent: {traceparent}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw).await;
    let code = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// An RFC 3339 UTC time `secs_ago` seconds before now (`date`, so the test
/// needs no calendar code of its own).
fn utc_ago(secs_ago: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{}", now - secs_ago),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn spans(out: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The span of `trace` named `name` from `service`, if received.
fn span<'a>(
    spans: &'a [serde_json::Value],
    trace: &str,
    service: &str,
    name: &str,
) -> Option<&'a serde_json::Value> {
    spans
        .iter()
        .find(|s| s["trace_id"] == trace && s["service"] == service && s["name"] == name)
}

/// The path from the platform's call to the agent's RUNNING report, each
/// span the parent of the next.
const PATH: &[(&str, &str)] = &[
    ("classgrid-broker", "POST /v1/lessons"),
    ("classgrid-broker", "tenancy"),
    ("classgrid-broker", "dispatch"),
    ("classgrid-agent", "assign received"),
    ("classgrid-agent", "runtime start"),
    ("classgrid-agent", "report running"),
];

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_runs_from_a_rest_booking_to_the_agents_running_report() {
    let Some(python) = python_with_otlp() else {
        return;
    };
    let dir = tempdir("traces");
    let (receiver, out, endpoint) = start_receiver(&python, &dir).await;

    let db = TestDb::new().await.unwrap();
    let broker = Broker::start(&db, &dir, &["--otlp-endpoint", &endpoint]).await;
    broker.create_site("school-a").await;
    let _agent = Agent::start(
        &broker,
        "school-a",
        "n1",
        &dir,
        &["--otlp-endpoint", &endpoint],
    );
    assert!(
        broker
            .wait_connected("school-a", "n1", Duration::from_secs(30))
            .await,
        "agent did not connect"
    );

    // A start a few seconds ago is "now" (within the clocks' skew): the
    // booking starts the lesson itself, so its seats are dispatched inside
    // the request's trace rather than by the clock's next tick.
    let body = format!(
        r#"{{"school_site":"school-a","title":"traced","start":"{}","duration_seconds":300,"seats":1,"seat":{{"cpu_millis":100,"memory_mib":64}},"workload":{{"command":"python3","args":["-m","http.server","--bind","127.0.0.1","$(PORT)"]}}}}"#,
        utc_ago(5)
    );
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let (code, answer) = post_booking(
        &broker.http_url,
        &broker.token,
        &format!("00-{trace}-{caller}-01"),
        &body,
    )
    .await;
    assert_eq!(code, 201, "booking answered {code}: {answer}");
    let lesson: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let id = lesson["id"].as_str().unwrap();
    assert!(
        broker.wait_seats_running(id, Duration::from_secs(30)).await,
        "the lesson's seat did not start"
    );

    // The batch exporters send within their schedule (5 s by default).
    let complete = wait_for(Duration::from_secs(30), || async {
        let got = spans(&out);
        PATH.iter()
            .chain(&[("classgrid-broker", "plan"), ("classgrid-broker", "write")])
            .all(|(svc, name)| span(&got, trace, svc, name).is_some())
    })
    .await;
    let got = spans(&out);
    let in_trace: Vec<_> = got.iter().filter(|s| s["trace_id"] == trace).collect();
    assert!(
        complete,
        "the trace lacks spans of the path {PATH:?}; its spans: {in_trace:#?}\nreceiver log: {}",
        receiver.log_text()
    );
    // Each step is the child of the one before, from the caller's span on.
    let mut parent = caller.to_string();
    for (svc, name) in PATH {
        let s = span(&got, trace, svc, name).unwrap();
        assert_eq!(
            s["parent_span_id"], parent,
            "{svc} `{name}` is not the child of the step before; the trace: {in_trace:#?}"
        );
        parent = s["span_id"].as_str().unwrap().to_string();
    }
    // Planning and writing are steps of the booking, under its tenancy span.
    let tenancy = span(&got, trace, "classgrid-broker", "tenancy").unwrap();
    for step in ["plan", "write"] {
        assert_eq!(
            span(&got, trace, "classgrid-broker", step).unwrap()["parent_span_id"],
            tenancy["span_id"],
            "{step} is not under tenancy: {in_trace:#?}"
        );
    }

    // A lesson booked ahead is started by the clock at its bell: that start
    // is a trace of its own, which reaches the agent's RUNNING report too.
    let later = broker
        .lessons()
        .await
        .book(web_lesson("school-a", 1, 3.0, 300))
        .await
        .expect("lesson booked")
        .into_inner();
    assert!(
        broker
            .wait_seats_running(&later.id, Duration::from_secs(30))
            .await,
        "the clock did not start the later lesson"
    );
    let bell_path = [
        ("classgrid-broker", "lesson start"),
        ("classgrid-broker", "dispatch"),
        ("classgrid-agent", "assign received"),
        ("classgrid-agent", "runtime start"),
        ("classgrid-agent", "report running"),
    ];
    // The chain under one of the clock's `lesson start` roots (a tick that
    // found the lesson due more than once has several), or None.
    let chained = |got: &[serde_json::Value]| {
        got.iter()
            .filter(|s| s["name"] == "lesson start" && s["parent_span_id"] == "")
            .find_map(|root| {
                let t = root["trace_id"].as_str()?;
                let mut parent = String::new();
                for (svc, name) in bell_path {
                    let s = span(got, t, svc, name)?;
                    if s["parent_span_id"] != parent.as_str() {
                        return None;
                    }
                    parent = s["span_id"].as_str()?.to_string();
                }
                Some(t.to_string())
            })
    };
    let found = wait_for(Duration::from_secs(30), || async {
        chained(&spans(&out)).is_some()
    })
    .await;
    assert!(
        found,
        "no trace of the clock's lesson start reaches the agent's RUNNING report ({bell_path:?}); spans: {:#?}",
        spans(&out)
    );
}

/// The hex sha256 of a file (coreutils' `sha256sum`).
fn sha256_of(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The trace of one edge staging run in which every dataset of `shas` has
/// a `stage` span under the run's root, with a `fetch` from the origin and
/// its `verify` under it; None while there is none.
fn staging_trace(got: &[serde_json::Value], shas: &[String]) -> Option<String> {
    let edge = |s: &&serde_json::Value| s["service"] == "classgrid-edge";
    let child = |parent: &serde_json::Value, name: &str| {
        got.iter()
            .filter(edge)
            .find(|s| {
                s["name"] == name
                    && s["trace_id"] == parent["trace_id"]
                    && s["parent_span_id"] == parent["span_id"]
            })
            .cloned()
    };
    got.iter()
        .filter(edge)
        .filter(|s| s["name"] == "staging run" && s["parent_span_id"] == "")
        .find(|root| {
            shas.iter().all(|sha| {
                got.iter().filter(edge).any(|s| {
                    s["name"] == "stage"
                        && s["trace_id"] == root["trace_id"]
                        && s["parent_span_id"] == root["span_id"]
                        && s["attributes"]["sha256"] == sha.as_str()
                        && child(s, "fetch").is_some_and(|f| {
                            f["attributes"]["source"] == "origin" && child(&f, "verify").is_some()
                        })
                })
            })
        })
        .map(|root| root["trace_id"].as_str().unwrap_or_default().to_string())
}

/// An edge staging run is a trace of its own (the broker orders content on
/// the edge's periodic sync, which carries no booking's context): a lesson
/// with two datasets on a plain HTTP origin is staged by an edge exporting
/// through the standard OTEL_EXPORTER_OTLP_ENDPOINT, and the receiver gets
/// one trace whose root `staging run` holds a `stage` span per dataset,
/// each with its `fetch` from the origin and the `verify` of the file.
#[tokio::test(flavor = "multi_thread")]
async fn an_edge_staging_run_is_one_trace_with_a_span_per_dataset_and_fetch() {
    let Some(python) = python_with_otlp() else {
        return;
    };
    let dir = tempdir("traces-staging");
    let (receiver, out, endpoint) = start_receiver(&python, &dir).await;

    // The origin: Python's http.server over a folder with two datasets.
    let origin_dir = dir.join("origin");
    std::fs::create_dir_all(&origin_dir).unwrap();
    let origin_port = free_port();
    let mut datasets = Vec::new();
    for (salt, name) in [(7u32, "first.bin"), (11, "second.bin")] {
        let bytes: Vec<u8> = (0..3u32 << 20)
            .map(|j| (j.wrapping_mul(2_654_435_761).rotate_left(salt) >> 24) as u8)
            .collect();
        let path = origin_dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        datasets.push(pb::Dataset {
            name: name.into(),
            url: format!("http://127.0.0.1:{origin_port}/{name}"),
            sha256: sha256_of(&path),
            size_bytes: bytes.len() as i64,
        });
    }
    let _origin = Proc::spawn(
        &python,
        &["-m", "http.server", "--bind", "127.0.0.1", "--directory"]
            .map(String::from)
            .into_iter()
            .chain([origin_dir.display().to_string(), origin_port.to_string()])
            .collect::<Vec<_>>(),
        dir.join("origin.log"),
        &[],
    );
    assert!(
        wait_for(Duration::from_secs(20), || async {
            matches!(http_get(&datasets[0].url).await, Ok((200, _)))
        })
        .await,
        "the origin did not start"
    );

    let db = TestDb::new().await.unwrap();
    let broker = Broker::start(&db, &dir, &[]).await;
    broker.create_site("school-s").await;
    let _agent = Agent::start(&broker, "school-s", "n1", &dir, &[]);
    assert!(
        broker
            .wait_connected("school-s", "n1", Duration::from_secs(30))
            .await,
        "agent did not connect"
    );
    let edge = start_edge(
        &broker,
        "school-s",
        free_port(),
        500,
        &dir,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)],
    );
    // Ordered a few seconds before the start (the download's time at the
    // link rate plus a margin), on an edge sync.
    let mut req = web_lesson("school-s", 1, 20.0, 120);
    req.datasets = datasets.clone();
    let booked = broker
        .book_once_admitted(&req, Duration::from_secs(20))
        .await;
    assert!(
        booked.is_some(),
        "booking with datasets never admitted; edge log:\n{}",
        edge.log_text()
    );

    let shas: Vec<String> = datasets.iter().map(|d| d.sha256.clone()).collect();
    let found = wait_for(Duration::from_secs(60), || async {
        staging_trace(&spans(&out), &shas).is_some()
    })
    .await;
    let edge_spans: Vec<_> = spans(&out)
        .into_iter()
        .filter(|s| s["service"] == "classgrid-edge")
        .collect();
    assert!(
        found,
        "no trace of one staging run holds both datasets' stage → fetch → verify; the edge's spans: {edge_spans:#?}\nedge log:\n{}\nreceiver log: {}",
        edge.log_text(),
        receiver.log_text()
    );
    // The fetch says what it got, and names the origin's host, not its URL.
    let fetch = edge_spans.iter().find(|s| s["name"] == "fetch").unwrap();
    assert_eq!(fetch["attributes"]["bytes"], (3u32 << 20).to_string());
    assert_eq!(
        fetch["attributes"]["host"],
        format!("127.0.0.1:{origin_port}")
    );
}
