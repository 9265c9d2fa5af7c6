//! The notebook runtime: JupyterLab for one student per seat.
//!
//! - **One environment per node and version.** A Python venv with
//!   `jupyterlab==VERSION` (which brings jupyter-server and ipykernel) is
//!   built once under the environments folder and reused by every seat and
//!   every agent of the node, like cached content: nothing is downloaded at
//!   the bell. It is built when the agent starts, so the first lesson finds
//!   it ready; a seat that comes first waits for the one build in flight.
//! - **One unprivileged user per seat.** The seat runs as uid (and gid)
//!   `SEAT_UID_BASE + port`. The supervisor gives every seat of a node its
//!   own port and keeps it across restarts, so the number is unique on the
//!   node while the seat lives and stable when it restarts in place, with no
//!   user database to keep. Its folder is its own (0700), so it cannot read
//!   another seat's work; the agent's state stays the agent's (root-only).
//! - **Datasets read-only under `data/`.** The seat's staged datasets are
//!   linked (or copied, across file systems) into a root-owned `data/`
//!   folder, read-only.
//! - **Ready means the Jupyter API answers** `/api/status` with the seat's
//!   token, not only that the port is open.
//! - **The seat's link is its base URL.** The broker sends the seat link's
//!   token in the seat's variables; the server serves under `/seat/TOKEN/` and
//!   requires TOKEN, so the school edge can proxy `/seat/TOKEN/…` to it
//!   unchanged and a student who reaches the node directly still needs it.
//!   The token is in a config file only the seat's user reads, never in the
//!   command line, which every user of the node can list.

use std::{
    collections::HashMap,
    os::unix::fs::{PermissionsExt, chown},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::future::BoxFuture;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tracing::{info, warn};

use super::{
    Handle, Probe, Runtime, StartSpec,
    process::{ProcessRuntime, SpawnOptions},
};

/// The JupyterLab release seats get unless the node says otherwise
/// (`CLASSGRID_NOTEBOOK_VERSION`). Pinned, so that every node of a class
/// serves the same lab.
pub const JUPYTERLAB_VERSION: &str = "4.4.10";

/// Seat users are `SEAT_UID_BASE + port`: above the ranges that
/// distributions give people (1000–60000) and rootless containers
/// (100000–165535 and the like).
pub const SEAT_UID_BASE: u32 = 3_000_000;

/// Where the notebook runtime keeps its files. Both folders, and every
/// folder above them, must be traversable by other users: seats run as
/// their own users and read the environment and their own folder.
#[derive(Debug, Clone)]
pub struct NotebookDirs {
    /// Built environments, one per version, shared by the node's agents.
    pub envs: PathBuf,
    /// One folder per seat: its home, work folder and `data/`.
    pub seats: PathBuf,
}

impl NotebookDirs {
    /// `CLASSGRID_NOTEBOOK_ENVS` and `CLASSGRID_NOTEBOOK_SEATS`, or folders
    /// under /var/lib/classgrid: the agent's state folder is usually in
    /// root's home, which other users cannot enter.
    pub fn from_env() -> Self {
        let var = |k: &str, d: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(d))
        };
        Self {
            envs: var(
                "CLASSGRID_NOTEBOOK_ENVS",
                "/var/lib/classgrid/notebook-envs",
            ),
            seats: var(
                "CLASSGRID_NOTEBOOK_SEATS",
                "/var/lib/classgrid/notebook-seats",
            ),
        }
    }
}

pub struct NotebookRuntime {
    process: ProcessRuntime,
    dirs: NotebookDirs,
    version: String,
    python: PathBuf,
    /// Built environments by version; the async lock makes concurrent
    /// starts of a class wait for one build instead of racing pip.
    envs: tokio::sync::Mutex<HashMap<String, PathBuf>>,
    http: Client<HttpConnector, Empty<Bytes>>,
}

/// Why the notebook runtime cannot be offered on this host, or None.
pub fn unavailable(dirs: &NotebookDirs) -> Option<String> {
    // SAFETY: geteuid has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Some(
            "notebook runtime not offered: each seat runs as its own user, which needs the agent to run as root".into(),
        );
    }
    for dir in [&dirs.envs, &dirs.seats] {
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Some(format!(
                "notebook runtime not offered: {}: {e}",
                dir.display()
            ));
        }
        if let Some(blocked) = untraversable(dir) {
            return Some(format!(
                "notebook runtime not offered: seat users cannot enter {} (it is not executable for others); set CLASSGRID_NOTEBOOK_ENVS and CLASSGRID_NOTEBOOK_SEATS to folders under one they can, such as /var/lib/classgrid",
                blocked.display()
            ));
        }
    }
    None
}

/// The first folder from `/` down to `dir` that other users cannot enter.
fn untraversable(dir: &Path) -> Option<PathBuf> {
    let dir = std::fs::canonicalize(dir).ok()?;
    dir.ancestors()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .find(|d| {
            std::fs::metadata(d)
                .map(|m| m.permissions().mode() & 0o001 == 0)
                .unwrap_or(true)
        })
        .map(Path::to_path_buf)
}

/// The python that builds environments: `CLASSGRID_NOTEBOOK_PYTHON`, else
/// the system's. Not a per-user one (pyenv, conda under a home folder): a
/// venv links to its base interpreter, which seat users must be able to run.
fn base_python() -> PathBuf {
    std::env::var_os("CLASSGRID_NOTEBOOK_PYTHON")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"))
}

impl NotebookRuntime {
    pub fn new(process: ProcessRuntime, dirs: NotebookDirs) -> Arc<Self> {
        let version = std::env::var("CLASSGRID_NOTEBOOK_VERSION")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| JUPYTERLAB_VERSION.to_string());
        Arc::new(Self {
            process,
            dirs,
            version,
            python: base_python(),
            envs: tokio::sync::Mutex::new(HashMap::new()),
            http: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Builds the default environment in the background, so that it is
    /// ready before the first lesson's staging lead.
    pub fn prepare_in_background(self: &Arc<Self>) {
        let rt = self.clone();
        tokio::spawn(async move {
            let v = rt.version.clone();
            if let Err(e) = rt.environment(&v).await {
                warn!(version = %v, error = %format!("{e:#}"), "notebook environment not built; seats will try again");
            }
        });
    }

    /// The venv for `version`, built once per node. A build that fails
    /// leaves nothing behind, so the next seat tries again.
    pub async fn environment(&self, version: &str) -> anyhow::Result<PathBuf> {
        let mut built = self.envs.lock().await;
        if let Some(p) = built.get(version) {
            return Ok(p.clone());
        }
        let venv = self.dirs.envs.join(format!("jupyterlab-{version}"));
        let marker = venv.join(".classgrid-ready");
        // Another agent of this node may be building it: one at a time.
        let lock =
            std::fs::File::create(self.dirs.envs.join(format!(".jupyterlab-{version}.lock")))?;
        let lock = tokio::task::spawn_blocking(move || {
            // SAFETY: flock on a file descriptor we own; no memory effects.
            let r = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
            (r, lock)
        })
        .await?;
        anyhow::ensure!(
            lock.0 == 0,
            "cannot lock the notebook environments folder: {}",
            std::io::Error::last_os_error()
        );
        if !marker.exists() {
            let started = std::time::Instant::now();
            info!(version, venv = %venv.display(), "building the notebook environment");
            // Left over from a build that was cut short.
            let _ = tokio::fs::remove_dir_all(&venv).await;
            run(
                tokio::process::Command::new(&self.python)
                    .args(["-m", "venv"])
                    .arg(&venv),
                "python3 -m venv",
            )
            .await?;
            // pip honours the node's own PIP_INDEX_URL / PIP_FIND_LINKS, so
            // a node without the internet installs from a school mirror.
            let installed = run(
                tokio::process::Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check"])
                    .arg(format!("jupyterlab=={version}")),
                "pip install jupyterlab",
            )
            .await;
            if let Err(e) = installed {
                let _ = tokio::fs::remove_dir_all(&venv).await;
                return Err(e);
            }
            open_for_all(&venv)?;
            // Written last: a venv without it is rebuilt.
            tokio::fs::write(&marker, version).await?;
            info!(
                version,
                seconds = started.elapsed().as_secs_f64(),
                "notebook environment built"
            );
        }
        drop(lock);
        built.insert(version.to_string(), venv.clone());
        Ok(venv)
    }

    fn seat_dir(&self, assignment_id: &str) -> PathBuf {
        self.dirs.seats.join(assignment_id)
    }

    /// A seat the teacher reset keeping the work (the broker names the old
    /// assignment in `CLASSGRID_SEAT_KEEP_WORK_FROM`): the old seat's folder
    /// becomes this one's, owned by this seat's user. Only a folder under
    /// the seats' folder, named by a UUID, is taken: the broker cannot
    /// point the agent anywhere else. A folder already gone (a second start
    /// of the same assignment) keeps nothing, which is right.
    fn keep_work(&self, spec: &StartSpec, dir: &Path, uid: u32) -> anyhow::Result<bool> {
        let Some((_, from)) = spec.env.iter().find(|(k, _)| k == KEEP_WORK_FROM_ENV) else {
            return Ok(false);
        };
        if from.parse::<uuid::Uuid>().is_err() || *from == spec.assign.assignment_id {
            return Ok(false);
        }
        let old = self.seat_dir(from);
        if dir.exists() || !old.is_dir() {
            return Ok(false);
        }
        std::fs::rename(&old, dir)?;
        // data/ holds hard links to the node's verified blobs: it stays
        // root's (and is laid out afresh below), never the student's.
        let data = dir.join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        chown_tree(dir, uid)?;
        Ok(true)
    }

    /// The seat's folder, owned by its user; `data/` root-owned with the
    /// datasets read-only; the server's config with its token and base URL.
    fn lay_out_seat(
        &self,
        spec: &StartSpec,
        uid: u32,
        token: &str,
        base_url: &str,
    ) -> anyhow::Result<PathBuf> {
        let dir = self.seat_dir(&spec.assign.assignment_id);
        let kept = self.keep_work(&spec, &dir, uid)?;
        std::fs::create_dir_all(&dir)?;
        chown(&dir, Some(uid), Some(uid))?;
        if kept {
            info!(assignment = %spec.assign.assignment_id, "seat reset with the student's work kept");
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let data = dir.join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        std::fs::create_dir(&data)?;
        chown(&data, Some(0), Some(0))?;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))?;
        if let Some((_, staged)) = spec.env.iter().find(|(k, _)| k == "CLASSGRID_DATASETS") {
            for entry in std::fs::read_dir(staged)? {
                let entry = entry?;
                let source = std::fs::canonicalize(entry.path())?;
                let target = data.join(entry.file_name());
                // A hard link shares the verified blob without a copy; across
                // file systems it must be a copy.
                if std::fs::hard_link(&source, &target).is_err() {
                    std::fs::copy(&source, &target)?;
                }
                chown(&target, Some(0), Some(0))?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o444))?;
            }
        }
        let conf = dir.join(".jupyter");
        std::fs::create_dir_all(&conf)?;
        let config = serde_json::json!({
            "ServerApp": {
                "base_url": base_url,
                "root_dir": dir,
                "allow_remote_access": true,
                "trust_xheaders": true,
                "open_browser": false,
                "port_retries": 0,
            },
            "IdentityProvider": { "token": token },
            // No calls out to the internet at the bell.
            "LabApp": { "news_url": null, "check_for_updates_class": "jupyterlab.NeverCheckForUpdate" },
        });
        let file = conf.join("jupyter_server_config.json");
        std::fs::write(&file, serde_json::to_vec_pretty(&config)?)?;
        for p in [&conf, &file] {
            chown(p, Some(uid), Some(uid))?;
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        Ok(dir)
    }

    async fn api_answers(&self, port: u16, base_url: &str, token: &str) -> bool {
        let Ok(req) = hyper::Request::get(format!("http://127.0.0.1:{port}{base_url}api/status"))
            .header("authorization", format!("token {token}"))
            .body(Empty::new())
        else {
            return false;
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), self.http.request(req)).await,
            Ok(Ok(r)) if r.status().is_success()
        )
    }
}

/// The variable in which the broker hands a seat its link's token.
pub const LINK_TOKEN_ENV: &str = "CLASSGRID_SEAT_LINK_TOKEN";

/// The seat link's token, from the seat's variables: the base URL and the
/// server's token. Letters, digits, `-` and `_` only, as the broker makes
/// them, so it is safe in a path and a JSON file. It travels as a variable
/// rather than an Assign field so that agents and brokers of either age
/// understand each other.
pub fn link_token(spec: &StartSpec) -> anyhow::Result<&str> {
    let t = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == LINK_TOKEN_ENV)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    if !is_link_token(t) {
        anyhow::bail!(
            "{LINK_TOKEN_ENV}: a notebook seat needs its seat link's token (at least 32 URL-safe characters) from the broker; it got {}",
            if t.is_empty() {
                "none".to_string()
            } else {
                format!("{} characters", t.len())
            }
        );
    }
    Ok(t)
}

/// Whether `t` has the shape of a seat link's token: at least 32 letters,
/// digits, `-` or `_` (at most 128, as the edge accepts).
pub fn is_link_token(t: &str) -> bool {
    (32..=128).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn run(cmd: &mut tokio::process::Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| anyhow::anyhow!("{what}: cannot run: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String = err
            .chars()
            .rev()
            .take(800)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        anyhow::bail!("{what} failed ({}): {tail}", out.status);
    }
    Ok(())
}

/// Read and execute for everyone, write for root only.
fn open_for_all(dir: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("chmod")
        .args(["-R", "u+rwX,go+rX,go-w"])
        .arg(dir)
        .status()?;
    anyhow::ensure!(status.success(), "chmod -R {}: {status}", dir.display());
    Ok(())
}

fn process_handle(h: &Handle) -> Option<Handle> {
    match h {
        Handle::Notebook {
            pid, start_ticks, ..
        } => Some(Handle::Process {
            pid: *pid,
            start_ticks: *start_ticks,
        }),
        _ => None,
    }
}

impl Runtime for NotebookRuntime {
    fn kind(&self) -> &'static str {
        "notebook"
    }

    fn start(&self, spec: StartSpec) -> BoxFuture<'_, anyhow::Result<Handle>> {
        Box::pin(async move {
            let token = link_token(&spec)?.to_string();
            let base_url = format!("/seat/{token}/");
            let venv = self.environment(&self.version).await?;
            let uid = SEAT_UID_BASE + spec.port as u32;
            let dir = self.lay_out_seat(&spec, uid, &token, &base_url)?;
            let mut run = spec.clone();
            let w = run.assign.workload.get_or_insert_with(Default::default);
            w.command = venv.join("bin/jupyter-lab").display().to_string();
            w.args = vec![
                "--ip=0.0.0.0".into(),
                format!("--port={}", spec.port),
                "--no-browser".into(),
            ];
            // The slice's controls (visible devices, MPS or HAMi limits) and
            // the workload's own variables; the seat's folder as its home.
            let user = format!("seat-{}", spec.port);
            let keep = |k: &str| {
                !matches!(
                    k,
                    "CLASSGRID_WORK_DIR" | "CLASSGRID_DATASETS" | "HOME" | "PATH" | LINK_TOKEN_ENV
                )
            };
            run.env = spec.env.iter().filter(|(k, _)| keep(k)).cloned().collect();
            run.env.extend([
                ("HOME".into(), dir.display().to_string()),
                ("USER".into(), user.clone()),
                ("LOGNAME".into(), user),
                (
                    "PATH".into(),
                    format!(
                        "{}:/usr/local/bin:/usr/bin:/bin",
                        venv.join("bin").display()
                    ),
                ),
                (
                    "JUPYTER_CONFIG_DIR".into(),
                    dir.join(".jupyter").display().to_string(),
                ),
                ("CLASSGRID_WORK_DIR".into(), dir.display().to_string()),
                (
                    "CLASSGRID_DATASETS".into(),
                    dir.join("data").display().to_string(),
                ),
                ("LANG".into(), "C.UTF-8".into()),
            ]);
            let opts = SpawnOptions {
                run_as: Some(uid),
                clear_env: true,
                // Kernels start where the server does: in the seat's folder,
                // so `data/…` works from a notebook.
                cwd: Some(dir.clone()),
            };
            let Handle::Process { pid, start_ticks } = self.process.spawn_with(&run, &opts)? else {
                anyhow::bail!("the process runtime returned another kind of handle");
            };
            Ok(Handle::Notebook {
                pid,
                start_ticks,
                port: spec.port,
                base_url,
            })
        })
    }

    fn probe<'a>(&'a self, handle: &'a Handle) -> BoxFuture<'a, Probe> {
        Box::pin(async move {
            let Some(p) = process_handle(handle) else {
                return Probe::Gone;
            };
            let Handle::Notebook { port, base_url, .. } = handle else {
                return Probe::Gone;
            };
            match self.process.probe(&p).await {
                Probe::Running { .. } => {
                    let token = base_url.trim_start_matches("/seat/").trim_end_matches('/');
                    Probe::Running {
                        host: None,
                        ready: self.api_answers(*port, base_url, token).await,
                    }
                }
                other => other,
            }
        })
    }

    fn stop<'a>(
        &'a self,
        handle: &'a Handle,
        grace: Duration,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let p =
                process_handle(handle).ok_or_else(|| anyhow::anyhow!("not a notebook handle"))?;
            self.process.stop(&p, grace).await
        })
    }

    fn output_tail<'a>(&'a self, h: &'a Handle, work_dir: &'a Path) -> BoxFuture<'a, String> {
        self.process.output_tail(h, work_dir)
    }

    fn cleanup<'a>(&'a self, h: &'a Handle, assignment_id: &'a str) -> BoxFuture<'a, ()> {
        self.process.cleanup(h, assignment_id)
    }

    fn checks_readiness(&self) -> bool {
        true
    }

    fn forget<'a>(&'a self, assignment_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = remove_seat_folder(&self.dirs, assignment_id) {
                warn!(assignment = assignment_id, error = %e, "notebook seat folder not removed");
            }
        })
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(250)
    }
}

/// Set by the broker when a teacher resets a seat keeping the student's
/// work: the assignment whose folder the new one takes.
pub const KEEP_WORK_FROM_ENV: &str = "CLASSGRID_SEAT_KEEP_WORK_FROM";

/// Hands a kept work folder to the new seat's user; links are changed, not
/// followed (lchown), so a student's symlink cannot give them another file.
fn chown_tree(dir: &Path, uid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(uid))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            chown_tree(&path, uid)?;
        } else {
            std::os::unix::fs::lchown(&path, Some(uid), Some(uid))?;
        }
    }
    Ok(())
}

/// Removes a seat's folder: at the end of its lesson plus grace, or when a
/// teacher resets it with its work wiped.
pub fn remove_seat_folder(dirs: &NotebookDirs, assignment_id: &str) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dirs.seats.join(assignment_id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The notebook runtime for this host, with the environment being built in
/// the background; or the reason it cannot be offered, as a node warning.
pub fn new_for_host() -> Result<Arc<dyn Runtime>, String> {
    let dirs = NotebookDirs::from_env();
    if let Some(why) = unavailable(&dirs) {
        return Err(why);
    }
    // Seats get the host's CPU and memory limits where it allows them; the
    // process runtime reports a missing cgroup once, so this one stays quiet.
    let process = ProcessRuntime::new(super::cgroup::Cgroups::probe().ok());
    let rt = NotebookRuntime::new(process, dirs);
    rt.prepare_in_background();
    Ok(rt)
}
