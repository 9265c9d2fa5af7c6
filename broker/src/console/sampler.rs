//! Keeps a minute-by-minute history of each device's utilisation and memory
//! from what agents report, so node detail can plot it. Agents report only
//! the present; without this the console could show no history at all.

use std::time::Duration;

use crate::state::App;

/// Seconds between samples; tests shorten it to see a plot at once.
pub const ENV: &str = "CLASSGRID_CONSOLE_SAMPLE_S";

/// Seconds between refreshes of the seat gauges (`classgrid_seats`,
/// `classgrid_seats_failed`): a failure shows in /metrics within this.
const SEAT_GAUGES_S: u64 = 5;

pub fn spawn(app: App) {
    let gauges = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(SEAT_GAUGES_S));
        loop {
            tick.tick().await;
            match gauges.store.open_seat_states().await {
                Ok(rows) => gauges.metrics.set_seat_states(&rows),
                Err(e) => tracing::debug!(error = %e, "seat gauges not refreshed"),
            }
        }
    });
    let every = std::env::var(ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|s| (1..=3600).contains(s))
        .unwrap_or(60);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        loop {
            tick.tick().await;
            let rows: Vec<_> = app
                .fleet
                .nodes()
                .into_iter()
                .filter(|n| n.is_connected())
                .flat_map(|n| {
                    n.devices
                        .iter()
                        .map(move |d| (n.id, d.idx, d.utilization_percent, d.memory_used_mib))
                        .collect::<Vec<_>>()
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            if let Err(e) = app
                .store
                .record_device_samples(&rows, chrono::Duration::days(7))
                .await
            {
                tracing::warn!(error = %e, "recording device samples failed; the utilisation plot has a gap");
            }
        }
    });
}
