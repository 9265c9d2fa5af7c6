//! The edge's `/metrics`, on its content server (Prometheus's classic text
//! format): the link to the broker, probe RTT quantiles over the site's
//! nodes, the cache, staging progress with the time it still needs, the
//! agents its site relay carries, and the site's seats as last heard from
//! the broker. Every value is read at scrape
//! time from the parts that do the work, so none can drift from them.

use std::sync::atomic::AtomicU64;

use axum::{Router, extract::State, response::IntoResponse, routing::get};
use prometheus_client::{
    encoding::text::encode,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::sync::watch;

use crate::{
    autonomy::Seats,
    cache::stage::{Report, Stager},
    probe::{Measured, Table},
    relay::{Relayed, Upstream},
};

#[derive(Clone)]
pub struct Sources {
    pub stager: Stager,
    pub table: Table,
    /// The link's current session; None while the broker is unreachable.
    pub link: watch::Receiver<Option<Upstream>>,
    pub seats: Seats,
    /// Agent connections the site relay carries now (0 without a relay).
    pub relayed: Relayed,
}

pub fn router(s: Sources) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(s)
}

async fn metrics(State(s): State<Sources>) -> impl IntoResponse {
    let report = s.stager.report().await;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    // A seat list the edge cannot read shows as no series, not as 0 seats.
    let seats = s
        .seats
        .current(now_ms)
        .await
        .ok()
        .map(|v| v.into_iter().map(|seat| seat.state).collect::<Vec<_>>());
    let link_up = s.link.borrow().is_some();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            classgrid_common::exposition::CONTENT_TYPE,
        )],
        render(
            link_up,
            &s.table.snapshot(),
            &report,
            seats.as_deref(),
            s.relayed.now(),
        ),
    )
}

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

/// The `q`-quantile of `sorted` by the nearest rank.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The exposition for one scrape.
pub fn render(
    link_up: bool,
    rtt: &[Measured],
    st: &Report,
    seats: Option<&[String]>,
    relayed: usize,
) -> String {
    let mut r = Registry::with_prefix("classgrid_edge");
    let up = Gauge::<i64>::default();
    up.set(i64::from(link_up));
    r.register(
        "link_up",
        "1 while the edge has a session with the broker",
        up,
    );

    // Quantiles over the nodes' median RTTs: a summary of the site's view
    // with a bounded label, where per-node series would grow with the fleet.
    // The label is not `quantile`: Prometheus reserves that for summaries,
    // and `promtool check metrics` flags it on a gauge.
    let mut medians: Vec<f64> = rtt.iter().map(|m| m.median_ms / 1000.0).collect();
    medians.sort_by(f64::total_cmp);
    let rtt_q = Family::<Labels, FloatGauge>::default();
    if !medians.is_empty() {
        for q in ["0.5", "0.9", "0.99"] {
            rtt_q
                .get_or_create(&label("node_quantile", q))
                .set(quantile(&medians, q.parse().unwrap_or(0.5)));
        }
    }
    r.register(
        "probe_rtt_seconds",
        "Quantiles over the site's nodes of each node's median probe round-trip time",
        rtt_q,
    );
    let targets = Gauge::<i64>::default();
    targets.set(rtt.len() as i64);
    r.register(
        "probe_nodes_measured",
        "Nodes with a measured probe RTT",
        targets,
    );

    let used = Gauge::<i64>::default();
    used.set(st.cache_used_bytes as i64);
    r.register("cache_used_bytes", "Bytes held in the content cache", used);
    let limit = Gauge::<i64>::default();
    limit.set(st.cache_limit_bytes as i64);
    r.register("cache_limit_bytes", "The content cache's size limit", limit);

    let items = Family::<Labels, Gauge>::default();
    for state in ["queued", "downloading", "cached", "failed"] {
        items
            .get_or_create(&label("state", state))
            .set(st.items.iter().filter(|i| i.state == state).count() as i64);
    }
    r.register("staging_items", "Staging orders by state", items);
    let remaining: u64 = st
        .items
        .iter()
        .filter(|i| i.state != "cached")
        .map(|i| i.size_bytes.saturating_sub(i.bytes_done))
        .sum();
    let left = Gauge::<i64>::default();
    left.set(remaining as i64);
    r.register(
        "staging_remaining_bytes",
        "Bytes still to download for staging orders not yet cached",
        left,
    );
    let done = Gauge::<i64>::default();
    done.set(st.items.iter().map(|i| i.bytes_done).sum::<u64>() as i64);
    r.register(
        "staging_done_bytes",
        "Bytes downloaded so far for the current staging orders",
        done,
    );
    let bps = FloatGauge::default();
    bps.set(st.bytes_per_sec);
    r.register(
        "staging_rate_bytes_per_second",
        "Measured origin throughput, or the configured link rate before any download",
        bps,
    );
    let eta = FloatGauge::default();
    eta.set(if st.bytes_per_sec > 0.0 {
        remaining as f64 / st.bytes_per_sec
    } else {
        0.0
    });
    r.register(
        "staging_time_left_seconds",
        "Seconds the remaining staging bytes need at the current rate",
        eta,
    );

    let relayed_agents = Gauge::<i64>::default();
    relayed_agents.set(relayed as i64);
    r.register(
        "relayed_agents",
        "Agent connections the site relay carries to the broker now",
        relayed_agents,
    );

    if let Some(seats) = seats {
        let by_state = Family::<Labels, Gauge>::default();
        for s in seats {
            by_state.get_or_create(&label("state", s)).inc();
        }
        r.register(
            "seats",
            "The site's seats not yet over, by state, as last heard from the broker",
            by_state,
        );
    }
    let mut out = String::new();
    let _ = encode(&mut out, &r);
    classgrid_common::exposition::to_text(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::stage::Progress;

    fn measured(ms: f64) -> Measured {
        Measured {
            node_id: ms.to_string(),
            name: ms.to_string(),
            median_ms: ms,
            variance_ms2: 0.0,
            samples: 5,
        }
    }

    #[test]
    fn link_rtt_quantiles_staging_and_seats() {
        let rtt: Vec<Measured> = (1..=10).map(|i| measured(f64::from(i))).collect();
        let report = Report {
            items: vec![Progress {
                sha256: "a".into(),
                name: "data".into(),
                state: "downloading",
                bytes_done: 250,
                size_bytes: 1250,
                message: String::new(),
            }],
            bytes_per_sec: 100.0,
            measured: true,
            cache_used_bytes: 4096,
            cache_limit_bytes: 8192,
        };
        let seats = vec!["running".to_string(), "running".to_string()];
        let text = render(true, &rtt, &report, Some(&seats), 3);
        for want in [
            "classgrid_edge_link_up 1\n",
            "classgrid_edge_probe_rtt_seconds{node_quantile=\"0.5\"} 0.005\n",
            "classgrid_edge_probe_rtt_seconds{node_quantile=\"0.9\"} 0.009\n",
            "classgrid_edge_staging_remaining_bytes 1000\n",
            "classgrid_edge_staging_time_left_seconds 10.0\n",
            "classgrid_edge_staging_items{state=\"downloading\"} 1\n",
            "classgrid_edge_cache_used_bytes 4096\n",
            "classgrid_edge_seats{state=\"running\"} 2\n",
            "classgrid_edge_relayed_agents 3\n",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }
}
