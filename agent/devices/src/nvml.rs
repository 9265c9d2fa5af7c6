//! NVIDIA discovery through NVML. `nvml-wrapper` loads libnvidia-ml with
//! dlopen at run time, so this builds and runs on machines without a driver:
//! there, loading fails and discovery falls back to `nvidia-smi` silently.

use crate::nvidia::gpu_sharing;
use crate::{Device, Vendor};
use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;
use std::ffi::OsStr;
use std::path::Path;

pub(crate) enum NvmlOutcome {
    /// Physical GPUs; MIG instances are not enumerated by `nvml-wrapper`.
    Devices(Vec<Device>),
    /// No NVML library on this machine: not an NVIDIA machine, say nothing.
    NotInstalled,
    /// NVML is there but failed; the message names the problem.
    Failed(String),
}

/// The names tried when no path is configured. The unversioned name only
/// exists where the development package is installed, so the `.so.1` that
/// every driver ships comes first.
/// `NVML_DEVICE_MIG_ENABLE` from nvml.h; `nvml-wrapper` does not re-export it.
const NVML_DEVICE_MIG_ENABLE: u32 = 1;

const DEFAULT_LIBS: &[&str] = &["libnvidia-ml.so.1", "libnvidia-ml.so"];

fn load(lib: Option<&Path>) -> Result<Nvml, NvmlError> {
    match lib {
        Some(p) => Nvml::builder().lib_path(p.as_os_str()).init(),
        None => {
            let mut last = NvmlError::LibraryNotFound;
            for name in DEFAULT_LIBS {
                match Nvml::builder().lib_path(OsStr::new(name)).init() {
                    Ok(n) => return Ok(n),
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

pub(crate) fn discover(lib: Option<&Path>) -> NvmlOutcome {
    let nvml = match load(lib) {
        Ok(n) => n,
        Err(NvmlError::LibloadingError(_)) | Err(NvmlError::LibraryNotFound) => {
            return NvmlOutcome::NotInstalled;
        }
        Err(e) => return NvmlOutcome::Failed(format!("NVML failed to initialise: {e}")),
    };
    let count = match nvml.device_count() {
        Ok(c) => c,
        Err(e) => return NvmlOutcome::Failed(format!("NVML could not count GPUs: {e}")),
    };
    let mut devices = Vec::new();
    for i in 0..count {
        let dev = match nvml.device_by_index(i) {
            Ok(d) => d,
            Err(e) => return NvmlOutcome::Failed(format!("NVML could not open GPU {i}: {e}")),
        };
        let name = dev.name().unwrap_or_else(|_| "NVIDIA GPU".to_string());
        let mut d = Device::new(Vendor::Nvidia, name, dev.index().unwrap_or(i));
        d.uuid = dev.uuid().ok();
        d.bus_id = dev.pci_info().ok().map(|p| p.bus_id);
        match dev.memory_info() {
            Ok(m) => {
                d.memory_total_mib = m.total >> 20;
                d.memory_used_mib = m.used >> 20;
            }
            Err(e) => {
                // A GPU whose memory cannot be read is not one to place work on.
                d.healthy = false;
                if matches!(e, NvmlError::GpuLost) {
                    d.model.push_str(" (lost)");
                }
            }
        }
        d.utilization_percent = dev.utilization_rates().ok().map(|u| u.gpu.min(100));
        let mig = dev
            .mig_mode()
            .is_ok_and(|m| m.current == NVML_DEVICE_MIG_ENABLE);
        let major = dev
            .cuda_compute_capability()
            .ok()
            .and_then(|c| u32::try_from(c.major).ok());
        d.sharing = gpu_sharing(mig, major);
        devices.push(d);
    }
    NvmlOutcome::Devices(devices)
}
