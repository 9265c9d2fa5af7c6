//! RTT from a school site to a node, with where the number came from.
//! Edge probes give measurements; Vivaldi coordinates give estimates; the
//! configured topology classes are the fallback so every node has a value.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ids::IdMap;
use crate::model::{Node, NodeId, Rtt, RttSource, Site, SiteId, SiteKind, Tier};

/// Configured RTT per topology class, used when nothing better is known.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Topology {
    pub same_site_ms: f64,
    pub same_district_ms: f64,
    pub cross_district_ms: f64,
    pub cloud_ms: f64,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            same_site_ms: 2.0,
            same_district_ms: 8.0,
            cross_district_ms: 25.0,
            cloud_ms: 60.0,
        }
    }
}

impl Topology {
    /// The class RTT between a school and a node. A node whose site is not
    /// known is treated as cross-district: too far to be preferred, not so
    /// far that it is never used.
    pub fn class_ms(&self, school: &Site, node: &Node, node_site: Option<&Site>) -> f64 {
        if node.tier == Tier::Cloud || node_site.is_some_and(|s| s.kind == SiteKind::Cloud) {
            return self.cloud_ms;
        }
        if node.site_id == school.id {
            return self.same_site_ms;
        }
        match node_site {
            Some(s) if s.district == school.district => self.same_district_ms,
            _ => self.cross_district_ms,
        }
    }
}

#[derive(Clone)]
pub struct RttTable {
    /// Names this table's contents: a new table and every change take a
    /// fresh number, a clone keeps it. So two tables with one stamp hold the
    /// same RTTs, and a cache of sorted RTTs ([`crate::FleetIndex`]) keyed
    /// by it can never be stale.
    stamp: u64,
    topology: Topology,
    // Keyed by school site first: `place` asks about one school and many
    // nodes, so it fetches the school's inner maps once per request.
    measured: IdMap<SiteId, IdMap<NodeId, f64>>,
    /// (centre, error bound) per pair, both in ms.
    estimated: IdMap<SiteId, IdMap<NodeId, (f64, f64)>>,
}

/// Stamps are drawn from one counter per process, never reused.
fn fresh_stamp() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Default for RttTable {
    fn default() -> Self {
        RttTable {
            stamp: fresh_stamp(),
            topology: Topology::default(),
            measured: IdMap::default(),
            estimated: IdMap::default(),
        }
    }
}

/// The stamp is left out: two tables with the same RTTs print the same.
impl std::fmt::Debug for RttTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RttTable")
            .field("topology", &self.topology)
            .field("measured", &self.measured)
            .field("estimated", &self.estimated)
            .finish()
    }
}

/// One school's view of the table, for the per-node loop in `place`.
pub(crate) struct SchoolRtt<'a> {
    topology: &'a Topology,
    school: &'a Site,
    measured: Option<&'a IdMap<NodeId, f64>>,
    estimated: Option<&'a IdMap<NodeId, (f64, f64)>>,
}

impl<'a> SchoolRtt<'a> {
    /// The measured nodes and their RTT, then the estimated ones (a node
    /// may appear in both; its measurement is what `lookup` gives).
    pub fn measured(&self) -> impl Iterator<Item = (&'a NodeId, f64)> + use<'a> {
        self.measured
            .into_iter()
            .flat_map(|m| m.iter().map(|(id, &ms)| (id, ms)))
    }

    /// The estimated nodes and the centre of their estimate.
    pub fn estimated(&self) -> impl Iterator<Item = (&'a NodeId, f64)> + use<'a> {
        self.estimated
            .into_iter()
            .flat_map(|m| m.iter().map(|(id, &(ms, _))| (id, ms)))
    }

    /// How many (school, node) entries `measured` and `estimated` yield
    /// together: at least as many as the distinct nodes they pin (whose
    /// RTT is not their configured class), in constant time.
    pub fn pinned_len(&self) -> usize {
        self.measured.map_or(0, |m| m.len()) + self.estimated.map_or(0, |m| m.len())
    }

    /// This school's view with only the configured classes: what every node
    /// the table does not pin gets.
    pub fn configured(&self) -> SchoolRtt<'a> {
        SchoolRtt {
            topology: self.topology,
            school: self.school,
            measured: None,
            estimated: None,
        }
    }

    pub fn lookup(&self, node: &Node, node_site: Option<&Site>) -> Rtt {
        if let Some(&ms) = self.measured.and_then(|m| m.get(&node.id)) {
            return Rtt {
                ms,
                source: RttSource::Measured,
                error_ms: None,
            };
        }
        if let Some(&(ms, bound)) = self.estimated.and_then(|m| m.get(&node.id)) {
            return Rtt {
                ms,
                source: RttSource::Estimated,
                error_ms: Some(bound),
            };
        }
        Rtt {
            ms: self.topology.class_ms(self.school, node, node_site),
            source: RttSource::Configured,
            error_ms: None,
        }
    }
}

impl RttTable {
    pub fn new(topology: Topology) -> Self {
        RttTable {
            topology,
            ..Default::default()
        }
    }

    /// Names these contents: equal stamps, equal tables.
    pub(crate) fn stamp(&self) -> u64 {
        self.stamp
    }

    /// The school sites this table measured or estimated any node from.
    pub(crate) fn schools(&self) -> impl Iterator<Item = &SiteId> {
        self.measured.keys().chain(
            self.estimated
                .keys()
                .filter(|s| !self.measured.contains_key(s)),
        )
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Non-finite or negative probe results are dropped rather than stored,
    /// so a broken probe falls back to the next source instead of poisoning
    /// placement.
    pub fn set_measured(&mut self, site: SiteId, node: NodeId, ms: f64) {
        if usable_ms(ms) {
            self.measured.entry(site).or_default().insert(node, ms);
            self.stamp = fresh_stamp();
        }
    }

    /// A network-coordinate estimate `ms ± error_ms`. The same rule holds for
    /// both numbers: if either is non-finite or negative the estimate is
    /// dropped whole, so the pair falls back to its configured class rather
    /// than carrying a centre whose bound is meaningless.
    pub fn set_estimated(&mut self, site: SiteId, node: NodeId, ms: f64, error_ms: f64) {
        if usable_ms(ms) && usable_ms(error_ms) {
            self.estimated
                .entry(site)
                .or_default()
                .insert(node, (ms, error_ms));
            self.stamp = fresh_stamp();
        }
    }

    pub(crate) fn for_school<'a>(&'a self, school: &'a Site) -> SchoolRtt<'a> {
        SchoolRtt {
            topology: &self.topology,
            school,
            measured: self.measured.get(&school.id),
            estimated: self.estimated.get(&school.id),
        }
    }

    /// measured > estimated > configured.
    pub fn lookup(&self, school: &Site, node: &Node, node_site: Option<&Site>) -> Rtt {
        self.for_school(school).lookup(node, node_site)
    }
}

fn usable_ms(ms: f64) -> bool {
    ms.is_finite() && ms >= 0.0
}

/// `12.0 ms (measured)`, or `14.2 ms (estimated ±3.1 ms)` when the value
/// carries an error bound: the phrase explanations use for one RTT.
pub(crate) fn describe(r: &Rtt) -> String {
    match r.error_ms {
        Some(e) => format!("{:.1} ms ({} ±{e:.1} ms)", r.ms, source_name(r.source)),
        None => format!("{:.1} ms ({})", r.ms, source_name(r.source)),
    }
}

pub(crate) fn source_name(s: RttSource) -> &'static str {
    match s {
        RttSource::Measured => "measured",
        RttSource::Estimated => "estimated",
        RttSource::Configured => "configured",
    }
}
