//! Slice controls: the environment that confines one seat's process to its
//! slice of a device, and the isolation that this really gives.
//!
//! Variable names, by vendor, as the vendors and the projects around them
//! document them:
//! - NVIDIA: `CUDA_VISIBLE_DEVICES` (UUIDs, as the MPS docs recommend; MIG
//!   instances by `MIG-` UUID), `CUDA_MPS_ACTIVE_THREAD_PERCENTAGE` and
//!   `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT` ("<ordinal>=<size>M", the ordinal
//!   counted after `CUDA_VISIBLE_DEVICES`, hence 0), HAMi-core's
//!   `CUDA_DEVICE_MEMORY_LIMIT_<i>` / `CUDA_DEVICE_SM_LIMIT` with `LD_PRELOAD`.
//! - Ascend: `ASCEND_VISIBLE_DEVICES` and `ASCEND_VNPU_SPECS=<template>` (the
//!   Ascend Docker Runtime creates the vNPU from the template).
//! - Hygon DCU: `HIP_VISIBLE_DEVICES`. MetaX: `MACA_VISIBLE_DEVICES`.
//!   Moore Threads: `MTHREADS_VISIBLE_DEVICES`. Cambricon: `MLU_VISIBLE_DEVICES`.
//!   Iluvatar CoreX: `CUDA_VISIBLE_DEVICES` (CoreX is CUDA-compatible).

use crate::ascend::vnpu_template;
use crate::{Device, Isolation, SharingMode, Vendor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What the node offers for soft sharing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlEnv {
    /// An NVIDIA MPS control daemon is configured and running on the node.
    pub mps_configured: bool,
    /// Path of HAMi-core's `libvgpu.so`; set only when the file exists.
    pub hami_core_lib: Option<PathBuf>,
    /// Ascend vNPU creation is available (Ascend Docker Runtime on a chip in
    /// vNPU mode).
    pub ascend_vnpu: bool,
}

impl ControlEnv {
    /// Builds the environment from the node's configuration, keeping the
    /// HAMi-core path only when the library is really there.
    pub fn probe(
        mps_configured: bool,
        hami_core_lib: Option<&Path>,
        ascend_vnpu: bool,
    ) -> ControlEnv {
        ControlEnv {
            mps_configured,
            hami_core_lib: hami_core_lib.filter(|p| p.is_file()).map(Path::to_path_buf),
            ascend_vnpu,
        }
    }
}

/// The environment for one slice, the mechanism chosen and its isolation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceControls {
    pub env: Vec<(String, String)>,
    pub isolation: Isolation,
    pub mode: SharingMode,
}

/// The strongest isolation the device can give, whatever the node's setup.
pub fn supported_isolation(device: &Device) -> Isolation {
    if device.mig_parent.is_some()
        || device.sharing.contains(&SharingMode::Mig)
        || device.sharing.contains(&SharingMode::Vnpu)
    {
        Isolation::Hard
    } else if device.sharing.contains(&SharingMode::Mps)
        || device.sharing.contains(&SharingMode::HamiCore)
    {
        Isolation::Soft
    } else {
        Isolation::None
    }
}

fn pair(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

/// A request takes the whole device when it asks for all of its memory and
/// all of its compute. A device of unknown size is whole only at 100 %.
fn is_whole(device: &Device, memory_mib: u64, compute_percent: u32) -> bool {
    compute_percent >= 100 && memory_mib >= device.memory_total_mib
}

/// Controls for a slice of `memory_mib` MiB and `compute_percent` % of
/// `device`. Pure: the caller applies the environment.
///
/// Choices, in order: the whole device (or whole MIG instance) is hard
/// isolation; on NVIDIA a part is MPS when a daemon is configured (the
/// driver enforces its limits), else HAMi-core when its library is present,
/// else plain time-slicing with no isolation; on Ascend a part is a vNPU when
/// vNPU is available and a documented template fits, else time-slicing. The
/// other vendors document no per-process limit, so a part is time-slicing.
pub fn slice_controls(
    device: &Device,
    memory_mib: u64,
    compute_percent: u32,
    env: &ControlEnv,
) -> SliceControls {
    let pct = compute_percent.clamp(1, 100);
    let whole = is_whole(device, memory_mib, pct);
    let limit_mib = if device.memory_total_mib > 0 {
        memory_mib.min(device.memory_total_mib)
    } else {
        memory_mib
    };
    match device.vendor {
        Vendor::Nvidia => nvidia(device, whole, limit_mib, pct, env),
        Vendor::Ascend => ascend(device, whole, memory_mib, pct, env),
        other => {
            let var = match other {
                Vendor::Hygon => "HIP_VISIBLE_DEVICES",
                Vendor::Metax => "MACA_VISIBLE_DEVICES",
                Vendor::Mthreads => "MTHREADS_VISIBLE_DEVICES",
                Vendor::Cambricon => "MLU_VISIBLE_DEVICES",
                _ => "CUDA_VISIBLE_DEVICES",
            };
            let env = vec![pair(var, device.index.to_string())];
            if whole {
                SliceControls {
                    env,
                    isolation: Isolation::Hard,
                    mode: SharingMode::Exclusive,
                }
            } else {
                SliceControls {
                    env,
                    isolation: Isolation::None,
                    mode: SharingMode::TimeSlice,
                }
            }
        }
    }
}

fn nvidia(
    device: &Device,
    whole: bool,
    limit_mib: u64,
    pct: u32,
    env: &ControlEnv,
) -> SliceControls {
    let visible = match (&device.uuid, device.mig_parent) {
        (Some(u), _) => u.clone(),
        // CUDA selects MIG instances only by UUID. Without one, show no device
        // at all rather than the whole parent GPU.
        (None, Some(_)) => String::new(),
        (None, None) => device.index.to_string(),
    };
    let mut out = vec![pair("CUDA_VISIBLE_DEVICES", visible)];
    let is_mig = device.mig_parent.is_some();
    if whole {
        let mode = if is_mig {
            SharingMode::Mig
        } else {
            SharingMode::Exclusive
        };
        return SliceControls {
            env: out,
            isolation: Isolation::Hard,
            mode,
        };
    }
    let mps_ok = device.sharing.contains(&SharingMode::Mps);
    if env.mps_configured && mps_ok {
        out.push(pair("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", pct.to_string()));
        out.push(pair(
            "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT",
            format!("0={limit_mib}M"),
        ));
        return SliceControls {
            env: out,
            isolation: Isolation::Soft,
            mode: SharingMode::Mps,
        };
    }
    // HAMi-core shares full GPUs; MIG instances are shared by MPS or not at all.
    if let (Some(lib), false) = (&env.hami_core_lib, is_mig) {
        out.push(pair("LD_PRELOAD", lib.to_string_lossy()));
        out.push(pair("CUDA_DEVICE_MEMORY_LIMIT_0", format!("{limit_mib}m")));
        out.push(pair("CUDA_DEVICE_SM_LIMIT", pct.to_string()));
        return SliceControls {
            env: out,
            isolation: Isolation::Soft,
            mode: SharingMode::HamiCore,
        };
    }
    SliceControls {
        env: out,
        isolation: Isolation::None,
        mode: SharingMode::TimeSlice,
    }
}

fn ascend(
    device: &Device,
    whole: bool,
    memory_mib: u64,
    pct: u32,
    env: &ControlEnv,
) -> SliceControls {
    let mut out = vec![pair("ASCEND_VISIBLE_DEVICES", device.index.to_string())];
    if whole {
        return SliceControls {
            env: out,
            isolation: Isolation::Hard,
            mode: SharingMode::Exclusive,
        };
    }
    if env.ascend_vnpu
        && device.sharing.contains(&SharingMode::Vnpu)
        && let Some(t) = vnpu_template(&device.model, memory_mib, pct)
    {
        out.push(pair("ASCEND_VNPU_SPECS", t.name));
        return SliceControls {
            env: out,
            isolation: Isolation::Hard,
            mode: SharingMode::Vnpu,
        };
    }
    SliceControls {
        env: out,
        isolation: Isolation::None,
        mode: SharingMode::TimeSlice,
    }
}
