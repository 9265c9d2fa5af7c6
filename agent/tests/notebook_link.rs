//! Three notebook seats behind the edge's seat links, over TLS: each link
//! runs a kernel through the proxy's WebSocket (`sum(range(10))` is 45), the
//! dataset is readable under data/ and not writable, and a made-up token,
//! another seat's token and a link past its end are refused.
//!
//! The seats are the agent's notebook runtime and the links the edge's own
//! proxy and store; the broker's part (making the tokens, sending the links
//! to the edge) is filled in here as the broker would send it. The edge's
//! certificate comes from a CA made with openssl, as an admin of the region
//! CA would issue it. Needs root and the PyPI index or a built environment.

mod common;

use std::{path::Path, process::Command, time::Duration};

use classgrid_agent::runtime::{
    Handle, Probe, Runtime,
    notebook::{NotebookDirs, NotebookRuntime, unavailable},
    process::{ProcessRuntime, free_port},
};
use classgrid_edge::seatlink::{self, proxy, token_sha256};
use classgrid_proto::v1 as pb;

/// A kernel through the link: runs `code`, prints its result's text/plain.
const KERNEL: &str = include_str!("../../tests/clients/seat_kernel.py");

/// One GET over https (or http with a token header): status and body.
const GET: &str = include_str!("../../tests/clients/seat_get.py");

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    let ossl = |args: &[&str]| sh(Command::new("openssl").args(args).current_dir(dir));
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=classgrid test region CA",
        "-days",
        "1",
    ]);
    ossl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "edge.key",
        "-out",
        "edge.csr",
        "-subj",
        "/CN=edge",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    ossl(&[
        "x509",
        "-req",
        "-in",
        "edge.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "edge.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
}

/// Kills a seat's process group when the test ends, also by a failed
/// assertion, so that a failing run leaves no server behind.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the seat's own process group; no memory effects.
        unsafe {
            libc::kill(-self.0, libc::SIGKILL);
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

struct Seat {
    id: String,
    token: String,
    port: u16,
    handle: Handle,
    work: std::path::PathBuf,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notebook_links_run_a_kernel_through_the_edge_and_refuse_what_they_must() {
    let root = std::path::PathBuf::from(format!(
        "/var/tmp/classgrid-nb-link-{}",
        rand::random::<u32>()
    ));
    let dirs = NotebookDirs {
        envs: std::env::var_os("CLASSGRID_NOTEBOOK_ENVS")
            .map(Into::into)
            .unwrap_or_else(|| "/var/lib/classgrid/notebook-envs".into()),
        seats: root.join("seats"),
    };
    if let Some(why) = unavailable(&dirs) {
        panic!("{why}");
    }
    std::fs::create_dir_all(&root).unwrap();
    certificates(&root);
    let staged = root.join("staged");
    std::fs::create_dir_all(&staged).unwrap();
    std::fs::write(root.join("blob"), b"a,b\n1,2\n").unwrap();
    std::os::unix::fs::symlink(root.join("blob"), staged.join("small.csv")).unwrap();

    let rt = NotebookRuntime::new(ProcessRuntime::new(None), dirs.clone());
    let mut seats = Vec::new();
    let mut kills = Vec::new();
    for n in 1..=3 {
        let (id, token, port) = (format!("seat-{n}"), common::token(), free_port().unwrap());
        let work = root.join("work").join(&id);
        std::fs::create_dir_all(&work).unwrap();
        let spec = common::notebook_spec(&id, &work, &staged, &token, port);
        let handle = rt.start(spec).await.expect("the seat starts");
        let Handle::Notebook { pid, .. } = handle else {
            panic!("not a notebook handle: {handle:?}");
        };
        kills.push(KillOnDrop(pid));
        seats.push(Seat {
            id,
            token,
            port,
            handle,
            work,
        });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    for s in &seats {
        loop {
            match rt.probe(&s.handle).await {
                Probe::Running { ready: true, .. } => break,
                Probe::Running { ready: false, .. } => {}
                other => panic!(
                    "{} ended before it was ready: {other:?}\n{}",
                    s.id,
                    rt.output_tail(&s.handle, &s.work).await
                ),
            }
            assert!(std::time::Instant::now() < deadline, "{} not ready", s.id);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The edge: its links as the broker sends them, served over TLS.
    let db = classgrid_edge::state::open(&root.join("edge/edge.db"))
        .await
        .unwrap();
    let links = |until: i64| -> Vec<pb::SeatLink> {
        seats
            .iter()
            .map(|s| pb::SeatLink {
                link_sha256: token_sha256(&s.token),
                assignment_id: s.id.clone(),
                lesson_id: "lesson-1".into(),
                endpoint: format!("http://127.0.0.1:{}", s.port),
                open_until_unix_ms: until,
                paused: false,
                serves_link_path: true,
                stopped: false,
            })
            .collect()
    };
    seatlink::replace(&db, &links(now_ms() + 600_000), now_ms())
        .await
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let edge_port = listener.local_addr().unwrap().port();
    let tls = proxy::tls_config(&root.join("edge.pem"), &root.join("edge.key")).unwrap();
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(proxy::serve(db.clone(), listener, tls, stop_rx));

    let python = dirs.envs.join("jupyterlab-4.4.10/bin/python");
    let ca = root.join("ca.pem").display().to_string();
    let link = |t: &str| format!("https://127.0.0.1:{edge_port}/seat/{t}/");
    let py = |script: &str, args: &[&str]| {
        let python = python.clone();
        let (script, args) = (
            script.to_string(),
            args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        );
        async move {
            tokio::task::spawn_blocking(move || {
                sh(Command::new(python).arg("-c").arg(script).args(args))
            })
            .await
            .unwrap()
        }
    };

    for s in &seats {
        let out = py(KERNEL, &[&link(&s.token), &ca, "sum(range(10))"]).await;
        assert_eq!(out, "45", "{}", s.id);
    }
    let data = "r = open('data/small.csv').read()\ntry:\n    open('data/small.csv', 'a').write('x'); w = 'written'\nexcept PermissionError:\n    w = 'refused'\n(r.splitlines()[0], w)";
    let out = py(KERNEL, &[&link(&seats[0].token), &ca, data]).await;
    assert_eq!(out, "('a,b', 'refused')");

    // A made-up token: the edge knows no such seat.
    let out = py(
        GET,
        &[&format!("{}api/status", link(&common::token())), &ca, ""],
    )
    .await;
    assert!(
        out.starts_with("404 ") && out.contains("not open here"),
        "{out}"
    );
    // Another seat's token on a seat's own port: its server refuses it.
    let (a, b) = (&seats[0], &seats[1]);
    let direct = format!("http://127.0.0.1:{}/seat/{}/api/contents", b.port, b.token);
    let out = py(GET, &[&direct, "", &format!("token {}", a.token)]).await;
    assert!(out.starts_with("403 "), "{out}");
    // Past the end (plus grace) the link says so.
    seatlink::replace(&db, &links(now_ms() - 1), now_ms())
        .await
        .unwrap();
    let out = py(GET, &[&format!("{}lab", link(&a.token)), &ca, ""]).await;
    assert!(
        out.starts_with("410 ") && out.contains("This lesson has ended"),
        "{out}"
    );

    for s in &seats {
        rt.stop(&s.handle, Duration::from_secs(2)).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for s in &seats {
        while !matches!(rt.probe(&s.handle).await, Probe::Exited(_) | Probe::Gone) {
            assert!(
                std::time::Instant::now() < deadline,
                "{} still running after stop",
                s.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        rt.forget(&s.id).await;
    }
    let _ = std::fs::remove_dir_all(&root);
}
