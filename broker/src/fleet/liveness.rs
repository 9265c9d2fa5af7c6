//! Turns silence into node states: `disconnected` after a short window,
//! `lost` after a long one. Running work is never stopped here; a lost node's
//! planned seats are re-planned when their lesson starts.
//!
//! Also paces heartbeats to the fleet's size (decision 120).

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Fleet;
use crate::domain::states::node as node_state;

/// The heartbeats a second the broker asks of its whole fleet, once two
/// seconds apart would be more: 20,000 nodes beating every 2 s sent 10,000
/// messages a second, all through the broker, whether a bell was on or not.
/// Nomad spaces its clients' heartbeats out the same way
/// (`max_heartbeats_per_second`); Kubernetes' node leases renew every 10 s.
pub const FLEET_HEARTBEATS_PER_S: u64 = 1_000;
/// The interval of a small fleet, and the shortest any agent is given.
pub const MIN_HEARTBEAT: Duration = Duration::from_secs(2);
/// The longest: a silent node is noticed within three of these.
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(30);
/// Heartbeats a node may miss before it is called disconnected, when its
/// interval makes that longer than the configured window.
const MISSED_BEATS: u32 = 3;

/// The interval an agent registering into a fleet of `nodes` is given.
/// Agents keep it for their session, so a fleet that grew since an agent
/// connected gets a little more than the target until it reconnects.
pub fn heartbeat_every(nodes: usize) -> Duration {
    let spread_ms = (nodes as u64).saturating_mul(1000) / FLEET_HEARTBEATS_PER_S;
    Duration::from_millis(spread_ms).clamp(MIN_HEARTBEAT, MAX_HEARTBEAT)
}

/// The silence after which a node beating every `every` is disconnected:
/// the configured window, or three missed beats if that is longer.
fn silent_limit(disconnected_after: Duration, every: Duration) -> Duration {
    disconnected_after.max(every * MISSED_BEATS)
}

/// Nodes whose state must change at `now`, with the new state.
pub fn sweep(
    fleet: &Fleet,
    now: Instant,
    disconnected_after: Duration,
    lost_after: Duration,
) -> Vec<(Uuid, &'static str)> {
    let mut changes = Vec::new();
    for (id, last_seen, state, every) in fleet.liveness() {
        let silent = now.saturating_duration_since(last_seen);
        let disconnected_after = silent_limit(disconnected_after, every);
        let next = if silent >= lost_after.max(disconnected_after) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_spaced_out_as_the_fleet_grows() {
        assert_eq!(heartbeat_every(0), MIN_HEARTBEAT);
        assert_eq!(heartbeat_every(2_000), MIN_HEARTBEAT);
        assert_eq!(heartbeat_every(5_000), Duration::from_secs(5));
        assert_eq!(heartbeat_every(20_000), Duration::from_secs(20));
        assert_eq!(heartbeat_every(1_000_000), MAX_HEARTBEAT);
        assert_eq!(heartbeat_every(usize::MAX), MAX_HEARTBEAT);
        // The fleet's rate stays at the target once past the floor.
        for n in [5_000usize, 10_000, 20_000] {
            let per_s = n as f64 / heartbeat_every(n).as_secs_f64();
            assert!(
                (per_s - FLEET_HEARTBEATS_PER_S as f64).abs() < 1.0,
                "{n}: {per_s}"
            );
        }
    }

    #[test]
    fn a_slow_beating_node_is_disconnected_after_three_missed_beats() {
        let ten = Duration::from_secs(10);
        assert_eq!(
            silent_limit(ten, MIN_HEARTBEAT),
            ten,
            "the configured window"
        );
        assert_eq!(
            silent_limit(ten, Duration::from_secs(20)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn the_sweep_reads_each_nodes_own_interval() {
        use crate::store::nodes::NodeRow;
        let row = |name: &str| NodeRow {
            id: Uuid::now_v7(),
            site_id: Uuid::now_v7(),
            name: name.into(),
            tier: "school".into(),
            state: node_state::CONNECTED.into(),
            cordoned: false,
            approved: true,
            cpu_millis: 1000,
            memory_mib: 1024,
            runtimes: vec![],
            warnings: vec![],
            agent_version: String::new(),
            last_seen: chrono::Utc::now(),
        };
        let (fast, slow) = (row("fast"), row("slow"));
        let (fast_id, slow_id) = (fast.id, slow.id);
        let fleet = Fleet::load(vec![], vec![(fast, vec![]), (slow, vec![])]);
        for id in [fast_id, slow_id] {
            fleet.set_state(id, node_state::CONNECTED);
        }
        fleet.set_heartbeat(slow_id, Duration::from_secs(20));
        let (ten, lost) = (Duration::from_secs(10), Duration::from_secs(300));
        let later = Instant::now() + Duration::from_secs(15);
        assert_eq!(
            sweep(&fleet, later, ten, lost),
            vec![(fast_id, node_state::DISCONNECTED)],
            "15 s of silence: the 2-s node is disconnected, the 20-s one is not"
        );
        let much_later = Instant::now() + Duration::from_secs(61);
        assert_eq!(
            sweep(&fleet, much_later, ten, lost),
            vec![(slow_id, node_state::DISCONNECTED)]
        );
    }
}
