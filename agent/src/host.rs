//! The host's real CPU and memory, and its accelerators, as the broker sees them.

use classgrid_devices::{Device, Discovery, Isolation, SharingMode};
use classgrid_proto::v1 as pb;

pub fn cpu_millis() -> i32 {
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (n * 1000).min(1_024_000) as i32
}

pub fn memory_mib() -> i64 {
    let mut s = sysinfo::System::new();
    s.refresh_memory();
    (s.total_memory() / (1024 * 1024)).max(1) as i64
}

/// How many slices a device may carry: fractional sharing needs a sharing
/// mode; a device that only runs whole goes to one seat at a time.
fn max_slices(d: &Device) -> i32 {
    let shares = d.sharing.iter().any(|m| {
        matches!(
            m,
            SharingMode::TimeSlice | SharingMode::Mps | SharingMode::HamiCore | SharingMode::Vnpu
        )
    });
    if shares { 16 } else { 1 }
}

/// `slot` is the device's position in [`schedulable`]: vendor indexes collide
/// across vendors and between a GPU and its MIG instances, slots do not.
pub fn device_info(slot: usize, d: &Device) -> pb::DeviceInfo {
    let iso = classgrid_devices::supported_isolation(d);
    pb::DeviceInfo {
        index: slot as i32,
        vendor: d.vendor.as_str().to_string(),
        model: d.model.chars().take(128).collect(),
        uuid: d
            .uuid
            .clone()
            .unwrap_or_default()
            .chars()
            .take(128)
            .collect(),
        memory_mib: d.memory_total_mib.min(1 << 20) as i64,
        memory_used_mib: d.memory_used_mib.min(d.memory_total_mib).min(1 << 20) as i64,
        utilization_percent: d.utilization_percent.unwrap_or(0).min(100) as i32,
        healthy: d.healthy,
        max_slices: max_slices(d),
        isolation: match iso {
            Isolation::Hard => pb::Isolation::Hard,
            Isolation::Soft => pb::Isolation::Soft,
            Isolation::None => pb::Isolation::None,
        } as i32,
    }
}

/// Devices the broker may schedule: MIG parents are represented by their
/// instances, so only leaves are offered. A GPU in MIG mode (its only sharing
/// mode is `mig`, and it is no instance itself) runs nothing directly, so it
/// is never offered, even when none of its instances could be read.
pub fn schedulable(discovery: &Discovery) -> Vec<&Device> {
    let is_mig_parent = |d: &Device| {
        d.mig_parent.is_none()
            && discovery
                .devices
                .iter()
                .any(|c| c.vendor == d.vendor && c.mig_parent == Some(d.index))
    };
    let mig_mode_only =
        |d: &Device| d.mig_parent.is_none() && d.sharing.as_slice() == [SharingMode::Mig];
    discovery
        .devices
        .iter()
        .filter(|d| !is_mig_parent(d) && !mig_mode_only(d))
        .collect()
}

pub fn capacity(discovery: &Discovery) -> pb::NodeCapacity {
    pb::NodeCapacity {
        cpu_millis: cpu_millis(),
        memory_mib: memory_mib(),
        devices: schedulable(discovery)
            .into_iter()
            .enumerate()
            .map(|(i, d)| device_info(i, d))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use classgrid_devices::Vendor;

    fn gpu(index: u32, sharing: Vec<SharingMode>, mig_parent: Option<u32>) -> Device {
        Device {
            vendor: Vendor::Nvidia,
            model: "NVIDIA H200".into(),
            uuid: None,
            bus_id: None,
            index,
            memory_total_mib: 143_771,
            memory_used_mib: 0,
            utilization_percent: None,
            healthy: true,
            sharing,
            mig_parent,
        }
    }

    fn full() -> Vec<SharingMode> {
        vec![
            SharingMode::Exclusive,
            SharingMode::TimeSlice,
            SharingMode::Mps,
            SharingMode::HamiCore,
        ]
    }

    fn instance() -> Vec<SharingMode> {
        vec![SharingMode::Mig, SharingMode::TimeSlice, SharingMode::Mps]
    }

    fn slots(devices: Vec<Device>) -> Vec<(u32, Option<u32>)> {
        let d = Discovery {
            devices,
            warnings: Vec::new(),
        };
        schedulable(&d)
            .into_iter()
            .map(|d| (d.index, d.mig_parent))
            .collect()
    }

    #[test]
    fn mig_gpu_without_instances_is_not_a_slot() {
        // GPU 0 has MIG on and no instance was read; GPU 1 is a whole GPU.
        let got = slots(vec![
            gpu(0, vec![SharingMode::Mig], None),
            gpu(1, full(), None),
        ]);
        assert_eq!(got, vec![(1, None)]);
    }

    #[test]
    fn mig_gpu_is_offered_as_its_instances_only() {
        let got = slots(vec![
            gpu(0, vec![SharingMode::Mig], None),
            gpu(0, instance(), Some(0)),
            gpu(1, instance(), Some(0)),
            gpu(1, full(), None),
        ]);
        assert_eq!(got, vec![(0, Some(0)), (1, Some(0)), (1, None)]);
    }

    #[test]
    fn only_mig_gpus_leave_nothing_to_offer() {
        let got = slots(vec![
            gpu(0, vec![SharingMode::Mig], None),
            gpu(1, vec![SharingMode::Mig], None),
        ]);
        assert!(got.is_empty());
        let d = Discovery {
            devices: vec![gpu(0, vec![SharingMode::Mig], None)],
            warnings: Vec::new(),
        };
        assert!(capacity(&d).devices.is_empty());
    }
}
