//! Failures that show (issue #23): a lesson whose only seat failed is not a
//! healthy `live` in `lessons list`, the failed seats are counted in
//! /metrics, what a failed seat's program printed can be read through the
//! broker, and jobs can be listed (`classgrid jobs list`, `GET /v1/jobs`).

use std::{process::Command, time::Duration};

use classgrid_e2e::*;
use classgrid_proto::v1::{self as pb, job_service_client::JobServiceClient};

/// The `classgrid` CLI against this (plain-text) broker; (success, stdout+stderr).
fn cli(broker: &Broker, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("classgrid"))
        .args(["--context", "/nonexistent/classgrid-context.toml"])
        .args(["--grpc-url", &broker.grpc_url, "--token", &broker.token])
        .args(args)
        .output()
        .expect("run classgrid");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn lesson_running(site: &str, command: &str, args: &[&str]) -> pb::BookLessonRequest {
    let mut r = web_lesson(site, 1, 0.0, 300);
    r.workload = Some(pb::Workload {
        command: command.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    });
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_lesson_shows_as_failed_with_its_output_counted_in_metrics() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("failures-show");
    let broker = Broker::start(&db, &dir, &[]).await;
    broker.create_site("school-f").await;
    let agent_metrics = format!("127.0.0.1:{}", free_port());
    let mut agent = Agent::start(
        &broker,
        "school-f",
        "f1",
        &dir,
        &["--metrics-listen", &agent_metrics],
    );
    assert!(
        broker
            .wait_connected("school-f", "f1", Duration::from_secs(30))
            .await
    );

    // A command the node's agent reports is not on its PATH is refused at
    // booking, with its name and the count of nodes that lack it.
    let refused = broker
        .lessons()
        .await
        .book(lesson_running("school-f", "classgrid-no-such-command", &[]))
        .await
        .expect_err("no node has the command");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains("1 node(s) lack the command `classgrid-no-such-command`"),
        "{}",
        refused.message()
    );
    let (ok, out) = cli(
        &broker,
        &[
            "lessons",
            "book",
            "--school",
            "school-f",
            "--start",
            "+60s",
            "--duration",
            "10m",
            "--seats",
            "1",
            "--",
            "classgrid-no-such-command",
        ],
    );
    assert!(
        !ok && out.contains("`classgrid-no-such-command`"),
        "the CLI names the command: {out}"
    );

    // The case at the bell: a command given by a path the node
    // does not have (nothing the agent reports can say so in advance).
    let missing = broker
        .lessons()
        .await
        .book(lesson_running(
            "school-f",
            "/nonexistent/classgrid-no-such-command",
            &[],
        ))
        .await
        .expect("book")
        .into_inner();
    // A program that prints and fails every time: it crash-loops, then is
    // reported failed with what it printed.
    let noisy = broker
        .lessons()
        .await
        .book(lesson_running(
            "school-f",
            "sh",
            &["-c", "echo boom-output-42; exit 3"],
        ))
        .await
        .expect("book")
        .into_inner();

    assert!(
        wait_for(Duration::from_secs(60), || async {
            broker.lesson(&missing.id).await.failed_seats == 1
        })
        .await,
        "the seat never failed: {:?}; agent log:\n{}",
        broker.lesson(&missing.id).await,
        agent.proc.log_text()
    );

    // `lessons list` says it, in the table and in JSON.
    let (ok, out) = cli(&broker, &["lessons", "list", "--school", "school-f"]);
    assert!(ok, "{out}");
    let row = out
        .lines()
        .find(|l| l.contains(&missing.id))
        .unwrap_or_else(|| panic!("no row for the lesson: {out}"));
    assert!(row.contains("FAILED: all 1 seats"), "{row}");
    let (ok, out) = cli(
        &broker,
        &["-o", "json", "lessons", "list", "--school", "school-f"],
    );
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let l = v
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == missing.id.as_str())
        .unwrap();
    assert_eq!(l["failed_seats"], 1, "{l}");

    // The metric counts it (refreshed every few seconds).
    let metrics_url = format!("{}/metrics", broker.http_url);
    assert!(
        wait_for(Duration::from_secs(20), || async {
            http_get(&metrics_url).await.is_ok_and(|(_, body)| {
                body.lines().any(|l| {
                    l.strip_prefix("classgrid_seats_failed ")
                        .and_then(|n| n.trim().parse::<i64>().ok())
                        .is_some_and(|n| n >= 1)
                })
            })
        })
        .await,
        "no classgrid_seats_failed >= 1 in /metrics"
    );

    // What the failing program printed, through the broker: gRPC, REST
    // and `lessons get`.
    assert!(
        wait_for(Duration::from_secs(120), || async {
            broker
                .lesson(&noisy.id)
                .await
                .seats
                .iter()
                .any(|s| s.output_tail.contains("boom-output-42"))
        })
        .await,
        "no output tail: {:?}",
        broker.lesson(&noisy.id).await
    );
    let (code, body) = http_get_as(
        &format!("{}/v1/lessons/{}", broker.http_url, noisy.id),
        Some(&broker.token),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("boom-output-42"), "{body}");
    let (ok, out) = cli(&broker, &["lessons", "get", &noisy.id]);
    assert!(ok && out.contains("boom-output-42"), "{out}");

    // The agent restarted the crash-looping seat in place five times before
    // giving up (decision 066), and its /metrics counts each restart; the
    // missing command never started, so it was never restarted.
    let agent_url = format!("http://{agent_metrics}/metrics");
    let restarts = wait_for(Duration::from_secs(120), || async {
        broker.lesson(&noisy.id).await.failed_seats == 1
            && http_get(&agent_url)
                .await
                .is_ok_and(|(_, body)| body.contains("\nclassgrid_agent_seat_restarts_total 5\n"))
    })
    .await;
    assert!(
        restarts,
        "the agent should count 5 seat restarts: {:?}",
        http_get(&agent_url).await
    );

    // Jobs can be listed, over gRPC (the CLI) and REST.
    let job = JobServiceClient::new(broker.channel().await)
        .submit(pb::SubmitJobRequest {
            school_site: "school-f".into(),
            name: "listed-job".into(),
            spec: Some(pb::SeatSpec {
                cpu_millis: 100,
                memory_mib: 64,
                gpu: None,
                runtime: String::new(),
            }),
            workload: Some(pb::Workload {
                command: "true".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("submit")
        .into_inner();
    let (ok, out) = cli(&broker, &["jobs", "list"]);
    assert!(
        ok && out.contains(&job.id) && out.contains("listed-job"),
        "{out}"
    );
    let (code, body) = http_get_as(&format!("{}/v1/jobs", broker.http_url), Some(&broker.token))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(&job.id), "{body}");
    let (code, body) = http_get_as(
        &format!("{}/v1/jobs?state=bogus", broker.http_url),
        Some(&broker.token),
    )
    .await
    .unwrap();
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("state"), "{body}");

    // `audit --since -1h`, as the README writes it.
    let (ok, out) = cli(&broker, &["audit", "--since", "-1h"]);
    assert!(ok, "{out}");

    agent.proc.kill9();
}
