//! JSON shapes shared by lessons and jobs: the seat spec, the workload and
//! datasets, and the region's way of writing times. Request numbers are
//! signed and default to zero, so that a negative or missing value reaches
//! the domain and is reported there by name.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::spec::{self, RawDataset, RawGpu, RawSeat};

/// RFC 3339 in the region's time zone, with its offset.
pub fn rfc3339(t: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    t.with_timezone(&tz)
        .to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// An accelerator share per seat.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"vendors": ["nvidia"], "model": "T4", "memory_mib": 4096, "compute_percent": 25, "count": 1, "min_isolation": "soft"}))]
pub struct GpuSpec {
    /// Accepted vendors: nvidia, huawei, hygon, metax, moorethreads, cambricon, iluvatar.
    #[serde(default)]
    pub vendors: Vec<String>,
    /// A model substring, e.g. `T4`; empty accepts any.
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub memory_mib: i64,
    /// Share of one device's compute, 1–100.
    #[serde(default)]
    pub compute_percent: i64,
    /// Devices per seat (0 means 1).
    #[serde(default)]
    pub count: i64,
    /// Weakest acceptable isolation: none, soft or hard.
    #[serde(default)]
    pub min_isolation: String,
}

/// What one seat needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"cpu_millis": 500, "memory_mib": 1024, "runtime": "process", "gpu": null}))]
pub struct SeatSpec {
    /// CPU in thousandths of a core.
    #[serde(default)]
    pub cpu_millis: i64,
    #[serde(default)]
    pub memory_mib: i64,
    #[schema(nullable)]
    #[serde(default)]
    pub gpu: Option<GpuSpec>,
    /// process, container, kubernetes or slurm (empty means process).
    #[serde(default)]
    pub runtime: String,
}

/// What runs in each seat. `$(PORT)` in args and env is the seat's port.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"command": "jupyter", "args": ["lab", "--port", "$(PORT)"], "env": {"COURSE": "ai-101"}, "image": ""}))]
pub struct Workload {
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Container image, for the container runtime.
    #[serde(default)]
    pub image: String,
}

/// Data staged near the seats before the lesson starts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "mnist", "url": "https://data.example.edu/mnist.tar", "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "size_bytes": 52428800}))]
pub struct Dataset {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub sha256: String,
    #[serde(default)]
    pub size_bytes: i64,
}

impl SeatSpec {
    pub fn raw(&self) -> RawSeat {
        RawSeat {
            cpu_millis: self.cpu_millis,
            memory_mib: self.memory_mib,
            runtime: self.runtime.clone(),
            gpu: self.gpu.as_ref().map(|g| RawGpu {
                vendors: g.vendors.clone(),
                model: g.model.clone(),
                memory_mib: g.memory_mib,
                compute_percent: g.compute_percent,
                count: g.count,
                min_isolation: g.min_isolation.clone(),
            }),
        }
    }

    pub fn of(s: &spec::SeatSpec) -> Self {
        Self {
            cpu_millis: s.cpu_millis as i64,
            memory_mib: s.memory_mib as i64,
            runtime: s.runtime.clone(),
            gpu: s.gpu.as_ref().map(|g| GpuSpec {
                vendors: g.vendors.clone(),
                model: g.model.clone().unwrap_or_default(),
                memory_mib: g.memory_mib as i64,
                compute_percent: g.compute_percent as i64,
                count: g.count as i64,
                min_isolation: g.min_isolation.clone(),
            }),
        }
    }
}

impl Workload {
    pub fn raw(&self) -> spec::Workload {
        spec::Workload {
            command: self.command.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            image: self.image.clone(),
        }
    }

    pub fn of(w: &spec::Workload) -> Self {
        Self {
            command: w.command.clone(),
            args: w.args.clone(),
            env: w.env.clone(),
            image: w.image.clone(),
        }
    }
}

impl Dataset {
    pub fn raw(&self) -> RawDataset {
        RawDataset {
            name: self.name.clone(),
            url: self.url.clone(),
            sha256: self.sha256.clone(),
            size_bytes: self.size_bytes,
        }
    }

    pub fn of(d: &spec::Dataset) -> Self {
        Self {
            name: d.name.clone(),
            url: d.url.clone(),
            sha256: d.sha256.clone(),
            size_bytes: d.size_bytes as i64,
        }
    }
}
