//! The one domain layer that every transport calls: validated input in,
//! views or `ServiceError` out. gRPC and REST are thin adapters over it.

pub mod admin;
pub mod agents;
pub mod booking_writes;
pub mod dry_run;
pub mod edge;
pub mod fleet;
pub mod jobs;
pub mod lessons;
pub mod progress_writes;
pub mod replicas;
pub mod seat_controls;
pub mod series;
pub mod series_edits;
pub mod series_scoped;
pub mod tenancy;
pub mod timetable;
pub mod vouchers;

use classgrid_placement::{Owner, Reservation};

use crate::{domain::lesson::Limits, state::Broker};

impl Broker {
    pub fn limits(&self) -> Limits {
        Limits {
            default_max_rtt_ms: self.cfg.default_max_rtt_ms,
            max_window: self.cfg.max_window,
        }
    }
}

pub use crate::reserve::window_ms;

pub fn owner_rows(rows: Vec<Reservation>, owner: Owner) -> Vec<Reservation> {
    rows.into_iter()
        .map(|r| Reservation { owner, ..r })
        .collect()
}
