//! The agent's `/metrics` (Prometheus's classic text format): its
//! assignments by state, the final reports not yet delivered to the
//! broker, the seats restarted in place, and each device's memory and
//! utilisation as last discovered.
//!
//! Off unless `classgrid-agent run --metrics-listen ADDR` is given. Every
//! value is read from the supervisor and the capacity at scrape time, so
//! nothing here can drift from what the agent reports to the broker.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
};

use axum::{Router, extract::State, response::IntoResponse, routing::get};
use classgrid_proto::v1::{AssignmentState, NodeCapacity};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{connect::Capacity, supervisor::Supervisor};

/// What a scrape reads. `run` sets it once it has built them; `classgrid
/// up`, which runs several agents in one process, serves no agent metrics.
struct Sources {
    sup: Arc<Supervisor>,
    capacity: Arc<Capacity>,
}

static SOURCES: OnceLock<Sources> = OnceLock::new();

/// Called by `run` once the supervisor and the capacity exist; before
/// that, a scrape answers 503.
pub fn register(sup: Arc<Supervisor>, capacity: Arc<Capacity>) {
    let _ = SOURCES.set(Sources { sup, capacity });
}

/// Serves `/metrics` on `addr`; fails at once when the address is taken.
pub async fn serve(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new().route("/metrics", get(metrics)).with_state(());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}

async fn metrics(State(()): State<()>) -> impl IntoResponse {
    let Some(s) = SOURCES.get() else {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::CONTENT_TYPE, "text/plain")],
            "the agent is starting\n".to_string(),
        );
    };
    let states: Vec<AssignmentState> = s
        .sup
        .statuses()
        .iter()
        .map(|st| AssignmentState::try_from(st.state).unwrap_or_default())
        .collect();
    let backlog = s.sup.final_reports().len();
    let restarts = s.sup.seat_restarts();
    let cap = s
        .capacity
        .current
        .lock()
        .map(|g| g.0.clone())
        .unwrap_or_default();
    (
        axum::http::StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            classgrid_common::exposition::CONTENT_TYPE,
        )],
        render(&states, backlog, restarts, &cap),
    )
}

/// The states an assignment on an agent can be in, each always with a
/// series, so a query for failed assignments has one before the first.
const STATES: &[(AssignmentState, &str)] = &[
    (AssignmentState::Starting, "starting"),
    (AssignmentState::Running, "running"),
    (AssignmentState::Exited, "exited"),
    (AssignmentState::Failed, "failed"),
    (AssignmentState::Stopped, "stopped"),
];

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The exposition for one scrape.
pub fn render(
    states: &[AssignmentState],
    backlog: usize,
    restarts: u64,
    cap: &NodeCapacity,
) -> String {
    let mut r = Registry::with_prefix("classgrid_agent");
    let assignments = Family::<Labels, Gauge>::default();
    for (st, name) in STATES {
        let n = states.iter().filter(|s| *s == st).count();
        assignments
            .get_or_create(&labels(&[("state", name)]))
            .set(n as i64);
    }
    r.register(
        "assignments",
        "Seats and jobs this agent holds, by state",
        assignments,
    );
    let pending = Gauge::<i64>::default();
    pending.set(backlog as i64);
    r.register(
        "report_backlog",
        "Final assignment reports not yet delivered to the broker",
        pending,
    );
    // A counter rebuilt at each scrape from the supervisor's running total:
    // it only grows while the agent runs, and restarts from 0 with it, as
    // Prometheus's rate() expects of a counter.
    let seat_restarts = Counter::<u64>::default();
    seat_restarts.inc_by(restarts);
    r.register(
        "seat_restarts",
        "Seats started again in place after their process ended",
        seat_restarts,
    );
    let mem_total = Family::<Labels, Gauge>::default();
    let mem_used = Family::<Labels, Gauge>::default();
    let util = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let healthy = Family::<Labels, Gauge>::default();
    for d in &cap.devices {
        // A node has a handful of devices: index and vendor are bounded.
        let l = labels(&[("device", &d.index.to_string()), ("vendor", &d.vendor)]);
        mem_total.get_or_create(&l).set(d.memory_mib * 1024 * 1024);
        mem_used
            .get_or_create(&l)
            .set(d.memory_used_mib * 1024 * 1024);
        util.get_or_create(&l)
            .set(f64::from(d.utilization_percent) / 100.0);
        healthy.get_or_create(&l).set(i64::from(d.healthy));
    }
    r.register(
        "device_memory_bytes",
        "Each accelerator's memory, as the vendor tool reports it",
        mem_total,
    );
    r.register(
        "device_memory_used_bytes",
        "Each accelerator's memory in use, as last discovered",
        mem_used,
    );
    r.register(
        "device_utilization_ratio",
        "Each accelerator's compute utilisation (0 to 1), as last discovered",
        util,
    );
    r.register(
        "device_healthy",
        "1 when the vendor tool reports the accelerator healthy",
        healthy,
    );
    let mut out = String::new();
    let _ = encode(&mut out, &r);
    classgrid_common::exposition::to_text(&out)
}

#[cfg(test)]
mod tests {
    use classgrid_proto::v1::{AssignmentState, DeviceInfo, NodeCapacity};

    #[test]
    fn assignments_by_state_backlog_and_devices() {
        let cap = NodeCapacity {
            devices: vec![DeviceInfo {
                index: 0,
                vendor: "nvidia".into(),
                memory_mib: 24576,
                memory_used_mib: 1024,
                utilization_percent: 37,
                healthy: true,
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = super::render(
            &[AssignmentState::Running, AssignmentState::Running],
            3,
            2,
            &cap,
        );
        for want in [
            "classgrid_agent_assignments{state=\"running\"} 2\n",
            "classgrid_agent_assignments{state=\"failed\"} 0\n",
            "classgrid_agent_report_backlog 3\n",
            "# TYPE classgrid_agent_seat_restarts_total counter\nclassgrid_agent_seat_restarts_total 2\n",
            "classgrid_agent_device_memory_used_bytes{device=\"0\",vendor=\"nvidia\"} 1073741824\n",
            "classgrid_agent_device_utilization_ratio{device=\"0\",vendor=\"nvidia\"} 0.37\n",
        ] {
            assert!(text.contains(want), "{want} in\n{text}");
        }
    }
}
