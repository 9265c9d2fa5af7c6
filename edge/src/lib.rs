//! The classgrid site gateway. It registers its site's edge with the broker
//! and keeps a heartbeat; RTT probes, content staging, the site relay and
//! autonomy build on this link.

use std::time::Duration;

use classgrid_proto::v1::{self as pb, edge_service_client::EdgeServiceClient};
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// TOML config file; its keys are the long flag names with `_` for `-`.
    #[arg(long, env = "CLASSGRID_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// The broker's gRPC URL, e.g. http://broker.example:7443
    #[arg(long, env = "CLASSGRID_BROKER")]
    pub broker: Option<String>,
    /// The site this edge serves.
    #[arg(long, env = "CLASSGRID_SITE")]
    pub site: Option<String>,
    /// This edge's name within its site. Default: the host name.
    #[arg(long, env = "CLASSGRID_NAME")]
    pub name: Option<String>,
    /// Where the edge keeps its state (certificates from `join` go in its tls/ folder).
    #[arg(long, env = "CLASSGRID_STATE_DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// `json` or `text`.
    #[arg(long, env = "CLASSGRID_LOG_FORMAT")]
    pub log_format: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    broker: Option<String>,
    site: Option<String>,
    name: Option<String>,
    state_dir: Option<std::path::PathBuf>,
    log_format: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub broker: String,
    pub site: String,
    pub name: String,
    pub state_dir: std::path::PathBuf,
    pub log_format: String,
}

impl EdgeConfig {
    /// Precedence: flag > `CLASSGRID_*` env > TOML file > default.
    pub fn resolve(a: &RunArgs) -> anyhow::Result<Self> {
        use classgrid_common::config::{load_file, pick};
        let f: FileConfig = load_file(a.config.as_deref())?;
        let state_dir = a.state_dir.clone().or(f.state_dir).unwrap_or_else(|| classgrid_common::context::home().join("edge"));
        // After `join`, the state folder remembers broker, site and name.
        let joined = classgrid_common::join::Joined::load(&state_dir);
        let broker = a
            .broker
            .clone()
            .or(f.broker)
            .or(joined.as_ref().map(|j| j.broker.clone()))
            .unwrap_or_else(|| "https://127.0.0.1:7443".into());
        if !(broker.starts_with("http://") || broker.starts_with("https://")) {
            anyhow::bail!("--broker: must be an http:// or https:// URL, not `{broker}`");
        }
        Ok(Self {
            broker,
            site: a
                .site
                .clone()
                .or(f.site)
                .or(joined.as_ref().map(|j| j.site.clone()))
                .ok_or_else(|| anyhow::anyhow!("--site: is required (the site this edge serves), unless it has joined"))?,
            name: a.name.clone().or(f.name).or(joined.map(|j| j.name)).unwrap_or_else(|| "edge".into()),
            state_dir,
            log_format: pick(a.log_format.clone(), f.log_format, "json".into()),
        })
    }
}

/// Registers and heartbeats until `shutdown`, re-registering after any failure.
pub async fn run(cfg: EdgeConfig, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(250);
    loop {
        match session(&cfg, &mut shutdown).await {
            Ok(()) => return Ok(()),
            Err(e) => warn!(error = %e, broker = %cfg.broker, "edge link to broker lost; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn session(cfg: &EdgeConfig, shutdown: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
    let channel = classgrid_common::join::channel(&cfg.broker, &cfg.state_dir).await?;
    let mut client = EdgeServiceClient::new(channel);
    let reg = client
        .register(pb::RegisterEdgeRequest {
            site: cfg.site.clone(),
            name: cfg.name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
        })
        .await?
        .into_inner();
    info!(edge = %reg.edge_id, site = %cfg.site, "edge registered");
    let mut beat = tokio::time::interval(Duration::from_millis(
        reg.heartbeat_interval_ms.clamp(500, 60_000) as u64,
    ));
    loop {
        tokio::select! {
            _ = beat.tick() => {
                client.heartbeat(pb::EdgeHeartbeat { edge_id: reg.edge_id.clone() }).await?;
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}
