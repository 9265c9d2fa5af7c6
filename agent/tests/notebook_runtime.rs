//! The notebook runtime on this host: JupyterLab from the node's cached
//! environment, run as the seat's own user, ready only once the Jupyter API
//! answers with the seat's token, with the datasets read-only under data/.
//! Needs root (seat users) and the PyPI index or a built environment
//! (CLASSGRID_NOTEBOOK_ENVS, default /var/lib/classgrid/notebook-envs).

mod common;

use std::{os::unix::fs::MetadataExt, time::Duration};

use classgrid_agent::runtime::{
    Handle, Probe, Runtime,
    notebook::{NotebookDirs, NotebookRuntime, SEAT_UID_BASE, unavailable},
    process::{ProcessRuntime, free_port},
};

#[tokio::test]
async fn notebook_seat_runs_as_its_own_user_and_is_ready_when_jupyter_answers() {
    let root = std::path::PathBuf::from(format!(
        "/var/tmp/classgrid-nb-test-{}",
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
    let staged = root.join("staged");
    std::fs::create_dir_all(&staged).unwrap();
    std::fs::write(root.join("blob"), b"a,b\n1,2\n").unwrap();
    std::os::unix::fs::symlink(root.join("blob"), staged.join("small.csv")).unwrap();
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();

    // The agent's own environment, which a seat must not inherit.
    // SAFETY: set before the runtime starts any thread that reads it.
    unsafe { std::env::set_var("CLASSGRID_JOIN_TOKEN", "agent-secret") };
    let rt = NotebookRuntime::new(ProcessRuntime::new(None), dirs.clone());
    let port = free_port().unwrap();
    let token = common::token();
    let spec = common::notebook_spec("nb-seat-1", &work, &staged, &token, port);
    let handle = rt.start(spec).await.expect("the seat starts");
    let Handle::Notebook { pid, .. } = handle.clone() else {
        panic!("not a notebook handle: {handle:?}");
    };
    let _kill = KillOnDrop(pid);

    // Ready only when the API answers with the token; wait for that.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        match rt.probe(&handle).await {
            Probe::Running { ready: true, .. } => break,
            Probe::Running { ready: false, .. } => {}
            other => panic!(
                "the seat ended before it was ready: {other:?}\n{}",
                rt.output_tail(&handle, &work).await
            ),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not ready in 90 s:\n{}",
            rt.output_tail(&handle, &work).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Its own user, its own folder, none of the agent's variables, and no
    // token on a command line that every user can list.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let want = SEAT_UID_BASE + port as u32;
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == want.to_string()),
        "{uid_line}"
    );
    let seat = dirs.seats.join("nb-seat-1");
    let meta = std::fs::metadata(&seat).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (want, 0o700));
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains("agent-secret"));
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(&token));
    // data/ is root's and read-only, the dataset readable.
    let data = std::fs::metadata(seat.join("data")).unwrap();
    assert_eq!((data.uid(), data.mode() & 0o777), (0, 0o755));
    let file = std::fs::metadata(seat.join("data/small.csv")).unwrap();
    assert_eq!((file.uid(), file.mode() & 0o777), (0, 0o444));

    // Without the token the node's port refuses.
    let body = reqwest_less_get(port, &format!("/seat/{token}/api/contents")).await;
    assert!(body.starts_with("HTTP/1.1 403"), "{body}");

    rt.stop(&handle, Duration::from_secs(2)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !matches!(rt.probe(&handle).await, Probe::Exited(_) | Probe::Gone) {
        assert!(
            std::time::Instant::now() < deadline,
            "still running after stop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rt.forget("nb-seat-1").await;
    assert!(
        !seat.exists(),
        "the seat's folder is removed when it ends for good"
    );
    let _ = std::fs::remove_dir_all(&root);
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

/// One plain HTTP/1.1 GET on the seat's port; the status line and headers.
async fn reqwest_less_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}
