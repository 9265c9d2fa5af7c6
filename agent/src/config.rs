//! Agent configuration. Precedence: flag > `CLASSGRID_*` env > TOML file > default.

use std::path::PathBuf;

use classgrid_common::config::{load_file, pick};
use serde::Deserialize;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// TOML config file; its keys are the long flag names with `_` for `-`.
    #[arg(long, env = "CLASSGRID_CONFIG")]
    pub config: Option<PathBuf>,
    /// The broker's gRPC URL, e.g. https://broker.example:7443, or the URLs
    /// of a region's replicas separated by commas, tried in turn (for a
    /// district without a load balancer). Default: the one `classgrid-agent
    /// join` saved in the state folder.
    #[arg(long, env = "CLASSGRID_BROKER", value_name = "URL[,URL...]")]
    pub broker: Option<String>,
    /// The site (school, district point of presence or cloud) this node belongs to.
    #[arg(long, env = "CLASSGRID_SITE")]
    pub site: Option<String>,
    /// This node's name, unique within its site. Default: the host name.
    #[arg(long, env = "CLASSGRID_NAME")]
    pub name: Option<String>,
    /// `edge` (school or district box) or `cloud`.
    #[arg(long, env = "CLASSGRID_TIER")]
    pub tier: Option<String>,
    /// Where the agent keeps its state, its certificate and the seats'
    /// working folders. Default: /var/lib/classgrid-agent as root (as the
    /// systemd unit), else $CLASSGRID_HOME/agent; the same for `join`.
    #[arg(long, env = "CLASSGRID_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Host name or address that students use to reach this node's seats.
    #[arg(long, env = "CLASSGRID_ADVERTISE_HOST")]
    pub advertise_host: Option<String>,
    /// Override a device tool's path, e.g. `--tool nvidia-smi=/opt/nvidia/bin/nvidia-smi`. Repeatable.
    #[arg(long = "tool", value_name = "NAME=PATH")]
    pub tools: Vec<String>,
    /// Seconds between device re-discoveries.
    #[arg(long, env = "CLASSGRID_DISCOVERY_INTERVAL_S")]
    pub discovery_interval_s: Option<u64>,
    /// `json` or `text`.
    #[arg(long, env = "CLASSGRID_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Runtimes this node offers, comma-separated: `process` and/or
    /// `container` on a server; `slurm` or `kubernetes` alone when the agent
    /// stands for a whole cluster. Default: process.
    #[arg(long, env = "CLASSGRID_RUNTIMES", value_name = "LIST")]
    pub runtimes: Option<String>,
    /// The Docker-Engine-compatible API socket for the container runtime
    /// (Docker, or `podman system service`). Default: /var/run/docker.sock.
    #[arg(long, env = "CLASSGRID_CONTAINER_SOCKET", value_name = "PATH")]
    pub container_socket: Option<String>,
    /// Folder of staged datasets, mounted read-only at /data in containers.
    /// Default: STATE_DIR/data.
    #[arg(long, env = "CLASSGRID_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// slurm runtime: the partition whose nodes this agent offers and uses.
    /// Default: the cluster's default partition.
    #[arg(long, env = "CLASSGRID_SLURM_PARTITION")]
    pub slurm_partition: Option<String>,
    /// slurm runtime: memory of one GPU (GRES gpu) in MiB, which Slurm does
    /// not report; GPUs are offered only when it is set.
    #[arg(long, env = "CLASSGRID_SLURM_GPU_MEMORY_MIB")]
    pub slurm_gpu_memory_mib: Option<u64>,
    /// kubernetes runtime: the API server's URL as reached through
    /// `kubectl proxy` (which holds the credentials), e.g. http://127.0.0.1:8001
    #[arg(long, env = "CLASSGRID_KUBE_API", value_name = "URL")]
    pub kube_api: Option<String>,
    /// kubernetes runtime: the namespace seats run in. Default: classgrid.
    #[arg(long, env = "CLASSGRID_KUBE_NAMESPACE")]
    pub kube_namespace: Option<String>,
    /// Where the RTT probe responder (a TCP echo timed by site edges and
    /// peers) listens; port 0 picks a free one. Default: 0.0.0.0:0.
    #[arg(long, env = "CLASSGRID_PROBE_ADDR")]
    pub probe_addr: Option<String>,
    /// Milliseconds the probe responder waits before answering: injected
    /// latency for tests, which have no `tc netem`. Default: 0.
    #[arg(long, env = "CLASSGRID_PROBE_DELAY_MS")]
    pub probe_delay_ms: Option<u64>,
    /// Reach the broker through the site edge's relay at HOST:PORT (its
    /// `relay_listen`), for a LAN with no route to the region. TLS is still
    /// checked against --broker. Default: the relay used to join, if any.
    #[arg(long, env = "CLASSGRID_RELAY", value_name = "HOST:PORT")]
    pub relay: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub broker: Option<String>,
    pub site: Option<String>,
    pub name: Option<String>,
    pub tier: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub advertise_host: Option<String>,
    pub tools: Option<Vec<String>>,
    pub discovery_interval_s: Option<u64>,
    pub log_format: Option<String>,
    pub runtimes: Option<String>,
    pub container_socket: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub slurm_partition: Option<String>,
    pub slurm_gpu_memory_mib: Option<u64>,
    pub kube_api: Option<String>,
    pub kube_namespace: Option<String>,
    pub probe_addr: Option<String>,
    pub probe_delay_ms: Option<u64>,
    pub relay: Option<String>,
}

/// Where `join` writes and `run` reads when no --state-dir,
/// `CLASSGRID_STATE_DIR` or `state_dir` names a folder (decision 077): for
/// root without `CLASSGRID_HOME`, `/var/lib/classgrid-agent`, the folder
/// `deploy/systemd/classgrid-agent.service` uses, so `sudo classgrid-agent
/// join` and the unit agree; otherwise `$CLASSGRID_HOME/agent`. It does not
/// depend on the node's name, so `join --name X` is found by a later `run`.
pub fn default_state_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root && std::env::var_os("CLASSGRID_HOME").is_none_or(|h| h.is_empty()) {
        PathBuf::from(SYSTEM_STATE_DIR)
    } else {
        classgrid_common::context::home().join("agent")
    }
}

/// The state folder of an agent run as a system service.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/classgrid-agent";

/// [`default_state_dir`], unless only a folder that an older `join` wrote
/// (`$CLASSGRID_HOME/agent-<name>`) holds a join: that node keeps working
/// after an upgrade without being joined again.
fn default_state_dir_or_legacy(name: &str) -> PathBuf {
    let dir = default_state_dir();
    let legacy = classgrid_common::context::home().join(format!("agent-{name}"));
    if classgrid_common::join::Joined::load(&dir).is_none()
        && classgrid_common::join::Joined::load(&legacy).is_some()
    {
        return legacy;
    }
    dir
}

/// The runtimes an agent can offer.
pub const RUNTIMES: &[&str] = &["process", "container", "slurm", "kubernetes", "notebook"];

#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// One broker URL, or several separated by commas (see `brokers`).
    pub broker: String,
    pub site: String,
    pub name: String,
    pub tier: String,
    pub state_dir: PathBuf,
    pub advertise_host: String,
    pub tools: Vec<(String, PathBuf)>,
    pub discovery_interval_s: u64,
    pub log_format: String,
    pub runtimes: Vec<String>,
    pub container_socket: String,
    pub data_dir: PathBuf,
    pub slurm_partition: Option<String>,
    pub slurm_gpu_memory_mib: u64,
    pub kube_api: Option<String>,
    pub kube_namespace: String,
    /// Where the probe responder listens; None runs none.
    pub probe_addr: Option<std::net::SocketAddr>,
    pub probe_delay_ms: u64,
    /// host:port the broker hands to edges and peers; set once the
    /// responder is bound.
    pub probe_advertise: String,
    /// The site edge's relay (host:port) to reach the broker through.
    pub relay: Option<String>,
}

/// Parses `--runtimes`: known kinds, no repeats, and a cluster runtime
/// (which stands for a whole cluster and reports its capacity) alone.
pub fn parse_runtimes(list: &str) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for r in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        if !RUNTIMES.contains(&r) {
            anyhow::bail!(
                "--runtimes: unknown runtime `{r}`; known: {}",
                RUNTIMES.join(", ")
            );
        }
        if !out.iter().any(|x| x == r) {
            out.push(r.to_string());
        }
    }
    if out.is_empty() {
        anyhow::bail!(
            "--runtimes: must name at least one of {}",
            RUNTIMES.join(", ")
        );
    }
    let cluster: Vec<&String> = out
        .iter()
        .filter(|r| *r == "slurm" || *r == "kubernetes")
        .collect();
    if !cluster.is_empty() && out.len() > 1 {
        anyhow::bail!(
            "--runtimes: `{}` stands for a whole cluster and must be the only runtime of its agent (run one agent per cluster, and another for this host)",
            cluster[0]
        );
    }
    Ok(out)
}

impl AgentConfig {
    /// Every default, for callers that build a config in code (`classgrid
    /// up`) and set only what they need.
    pub fn defaults(state_dir: PathBuf) -> Self {
        Self {
            broker: "http://127.0.0.1:7443".into(),
            site: String::new(),
            name: "local".into(),
            tier: "edge".into(),
            data_dir: state_dir.join("data"),
            state_dir,
            advertise_host: "127.0.0.1".into(),
            tools: Vec::new(),
            discovery_interval_s: 60,
            log_format: "json".into(),
            runtimes: vec!["process".into()],
            container_socket: "/var/run/docker.sock".into(),
            slurm_partition: None,
            slurm_gpu_memory_mib: 0,
            kube_api: None,
            kube_namespace: "classgrid".into(),
            probe_addr: Some(std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
            probe_delay_ms: 0,
            probe_advertise: String::new(),
            relay: None,
        }
    }

    pub fn resolve(a: &RunArgs) -> anyhow::Result<Self> {
        let f: FileConfig = load_file(a.config.as_deref())?;
        let hostname = sysinfo::System::host_name().unwrap_or_else(|| "node".into());
        // The state folder does not depend on the node's name, so a `join
        // --name X` is found by a later `run` without --name (decision 077).
        let state_dir = match a.state_dir.clone().or(f.state_dir.clone()) {
            Some(d) => d,
            None => {
                let n = a
                    .name
                    .clone()
                    .or(f.name.clone())
                    .unwrap_or_else(|| hostname.clone());
                default_state_dir_or_legacy(&n)
            }
        };
        // After `join`, the state folder remembers broker, site and name.
        let joined = classgrid_common::join::Joined::load(&state_dir);
        let name = a
            .name
            .clone()
            .or(f.name)
            .or(joined.as_ref().map(|j| j.name.clone()))
            .unwrap_or(hostname);
        let site = a.site.clone().or(f.site).or(joined.as_ref().map(|j| j.site.clone())).ok_or_else(|| {
            anyhow::anyhow!("--site: is required (the site this node belongs to), unless the agent has joined with `classgrid-agent join`")
        })?;
        let tier = pick(a.tier.clone(), f.tier, "edge".into());
        if tier != "edge" && tier != "cloud" {
            anyhow::bail!("--tier: must be edge or cloud, not `{tier}`");
        }
        let broker = a
            .broker
            .clone()
            .or(f.broker)
            .or(joined.as_ref().map(|j| j.broker.clone()))
            .unwrap_or_else(|| "https://127.0.0.1:7443".into());
        classgrid_common::broker_list::parse("--broker", &broker)?;
        let tools_raw = if a.tools.is_empty() {
            f.tools.unwrap_or_default()
        } else {
            a.tools.clone()
        };
        let mut tools = Vec::new();
        for t in tools_raw {
            let (k, v) = t
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--tool: expected NAME=PATH, not `{t}`"))?;
            tools.push((k.to_string(), PathBuf::from(v)));
        }
        let runtimes = parse_runtimes(&pick(a.runtimes.clone(), f.runtimes, "process".into()))?;
        let kube_api = a.kube_api.clone().or(f.kube_api);
        if let Some(u) = &kube_api
            && !u.starts_with("http://")
        {
            anyhow::bail!(
                "--kube-api: must be an http:// URL of `kubectl proxy` (which holds the cluster's credentials), not `{u}`"
            );
        }
        if runtimes.iter().any(|r| r == "kubernetes") && kube_api.is_none() {
            anyhow::bail!(
                "--kube-api: is required for the kubernetes runtime (for example http://127.0.0.1:8001 from `kubectl proxy`)"
            );
        }
        let kube_namespace = pick(
            a.kube_namespace.clone(),
            f.kube_namespace,
            "classgrid".into(),
        );
        let dns_label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        if !dns_label(&kube_namespace) {
            anyhow::bail!(
                "--kube-namespace: must be a DNS label (lower-case letters, digits and '-', at most 63), not `{kube_namespace}`"
            );
        }
        let probe_s = pick(a.probe_addr.clone(), f.probe_addr, "0.0.0.0:0".into());
        let probe_addr = Some(probe_s.parse().map_err(|_| {
            anyhow::anyhow!(
                "--probe-addr: must be an address and port such as 0.0.0.0:7481, not `{probe_s}`"
            )
        })?);
        let probe_delay_ms = pick(a.probe_delay_ms, f.probe_delay_ms, 0);
        if probe_delay_ms > 10_000 {
            anyhow::bail!("--probe-delay-ms: must be between 0 and 10000, not {probe_delay_ms}");
        }
        let relay = a
            .relay
            .clone()
            .or(f.relay)
            .or(joined.as_ref().and_then(|j| j.relay.clone()));
        if let Some(r) = &relay {
            classgrid_common::dial::check_relay(r)?;
        }
        Ok(Self {
            relay,
            probe_addr,
            probe_delay_ms,
            probe_advertise: String::new(),
            data_dir: a
                .data_dir
                .clone()
                .or(f.data_dir)
                .unwrap_or_else(|| state_dir.join("data")),
            runtimes,
            container_socket: pick(
                a.container_socket.clone(),
                f.container_socket,
                "/var/run/docker.sock".into(),
            ),
            slurm_partition: a.slurm_partition.clone().or(f.slurm_partition),
            slurm_gpu_memory_mib: pick(a.slurm_gpu_memory_mib, f.slurm_gpu_memory_mib, 0),
            kube_api,
            kube_namespace,
            broker,
            site,
            tier,
            state_dir,
            advertise_host: pick(
                a.advertise_host.clone(),
                f.advertise_host,
                "127.0.0.1".into(),
            ),
            tools,
            discovery_interval_s: pick(a.discovery_interval_s, f.discovery_interval_s, 60).max(5),
            log_format: pick(a.log_format.clone(), f.log_format, "json".into()),
            name,
        })
    }

    /// The broker URLs to try in turn: `broker` split at its commas
    /// (decision 091); one URL for the usual single address.
    pub fn brokers(&self) -> Vec<String> {
        classgrid_common::broker_list::split(&self.broker)
    }

    pub fn discover_options(&self) -> anyhow::Result<classgrid_devices::DiscoverOptions> {
        let mut o = classgrid_devices::DiscoverOptions::default();
        for (k, v) in &self.tools {
            let slot = match k.as_str() {
                "nvidia-smi" => &mut o.tools.nvidia_smi,
                "npu-smi" => &mut o.tools.npu_smi,
                "hy-smi" => &mut o.tools.hy_smi,
                "rocm-smi" => &mut o.tools.rocm_smi,
                "mx-smi" => &mut o.tools.mx_smi,
                "mthreads-gmi" => &mut o.tools.mthreads_gmi,
                "cnmon" => &mut o.tools.cnmon,
                "ixsmi" => &mut o.tools.ixsmi,
                other => anyhow::bail!(
                    "--tool: unknown tool `{other}`; known: nvidia-smi, npu-smi, hy-smi, rocm-smi, mx-smi, mthreads-gmi, cnmon, ixsmi"
                ),
            };
            *slot = v.clone();
            // A tool given explicitly is meant to be used instead of NVML.
            if k == "nvidia-smi" {
                o.use_nvml = false;
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod runtime_list_tests {
    use super::parse_runtimes;

    #[test]
    fn runtimes_list_refuses_unknown_kinds_and_mixed_cluster_runtimes() {
        assert_eq!(
            parse_runtimes("process, container,process").unwrap(),
            vec!["process", "container"]
        );
        let e = parse_runtimes("process,docker").unwrap_err().to_string();
        assert!(e.contains("--runtimes") && e.contains("`docker`"), "{e}");
        let e = parse_runtimes("kubernetes,container")
            .unwrap_err()
            .to_string();
        assert!(e.contains("whole cluster"), "{e}");
        assert!(parse_runtimes(" , ").is_err());
    }
}

#[cfg(test)]
mod broker_list_tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: super::RunArgs,
    }

    fn resolve(extra: &[&str]) -> anyhow::Result<super::AgentConfig> {
        let mut argv = vec![
            "classgrid-agent",
            "--site",
            "school-a",
            "--state-dir",
            "/nonexistent/classgrid-agent-broker-list-test",
        ];
        argv.extend(extra);
        super::AgentConfig::resolve(&Cli::parse_from(argv).a)
    }

    #[test]
    fn broker_takes_one_url_as_before_or_a_list_tried_in_turn() {
        let one = resolve(&["--broker", "https://b1:7443"]).unwrap();
        assert_eq!(one.broker, "https://b1:7443");
        assert_eq!(one.brokers(), vec!["https://b1:7443"]);
        let e = resolve(&["--broker", "b1:7443"]).unwrap_err().to_string();
        assert_eq!(
            e,
            "--broker: must be an http:// or https:// URL, not `b1:7443`"
        );

        let list = resolve(&["--broker", "https://b1:7443, https://b2:7443"]).unwrap();
        assert_eq!(list.brokers(), vec!["https://b1:7443", "https://b2:7443"]);
        let e = resolve(&["--broker", "https://b1:7443,ftp://b2:7443"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--broker: entry 2 `ftp://b2:7443`"), "{e}");
    }

    #[test]
    fn a_broker_list_in_the_config_file_is_checked_by_entry() {
        let dir = std::env::temp_dir().join(format!("cg-agent-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent.toml");
        std::fs::write(&file, "broker = \"http://b1:7443,http://b2:7443\"\n").unwrap();
        let f = file.display().to_string();
        let c = resolve(&["--config", &f]).unwrap();
        assert_eq!(c.brokers(), vec!["http://b1:7443", "http://b2:7443"]);
        std::fs::write(&file, "broker = \"http://b1:7443,http://b1:7443\"\n").unwrap();
        let e = resolve(&["--config", &f]).unwrap_err().to_string();
        assert!(
            e.contains("entry 2 `http://b1:7443` repeats entry 1"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
