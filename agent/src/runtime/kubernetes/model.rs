//! Pure translations between classgrid and the Kubernetes API's JSON: a
//! NodeList into capacity, an assignment into a Pod, a Pod into a probe.

use classgrid_proto::v1 as pb;
use serde_json::{Value, json};

use crate::runtime::{Probe, StartSpec};

pub const LABEL_MANAGED: &str = "app.kubernetes.io/managed-by";
pub const LABEL_ASSIGNMENT: &str = "classgrid.io/assignment-id";
/// HAMi's resource names for a fraction of an NVIDIA GPU.
pub const HAMI_GPU: &str = "nvidia.com/gpu";
pub const HAMI_GPUMEM: &str = "nvidia.com/gpumem";
pub const HAMI_GPUCORES: &str = "nvidia.com/gpucores";
/// HAMi's device registry on each node (device-plugin writes it).
pub const HAMI_REGISTER: &str = "hami.io/node-nvidia-register";

/// Extended resources of other vendors' device plugins, counted as whole
/// devices: (resource name, classgrid vendor).
pub const VENDOR_RESOURCES: &[(&str, &str)] = &[
    ("huawei.com/Ascend910", "ascend"),
    ("huawei.com/Ascend310P", "ascend"),
    ("hygon.com/dcunum", "hygon"),
    ("metax-tech.com/gpu", "metax"),
    ("mthreads.com/vgpu", "mthreads"),
    ("cambricon.com/mlu", "cambricon"),
    ("iluvatar.ai/vgpu", "iluvatar"),
];

/// A Kubernetes quantity ("3800m", "16Gi", "2", "1.5", "129024Ki") in base
/// units; `None` when it is not one.
pub fn quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        _ => return None,
    };
    Some(n * mult)
}

/// One GPU HAMi registered on a node.
#[derive(Debug, Clone, PartialEq)]
pub struct HamiDevice {
    pub uuid: String,
    pub split: u32,
    pub memory_mib: u64,
    pub cores: u32,
    pub model: String,
    pub healthy: bool,
}

/// Parses HAMi's register annotation: `UUID,split,devmem,devcore,type,numa,healthy`
/// entries separated by `:` (HAMi's documented protocol), or the JSON list
/// newer HAMi versions write.
pub fn parse_hami(annotation: &str) -> Vec<HamiDevice> {
    let a = annotation.trim();
    if a.starts_with('[') {
        let Ok(Value::Array(items)) = serde_json::from_str::<Value>(a) else {
            return Vec::new();
        };
        return items
            .iter()
            .filter_map(|d| {
                Some(HamiDevice {
                    uuid: d["id"].as_str()?.to_string(),
                    split: d["count"].as_u64().unwrap_or(1) as u32,
                    memory_mib: d["devmem"].as_u64()?,
                    cores: d["devcore"].as_u64().unwrap_or(100) as u32,
                    model: d["type"].as_str().unwrap_or("").to_string(),
                    healthy: d["health"].as_bool().unwrap_or(true),
                })
            })
            .collect();
    }
    a.split(':')
        .filter(|e| !e.trim().is_empty())
        .filter_map(|e| {
            let f: Vec<&str> = e.split(',').collect();
            if f.len() < 7 {
                return None;
            }
            Some(HamiDevice {
                uuid: f[0].to_string(),
                split: f[1].parse().ok()?,
                memory_mib: f[2].parse().ok()?,
                cores: f[3].parse().ok()?,
                model: f[4].to_string(),
                healthy: f[6] == "true",
            })
        })
        .collect()
}

/// Where a capacity slot's device lives, so that a seat on that slot goes to
/// that node (and, with HAMi, that GPU).
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub node: String,
    pub vendor: String,
    pub uuid: Option<String>,
    /// The extended resource a seat requests for it.
    pub resource: String,
}

fn node_ready(n: &Value) -> bool {
    let schedulable = !n["spec"]["unschedulable"].as_bool().unwrap_or(false);
    let ready = n["status"]["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .unwrap_or(false);
    schedulable && ready
}

/// A NodeList as one classgrid node: the sum of ready nodes' allocatable CPU
/// and memory, and their devices (HAMi's registry for NVIDIA, extended
/// resources for other vendors). Also the slot map and what was skipped.
pub fn capacity(nodes: &Value) -> (pb::NodeCapacity, Vec<Slot>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut cpu_millis = 0f64;
    let mut memory_mib = 0f64;
    let mut devices = Vec::new();
    let mut slots = Vec::new();
    let items = nodes["items"].as_array().cloned().unwrap_or_default();
    for n in &items {
        let name = n["metadata"]["name"].as_str().unwrap_or("?").to_string();
        if !node_ready(n) {
            warnings.push(format!(
                "kubernetes: node {name} is not ready or not schedulable; not offered"
            ));
            continue;
        }
        let alloc = &n["status"]["allocatable"];
        cpu_millis += alloc["cpu"].as_str().and_then(quantity).unwrap_or(0.0) * 1000.0;
        memory_mib +=
            alloc["memory"].as_str().and_then(quantity).unwrap_or(0.0) / (1024.0 * 1024.0);
        let mut push = |vendor: &str,
                        model: String,
                        uuid: String,
                        mem: u64,
                        healthy: bool,
                        max_slices: i32,
                        resource: &str| {
            devices.push(pb::DeviceInfo {
                index: devices.len() as i32,
                vendor: vendor.into(),
                model: model.chars().take(128).collect(),
                uuid: uuid.chars().take(128).collect(),
                memory_mib: mem.min(1 << 20) as i64,
                memory_used_mib: 0,
                utilization_percent: 0,
                healthy,
                max_slices,
                // HAMi-core limits memory and cores in the container: soft.
                isolation: if max_slices > 1 {
                    pb::Isolation::Soft
                } else {
                    pb::Isolation::Hard
                } as i32,
            });
            slots.push(Slot {
                node: name.clone(),
                vendor: vendor.into(),
                uuid: (!uuid.is_empty()).then_some(uuid),
                resource: resource.into(),
            });
        };
        let hami = n["metadata"]["annotations"][HAMI_REGISTER]
            .as_str()
            .map(parse_hami)
            .unwrap_or_default();
        if !hami.is_empty() {
            for d in hami {
                push(
                    "nvidia",
                    d.model,
                    d.uuid,
                    d.memory_mib,
                    d.healthy,
                    d.split.clamp(1, 64) as i32,
                    HAMI_GPU,
                );
            }
        } else if let Some(count) = alloc[HAMI_GPU]
            .as_str()
            .and_then(quantity)
            .filter(|c| *c >= 1.0)
        {
            // The plain NVIDIA device plugin: whole GPUs; their memory comes
            // from GPU feature discovery's label when it is there.
            let labels = &n["metadata"]["labels"];
            match labels["nvidia.com/gpu.memory"].as_str().and_then(|m| m.parse::<u64>().ok()) {
                Some(mem) => {
                    let model = labels["nvidia.com/gpu.product"].as_str().unwrap_or("NVIDIA GPU").to_string();
                    for _ in 0..count as u32 {
                        push("nvidia", model.clone(), String::new(), mem, true, 1, HAMI_GPU);
                    }
                }
                None => warnings.push(format!(
                    "kubernetes: node {name} has {count} nvidia.com/gpu without a memory size (no HAMi registry, no nvidia.com/gpu.memory label); not offered"
                )),
            }
        }
        for (resource, vendor) in VENDOR_RESOURCES {
            if let Some(count) = alloc[*resource]
                .as_str()
                .and_then(quantity)
                .filter(|c| *c >= 1.0)
            {
                warnings.push(format!(
                    "kubernetes: node {name} has {count} {vendor} device(s) ({resource}) whose memory the API does not report; not offered"
                ));
            }
        }
    }
    if items.is_empty() {
        warnings.push("kubernetes: the cluster lists no node".into());
    }
    (
        pb::NodeCapacity {
            cpu_millis: cpu_millis.clamp(1.0, 1_024_000.0) as i32,
            memory_mib: memory_mib.clamp(1.0, 16.0 * 1024.0 * 1024.0) as i64,
            devices,
        },
        slots,
        warnings,
    )
}

/// A pod name for an assignment: a DNS-1123 label.
pub fn pod_name(assignment_id: &str) -> anyhow::Result<String> {
    let ok = !assignment_id.is_empty()
        && assignment_id.len() <= 50
        && assignment_id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        anyhow::bail!(
            "assignment_id: `{assignment_id}` cannot name a pod (lower-case letters, digits and '-', at most 50)"
        );
    }
    Ok(format!("classgrid-{assignment_id}"))
}

/// The Pod for one seat: its command, env and port, CPU and memory requests
/// equal to limits, HAMi's fraction resources for GPU slices, pinned to the
/// node (and GPU) of the slot it was placed on, and a deadline at its end.
pub fn pod(
    spec: &StartSpec,
    namespace: &str,
    slots: &[Slot],
    now_ms: i64,
) -> anyhow::Result<Value> {
    let a = &spec.assign;
    let w = spec.workload()?;
    if w.image.trim().is_empty() {
        anyhow::bail!("workload.image: is required for the kubernetes runtime");
    }
    let name = pod_name(&a.assignment_id)?;
    let mut resources = serde_json::Map::new();
    if a.cpu_millis > 0 {
        resources.insert("cpu".into(), json!(format!("{}m", a.cpu_millis)));
    }
    if a.memory_mib > 0 {
        resources.insert("memory".into(), json!(format!("{}Mi", a.memory_mib)));
    }
    let mut node = None;
    let mut gpu_uuids = Vec::new();
    if !spec.slices.is_empty() {
        let mut count = 0u32;
        let (mut mem, mut cores) = (0u64, 0u32);
        let mut other: Option<&str> = None;
        for s in &spec.slices {
            let slot = slots.get(s.slot).ok_or_else(|| {
                anyhow::anyhow!("device slot {} does not exist in this cluster", s.slot)
            })?;
            if node.is_some_and(|n: &str| n != slot.node) {
                anyhow::bail!(
                    "gpus: a pod's devices must be on one node, not {} and {}",
                    node.unwrap_or(""),
                    slot.node
                );
            }
            node = Some(slot.node.as_str());
            count += 1;
            mem = mem.max(s.memory_mib);
            cores = cores.max(s.compute_percent);
            if slot.resource != HAMI_GPU {
                other = Some(slot.resource.as_str());
            }
            gpu_uuids.extend(slot.uuid.clone());
        }
        match other {
            Some(r) => {
                resources.insert(r.into(), json!(count.to_string()));
            }
            None => {
                resources.insert(HAMI_GPU.into(), json!(count.to_string()));
                if mem > 0 {
                    resources.insert(HAMI_GPUMEM.into(), json!(mem.to_string()));
                }
                if cores > 0 && cores < 100 {
                    resources.insert(HAMI_GPUCORES.into(), json!(cores.to_string()));
                }
            }
        }
    }
    let expand = |s: &String| crate::runtime::process::expand(s, &spec.env);
    let mut container = json!({
        "name": "seat",
        "image": w.image,
        "env": spec.env.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
        "ports": [{"name": "seat", "containerPort": spec.port, "protocol": "TCP"}],
        "resources": {"requests": resources.clone(), "limits": resources},
        "readinessProbe": {"tcpSocket": {"port": spec.port}, "periodSeconds": 2},
    });
    if !w.command.is_empty() {
        container["command"] = json!([expand(&w.command)]);
    }
    if !w.args.is_empty() {
        container["args"] = json!(w.args.iter().map(expand).collect::<Vec<_>>());
    }
    let deadline = ((a.ends_unix_ms - now_ms).max(0) / 1000 + a.grace_seconds.max(0) as i64).max(1);
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "classgrid.io/generation".into(),
        json!(a.generation.to_string()),
    );
    if !gpu_uuids.is_empty() {
        // HAMi: run on exactly the GPU(s) of the granted slots.
        annotations.insert("nvidia.com/use-gpuuuid".into(), json!(gpu_uuids.join(",")));
    }
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {LABEL_MANAGED: "classgrid", LABEL_ASSIGNMENT: a.assignment_id, "classgrid.io/kind": a.kind},
            "annotations": annotations,
        },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": a.grace_seconds.clamp(1, 600),
            "activeDeadlineSeconds": deadline,
            "containers": [container],
        },
    });
    if let Some(n) = node {
        pod["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": n});
    }
    Ok(pod)
}

/// What a Pod's status says about the seat.
pub fn probe(pod: &Value) -> Probe {
    let status = &pod["status"];
    let ready = status["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .unwrap_or(false);
    let exit = status["containerStatuses"][0]["state"]["terminated"]["exitCode"]
        .as_i64()
        .map(|c| c as i32);
    match status["phase"].as_str().unwrap_or("Pending") {
        "Running" => Probe::Running {
            host: status["podIP"].as_str().map(str::to_string),
            ready,
        },
        "Succeeded" => Probe::Exited(exit.or(Some(0))),
        "Failed" => Probe::Exited(exit),
        _ => Probe::Pending,
    }
}
