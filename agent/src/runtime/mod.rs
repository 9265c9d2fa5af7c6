//! Runtimes turn an assignment into running work. The supervisor keeps one
//! lifecycle for all of them (start, probe, stop at release or end time,
//! adopt after an agent restart); each runtime only knows how to do those
//! things on its own kind of host and names its work with a [`Handle`] that
//! survives a restart of the agent.

pub mod cgroup;
pub mod container;
pub mod kubernetes;
pub mod notebook;
pub mod process;
pub mod slurm;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use classgrid_devices::Device;
use classgrid_proto::v1 as pb;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// What names a piece of running work in its runtime, persisted in the
/// agent's state file so that a restarted agent finds it again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "runtime", rename_all = "lowercase")]
pub enum Handle {
    Process {
        pid: i32,
        /// The process's start time in clock ticks since boot (from /proc),
        /// so a recycled pid is never mistaken for our process.
        start_ticks: u64,
    },
    Container {
        container_id: String,
    },
    Slurm {
        job_id: String,
    },
    Kubernetes {
        namespace: String,
        pod_name: String,
    },
    /// A notebook seat's server: a process, with the port and base URL
    /// that its readiness check asks.
    Notebook {
        pid: i32,
        start_ticks: u64,
        port: u16,
        base_url: String,
    },
}

impl Handle {
    pub fn kind(&self) -> &'static str {
        match self {
            Handle::Process { .. } => "process",
            Handle::Container { .. } => "container",
            Handle::Slurm { .. } => "slurm",
            Handle::Kubernetes { .. } => "kubernetes",
            Handle::Notebook { .. } => "notebook",
        }
    }
}

/// One accelerator slice granted to the work, with the device it is on.
#[derive(Debug, Clone)]
pub struct GrantedSlice {
    /// The device's slot in the capacity the agent reported.
    pub slot: usize,
    /// The device on this host; `None` for a cluster runtime, whose own
    /// scheduler picks the device.
    pub device: Option<Device>,
    pub memory_mib: u64,
    pub compute_percent: u32,
}

/// Everything a runtime needs to start one assignment.
#[derive(Debug, Clone)]
pub struct StartSpec {
    pub assign: pb::Assign,
    pub work_dir: PathBuf,
    /// The seat's variables: the workload's env, the slice controls, PORT and
    /// the CLASSGRID_* ones. `$(NAME)` in the command is expanded from these.
    pub env: Vec<(String, String)>,
    pub port: u16,
    pub slices: Vec<GrantedSlice>,
}

impl StartSpec {
    pub fn workload(&self) -> anyhow::Result<&pb::Workload> {
        self.assign
            .workload
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("workload: is required"))
    }

    /// The command and its arguments with `$(NAME)` expanded.
    pub fn argv(&self) -> anyhow::Result<Vec<String>> {
        let w = self.workload()?;
        let mut argv = Vec::with_capacity(w.args.len() + 1);
        if !w.command.is_empty() {
            argv.push(process::expand(&w.command, &self.env));
        }
        argv.extend(w.args.iter().map(|a| process::expand(a, &self.env)));
        Ok(argv)
    }
}

/// What a runtime says about a piece of work when asked.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// Accepted but not yet running (queued, pulling, scheduling).
    Pending,
    /// Running. `host` is where it runs when that is not this node (a Slurm
    /// batch host, a pod IP); `ready` is true when the runtime itself knows
    /// the seat is serving (a pod's Ready condition).
    Running { host: Option<String>, ready: bool },
    /// Ended; the exit code when the runtime could observe it.
    Exited(Option<i32>),
    /// The runtime no longer knows the work (removed behind our back).
    Gone,
    /// The runtime could not be asked (engine or API server unreachable);
    /// the work keeps its last known state.
    Unknown(String),
}

/// A runtime. Methods return boxed futures so that the supervisor can hold
/// any of them behind one `Arc<dyn Runtime>`.
pub trait Runtime: Send + Sync {
    fn kind(&self) -> &'static str;

    fn start(&self, spec: StartSpec) -> BoxFuture<'_, anyhow::Result<Handle>>;

    fn probe<'a>(&'a self, handle: &'a Handle) -> BoxFuture<'a, Probe>;

    /// Asks the work to stop, and makes sure it is gone after `grace`.
    fn stop<'a>(&'a self, handle: &'a Handle, grace: Duration)
    -> BoxFuture<'a, anyhow::Result<()>>;

    /// The last bytes of the work's output, for the status report.
    fn output_tail<'a>(&'a self, handle: &'a Handle, work_dir: &'a Path) -> BoxFuture<'a, String>;

    /// Frees what the runtime kept after the work ended (a stopped container,
    /// a finished pod, a cgroup).
    fn cleanup<'a>(&'a self, _handle: &'a Handle, _assignment_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// True when [`Probe::Running`]'s `ready` is the runtime's own real
    /// check (an API that answers): the supervisor then waits for it, and
    /// an open port or a timeout never counts as ready.
    fn checks_readiness(&self) -> bool {
        false
    }

    /// The work ended for good (not to be restarted in place): whatever the
    /// runtime kept for it across restarts (a seat's folder) can go.
    fn forget<'a>(&'a self, _assignment_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// How often the supervisor probes work of this runtime.
    fn poll_interval(&self) -> Duration {
        Duration::from_millis(500)
    }

    /// For a runtime that represents a whole cluster (Slurm, Kubernetes): the
    /// cluster's capacity and any problems reading it. `None` for runtimes
    /// that run on this host, whose capacity is the host's.
    fn cluster_capacity(&self) -> BoxFuture<'_, Option<(pb::NodeCapacity, Vec<String>)>> {
        Box::pin(async { None })
    }
}

/// The runtimes this agent offers, by kind.
#[derive(Clone, Default)]
pub struct Runtimes {
    list: Vec<Arc<dyn Runtime>>,
}

impl Runtimes {
    pub fn new(list: Vec<Arc<dyn Runtime>>) -> Self {
        Self { list }
    }

    /// The runtime for an assignment's `runtime` field; empty means process.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn Runtime>> {
        let kind = if kind.is_empty() { "process" } else { kind };
        self.list.iter().find(|r| r.kind() == kind).cloned()
    }

    pub fn kinds(&self) -> Vec<String> {
        self.list.iter().map(|r| r.kind().to_string()).collect()
    }

    /// The runtime that represents a whole cluster, if this agent runs one.
    pub fn cluster(&self) -> Option<Arc<dyn Runtime>> {
        self.list
            .iter()
            .find(|r| matches!(r.kind(), "slurm" | "kubernetes"))
            .cloned()
    }
}

/// The last `max` bytes of a log file, lossily decoded.
pub fn file_tail(path: &std::path::Path, max: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}
