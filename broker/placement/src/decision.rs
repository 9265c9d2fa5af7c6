//! What `place` answers: an admission with one placement per seat, or a
//! refusal. Both carry an [`Explanation`] a teacher or admin can read.

use serde::Serialize;

use crate::model::{NodeId, Owner, Request, Reservation, Rtt};

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    Admitted(Admission),
    Refused(Explanation),
}

impl Decision {
    pub fn admission(&self) -> Option<&Admission> {
        match self {
            Decision::Admitted(a) => Some(a),
            Decision::Refused(_) => None,
        }
    }

    pub fn explanation(&self) -> &Explanation {
        match self {
            Decision::Admitted(a) => &a.explanation,
            Decision::Refused(e) => e,
        }
    }

    pub fn is_admitted(&self) -> bool {
        matches!(self, Decision::Admitted(_))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Admission {
    pub seats: Vec<SeatPlacement>,
    /// Job owners whose reservations must be evicted before this one is
    /// written. Lesson seats never appear here.
    pub preempted: Vec<Owner>,
    pub explanation: Explanation,
}

impl Admission {
    /// Every row to persist for this admission, seat by seat.
    pub fn reservations(&self, req: &Request, owner: Owner) -> Vec<Reservation> {
        self.seats
            .iter()
            .flat_map(|s| s.reservations(req, owner))
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SeatPlacement {
    /// 0-based seat number within the request.
    pub seat: u32,
    pub node_id: NodeId,
    /// Empty for a seat without GPU.
    pub devices: Vec<DeviceGrant>,
    pub rtt: Rtt,
    /// Weighted score in `[0, 1]`; higher is better.
    pub score: f64,
    pub parts: Vec<ScorePart>,
    pub reason: String,
}

impl SeatPlacement {
    /// The calendar rows that hold this seat: one per device grant, with the
    /// node's cpu and memory on the first row only so that they are counted
    /// once; or one node-only row when the seat has no GPU.
    pub fn reservations(&self, req: &Request, owner: Owner) -> Vec<Reservation> {
        // Lesson seats are never preempted; jobs always may be.
        let preemptible = matches!(owner, Owner::Job(_));
        let base = Reservation {
            owner,
            node_id: self.node_id,
            device_index: None,
            window: req.window,
            cpu_millis: req.seat.cpu_millis,
            memory_mib: req.seat.memory_mib,
            gpu_memory_mib: 0,
            gpu_compute_percent: 0,
            preemptible,
        };
        if self.devices.is_empty() {
            return vec![base];
        }
        self.devices
            .iter()
            .enumerate()
            .map(|(i, d)| Reservation {
                device_index: Some(d.index),
                gpu_memory_mib: d.memory_mib,
                gpu_compute_percent: d.compute_percent,
                cpu_millis: if i == 0 { base.cpu_millis } else { 0 },
                memory_mib: if i == 0 { base.memory_mib } else { 0 },
                ..base.clone()
            })
            .collect()
    }
}

/// A slice of one device given to a seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeviceGrant {
    /// The device's `index` on its node (not its position in the list).
    pub index: u32,
    pub memory_mib: u64,
    pub compute_percent: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScorePart {
    pub name: &'static str,
    /// Normalised to `[0, 1]`.
    pub value: f64,
    pub weight: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Explanation {
    pub nodes_considered: u32,
    /// One entry per filter that removed at least one node, in filter order.
    pub filters: Vec<FilterCount>,
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FilterCount {
    pub filter: &'static str,
    pub removed: u32,
    /// Human phrase used in the summary, e.g. `rtt > 30 ms (configured)`.
    pub detail: String,
}
