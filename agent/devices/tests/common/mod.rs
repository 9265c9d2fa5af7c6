//! Helpers shared by the fixture tests.

use classgrid_devices::Parsed;

/// A recorded tool output from `fixtures/`.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// (index, model, used MiB, total MiB, healthy, bus id) of every device.
pub fn rows(p: &Parsed) -> Vec<(u32, &str, u64, u64, bool, Option<&str>)> {
    p.devices
        .iter()
        .map(|d| {
            (
                d.index,
                d.model.as_str(),
                d.memory_used_mib,
                d.memory_total_mib,
                d.healthy,
                d.bus_id.as_deref(),
            )
        })
        .collect()
}
