//! Samples the capacity and voucher gauges from the live fleet and the
//! database every few seconds. `/metrics` only renders what was sampled, so
//! a scrape (and the liveness probe on it) never waits on PostgreSQL.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use uuid::Uuid;

use crate::{app::App, fleet::LiveNode};

/// Seconds between samples: a booking shows in the slice gauges within this.
const EVERY_S: u64 = 5;

pub fn spawn(app: App) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(EVERY_S));
        loop {
            tick.tick().await;
            if let Err(e) = sample(&app).await {
                tracing::debug!(error = %e, "capacity and voucher gauges not refreshed");
            }
        }
    });
}

/// One sample of the slice and voucher gauges.
pub async fn sample(app: &App) -> sqlx::Result<()> {
    let reserved = app.store.slices_reserved_now().await?;
    let slices = app.fleet.with_nodes(|nodes| slice_counts(nodes, &reserved));
    app.metrics.set_slices(&slices);
    let balances = app.store.voucher_balances_by_school().await?;
    app.metrics.set_voucher_balances(&balances);
    Ok(())
}

/// (tier, vendor, free, reserved) per tier and vendor. Every device's
/// reservations count as reserved; its free slices count only where
/// placement could use them now: the node connected, approved and not
/// cordoned, the device healthy.
///
/// The reserved rows are summed per device first: looking each device up
/// in the whole list was devices × reserved devices, seconds of a runtime
/// thread every sample at 20,000 nodes with a city's bell booked.
pub fn slice_counts<'a>(
    nodes: impl IntoIterator<Item = &'a LiveNode>,
    reserved: &[(Uuid, i32, i64)],
) -> Vec<(String, String, i64, i64)> {
    let mut by_device: HashMap<(Uuid, i32), i64> = HashMap::with_capacity(reserved.len());
    for &(node, idx, k) in reserved {
        *by_device.entry((node, idx)).or_default() += k;
    }
    let mut sums: BTreeMap<(&str, &str), (i64, i64)> = BTreeMap::new();
    for n in nodes {
        let usable = n.is_connected() && n.approved && !n.cordoned;
        for d in &n.devices {
            let taken = by_device.get(&(n.id, d.idx)).copied().unwrap_or(0);
            let free = if usable && d.healthy {
                (i64::from(d.max_slices) - taken).max(0)
            } else {
                0
            };
            let e = sums.entry((&n.tier, &d.vendor)).or_default();
            e.0 += free;
            e.1 += taken;
        }
    }
    sums.into_iter()
        .map(|((tier, vendor), (free, taken))| (tier.into(), vendor.into(), free, taken))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::nodes::{DeviceRow, NodeRow};

    fn node(tier: &str, state: &str, cordoned: bool, devices: &[(&str, bool)]) -> LiveNode {
        LiveNode::from_row(
            NodeRow {
                id: Uuid::new_v4(),
                site_id: Uuid::new_v4(),
                name: "n".into(),
                tier: tier.into(),
                state: state.into(),
                cordoned,
                approved: true,
                cpu_millis: 8000,
                memory_mib: 16384,
                runtimes: vec!["process".into()],
                warnings: vec![],
                agent_version: "test".into(),
                last_seen: chrono::Utc::now(),
            },
            devices
                .iter()
                .enumerate()
                .map(|(i, (vendor, healthy))| DeviceRow {
                    idx: i as i32,
                    vendor: vendor.to_string(),
                    model: "m".into(),
                    uuid: format!("d{i}"),
                    memory_mib: 24576,
                    memory_used_mib: 0,
                    utilization_percent: 0,
                    healthy: *healthy,
                    max_slices: 4,
                    isolation: "none".into(),
                })
                .collect(),
        )
    }

    #[test]
    fn free_slices_count_only_usable_devices_and_reserved_count_all() {
        let a = node(
            "edge",
            "connected",
            false,
            &[("nvidia", true), ("nvidia", false)],
        );
        let b = node("edge", "connected", true, &[("nvidia", true)]);
        let c = node("cloud", "disconnected", false, &[("huawei", true)]);
        let reserved = [(a.id, 0, 3), (a.id, 1, 1), (c.id, 0, 2)];
        let rows = slice_counts(&[a, b, c], &reserved);
        assert_eq!(
            rows,
            vec![
                ("cloud".into(), "huawei".into(), 0, 2),
                // a's healthy device: 4 - 3 free; its unhealthy one and the
                // cordoned b give none.
                ("edge".into(), "nvidia".into(), 1, 4),
            ]
        );
    }
}
