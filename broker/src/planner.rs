//! The thin adapter between the live state and the pure placement core:
//! gather a snapshot, call `place`, hand back the decision.

use classgrid_placement::{self as placement, Calendar, Decision, Policy, Request, RttTable};

use crate::{app::Broker, domain::ServiceError};

impl Broker {
    pub fn policy(&self) -> Policy {
        Policy {
            weights: self.cfg.weights.clone(),
            max_window_ms: self.cfg.max_window.as_millis() as i64,
            ..Policy::default()
        }
    }

    pub fn rtt_table(&self) -> RttTable {
        RttTable::new(self.cfg.topology.clone())
    }

    /// Places `req` against the live fleet and every reservation overlapping
    /// its window. A seat being re-planned needs no exclusion: its old
    /// reservation sits on a node that is no longer a candidate.
    pub async fn plan(&self, req: &Request) -> Result<(Decision, placement::Fleet), ServiceError> {
        let fleet = self.fleet.snapshot();
        let calendar = Calendar::new(self.store.reservations_overlapping(req.window).await?);
        let decision = placement::place(&fleet, &calendar, &self.rtt_table(), req, &self.policy());
        Ok((decision, fleet))
    }
}
