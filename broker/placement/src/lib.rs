//! classgrid's placement core (DESIGN.md §5): pure functions from a fleet
//! snapshot, a capacity calendar and RTTs to an explained decision. No I/O,
//! no async; the broker owns snapshots, locking and persistence.
//!
//! Shape: `filters/` (hard constraints, one per file) → `scores/` (one per
//! file) → `engine::place` (rank once, assign seats from per-node free
//! arrays, admit whole class or `min_seats`) → `preempt` (jobs to evict) →
//! `explain` (the sentence a teacher reads).

mod again;
mod calendar;
mod capacity;
mod decision;
mod engine;
mod explain;
mod filters;
mod ids;
mod index;
pub mod model;
mod policy;
mod preempt;
mod priority;
mod rtt;
mod scores;
mod spec;

pub use again::{place_again, same_shape};
pub use calendar::Calendar;
pub use decision::{
    Admission, Decision, DeviceGrant, Explanation, FilterCount, ScorePart, SeatPlacement,
};
pub use engine::{Scan, place, place_indexed, place_with};
pub use index::FleetIndex;
pub use model::*;
pub use policy::{Policy, Weights};
pub use priority::{PriorityWeights, job_priority};
pub use rtt::{RttTable, Topology};
pub use spec::{SpecError, check_possible, check_request, check_seat};
