//! Pre-staging: a 200 MB dataset on a local HTTP origin (with Range) is
//! ordered by the broker ahead of the lesson, fetched by the site's edge —
//! whose first download the origin cuts off halfway, so the edge must resume
//! with a Range request and verify the whole file — and is cached before the
//! bell. The seat gets it as a local file in CLASSGRID_DATASETS.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use classgrid_e2e::*;
use classgrid_proto::v1 as pb;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader},
    net::TcpListener,
};

const SIZE: u64 = 200_000_000;

/// Deterministic pseudo-random bytes, so the digest means something.
fn write_dataset(path: &Path) -> String {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = SIZE;
    while left > 0 {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
    drop(f);
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A minimal HTTP/1.1 origin for one file with single-range support. The
/// first full GET is cut off after half the body, as a dropped link would.
async fn origin(file: PathBuf, ranges: Arc<Mutex<Vec<String>>>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let (file, ranges, cut) = (file.clone(), ranges.clone(), cut.clone());
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                let mut range = None;
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                        range = v.trim().trim_end_matches('-').parse::<u64>().ok();
                    }
                }
                ranges
                    .lock()
                    .unwrap()
                    .push(range.map(|s| format!("bytes={s}-")).unwrap_or_default());
                let mut f = tokio::fs::File::open(&file).await.unwrap();
                let start = range.unwrap_or(0);
                let head = if range.is_some() {
                    format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{SIZE}\r\nConnection: close\r\n\r\n",
                        SIZE - start,
                        SIZE - 1
                    )
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n"
                    )
                };
                w.write_all(head.as_bytes()).await.unwrap();
                f.seek(std::io::SeekFrom::Start(start)).await.unwrap();
                let limit =
                    if range.is_none() && !cut.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        SIZE / 2
                    } else {
                        SIZE - start
                    };
                let mut body = f.take(limit);
                let _ = tokio::io::copy(&mut body, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    format!("http://{addr}/data.bin")
}

/// HEAD over a plain socket: the status and Content-Length.
async fn head(url: &str) -> (u16, u64) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(format!("HEAD /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut buf)).await;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let len = buf
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    (code, len)
}

#[tokio::test(flavor = "multi_thread")]
async fn dataset_is_staged_before_the_bell_resuming_an_interrupted_download() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("edge-stage");
    let data = dir.join("origin-data.bin");
    let sha = write_dataset(&data);
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let url = origin(data, ranges.clone()).await;

    let broker = Broker::start(&db, &dir, &["--staging-lead-s", "120"]).await;
    broker.create_site("school-s").await;
    let _agent = Agent::start(&broker, "school-s", "n1", &dir, &[]);
    assert!(
        wait_for(Duration::from_secs(20), || async {
            broker.node_state("school-s", "n1").await.as_deref() == Some("connected")
        })
        .await
    );
    let edge_port = free_port();
    let edge_url = format!("http://127.0.0.1:{edge_port}");
    let edge = start_edge(&broker, "school-s", edge_port, 500, &dir, &[]);

    let start_in = 45.0;
    let mut req = web_lesson("school-s", 1, start_in, 120);
    req.workload = Some(pb::Workload {
        command: "sh".into(),
        args: vec!["-c".into(), r#"exec python3 -m http.server --bind 127.0.0.1 --directory "$CLASSGRID_DATASETS" "$PORT""#.into()],
        ..Default::default()
    });
    req.datasets = vec![pb::Dataset {
        name: "data.bin".into(),
        url: url.clone(),
        sha256: sha.clone(),
        size_bytes: SIZE as i64,
    }];
    // Booking needs the edge's link rate for the staging filter: retry
    // until the edge has reported once.
    let booked = broker
        .book_once_admitted(&req, Duration::from_secs(20))
        .await;
    let lesson = booked.unwrap_or_else(|| {
        panic!(
            "booking with a dataset was never admitted; edge log:\n{}",
            edge.log_text()
        )
    });
    let booked_at = std::time::Instant::now();

    // Staged and the lesson ready before its start.
    let ready = wait_for(Duration::from_secs(start_in as u64), || async {
        broker.lesson(&lesson.id).await.state == "ready"
    })
    .await;
    assert!(
        ready,
        "lesson not ready before its start: {:#?}\nedge log:\n{}",
        broker.lesson(&lesson.id).await,
        edge.log_text()
    );
    assert!(booked_at.elapsed() < Duration::from_secs_f64(start_in - 1.0));

    let staging = http_get(&format!("{edge_url}/staging")).await.unwrap().1;
    let v: serde_json::Value = serde_json::from_str(&staging).unwrap();
    let item = &v["items"][0];
    assert_eq!(item["sha256"], sha.as_str());
    assert_eq!(item["state"], "cached", "{staging}");
    assert!(
        item["message"]
            .as_str()
            .unwrap()
            .contains("resumed at byte"),
        "{staging}"
    );
    let seen = ranges.lock().unwrap().clone();
    assert_eq!(
        seen.first().map(String::as_str),
        Some(""),
        "first request is a full GET: {seen:?}"
    );
    let resumed: Vec<u64> = seen
        .iter()
        .filter_map(|r| r.strip_prefix("bytes=")?.trim_end_matches('-').parse().ok())
        .collect();
    assert!(
        resumed.iter().any(|&b| b > 0 && b <= SIZE / 2),
        "a Range request resumed the cut download: {seen:?}"
    );
    let cached = dir.join("edge").join("cache").join("blobs").join(&sha);
    let out = std::process::Command::new("sha256sum")
        .arg(&cached)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with(&sha),
        "cached bytes verified against the digest"
    );

    // At the bell the seat starts with the dataset as a local file.
    let running = wait_for(Duration::from_secs(start_in as u64 + 30), || async {
        broker
            .lesson(&lesson.id)
            .await
            .seats
            .iter()
            .all(|s| s.state == "running")
    })
    .await;
    let l = broker.lesson(&lesson.id).await;
    assert!(running, "seat should run: {l:#?}");
    let (code, len) = head(&format!("{}/data.bin", l.seats[0].endpoint)).await;
    assert_eq!(
        (code, len),
        (200, SIZE),
        "the seat sees the dataset locally"
    );

    // The edge keeps the site's seats for autonomy, and school IT can see
    // them from its local store.
    let edge_state = dir.join("edge");
    let kept = wait_for(Duration::from_secs(30), || {
        let edge_state = edge_state.clone();
        let lesson_id = lesson.id.clone();
        async move {
            let out = std::process::Command::new(bin("classgrid-edge"))
                .args(["seats", "--output", "json", "--state-dir"])
                .arg(&edge_state)
                .output()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            v["seats"]
                .as_array()
                .is_some_and(|s| s.len() == 1 && s[0]["lesson_id"] == lesson_id.as_str())
        }
    })
    .await;
    assert!(kept, "classgrid-edge seats lists the lesson's seat");
    // The origin's file, the edge's cache and the agent's copy are 200 MB
    // each: a passing run leaves nothing behind (a failing one keeps them
    // for reading). The processes go first so nothing writes meanwhile.
    drop(edge);
    drop(_agent);
    let _ = std::fs::remove_dir_all(&dir);
}
