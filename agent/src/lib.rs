//! The classgrid node agent: discovers the node's capacity, keeps one stream
//! to the broker, and runs assignments through a runtime.

pub mod config;
pub mod connect;
pub mod host;
pub mod runtime;
pub mod state;
pub mod supervisor;

use std::time::Duration;

/// Runs the agent until `shutdown` turns true. Shared by `classgrid-agent run`
/// and `classgrid up`.
pub async fn run(
    cfg: config::AgentConfig,
    stop_work_on_exit: bool,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let opts = cfg.discover_options()?;
    let o = opts.clone();
    let discovery = tokio::task::spawn_blocking(move || classgrid_devices::discover(&o)).await?;
    for w in &discovery.warnings {
        tracing::warn!(warning = %w, "device discovery");
    }
    let (sup, events) =
        supervisor::Supervisor::start(cfg.state_dir.clone(), cfg.advertise_host.clone())?;
    sup.set_devices(host::schedulable(&discovery).into_iter().cloned().collect());
    let capacity = connect::Capacity::new(&discovery);
    tracing::info!(
        site = %cfg.site, name = %cfg.name, broker = %cfg.broker,
        devices = discovery.devices.len(), "agent starting"
    );
    let redisc = tokio::spawn(connect::rediscover(
        opts,
        Duration::from_secs(cfg.discovery_interval_s),
        sup.clone(),
        capacity.clone(),
    ));
    connect::run(cfg, sup.clone(), capacity, events, shutdown).await;
    redisc.abort();
    if stop_work_on_exit {
        sup.stop_all("the agent is shutting down").await;
    }
    Ok(())
}
