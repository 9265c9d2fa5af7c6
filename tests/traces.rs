//! Traces leave the broker over OTLP and join the caller's trace: a broker
//! started with `--otlp-endpoint` pointing at a real OTLP/gRPC receiver
//! (opentelemetry-proto and grpcio in the test virtualenv) gets a REST
//! booking with a W3C `traceparent`; the receiver must get the request's
//! span in that trace, child of the caller's span, from the broker's
//! service.

use std::{path::PathBuf, time::Duration};

use classgrid_e2e::*;
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

/// POSTs a booking as raw HTTP/1.0 with `traceparent`; returns the status.
async fn post_booking(base: &str, token: &str, traceparent: &str) -> u16 {
    let host = base.trim_start_matches("http://");
    let body = r#"{"school_site":"school-a","title":"traced","start":"2099-01-05T09:00:00+08:00","duration_seconds":2400,"seats":1,"seat":{"cpu_millis":100,"memory_mib":64},"workload":{"command":"python3","args":["-m","http.server","$(PORT)"]}}"#;
    let req = format!(
        "POST /v1/lessons HTTP/1.0\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         traceparent: {traceparent}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw).await;
    raw.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn spans(out: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rest_bookings_traceparent_reaches_the_spans_exported_over_otlp() {
    let Some(python) = python_with_otlp() else {
        return;
    };
    let dir = tempdir("traces");
    let port = free_port();
    let out = dir.join("spans.jsonl");
    let receiver = Proc::spawn(
        &python,
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

    let db = TestDb::new().await.unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let broker = Broker::start(&db, &dir, &["--otlp-endpoint", &endpoint]).await;
    broker.create_site("school-a").await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let code = post_booking(
        &broker.http_url,
        &broker.token,
        &format!("00-{trace}-{caller}-01"),
    )
    .await;
    // Admitted (201) or refused by placement (409, no nodes here): either
    // way the booking was decided inside the request's span.
    assert!(code == 201 || code == 409, "booking answered {code}");

    // The batch exporter sends within its schedule (5 s by default).
    let found = wait_for(Duration::from_secs(30), || async {
        spans(&out).iter().any(|s| {
            s["trace_id"] == trace
                && s["parent_span_id"] == caller
                && s["name"] == "POST /v1/lessons"
                && s["service"] == "classgrid-broker"
        })
    })
    .await;
    assert!(
        found,
        "no span of trace {trace} with parent {caller} from the broker; received: {:#?}\nreceiver log: {}",
        spans(&out),
        receiver.log_text()
    );
}
