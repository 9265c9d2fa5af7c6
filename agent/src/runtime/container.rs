//! The container runtime: a Docker-Engine-compatible API (Docker, or Podman's
//! compatible service) through `bollard`. A seat is one container named
//! `classgrid-<assignment>` and labelled with its assignment, with the seat's
//! env, its PORT published on the same host port, CPU and memory limits, GPU
//! device requests for NVIDIA slices, the seat's work folder and the node's
//! staged data mounted.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use bollard::{
    Docker,
    errors::Error as DockerError,
    models::{
        ContainerCreateBody, ContainerStateStatusEnum, DeviceRequest, HostConfig, PortBinding,
    },
    query_parameters::{
        CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
        StopContainerOptionsBuilder,
    },
};
use classgrid_devices::Vendor;
use futures::{StreamExt, future::BoxFuture};

use super::{GrantedSlice, Handle, Probe, Runtime, StartSpec};

pub const LABEL_ASSIGNMENT: &str = "classgrid.assignment-id";
pub const LABEL_GENERATION: &str = "classgrid.generation";
pub const LABEL_KIND: &str = "classgrid.kind";

/// Where the seat's work folder and the staged data appear in the container.
pub const WORK_MOUNT: &str = "/work";
pub const DATA_MOUNT: &str = "/data";

pub struct ContainerRuntime {
    docker: Docker,
    data_dir: PathBuf,
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn is_conflict(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 409,
            ..
        }
    )
}

pub fn container_name(assignment_id: &str) -> String {
    format!("classgrid-{assignment_id}")
}

/// Docker's device requests for the NVIDIA slices (the NVIDIA container
/// toolkit turns them into devices and libraries). Other vendors' devices
/// are selected by their visible-devices variables in the seat's env.
pub fn device_requests(slices: &[GrantedSlice]) -> Vec<DeviceRequest> {
    let ids: Vec<String> = slices
        .iter()
        .filter_map(|s| s.device.as_ref())
        .filter(|d| d.vendor == Vendor::Nvidia)
        .map(|d| d.uuid.clone().unwrap_or_else(|| d.index.to_string()))
        .collect();
    if ids.is_empty() {
        return Vec::new();
    }
    vec![DeviceRequest {
        driver: Some("nvidia".into()),
        device_ids: Some(ids),
        capabilities: Some(vec![vec!["gpu".into()]]),
        ..Default::default()
    }]
}

/// The container's create body for one seat.
pub fn create_body(
    spec: &StartSpec,
    data_dir: &std::path::Path,
) -> anyhow::Result<ContainerCreateBody> {
    let w = spec.workload()?;
    if w.image.trim().is_empty() {
        anyhow::bail!("workload.image: is required for the container runtime");
    }
    // Like Kubernetes: `command` replaces the image's entrypoint and `args`
    // its cmd; either left empty keeps the image's own.
    let expand = |s: &String| super::process::expand(s, &spec.env);
    let entrypoint = (!w.command.is_empty()).then(|| vec![expand(&w.command)]);
    let cmd = (!w.args.is_empty()).then(|| w.args.iter().map(expand).collect());
    let port_key = format!("{}/tcp", spec.port);
    let mut bindings = HashMap::new();
    bindings.insert(
        port_key.clone(),
        Some(vec![PortBinding {
            // Empty means every host address. Podman's compatible API takes
            // an explicit "0.0.0.0" literally (only packets to 0.0.0.0).
            host_ip: None,
            host_port: Some(spec.port.to_string()),
        }]),
    );
    let a = &spec.assign;
    let labels = HashMap::from([
        (LABEL_ASSIGNMENT.to_string(), a.assignment_id.clone()),
        (LABEL_GENERATION.to_string(), a.generation.to_string()),
        (LABEL_KIND.to_string(), a.kind.clone()),
    ]);
    let mut env: Vec<(String, String)> = spec.env.clone();
    // Inside the container the folders are at their mount points.
    for (k, v) in env.iter_mut() {
        if k == "CLASSGRID_WORK_DIR" {
            *v = WORK_MOUNT.into();
        }
    }
    env.push(("CLASSGRID_DATA_DIR".into(), DATA_MOUNT.into()));
    let requests = device_requests(&spec.slices);
    Ok(ContainerCreateBody {
        image: Some(w.image.clone()),
        entrypoint,
        cmd,
        env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        exposed_ports: Some(vec![port_key]),
        labels: Some(labels),
        working_dir: Some(WORK_MOUNT.into()),
        host_config: Some(HostConfig {
            port_bindings: Some(bindings),
            binds: Some(vec![
                format!("{}:{WORK_MOUNT}:rw", spec.work_dir.display()),
                format!("{}:{DATA_MOUNT}:ro", data_dir.display()),
            ]),
            nano_cpus: (a.cpu_millis > 0).then(|| a.cpu_millis as i64 * 1_000_000),
            memory: (a.memory_mib > 0).then(|| a.memory_mib * 1024 * 1024),
            device_requests: (!requests.is_empty()).then_some(requests),
            ..Default::default()
        }),
        ..Default::default()
    })
}

impl ContainerRuntime {
    /// Connects to the engine on a unix socket and checks that it answers,
    /// agreeing on an API version both sides speak (Podman offers 1.41).
    pub async fn connect(socket: &str, data_dir: PathBuf) -> anyhow::Result<Self> {
        let docker = Docker::connect_with_socket(socket, 30, bollard::API_DEFAULT_VERSION)
            .map_err(|e| anyhow::anyhow!("--container-socket {socket}: {e}"))?;
        let docker = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "--container-socket {socket}: the engine did not answer within 10 s"
                )
            })?
            .map_err(|e| anyhow::anyhow!("--container-socket {socket}: {e}"))?;
        docker
            .ping()
            .await
            .map_err(|e| anyhow::anyhow!("--container-socket {socket}: {e}"))?;
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| anyhow::anyhow!("--data-dir {}: {e}", data_dir.display()))?;
        Ok(Self { docker, data_dir })
    }

    async fn create(&self, spec: &StartSpec) -> anyhow::Result<String> {
        std::fs::create_dir_all(&spec.work_dir)?;
        let name = container_name(&spec.assign.assignment_id);
        let body = create_body(spec, &self.data_dir)?;
        let opts = CreateContainerOptionsBuilder::new().name(&name).build();
        match self
            .docker
            .create_container(Some(opts.clone()), body.clone())
            .await
        {
            Ok(r) => Ok(r.id),
            Err(e) if is_conflict(&e) => {
                // A container of this assignment is left from an earlier try
                // whose record was lost: a running one is adopted, anything
                // else is replaced.
                let old = self.docker.inspect_container(&name, None).await?;
                if old.state.as_ref().and_then(|s| s.running) == Some(true) {
                    return Ok(old.id.unwrap_or(name));
                }
                self.docker
                    .remove_container(
                        &name,
                        Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                    )
                    .await?;
                Ok(self.docker.create_container(Some(opts), body).await?.id)
            }
            Err(e) if is_not_found(&e) => anyhow::bail!(
                "workload.image: `{}` is not on this node's container engine (pull or load it first)",
                body.image.unwrap_or_default()
            ),
            Err(e) => Err(e.into()),
        }
    }
}

impl Runtime for ContainerRuntime {
    fn kind(&self) -> &'static str {
        "container"
    }

    fn start(&self, spec: StartSpec) -> BoxFuture<'_, anyhow::Result<Handle>> {
        Box::pin(async move {
            let id = self.create(&spec).await?;
            if let Err(e) = self.docker.start_container(&id, None).await {
                let _ = self
                    .docker
                    .remove_container(
                        &id,
                        Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                    )
                    .await;
                anyhow::bail!("cannot start the container: {e}");
            }
            Ok(Handle::Container { container_id: id })
        })
    }

    fn probe<'a>(&'a self, handle: &'a Handle) -> BoxFuture<'a, Probe> {
        Box::pin(async move {
            let Handle::Container { container_id } = handle else {
                return Probe::Gone;
            };
            match self.docker.inspect_container(container_id, None).await {
                Err(e) if is_not_found(&e) => Probe::Gone,
                Err(e) => Probe::Unknown(e.to_string()),
                Ok(c) => {
                    let state = c.state.unwrap_or_default();
                    match state.status {
                        Some(ContainerStateStatusEnum::RUNNING)
                        | Some(ContainerStateStatusEnum::PAUSED)
                        | Some(ContainerStateStatusEnum::RESTARTING)
                        | Some(ContainerStateStatusEnum::STOPPING) => Probe::Running {
                            host: None,
                            ready: false,
                        },
                        Some(ContainerStateStatusEnum::EXITED)
                        | Some(ContainerStateStatusEnum::DEAD) => {
                            Probe::Exited(state.exit_code.map(|c| c as i32))
                        }
                        Some(ContainerStateStatusEnum::REMOVING) => Probe::Exited(None),
                        _ => Probe::Pending,
                    }
                }
            }
        })
    }

    fn stop<'a>(
        &'a self,
        handle: &'a Handle,
        grace: Duration,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let Handle::Container { container_id } = handle else {
                anyhow::bail!("not a container handle");
            };
            // The engine sends SIGTERM, then SIGKILL after `t` seconds.
            let opts = StopContainerOptionsBuilder::new()
                .t(grace.as_secs().clamp(1, 600) as i32)
                .build();
            match self.docker.stop_container(container_id, Some(opts)).await {
                Err(e) if !is_not_found(&e) => Err(e.into()),
                _ => Ok(()),
            }
        })
    }

    fn output_tail<'a>(&'a self, handle: &'a Handle, _work_dir: &'a Path) -> BoxFuture<'a, String> {
        Box::pin(async move {
            let Handle::Container { container_id } = handle else {
                return String::new();
            };
            let opts = LogsOptionsBuilder::new()
                .stdout(true)
                .stderr(true)
                .tail("50")
                .build();
            let mut logs = self.docker.logs(container_id, Some(opts));
            let mut out = Vec::new();
            while let Some(Ok(chunk)) = logs.next().await {
                out.extend_from_slice(&chunk.into_bytes());
            }
            let start = out.len().saturating_sub(2048);
            String::from_utf8_lossy(&out[start..]).into_owned()
        })
    }

    fn cleanup<'a>(&'a self, handle: &'a Handle, _id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Handle::Container { container_id } = handle {
                let _ = self
                    .docker
                    .remove_container(
                        container_id,
                        Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                    )
                    .await;
            }
        })
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_secs(1)
    }
}
