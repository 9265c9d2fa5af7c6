//! The classgrid node agent: discovers the node's capacity, keeps one stream
//! to the broker, and runs assignments through its runtimes.

pub mod commands;
pub mod config;
pub mod connect;
pub mod datasets;
pub mod host;
pub mod metrics;
pub mod outbox;
pub mod probe;
pub mod runtime;
pub mod state;
pub mod supervisor;

use std::{sync::Arc, time::Duration};

use runtime::{
    Runtime, Runtimes,
    cgroup::Cgroups,
    container::ContainerRuntime,
    process::ProcessRuntime,
    slurm::{SlurmOptions, SlurmRuntime},
};

/// Builds the runtimes the configuration asks for. A runtime whose host
/// support is missing is offered without it or not at all, and each such
/// problem becomes one node warning; none stops the agent.
pub async fn build_runtimes(cfg: &config::AgentConfig) -> (Runtimes, Vec<String>) {
    let mut list: Vec<Arc<dyn Runtime>> = Vec::new();
    let mut warnings = Vec::new();
    for kind in &cfg.runtimes {
        match kind.as_str() {
            "process" => {
                let cgroups = match Cgroups::probe() {
                    Ok(c) => Some(c),
                    Err(reason) => {
                        warnings.push(format!(
                            "process runtime: seats run without CPU and memory limits: {reason}"
                        ));
                        None
                    }
                };
                list.push(Arc::new(ProcessRuntime::new(cgroups)));
            }
            "notebook" => match runtime::notebook::new_for_host() {
                Ok(rt) => list.push(rt),
                Err(w) => warnings.push(w),
            },
            "container" => {
                match ContainerRuntime::connect(&cfg.container_socket, cfg.data_dir.clone()).await {
                    Ok(rt) => list.push(Arc::new(rt)),
                    Err(e) => warnings.push(format!("container runtime not offered: {e:#}")),
                }
            }
            "slurm" => {
                let opts = SlurmOptions {
                    partition: cfg.slurm_partition.clone(),
                    gpu_memory_mib: cfg.slurm_gpu_memory_mib,
                };
                // Offered even when slurmctld does not answer yet: its capacity
                // then shows nothing schedulable, with the reason as a warning.
                list.push(Arc::new(SlurmRuntime::new(opts)));
            }
            "kubernetes" => {
                let api = cfg.kube_api.clone().unwrap_or_default();
                list.push(Arc::new(runtime::kubernetes::KubeRuntime::new(
                    &api,
                    &cfg.kube_namespace,
                )));
            }
            _ => {}
        }
    }
    for w in &warnings {
        tracing::warn!(warning = %w, "runtime");
    }
    (Runtimes::new(list), warnings)
}

/// Runs the agent until `shutdown` turns true. Shared by `classgrid-agent run`
/// and `classgrid up`.
pub async fn run(
    mut cfg: config::AgentConfig,
    stop_work_on_exit: bool,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if let Some(addr) = cfg.probe_addr {
        let bound = probe::listen(addr, Duration::from_millis(cfg.probe_delay_ms)).await?;
        cfg.probe_advertise = format!("{}:{}", cfg.advertise_host, bound.port());
        tracing::info!(probe = %cfg.probe_advertise, delay_ms = cfg.probe_delay_ms, "probe responder listening");
    }
    let (runtimes, runtime_warnings) = build_runtimes(&cfg).await;
    let cluster = runtimes.cluster();
    let (sup, events) =
        supervisor::Supervisor::start(cfg.state_dir.clone(), cfg.advertise_host.clone(), runtimes)
            .await?;
    let every = Duration::from_secs(cfg.discovery_interval_s);
    let (capacity, refresh) = match cluster {
        Some(rt) => {
            let (cap, mut warnings) = rt.cluster_capacity().await.unwrap_or_default();
            warnings.extend(runtime_warnings.iter().cloned());
            tracing::info!(
                site = %cfg.site, name = %cfg.name, broker = %cfg.broker, runtime = rt.kind(),
                cpu_millis = cap.cpu_millis, devices = cap.devices.len(), "agent starting for a cluster"
            );
            let capacity = connect::Capacity::from_parts(cap, warnings);
            let refresh = tokio::spawn(connect::refresh_cluster(
                rt,
                every,
                capacity.clone(),
                runtime_warnings,
            ));
            (capacity, refresh)
        }
        None => {
            let opts = cfg.discover_options()?;
            let o = opts.clone();
            let discovery =
                tokio::task::spawn_blocking(move || classgrid_devices::discover(&o)).await?;
            for w in &discovery.warnings {
                tracing::warn!(warning = %w, "device discovery");
            }
            sup.set_devices(host::schedulable(&discovery).into_iter().cloned().collect());
            let capacity = connect::Capacity::new(&discovery, &runtime_warnings);
            tracing::info!(
                site = %cfg.site, name = %cfg.name, broker = %cfg.broker,
                devices = discovery.devices.len(), runtimes = ?sup.runtime_kinds(), "agent starting"
            );
            let refresh = tokio::spawn(connect::rediscover(
                opts,
                every,
                sup.clone(),
                capacity.clone(),
                runtime_warnings,
            ));
            (capacity, refresh)
        }
    };
    metrics::register(sup.clone(), capacity.clone());
    let usage = tokio::spawn(sup.clone().report_usage(supervisor::USAGE_INTERVAL));
    let renewal = tokio::spawn(renew_certificate(cfg.state_dir.clone(), cfg.relay.clone()));
    connect::run(cfg, sup.clone(), capacity, events, shutdown).await;
    refresh.abort();
    usage.abort();
    renewal.abort();
    if stop_work_on_exit {
        sup.stop_all("the agent is shutting down").await;
    }
    Ok(())
}

/// Renews the node certificate once two thirds of its life has passed; the
/// next connection uses the new one, so running work never notices.
async fn renew_certificate(state_dir: std::path::PathBuf, relay: Option<String>) {
    loop {
        if let Some(j) = classgrid_common::join::Joined::load(&state_dir)
            && j.renew_due(chrono::Utc::now())
        {
            match classgrid_common::join::renew(&state_dir, relay.as_deref()).await {
                Ok(j) => tracing::info!(not_after = %j.not_after, "node certificate renewed"),
                Err(e) => tracing::warn!(error = %e, "certificate renewal failed; retrying"),
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    }
}

/// Wall-clock milliseconds since the Unix epoch, as status reports, the state
/// file and the broker's Assign carry them.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
