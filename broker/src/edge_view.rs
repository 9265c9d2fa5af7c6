//! What edges and agents told the broker about the network and the content
//! near each site: measured RTTs, Vivaldi estimates for pairs nobody
//! measured, and each site's cached content (see `service::edge` for how it
//! is fed and used).

use std::{collections::HashMap, sync::Mutex};

use classgrid_edge::vivaldi::{Config, Space};
use classgrid_placement::RttTable;
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
    pub(crate) measured: HashMap<(Uuid, Uuid), f64>,
    pub(crate) space: Option<Space<Point>>,
    pub(crate) estimates: Vec<Estimate>,
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
}

impl Book {
    pub(crate) fn space(&mut self) -> &mut Space<Point> {
        self.space
            .get_or_insert_with(|| Space::new(Config::default()))
    }

    pub(crate) fn observe_site(&mut self, site: Uuid, node: Uuid, ms: f64) {
        self.measured.insert((site, node), ms);
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

    /// Adds what is measured and estimated to a table that holds the
    /// configured topology.
    pub fn fill(&self, t: &mut RttTable) {
        let b = self.lock();
        for (&(site, node), &ms) in &b.measured {
            t.set_measured(site, node, ms);
        }
        for e in &b.estimates {
            t.set_estimated(e.site, e.node, e.ms, e.error_bound_ms);
        }
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
