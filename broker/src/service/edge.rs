//! What edges and agents tell the broker about the network and the content
//! near each site, and what the broker asks of edges in return.
//!
//! RTTs: an edge's site → node table is stored and used by placement with
//! source `measured`. Every measurement (and every agent's node → peer
//! probe) also feeds Vivaldi coordinates; a site → node pair nobody measured
//! gets an estimate from them with source `estimated` and an error bound.
//!
//! Content: an edge reports its cache and link rate; nodes at its site then
//! count that content as cached and that rate as their staging bandwidth. A
//! booked lesson's datasets are ordered from the edges of its seats' sites at
//! `start − lead`, where the lead is the uncached bytes over the measured
//! rate with a margin; seats turn `staged` when their site has every digest.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use classgrid_proto::v1 as pb;
use uuid::Uuid;

use crate::{
    domain::{
        ServiceError,
        error::Checks,
        states::{lesson as ls, seat as ss},
    },
    edge_view::{Point, SiteContent},
    seats::links::{LinkedSeat, seat_link},
    state::Broker,
    store::{
        lessons::{self as lesson_store, LessonRow},
        rtt::{RttRow, StagingRow},
        sites::EdgeRow,
    },
};

/// Margin on the computed staging lead: the link may be shared, and a
/// resumed download re-reads its prefix for the digest.
const LEAD_FACTOR: f64 = 1.5;
const LEAD_MARGIN_S: f64 = 10.0;
const MAX_RTT_MS: f64 = 60_000.0;

fn valid_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A node's probe responder address: `host:port`, nothing else.
pub fn check_probe_addr(addr: &str) -> Result<(), ServiceError> {
    let ok = addr.is_empty()
        || (addr.len() <= 300
            && addr
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
            && !addr.contains(['/', ' ']));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::field(
            "probe_addr",
            "must be host:port (at most 300 bytes)",
        ))
    }
}

impl Broker {
    /// The edge named by `edge_id` and its site.
    pub async fn edge_row(&self, edge_id: &str) -> Result<EdgeRow, ServiceError> {
        let id: Uuid = edge_id
            .parse()
            .map_err(|_| ServiceError::field("edge_id", "must be the id Register returned"))?;
        let e = self
            .store
            .list_edges()
            .await?
            .into_iter()
            .find(|e| e.id == id);
        e.ok_or_else(|| ServiceError::NotFound(format!("edge {id} (register again)")))
    }

    pub async fn probe_targets(&self) -> Result<pb::ProbeTargetsResponse, ServiceError> {
        let targets = self
            .store
            .probe_targets()
            .await?
            .into_iter()
            .map(|t| pb::ProbeTarget {
                node_id: t.node_id.to_string(),
                name: format!("{}/{}", t.site, t.name),
                addr: t.addr,
            })
            // Peer regions' lendable nodes, under ids this region gave
            // them (decision 109).
            .chain(self.peer_probes.all().into_iter().map(|t| pb::ProbeTarget {
                node_id: t.id.to_string(),
                name: format!("region {}/{}", t.peer, t.node_name),
                addr: t.addr,
            }))
            .collect();
        Ok(pb::ProbeTargetsResponse { targets })
    }

    /// A few other nodes for `node` to probe: its own site's first, then any.
    pub async fn probe_peers_for(&self, node: Uuid, site: Uuid) -> Vec<pb::ProbePeer> {
        let Ok(all) = self.store.probe_targets().await else {
            return vec![];
        };
        let mut peers: Vec<(bool, pb::ProbePeer)> = all
            .into_iter()
            .filter(|t| t.node_id != node)
            .map(|t| {
                let same = self
                    .fleet
                    .node(t.node_id)
                    .is_some_and(|n| n.site_id == site);
                (
                    !same,
                    pb::ProbePeer {
                        node_id: t.node_id.to_string(),
                        addr: t.addr,
                    },
                )
            })
            .collect();
        peers.sort_by_key(|p| p.0);
        peers.into_iter().take(3).map(|p| p.1).collect()
    }

    pub async fn report_rtt(&self, site: Uuid, r: &pb::RttReport) -> Result<u64, ServiceError> {
        let mut c = Checks::default();
        if r.rtts.len() > 10_000 {
            c.fail("rtts", "must have at most 10000 entries");
        }
        let mut rows = Vec::new();
        for (i, x) in r.rtts.iter().enumerate() {
            let f = |n: &str| format!("rtts[{i}].{n}");
            let node = x.node_id.parse::<Uuid>();
            if node.is_err() {
                c.fail(f("node_id"), "must be a node id");
            }
            if !(x.median_ms.is_finite() && (0.0..MAX_RTT_MS).contains(&x.median_ms)) {
                c.fail(f("median_ms"), "must be between 0 and 60000");
            }
            if !(x.variance_ms2.is_finite() && x.variance_ms2 >= 0.0) {
                c.fail(f("variance_ms2"), "must be a finite number >= 0");
            }
            if x.samples < 1 {
                c.fail(f("samples"), "must be at least 1");
            }
            if let Ok(node_id) = node {
                rows.push(RttRow {
                    node_id,
                    median_ms: x.median_ms,
                    variance_ms2: x.variance_ms2,
                    samples: x.samples,
                });
            }
        }
        c.finish()?;
        // A peer region's node is kept apart; the rest are this region's.
        let all = rows.len() as u64;
        rows.retain(|r| !self.peer_probes.observe(site, r.node_id, r.median_ms));
        let peers = all - rows.len() as u64;
        let n = self.store.save_site_rtts(site, &rows).await? + peers;
        let mut b = self.edge.lock();
        for row in rows
            .iter()
            .filter(|r| self.fleet.with_node(r.node_id, |_| ()).is_some())
        {
            b.observe_site(site, row.node_id, row.median_ms);
        }
        b.reestimate();
        Ok(n)
    }

    pub async fn peer_rtts(&self, node: Uuid, p: &pb::PeerRtts) -> Result<(), ServiceError> {
        let mut c = Checks::default();
        let mut rows = Vec::new();
        for (i, x) in p.peers.iter().take(64).enumerate() {
            match x.node_id.parse::<Uuid>() {
                Ok(peer) if x.median_ms.is_finite() && (0.0..MAX_RTT_MS).contains(&x.median_ms) => {
                    rows.push((peer, x.median_ms))
                }
                Ok(_) => c.fail(
                    format!("peers[{i}].median_ms"),
                    "must be between 0 and 60000",
                ),
                Err(_) => c.fail(format!("peers[{i}].node_id"), "must be a node id"),
            }
        }
        c.finish()?;
        self.store.save_peer_rtts(node, &rows).await?;
        let mut b = self.edge.lock();
        for (peer, ms) in rows
            .iter()
            .filter(|(peer, _)| *peer != node && self.fleet.with_node(*peer, |_| ()).is_some())
        {
            b.space()
                .observe(&Point::Node(node), &Point::Node(*peer), *ms);
        }
        b.reestimate();
        Ok(())
    }

    /// An edge's cache and staging report in; staging orders, pins and the
    /// site's seats out.
    pub async fn edge_sync(
        &self,
        edge_id: Uuid,
        site: Uuid,
        r: &pb::EdgeSyncRequest,
    ) -> Result<pb::EdgeSyncResponse, ServiceError> {
        let mut c = Checks::default();
        if r.cached.len() > 100_000 {
            c.fail("cached", "must have at most 100000 entries");
        }
        for (i, x) in r.cached.iter().enumerate() {
            c.check(
                valid_digest(&x.sha256),
                &format!("cached[{i}].sha256"),
                "must be 64 lower-case hexadecimal digits",
            );
            c.check(
                x.size_bytes >= 0,
                &format!("cached[{i}].size_bytes"),
                "must be >= 0",
            );
        }
        for (i, x) in r.progress.iter().take(10_000).enumerate() {
            c.check(
                valid_digest(&x.sha256),
                &format!("progress[{i}].sha256"),
                "must be 64 lower-case hexadecimal digits",
            );
            c.check(
                ["queued", "downloading", "cached", "failed"].contains(&x.state.as_str()),
                &format!("progress[{i}].state"),
                "must be queued, downloading, cached or failed",
            );
            c.check(
                x.bytes_done >= 0 && x.size_bytes >= 0,
                &format!("progress[{i}].bytes_done"),
                "must be >= 0",
            );
        }
        c.check(
            r.bytes_per_sec.is_finite() && (0.0..1e13).contains(&r.bytes_per_sec),
            "bytes_per_sec",
            "must be between 0 and 1e13",
        );
        c.check(
            r.content_url.is_empty()
                || (r.content_url.starts_with("http://") && r.content_url.len() <= 300),
            "content_url",
            "must be an http:// URL of at most 300 bytes",
        );
        c.check(
            r.seat_link_url.is_empty()
                || (r.seat_link_url.starts_with("https://")
                    && r.seat_link_url.len() <= 300
                    && r.seat_link_url
                        .parse::<axum::http::Uri>()
                        .is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()))),
            "seat_link_url",
            "must be an https:// URL with a host, of at most 300 bytes",
        );
        c.finish()?;
        if !r.seat_link_url.is_empty() {
            self.store
                .set_seat_link_base(site, r.seat_link_url.trim_end_matches('/'))
                .await?;
        }
        let cached: Vec<(String, i64)> = r
            .cached
            .iter()
            .map(|x| (x.sha256.clone(), x.size_bytes))
            .collect();
        let staging: Vec<StagingRow> = r
            .progress
            .iter()
            .take(10_000)
            .map(|p| StagingRow {
                sha256: p.sha256.clone(),
                bytes_done: p.bytes_done,
                size_bytes: p.size_bytes,
                state: p.state.clone(),
                message: p.message.chars().take(500).collect(),
            })
            .collect();
        self.store
            .save_edge_content(edge_id, &r.content_url, r.bytes_per_sec, &cached, &staging)
            .await?;
        let content = SiteContent {
            cached: cached.into_iter().map(|c| c.0).collect(),
            bytes_per_sec: r.bytes_per_sec,
            content_url: r.content_url.trim_end_matches('/').to_string(),
        };
        self.fleet.set_site_content(
            site,
            content.cached.clone(),
            (r.bytes_per_sec > 0.0).then_some(r.bytes_per_sec),
        );
        self.edge.lock().content.insert(site, content.clone());

        let now = Utc::now();
        let mut stage = Vec::new();
        let mut pinned = Vec::new();
        for l in self.store.lessons_needing_content_at(site).await? {
            let missing: Vec<_> = l
                .datasets
                .0
                .iter()
                .filter(|d| !content.cached.contains(&d.sha256))
                .collect();
            pinned.extend(l.datasets.0.iter().map(|d| d.sha256.clone()));
            if l.state == ls::LIVE || missing.is_empty() {
                continue;
            }
            let bytes: u64 = missing.iter().map(|d| d.size_bytes).sum();
            let bps = if r.bytes_per_sec > 0.0 {
                r.bytes_per_sec
            } else {
                1e6
            };
            let lead_s = bytes as f64 / bps * LEAD_FACTOR + LEAD_MARGIN_S;
            let order_at = l.start_at - chrono::Duration::milliseconds((lead_s * 1000.0) as i64);
            if now < order_at.max(l.window_start) {
                continue;
            }
            for d in missing {
                stage.push(pb::StageOrder {
                    lesson_id: l.id.to_string(),
                    name: d.name.clone(),
                    url: d.url.clone(),
                    sha256: d.sha256.clone(),
                    size_bytes: d.size_bytes as i64,
                    needed_by: Some(ts(l.start_at)),
                    peer_url: self.edge.peer_with(site, &d.sha256).unwrap_or_default(),
                });
            }
        }
        pinned.sort();
        pinned.dedup();
        let seats = self
            .store
            .site_seat_intents(site)
            .await?
            .into_iter()
            .map(
                |(id, generation, node, lesson, ends, state)| pb::SeatIntent {
                    assignment_id: id.to_string(),
                    generation,
                    node_id: node.to_string(),
                    lesson_id: lesson.to_string(),
                    ends_unix_ms: ends.timestamp_millis(),
                    state,
                },
            )
            .collect();
        let linked = self.store.site_linked_seats(site).await?;
        let mut seat_links: Vec<pb::SeatLink> =
            linked.iter().map(|s| seat_link(&self.links, s)).collect();
        self.record_link_opens(&r.opened, &linked, &seat_links)
            .await?;
        // Seats a peer region hosts for this site's school (decision 110).
        seat_links.extend(self.borrowed_seat_links(site).await?);
        Ok(pb::EdgeSyncResponse {
            stage,
            pinned,
            seats,
            seat_links,
        })
    }

    /// Stores when each of the site's links first opened its seat, as the
    /// edge reports it, matched to seats by the link's hash: a hash of no
    /// seat of this site's (another site's, made up, or ended) is ignored,
    /// so an edge can mark only its own students' seats.
    async fn record_link_opens(
        &self,
        opened: &[pb::SeatLinkOpened],
        linked: &[LinkedSeat],
        links: &[pb::SeatLink],
    ) -> Result<(), ServiceError> {
        if opened.is_empty() {
            return Ok(());
        }
        let by_hash: HashMap<&str, &LinkedSeat> = links
            .iter()
            .map(|l| l.link_sha256.as_str())
            .zip(linked)
            .collect();
        let latest = Utc::now() + chrono::Duration::minutes(5);
        let opens: Vec<_> = opened
            .iter()
            .take(10_000)
            .filter_map(|o| {
                let s = by_hash.get(o.link_sha256.as_str())?;
                let at = chrono::DateTime::from_timestamp_millis(o.opened_unix_ms)?;
                (at <= latest).then_some((s.seat_id, s.lesson_id, at))
            })
            .collect();
        for lesson in self.store.record_link_opens(&opens).await? {
            self.lesson_changed(lesson);
        }
        Ok(())
    }

    /// The lesson clock's staging step for a lesson with datasets: seats
    /// whose node's site has every digest cached turn `staged`; the lesson is
    /// `ready` once no seat is left planned. Seats still planned at the bell
    /// are started anyway and fetch at start (the clock's start step).
    pub async fn stage_datasets(&self, l: &LessonRow) -> anyhow::Result<()> {
        let digests: Vec<&str> = l.datasets.0.iter().map(|d| d.sha256.as_str()).collect();
        let seats = self.store.seats_of(l.id).await?;
        let staged: Vec<Uuid> = seats
            .iter()
            .filter(|s| s.state == ss::PLANNED)
            .filter(|s| {
                let site = s
                    .node_id
                    .and_then(|n| self.fleet.node(n))
                    .map(|n| n.site_id);
                site.and_then(|site| self.edge.site_content(site))
                    .is_some_and(|c| digests.iter().all(|d| c.cached.iter().any(|x| x == d)))
            })
            .map(|s| s.id)
            .collect();
        let left = seats.iter().filter(|s| s.state == ss::PLANNED).count() - staged.len();
        let mut tx = self.store.begin().await?;
        self.fence(&mut tx).await?;
        let mut changed =
            lesson_store::set_lesson_state(&mut tx, l.id, &[ls::BOOKED], ls::STAGING, None).await?;
        if !staged.is_empty() {
            lesson_store::set_seats(&mut tx, &staged, ss::STAGED).await?;
            changed = true;
        }
        if left == 0 {
            changed |=
                lesson_store::set_lesson_state(&mut tx, l.id, &[ls::STAGING], ls::READY, None)
                    .await?;
        }
        tx.commit().await?;
        if changed {
            tracing::info!(lesson = %l.id, staged = staged.len(), left, "lesson content staging");
            self.lesson_changed(l.id);
        }
        Ok(())
    }

    /// Where a seat on `node` fetches each dataset: its site's edge when the
    /// edge has it, the origin otherwise.
    pub fn staged_content(
        &self,
        node: Uuid,
        datasets: &[crate::domain::spec::Dataset],
    ) -> Vec<pb::StagedContent> {
        let site = self.fleet.node(node).map(|n| n.site_id);
        let content = site.and_then(|s| self.edge.site_content(s));
        datasets
            .iter()
            .map(|d| pb::StagedContent {
                name: d.name.clone(),
                sha256: d.sha256.clone(),
                size_bytes: d.size_bytes as i64,
                edge_url: content
                    .as_ref()
                    .filter(|c| !c.content_url.is_empty() && c.cached.contains(&d.sha256))
                    .map(|c| format!("{}/content/{}", c.content_url, d.sha256))
                    .unwrap_or_default(),
                origin_url: d.url.clone(),
            })
            .collect()
    }
}
