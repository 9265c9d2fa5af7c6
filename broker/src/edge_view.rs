//! What edges and agents told the broker about the network and the content
//! near each site: measured RTTs, Vivaldi estimates for pairs nobody
//! measured, and each site's cached content (see `service::edge` for how it
//! is fed and used).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use classgrid_edge::vivaldi::{Config, Space};
use classgrid_placement::{RttTable, Topology};
use uuid::Uuid;

use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Point {
    Site(Uuid),
    Node(Uuid),
}

/// One estimated site → node RTT.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub site: Uuid,
    pub node: Uuid,
    pub ms: f64,
    pub error_bound_ms: f64,
}

#[derive(Default)]
pub(crate) struct Book {
    // Changed only through `observe_site` and `reestimate`, which count
    // the change in `version`.
    measured: HashMap<(Uuid, Uuid), f64>,
    space: Option<Space<Point>>,
    estimates: Vec<Estimate>,
    /// Bumped by every change to `measured` or `estimates`, what an RTT
    /// table is built from.
    version: u64,
    /// Per site: cached digests and staging bytes/s, from its edge.
    pub(crate) content: HashMap<Uuid, SiteContent>,
}

#[derive(Debug, Clone, Default)]
pub struct SiteContent {
    pub cached: Vec<String>,
    pub bytes_per_sec: f64,
    pub content_url: String,
}

/// The broker's in-memory RTT book and per-site content view, rebuilt from
/// PostgreSQL at start.
#[derive(Default)]
pub struct EdgeState {
    book: Mutex<Book>,
    /// The RTT table of one book version and topology, handed to every
    /// booking until the book changes (decision 104).
    table: Mutex<Option<Table>>,
}

struct Table {
    version: u64,
    topology: Topology,
    rtt: Arc<RttTable>,
}

impl Book {
    pub(crate) fn space(&mut self) -> &mut Space<Point> {
        self.space
            .get_or_insert_with(|| Space::new(Config::default()))
    }

    pub(crate) fn observe_site(&mut self, site: Uuid, node: Uuid, ms: f64) {
        self.measured.insert((site, node), ms);
        self.version += 1;
        self.space()
            .observe(&Point::Site(site), &Point::Node(node), ms);
    }

    /// Every site with a coordinate against every node with one, where no
    /// measurement exists. Nodes seen only by peer agents count too.
    pub(crate) fn reestimate(&mut self) {
        let Some(space) = &self.space else { return };
        let (mut sites, mut nodes) = (Vec::new(), Vec::new());
        for p in space.participants() {
            match p {
                Point::Site(s) => sites.push(*s),
                Point::Node(n) => nodes.push(*n),
            }
        }
        let mut out = Vec::new();
        for &s in &sites {
            for &n in &nodes {
                if self.measured.contains_key(&(s, n)) {
                    continue;
                }
                if let Some((ms, bound)) = space.estimate(&Point::Site(s), &Point::Node(n)) {
                    out.push(Estimate {
                        site: s,
                        node: n,
                        ms,
                        error_bound_ms: bound,
                    });
                }
            }
        }
        self.estimates = out;
        self.version += 1;
    }
}

impl EdgeState {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replays stored measurements into fresh coordinates.
    pub async fn load(store: &Store) -> anyhow::Result<Self> {
        let (site, peer) = store.all_rtts().await?;
        let s = Self::default();
        {
            let mut b = s.lock();
            // A few passes let coordinates settle as if probes had kept coming.
            for _ in 0..8 {
                for &(site, node, ms) in &site {
                    b.observe_site(site, node, ms);
                }
                for &(a, p, ms) in &peer {
                    b.space().observe(&Point::Node(a), &Point::Node(p), ms);
                }
            }
            b.reestimate();
        }
        Ok(s)
    }

    /// The configured `topology` overlaid with what is measured and
    /// estimated: built once per change of the book and shared until the
    /// next, so placement can keep what it sorted for it (decision 104).
    pub fn rtt_table(&self, topology: Topology) -> Arc<RttTable> {
        let b = self.lock();
        let mut held = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = held.as_ref()
            && t.version == b.version
            && t.topology == topology
        {
            return t.rtt.clone();
        }
        let mut t = RttTable::new(topology);
        for (&(site, node), &ms) in &b.measured {
            t.set_measured(site, node, ms);
        }
        for e in &b.estimates {
            t.set_estimated(e.site, e.node, e.ms, e.error_bound_ms);
        }
        let rtt = Arc::new(t);
        *held = Some(Table {
            version: b.version,
            topology,
            rtt: rtt.clone(),
        });
        rtt
    }

    pub fn estimates(&self) -> Vec<Estimate> {
        self.lock().estimates.clone()
    }

    pub fn site_content(&self, site: Uuid) -> Option<SiteContent> {
        self.lock().content.get(&site).cloned()
    }

    /// A content URL of another site's edge that has `sha` cached.
    pub(crate) fn peer_with(&self, site: Uuid, sha: &str) -> Option<String> {
        let b = self.lock();
        b.content
            .iter()
            .find(|(s, c)| {
                **s != site && !c.content_url.is_empty() && c.cached.iter().any(|d| d == sha)
            })
            .map(|(_, c)| format!("{}/content/{sha}", c.content_url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn the_rtt_table_is_built_once_per_change_of_the_book() {
        let edge = EdgeState::default();
        let topo = Topology::default();
        let first = edge.rtt_table(topo);
        assert!(Arc::ptr_eq(&first, &edge.rtt_table(topo)), "unchanged book");

        edge.lock().observe_site(id(1), id(2), 4.0);
        let measured = edge.rtt_table(topo);
        assert!(!Arc::ptr_eq(&first, &measured), "a new measurement");
        assert!(Arc::ptr_eq(&measured, &edge.rtt_table(topo)));
        assert!(format!("{measured:?}").contains("4.0"));

        edge.lock().reestimate();
        let estimated = edge.rtt_table(topo);
        assert!(!Arc::ptr_eq(&measured, &estimated), "re-estimated");
        assert!(Arc::ptr_eq(&estimated, &edge.rtt_table(topo)));

        // Content reports do not touch RTTs.
        edge.lock().content.insert(id(1), SiteContent::default());
        assert!(Arc::ptr_eq(&estimated, &edge.rtt_table(topo)));

        let other = Topology {
            cloud_ms: 90.0,
            ..topo
        };
        let t = edge.rtt_table(other);
        assert!(!Arc::ptr_eq(&estimated, &t), "another topology");
        assert_eq!(t.topology(), &other);
    }
}
