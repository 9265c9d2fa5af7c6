//! Turns silence into node states: `disconnected` after a short window,
//! `lost` after a long one. Running work is never stopped here; a lost node's
//! planned seats are re-planned when their lesson starts.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Fleet;
use crate::domain::states::node as node_state;

/// Nodes whose state must change at `now`, with the new state.
pub fn sweep(
    fleet: &Fleet,
    now: Instant,
    disconnected_after: Duration,
    lost_after: Duration,
) -> Vec<(Uuid, &'static str)> {
    let mut changes = Vec::new();
    for (id, last_seen, state) in fleet.liveness() {
        let silent = now.saturating_duration_since(last_seen);
        let next = if silent >= lost_after {
            node_state::LOST
        } else if silent >= disconnected_after
            || (state != node_state::CONNECTED && state != node_state::LOST)
        {
            node_state::DISCONNECTED
        } else {
            continue;
        };
        if next != state {
            fleet.set_state(id, next);
            changes.push((id, next));
        }
    }
    changes
}
