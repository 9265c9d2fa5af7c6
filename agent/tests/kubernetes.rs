//! The kubernetes runtime against recorded API server responses. No cluster
//! can run on the project's machines, so a tiny local HTTP server replays
//! NodeList, Pod and watch-event JSON written to the Kubernetes API schema
//! (fixtures/kubernetes/) and records what the agent sends. This checks the
//! agent's side of the protocol, not a real API server's behaviour.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use classgrid_agent::runtime::{
    GrantedSlice, Handle, Probe, Runtime, StartSpec, kubernetes::KubeRuntime,
};
use classgrid_proto::v1 as pb;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

const ASSIGNMENT: &str = "0193a8f2-5c1d-7e4a-9b3c-2d1e0f9a8b7c";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/kubernetes/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[derive(Default)]
struct Replay {
    requests: Mutex<Vec<(String, String, String)>>,
    events: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
}

async fn read_request(s: &mut TcpStream) -> Option<(String, String, String)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut first = head.lines().next()?.split_whitespace();
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    Some((method, path, String::from_utf8_lossy(&body).to_string()))
}

async fn respond(s: &mut TcpStream, code: u16, body: &str) {
    let _ = s
        .write_all(
            format!(
                "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await;
}

async fn serve(s: &mut TcpStream, replay: Arc<Replay>, events: mpsc::UnboundedSender<String>) {
    let Some((method, path, body)) = read_request(s).await else {
        return;
    };
    replay
        .requests
        .lock()
        .unwrap()
        .push((method.clone(), path.clone(), body));
    let pods = "/api/v1/namespaces/classgrid/pods";
    match (method.as_str(), path.as_str()) {
        ("GET", "/api/v1/nodes") => respond(s, 200, &fixture("nodes.json")).await,
        ("POST", p) if p == pods => {
            respond(s, 201, &fixture("pod-created.json")).await;
            for line in fixture("watch-start.jsonl").lines() {
                let _ = events.send(line.to_string());
            }
        }
        ("GET", p) if p.starts_with(pods) && p.contains("watch=true") => {
            let rx = replay.events.lock().unwrap().take();
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            let Some(mut rx) = rx else {
                // Later watches stay open and quiet, like an idle API server.
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            };
            while let Some(line) = rx.recv().await {
                let chunk = format!("{line}\n");
                let _ = s
                    .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        ("GET", p) if p.starts_with(pods) && p.contains("labelSelector") => {
            respond(s, 200, &fixture("pods-empty.json")).await
        }
        ("DELETE", p) if p.starts_with(&format!("{pods}/classgrid-{ASSIGNMENT}")) => {
            respond(s, 200, &fixture("pod-created.json")).await;
            for line in fixture("watch-stop.jsonl").lines() {
                let _ = events.send(line.to_string());
            }
        }
        ("GET", p) if p.ends_with("/log?tailLines=50") => {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 22\r\nconnection: close\r\n\r\nnotebook server ended\n")
                .await;
        }
        _ => {
            respond(
                s,
                404,
                r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"not found","reason":"NotFound","code":404}"#,
            )
            .await
        }
    }
}

async fn api_server() -> (String, Arc<Replay>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    let replay = Arc::new(Replay::default());
    *replay.events.lock().unwrap() = Some(rx);
    let r = replay.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let (r, tx) = (r.clone(), tx.clone());
            tokio::spawn(async move { serve(&mut s, r, tx).await });
        }
    });
    (url, replay)
}

fn seat_spec() -> StartSpec {
    StartSpec {
        assign: pb::Assign {
            assignment_id: ASSIGNMENT.into(),
            generation: 1,
            kind: "seat".into(),
            workload: Some(pb::Workload {
                image: "registry.example.edu/classgrid/notebook:2026.11".into(),
                command: "jupyter".into(),
                args: vec!["lab".into(), "--port=$(PORT)".into()],
                ..Default::default()
            }),
            cpu_millis: 500,
            memory_mib: 2048,
            ends_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64
                + 2_400_000,
            grace_seconds: 3,
            runtime: "kubernetes".into(),
            ..Default::default()
        },
        work_dir: std::env::temp_dir(),
        env: vec![("PORT".into(), "8888".into())],
        port: 8888,
        slices: vec![GrantedSlice {
            slot: 1,
            device: None,
            memory_mib: 3840,
            compute_percent: 25,
        }],
    }
}

async fn probe_until(rt: &KubeRuntime, h: &Handle, want: impl Fn(&Probe) -> bool) -> Probe {
    let mut last = Probe::Pending;
    for _ in 0..100 {
        last = rt.probe(h).await;
        if want(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("probe never reached the wanted state; last {last:?}");
}

#[tokio::test]
async fn cluster_capacity_counts_ready_nodes_and_hami_gpus() {
    let (url, _replay) = api_server().await;
    let rt = KubeRuntime::new(&url, "classgrid");
    let (cap, warnings) = rt.cluster_capacity().await.unwrap();
    // 7910m + 4 CPUs; the unschedulable, not-ready node is left out.
    assert_eq!(cap.cpu_millis, 11_910);
    assert_eq!(cap.memory_mib, 30596240 / 1024 + 16 * 1024);
    assert_eq!(cap.devices.len(), 2, "two T4s from HAMi's register");
    let d = &cap.devices[1];
    assert_eq!(d.vendor, "nvidia");
    assert_eq!(d.model, "NVIDIA-Tesla T4");
    assert_eq!(d.uuid, "GPU-1c2d3e4f-6a7b-4c8d-9e0f-a1b2c3d4e5f6");
    assert_eq!(d.memory_mib, 15360);
    assert_eq!(d.max_slices, 10, "HAMi's split count");
    assert_eq!(d.isolation, pb::Isolation::Soft as i32);
    assert!(
        warnings.iter().any(|w| w.contains("old-node-3")),
        "the skipped node is named: {warnings:?}"
    );
}

#[tokio::test]
async fn seat_runs_as_a_pod_with_hami_fractions_and_is_deleted_on_stop() {
    let (url, replay) = api_server().await;
    let rt = KubeRuntime::new(&url, "classgrid");
    rt.cluster_capacity().await.unwrap();
    let h = rt.start(seat_spec()).await.expect("pod created");
    assert_eq!(
        h,
        Handle::Kubernetes {
            namespace: "classgrid".into(),
            pod_name: format!("classgrid-{ASSIGNMENT}"),
        }
    );

    let posted: Value = {
        let reqs = replay.requests.lock().unwrap();
        let (_, _, body) = reqs.iter().find(|(m, _, _)| m == "POST").unwrap();
        serde_json::from_str(body).unwrap()
    };
    let c = &posted["spec"]["containers"][0];
    for kind in ["requests", "limits"] {
        let r = &c["resources"][kind];
        assert_eq!(r["cpu"], "500m");
        assert_eq!(r["memory"], "2048Mi");
        assert_eq!(r["nvidia.com/gpu"], "1");
        assert_eq!(r["nvidia.com/gpumem"], "3840");
        assert_eq!(r["nvidia.com/gpucores"], "25");
    }
    assert_eq!(c["args"][1], "--port=8888", "$(PORT) is expanded");
    assert_eq!(c["ports"][0]["containerPort"], 8888);
    assert_eq!(posted["spec"]["restartPolicy"], "Never");
    assert_eq!(
        posted["spec"]["nodeSelector"]["kubernetes.io/hostname"], "gpu-node-1",
        "pinned to the node of the granted slot"
    );
    assert_eq!(
        posted["metadata"]["annotations"]["nvidia.com/use-gpuuuid"],
        "GPU-1c2d3e4f-6a7b-4c8d-9e0f-a1b2c3d4e5f6"
    );
    assert_eq!(
        posted["metadata"]["labels"]["classgrid.io/assignment-id"],
        ASSIGNMENT
    );
    let deadline = posted["spec"]["activeDeadlineSeconds"].as_i64().unwrap();
    assert!((2400..=2404).contains(&deadline), "{deadline}");

    // The watch moves the pod from Pending to Running and Ready.
    let p = probe_until(&rt, &h, |p| matches!(p, Probe::Running { .. })).await;
    assert_eq!(
        p,
        Probe::Running {
            host: Some("10.244.1.17".into()),
            ready: true
        }
    );

    rt.stop(&h, Duration::from_secs(3))
        .await
        .expect("pod deleted");
    let deleted = replay
        .requests
        .lock()
        .unwrap()
        .iter()
        .any(|(m, p, _)| m == "DELETE" && p.ends_with("?gracePeriodSeconds=3"));
    assert!(deleted, "deleted with the seat's grace period");
    let p = probe_until(&rt, &h, |p| matches!(p, Probe::Exited(_) | Probe::Gone)).await;
    assert!(matches!(p, Probe::Exited(Some(143)) | Probe::Gone), "{p:?}");
    assert_eq!(
        rt.output_tail(&h, std::path::Path::new("/")).await,
        "notebook server ended\n"
    );
}

#[tokio::test]
async fn unreachable_api_server_is_a_warning_not_a_crash() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rt = KubeRuntime::new(&format!("http://127.0.0.1:{port}"), "classgrid");
    let (cap, warnings) = rt.cluster_capacity().await.unwrap();
    assert!(cap.devices.is_empty());
    assert!(
        warnings.iter().any(|w| w.contains("kubernetes API")),
        "{warnings:?}"
    );
    let h = Handle::Kubernetes {
        namespace: "classgrid".into(),
        pod_name: "classgrid-x".into(),
    };
    assert!(matches!(rt.probe(&h).await, Probe::Unknown(_)));
}
