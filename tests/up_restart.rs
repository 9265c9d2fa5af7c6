//! `classgrid up` as a person runs it: Ctrl-C stops it within 5 s even with
//! an outside agent connected, and the local agent's seats keep running
//! across a restart on the same endpoints, so students' links still work
//! (decision 086). `classgrid lessons logs` reads a failed seat's output.

use std::{path::Path, process::Command, time::Duration};

use classgrid_e2e::*;

struct Up {
    proc: Proc,
    http: u16,
}

fn start_up(db: &TestDb, home: &Path, http: u16, grpc: u16, n: usize) -> Up {
    let args: Vec<String> = [
        "up",
        "--insecure-dev",
        "--database-url",
        &db.url,
        "--http-addr",
        &format!("127.0.0.1:{http}"),
        "--grpc-addr",
        &format!("127.0.0.1:{grpc}"),
        // Not the default 7480, which another installation may hold.
        "--edge-content-addr",
        &format!("127.0.0.1:{}", free_port()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let home_s = home.display().to_string();
    Up {
        proc: Proc::spawn(
            &bin("classgrid"),
            &args,
            home.join(format!("up-{n}.log")),
            &[("CLASSGRID_HOME", home_s.as_str())],
        ),
        http,
    }
}

/// `classgrid ARGS` against the context file that `up` wrote.
fn cli(home: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin("classgrid"))
        .args(args)
        .env("CLASSGRID_HOME", home)
        .env_remove("CLASSGRID_GRPC_URL")
        .env_remove("CLASSGRID_TOKEN")
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

/// Books a lesson at demo-school starting now; returns its id.
fn book(home: &Path, seats: &str, duration: &str, command: &[&str]) -> String {
    let mut args = vec![
        "lessons",
        "book",
        "--school",
        "demo-school",
        "--start",
        "now",
        "--duration",
        duration,
        "--seats",
        seats,
        "--cpu-millis",
        "100",
        "--memory-mib",
        "64",
        "-o",
        "json",
        "--",
    ];
    args.extend_from_slice(command);
    let (ok, out) = cli(home, &args);
    assert!(ok, "book: {out}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {out}"))
        .to_string()
}

fn lesson_json(home: &Path, id: &str) -> serde_json::Value {
    let (ok, out) = cli(home, &["lessons", "get", id, "-o", "json"]);
    assert!(ok, "lessons get: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// (number, state, endpoint) of each seat.
fn seats(home: &Path, id: &str) -> Vec<(i64, String, String)> {
    lesson_json(home, id)["seats"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s["number"].as_i64().unwrap_or(-1),
                s["state"].as_str().unwrap_or("").to_string(),
                s["endpoint"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

async fn wait_up(up: &Up) -> bool {
    wait_for(Duration::from_secs(60), || async {
        http_get(&format!("http://127.0.0.1:{}/healthz", up.http))
            .await
            .is_ok_and(|(c, _)| c == 200)
    })
    .await
}

fn interrupt(p: &Proc) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(p.child.id() as i32, libc::SIGINT) };
}

#[tokio::test(flavor = "multi_thread")]
async fn up_stops_within_5_s_and_its_seats_keep_their_links_across_a_restart() {
    let db = TestDb::new().await.unwrap();
    let home = tempdir("up-restart");
    let (http, grpc) = (free_port(), free_port());
    let mut up = start_up(&db, &home, http, grpc, 1);
    assert!(
        wait_up(&up).await,
        "up should serve:\n{}",
        up.proc.log_text()
    );
    assert!(
        wait_for(Duration::from_secs(30), || async {
            let (ok, out) = cli(&home, &["nodes", "list"]);
            ok && out.contains("local") && out.contains("connected")
        })
        .await,
        "the local agent should connect:\n{}",
        up.proc.log_text()
    );

    let id = book(
        &home,
        "2",
        "10m",
        &[
            "python3",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "$(PORT)",
        ],
    );
    assert!(
        wait_for(Duration::from_secs(60), || async {
            let s = seats(&home, &id);
            !s.is_empty()
                && s.iter()
                    .all(|(_, st, ep)| st == "running" && !ep.is_empty())
        })
        .await,
        "seats should run: {:?}",
        seats(&home, &id)
    );
    let before = seats(&home, &id);

    // An outside agent, connected when Ctrl-C comes: it held `up` for 70 s.
    let _outside = Agent::start_at(
        &format!("http://127.0.0.1:{grpc}"),
        "demo-school",
        "outside",
        &home,
        &[],
    );
    assert!(
        wait_for(Duration::from_secs(30), || async {
            let (_, out) = cli(&home, &["nodes", "list"]);
            out.lines()
                .any(|l| l.contains("outside") && l.contains("connected"))
        })
        .await,
        "the outside agent should connect"
    );

    interrupt(&up.proc);
    let stopped = wait_for(Duration::from_secs(5), || {
        let done = up.proc.child.try_wait().ok().flatten().is_some();
        async move { done }
    })
    .await;
    assert!(
        stopped,
        "Ctrl-C should stop up within 5 s:\n{}",
        up.proc.log_text()
    );

    // While up is down, the students' links still answer.
    for (n, _, ep) in &before {
        let (code, _) = http_get(ep).await.unwrap_or((0, String::new()));
        assert_eq!(code, 200, "seat {n} at {ep} should answer while up is down");
    }

    up = start_up(&db, &home, http, grpc, 2);
    assert!(wait_up(&up).await, "up again:\n{}", up.proc.log_text());
    assert!(
        wait_for(Duration::from_secs(60), || async {
            let s = seats(&home, &id);
            s.iter().all(|(_, st, _)| st == "running") && s == before
        })
        .await,
        "the same seats should run on the same endpoints: before {before:?}, now {:?}\n{}",
        seats(&home, &id),
        up.proc.log_text()
    );
    for (n, _, ep) in &before {
        let (code, _) = http_get(ep).await.unwrap_or((0, String::new()));
        assert_eq!(
            code, 200,
            "seat {n} at {ep} should answer after the restart"
        );
    }

    // A seat whose command does not exist fails, and its output is read
    // through the broker.
    let failing = book(&home, "1", "5m", &["no-such-command-cg23"]);
    let (ok, logs) = cli(&home, &["lessons", "logs", &failing, "--follow"]);
    assert!(ok, "lessons logs --follow: {logs}");
    assert!(
        logs.contains("==> seat") && logs.contains("failed"),
        "the failed seat and its output: {logs}"
    );
    assert!(
        logs.contains("no-such-command-cg23"),
        "names the command: {logs}"
    );
    let (ok, out) = cli(&home, &["lessons", "logs", &failing, "--seat", "9"]);
    assert!(
        !ok && out.contains("--seat"),
        "a seat that does not exist: {out}"
    );

    // Clean up: the lesson's seats stop when it is cancelled.
    let (ok, out) = cli(&home, &["lessons", "cancel", &id]);
    assert!(ok, "cancel: {out}");
    assert!(
        wait_for(Duration::from_secs(30), || async {
            seats(&home, &id).iter().all(|(_, st, _)| st != "running")
        })
        .await,
        "a cancelled lesson's seats stop: {:?}",
        seats(&home, &id)
    );
    interrupt(&up.proc);
}
