//! Agent configuration. Precedence: flag > `CLASSGRID_*` env > TOML file > default.

use std::path::PathBuf;

use classgrid_common::config::{load_file, pick};
use serde::Deserialize;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// TOML config file; its keys are the long flag names with `_` for `-`.
    #[arg(long, env = "CLASSGRID_CONFIG")]
    pub config: Option<PathBuf>,
    /// The broker's gRPC URL, e.g. http://broker.example:7443
    #[arg(long, env = "CLASSGRID_BROKER")]
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
    /// Where the agent keeps its state and the seats' working folders.
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
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub broker: String,
    pub site: String,
    pub name: String,
    pub tier: String,
    pub state_dir: PathBuf,
    pub advertise_host: String,
    pub tools: Vec<(String, PathBuf)>,
    pub discovery_interval_s: u64,
    pub log_format: String,
}

impl AgentConfig {
    pub fn resolve(a: &RunArgs) -> anyhow::Result<Self> {
        let f: FileConfig = load_file(a.config.as_deref())?;
        let hostname = sysinfo::System::host_name().unwrap_or_else(|| "node".into());
        let name = pick(a.name.clone(), f.name, hostname);
        let site = a.site.clone().or(f.site).ok_or_else(|| {
            anyhow::anyhow!("--site: is required (the site this node belongs to)")
        })?;
        let tier = pick(a.tier.clone(), f.tier, "edge".into());
        if tier != "edge" && tier != "cloud" {
            anyhow::bail!("--tier: must be edge or cloud, not `{tier}`");
        }
        let broker = pick(a.broker.clone(), f.broker, "http://127.0.0.1:7443".into());
        if !(broker.starts_with("http://") || broker.starts_with("https://")) {
            anyhow::bail!("--broker: must be an http:// or https:// URL, not `{broker}`");
        }
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
        let state_dir = a
            .state_dir
            .clone()
            .or(f.state_dir)
            .unwrap_or_else(|| classgrid_common::context::home().join(format!("agent-{name}")));
        Ok(Self {
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
