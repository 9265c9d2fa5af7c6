//! The one domain layer that every transport calls: validated input in,
//! views or `ServiceError` out. gRPC and REST are thin adapters over it.

pub mod admin;
pub mod agents;
pub mod booking_writes;
pub mod edge;
pub mod fleet;
pub mod jobs;
pub mod lessons;
pub mod progress_writes;
pub mod replicas;
pub mod tenancy;
pub mod vouchers;
pub(crate) mod writers;

use chrono::{DateTime, Utc};
use classgrid_placement::{Owner, Reservation, SeatPlacement, Window};
use uuid::Uuid;

use crate::{
    app::Broker,
    domain::lesson::Limits,
    store::{
        assignments::{AssignmentRow, GpuGrant},
        lessons::NewSeat,
    },
};

impl Broker {
    pub fn limits(&self) -> Limits {
        Limits {
            default_max_rtt_ms: self.cfg.default_max_rtt_ms,
            max_window: self.cfg.max_window,
        }
    }

    /// Tells agents to stop released work. A node without a session learns it
    /// when it reconnects and reconciles.
    pub fn send_releases(&self, released: &[AssignmentRow], reason: &str) {
        use classgrid_proto::v1::{BrokerMessage, Release, broker_message::Msg};
        for a in released {
            let msg = BrokerMessage {
                msg: Some(Msg::Release(Release {
                    assignment_id: a.id.to_string(),
                    generation: a.generation,
                    reason: reason.to_string(),
                })),
            };
            self.fleet.send(a.node_id, msg);
        }
    }
}

pub fn window_ms(start: DateTime<Utc>, end: DateTime<Utc>) -> Window {
    Window::new(start.timestamp_millis(), end.timestamp_millis())
}

pub fn rtt_source_str(s: classgrid_placement::RttSource) -> &'static str {
    match s {
        classgrid_placement::RttSource::Measured => "measured",
        classgrid_placement::RttSource::Estimated => "estimated",
        classgrid_placement::RttSource::Configured => "configured",
    }
}

pub fn new_seat(id: Uuid, p: &SeatPlacement) -> NewSeat {
    NewSeat {
        id,
        number: p.seat as i32,
        node_id: p.node_id,
        device_indexes: p.devices.iter().map(|d| d.index as i32).collect(),
        gpu_memory_mib: p.devices.first().map(|d| d.memory_mib as i64).unwrap_or(0),
        gpu_compute_pct: p
            .devices
            .first()
            .map(|d| d.compute_percent as i32)
            .unwrap_or(0),
        rtt_ms: p.rtt.ms,
        rtt_source: rtt_source_str(p.rtt.source),
        rtt_error_ms: p.rtt.error_ms,
    }
}

pub fn grants(device_indexes: &[i32], memory_mib: i64, compute_pct: i32) -> Vec<GpuGrant> {
    device_indexes
        .iter()
        .map(|i| GpuGrant {
            device_index: *i as u32,
            memory_mib: memory_mib.max(0) as u64,
            compute_percent: compute_pct.max(0) as u32,
        })
        .collect()
}

pub fn owner_rows(rows: Vec<Reservation>, owner: Owner) -> Vec<Reservation> {
    rows.into_iter()
        .map(|r| Reservation { owner, ..r })
        .collect()
}
