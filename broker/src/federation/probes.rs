//! Edge-measured RTTs to a peer region's nodes (decision 109). A lender
//! publishes the probe responders of the nodes it would lend a peer; the
//! home region hands them to its school edges with its own nodes', under
//! ids of its own; the edges time them as any other and report them; and
//! a borrowed seat on a probed node carries the measured RTT from its
//! school, source `measured`, instead of the estimate (school → this region
//! + inter-region + the lender's site → node).
//!
//! Kept in memory: the targets are fetched again with every ping, and the
//! edges report every few seconds, so a restarted broker has them back
//! within one report.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use uuid::Uuid;

/// One peer node to probe, under the id this region gave it.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerTarget {
    pub id: Uuid,
    pub peering: Uuid,
    pub peer: String,
    pub node_name: String,
    pub addr: String,
}

#[derive(Default)]
struct Inner {
    /// Per peering, its published targets.
    targets: HashMap<Uuid, Vec<PeerTarget>>,
    /// (peering, node name) → the id this region gave it, kept stable
    /// across fetches so an edge's report still names the same node.
    ids: HashMap<(Uuid, String), Uuid>,
    /// (school site, peering, node name) → measured median ms.
    measured: HashMap<(Uuid, Uuid, String), f64>,
}

/// The peer probe targets and what the edges measured to them.
#[derive(Default)]
pub struct PeerProbes {
    inner: Mutex<Inner>,
}

/// At most this many targets are taken from one peer: a hostile peer
/// cannot grow this region's memory or its edges' probing without bound.
pub const MAX_TARGETS_PER_PEER: usize = 1000;

impl PeerProbes {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding it leaves plain maps, still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces a peering's targets with what it published now (name,
    /// addr); malformed or surplus ones are dropped. Measurements of nodes
    /// it no longer publishes are forgotten.
    pub fn set_targets(&self, peering: Uuid, peer: &str, published: Vec<(String, String)>) {
        let mut g = self.lock();
        let mut list = Vec::new();
        for (node_name, addr) in published.into_iter().take(MAX_TARGETS_PER_PEER) {
            if !valid_target(&node_name, &addr)
                || list.iter().any(|t: &PeerTarget| t.node_name == node_name)
            {
                continue;
            }
            let id = *g
                .ids
                .entry((peering, node_name.clone()))
                .or_insert_with(Uuid::new_v4);
            list.push(PeerTarget {
                id,
                peering,
                peer: peer.to_string(),
                node_name,
                addr,
            });
        }
        g.ids
            .retain(|(p, n), _| *p != peering || list.iter().any(|t| &t.node_name == n));
        g.measured
            .retain(|(_, p, n), _| *p != peering || list.iter().any(|t| &t.node_name == n));
        g.targets.insert(peering, list);
    }

    /// Forgets a peering's targets and measurements.
    pub fn forget(&self, peering: Uuid) {
        self.set_targets(peering, "", Vec::new());
        self.lock().targets.remove(&peering);
    }

    /// Forgets every peering not in `live` (removed ones).
    pub fn retain(&self, live: &[Uuid]) {
        let gone: Vec<Uuid> = self
            .lock()
            .targets
            .keys()
            .filter(|p| !live.contains(p))
            .copied()
            .collect();
        for p in gone {
            self.forget(p);
        }
    }

    /// Every peer target, for the edges.
    pub fn all(&self) -> Vec<PeerTarget> {
        let g = self.lock();
        let mut v: Vec<PeerTarget> = g.targets.values().flatten().cloned().collect();
        v.sort_by(|a, b| (&a.peer, &a.node_name).cmp(&(&b.peer, &b.node_name)));
        v
    }

    /// Records an edge's measurement if `id` is a peer target; false when
    /// it is not one (a node of this region, or unknown).
    pub fn observe(&self, site: Uuid, id: Uuid, median_ms: f64) -> bool {
        let mut g = self.lock();
        let Some(t) = g.targets.values().flatten().find(|t| t.id == id).cloned() else {
            return false;
        };
        g.measured.insert((site, t.peering, t.node_name), median_ms);
        true
    }

    /// What the edge of `site` measured to each probed node of `peering`,
    /// by node name.
    pub fn measured_from(&self, site: Uuid, peering: Uuid) -> HashMap<String, f64> {
        self.lock()
            .measured
            .iter()
            .filter(|((s, p, _), _)| *s == site && *p == peering)
            .map(|((_, _, n), ms)| (n.clone(), *ms))
            .collect()
    }
}

/// A node name and a host:port as a peer may publish them.
fn valid_target(node_name: &str, addr: &str) -> bool {
    let name_ok = !node_name.is_empty()
        && node_name.len() <= 128
        && !node_name.chars().any(|c| c.is_control());
    let addr_ok = addr.len() <= 256
        && addr
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
        && !addr.chars().any(|c| c.is_control() || c.is_whitespace());
    name_ok && addr_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: &str, a: &str) -> (String, String) {
        (n.to_string(), a.to_string())
    }

    #[test]
    fn ids_are_stable_across_fetches_and_bad_targets_are_dropped() {
        let p = PeerProbes::default();
        let peering = Uuid::new_v4();
        p.set_targets(
            peering,
            "b",
            vec![
                t("b0", "127.0.0.1:4000"),
                t("", "127.0.0.1:1"),
                t("b1", "no-port"),
                t("b2", "host:0"),
                t("b0", "127.0.0.1:4001"),
            ],
        );
        let first = p.all();
        assert_eq!(first.len(), 1, "{first:?}");
        p.set_targets(peering, "b", vec![t("b0", "127.0.0.1:4000")]);
        assert_eq!(p.all()[0].id, first[0].id, "the same node keeps its id");
    }

    #[test]
    fn a_measurement_belongs_to_its_site_and_goes_with_its_node() {
        let p = PeerProbes::default();
        let (peering, site, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        p.set_targets(
            peering,
            "b",
            vec![t("b0", "10.0.0.1:9"), t("b1", "10.0.0.2:9")],
        );
        let ids: Vec<Uuid> = p.all().iter().map(|t| t.id).collect();
        assert!(p.observe(site, ids[0], 7.5));
        assert!(!p.observe(site, Uuid::new_v4(), 1.0), "not a peer target");
        assert_eq!(p.measured_from(site, peering).get("b0"), Some(&7.5));
        assert!(p.measured_from(other, peering).is_empty());
        // b0 no longer published: its measurement goes.
        p.set_targets(peering, "b", vec![t("b1", "10.0.0.2:9")]);
        assert!(p.measured_from(site, peering).is_empty());
        p.forget(peering);
        assert!(p.all().is_empty());
    }

    #[test]
    fn a_peer_cannot_publish_without_bound() {
        let p = PeerProbes::default();
        let many = (0..5000)
            .map(|i| t(&format!("n{i}"), "10.0.0.1:9"))
            .collect();
        p.set_targets(Uuid::new_v4(), "b", many);
        assert_eq!(p.all().len(), MAX_TARGETS_PER_PEER);
    }
}
