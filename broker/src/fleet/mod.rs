//! The live fleet view: every node, its capacity and its agent session, in
//! memory and fed by agent streams. PostgreSQL holds the durable copy; this
//! view answers placement and dispatch without a query.

pub mod lending;
pub mod liveness;
pub mod possible;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, RwLock, RwLockWriteGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use classgrid_placement as placement;
use classgrid_proto::v1::BrokerMessage;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{
    domain::states::node as node_state,
    store::{
        nodes::{DeviceRow, NodeRow},
        sites::SiteRow,
    },
};

/// A session's outbound messages, boxed: a channel block holds 32 slots,
/// and 32 unboxed messages made each connected node's channel ~10 KB
/// before anything was sent (heaptrack, 5,000 nodes).
pub type SessionTx = mpsc::Sender<Box<BrokerMessage>>;

#[derive(Debug, Clone)]
pub struct LiveNode {
    pub id: Uuid,
    pub site_id: Uuid,
    pub name: String,
    pub tier: String,
    pub state: &'static str,
    pub cordoned: bool,
    /// False while the node waits for a district admin (decision 064).
    pub approved: bool,
    pub cpu_millis: i32,
    pub memory_mib: i64,
    pub runtimes: Vec<String>,
    pub warnings: Vec<String>,
    pub devices: Vec<DeviceRow>,
    /// The commands its process runtime can start, as its agent reported
    /// them this session; None when it reported none (no process runtime,
    /// an older agent, or not registered since this broker started), and
    /// then nothing is checked.
    pub commands: Option<Arc<HashSet<String>>>,
    pub last_seen: Instant,
    pub last_seen_wall: DateTime<Utc>,
    /// The heartbeat interval its agent was given at registration
    /// (`liveness::heartbeat_every`); its silence is judged by it.
    pub heartbeat: Duration,
    /// `site/name` of the edge whose relay carries the current session;
    /// None for a direct connection.
    pub relay: Option<String>,
    session: Option<(u64, SessionTx)>,
    /// The current session has delivered what its agent queued while it
    /// was away (see `caught_up`).
    caught_up: bool,
}

impl LiveNode {
    pub fn from_row(n: NodeRow, devices: Vec<DeviceRow>) -> Self {
        Self {
            id: n.id,
            site_id: n.site_id,
            name: n.name,
            tier: n.tier,
            state: match n.state.as_str() {
                node_state::CONNECTED => node_state::CONNECTED,
                node_state::LOST => node_state::LOST,
                _ => node_state::DISCONNECTED,
            },
            cordoned: n.cordoned,
            approved: n.approved,
            cpu_millis: n.cpu_millis,
            memory_mib: n.memory_mib,
            runtimes: n.runtimes,
            warnings: n.warnings,
            devices,
            commands: None,
            // A node that was connected before a broker restart gets the full
            // silence window to reconnect before it is called disconnected.
            last_seen: Instant::now(),
            last_seen_wall: n.last_seen,
            heartbeat: liveness::MIN_HEARTBEAT,
            relay: None,
            session: None,
            caught_up: false,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.state == node_state::CONNECTED
    }
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<Uuid, LiveNode>,
    sites: HashMap<Uuid, SiteRow>,
    lending: Vec<lending::LendingRule>,
    /// Per site, from its edge: cached digests and staging bytes/s.
    content: HashMap<Uuid, (Vec<String>, Option<f64>)>,
}

#[derive(Default)]
pub struct Fleet {
    inner: RwLock<Inner>,
    next_session: AtomicU64,
    /// The placement view, shared by every booking until something placement
    /// sees changes. Building it clones every node; at a bell with hundreds
    /// of bookings that cloning was most of the broker's own CPU.
    snapshot: Mutex<Option<Arc<placement::Fleet>>>,
}

impl Fleet {
    /// The view for writing; the shared placement view is dropped while the
    /// write lock is held, so no snapshot of the old state outlives it.
    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        let g = self.inner.write().expect("fleet lock");
        self.invalidate();
        g
    }

    fn invalidate(&self) {
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn load(sites: Vec<SiteRow>, nodes: Vec<(NodeRow, Vec<DeviceRow>)>) -> Self {
        let fleet = Self::default();
        {
            let mut g = fleet.write();
            for s in sites {
                g.sites.insert(s.id, s);
            }
            for (n, d) in nodes {
                g.nodes.insert(n.id, LiveNode::from_row(n, d));
            }
        }
        fleet
    }

    /// The lending policies from the broker config; nodes they name are kept
    /// for their own school's classes in its hours.
    pub fn set_lending(&self, rules: Vec<lending::LendingRule>) {
        self.write().lending = rules;
    }

    /// What the site's edge has cached and how fast it stages; nodes at the
    /// site count both as their own.
    pub fn set_site_content(&self, site: Uuid, cached: Vec<String>, bytes_per_sec: Option<f64>) {
        self.write().content.insert(site, (cached, bytes_per_sec));
    }

    pub fn put_site(&self, s: SiteRow) {
        self.write().sites.insert(s.id, s);
    }

    /// A site by id or by name.
    pub fn site(&self, key: &str) -> Option<SiteRow> {
        let g = self.inner.read().expect("fleet lock");
        if let Ok(id) = key.parse::<Uuid>() {
            if let Some(s) = g.sites.get(&id) {
                return Some(s.clone());
            }
        }
        g.sites.values().find(|s| s.name == key).cloned()
    }

    pub fn site_by_id(&self, id: Uuid) -> Option<SiteRow> {
        self.inner
            .read()
            .expect("fleet lock")
            .sites
            .get(&id)
            .cloned()
    }

    pub fn sites(&self) -> Vec<SiteRow> {
        let mut v: Vec<_> = self
            .inner
            .read()
            .expect("fleet lock")
            .sites
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Attaches a fresh agent session to a node, replacing any older one
    /// (whose stream is then closed by dropping its sender).
    pub fn attach(&self, mut node: LiveNode, tx: SessionTx) -> u64 {
        let sid = self.next_session.fetch_add(1, Ordering::Relaxed) + 1;
        node.session = Some((sid, tx));
        node.caught_up = false;
        node.state = node_state::CONNECTED;
        node.last_seen = Instant::now();
        node.last_seen_wall = Utc::now();
        let mut g = self.write();
        // What admins decided while the agent was away (cordon, approval)
        // is kept in this view as it was set; the registration's copy may
        // have been read before a concurrent decision.
        if let Some(old) = g.nodes.get(&node.id) {
            node.cordoned = old.cordoned;
            node.approved = old.approved;
        }
        g.nodes.insert(node.id, node);
        sid
    }

    /// Records a sign of life from the current session. Returns the previous
    /// state when the node comes back from disconnected or lost.
    pub fn touch(&self, node_id: Uuid, sid: u64) -> Option<&'static str> {
        let mut g = self.inner.write().expect("fleet lock");
        let n = g.nodes.get_mut(&node_id)?;
        if n.session.as_ref().map(|s| s.0) != Some(sid) {
            return None;
        }
        n.last_seen = Instant::now();
        n.last_seen_wall = Utc::now();
        if n.state != node_state::CONNECTED {
            let prev = n.state;
            n.state = node_state::CONNECTED;
            // Under the write lock still: no snapshot is being built.
            self.invalidate();
            return Some(prev);
        }
        None
    }

    /// Heartbeats carry usage figures placement does not read; the shared
    /// placement view is kept unless what it reads changed.
    pub fn update_devices(&self, node_id: Uuid, devices: Vec<DeviceRow>) {
        let mut g = self.inner.write().expect("fleet lock");
        let Some(n) = g.nodes.get_mut(&node_id) else {
            return;
        };
        let before = to_placement_node(n).devices;
        n.devices = devices;
        if to_placement_node(n).devices != before {
            self.invalidate();
        }
    }

    /// Detaches a session when its stream ends. The node turns disconnected at
    /// once: its agent is gone from this broker, whatever its work is doing.
    pub fn detach(&self, node_id: Uuid, sid: u64) -> bool {
        let mut g = self.write();
        match g.nodes.get_mut(&node_id) {
            Some(n) if n.session.as_ref().map(|s| s.0) == Some(sid) => {
                n.session = None;
                n.state = node_state::DISCONNECTED;
                true
            }
            _ => false,
        }
    }

    pub fn is_current(&self, node_id: Uuid, sid: u64) -> bool {
        let g = self.inner.read().expect("fleet lock");
        g.nodes
            .get(&node_id)
            .and_then(|n| n.session.as_ref())
            .is_some_and(|s| s.0 == sid)
    }

    /// Drops a node's session: its outbound stream ends and the agent must
    /// reconnect, proving itself again (used when its certificate is revoked).
    pub fn kick(&self, node_id: Uuid) {
        self.update(node_id, |n| {
            n.session = None;
            n.state = node_state::DISCONNECTED;
        });
    }

    /// Sends a message to a node's agent; false when it has no live session.
    pub fn send(&self, node_id: Uuid, msg: BrokerMessage) -> bool {
        let tx = {
            let g = self.inner.read().expect("fleet lock");
            g.nodes
                .get(&node_id)
                .and_then(|n| n.session.as_ref().map(|s| s.1.clone()))
        };
        match tx {
            Some(tx) => tx.try_send(Box::new(msg)).is_ok(),
            None => false,
        }
    }

    pub fn node(&self, id: Uuid) -> Option<LiveNode> {
        self.inner
            .read()
            .expect("fleet lock")
            .nodes
            .get(&id)
            .cloned()
    }

    /// The names of `ids` that are in the fleet, under one read of it.
    pub fn names_of(&self, ids: impl Iterator<Item = Uuid>) -> HashMap<Uuid, String> {
        let g = self.inner.read().expect("fleet lock");
        let mut names = HashMap::new();
        for id in ids {
            if let Some(n) = g.nodes.get(&id) {
                names.entry(id).or_insert_with(|| n.name.clone());
            }
        }
        names
    }

    /// `f` of the node, read in place: for what is asked per seat, where a
    /// copy of the node (its devices, runtimes, warnings) was most of the
    /// cost (a term's 486,000 seats priced one by one).
    pub fn with_node<R>(&self, id: Uuid, f: impl FnOnce(&LiveNode) -> R) -> Option<R> {
        self.inner.read().expect("fleet lock").nodes.get(&id).map(f)
    }

    /// Whether the node has a live session here; no copy of the node is made
    /// (asked once per seat at a start and per assignment at settlement).
    pub fn is_connected(&self, id: Uuid) -> bool {
        self.inner
            .read()
            .expect("fleet lock")
            .nodes
            .get(&id)
            .is_some_and(LiveNode::is_connected)
    }

    /// Session `sid` of the node has delivered its agent's backlog. An agent
    /// sends what it queued while the broker was away first, then its
    /// heartbeats, and the statuses before a heartbeat are written before
    /// the heartbeat is handled: so this is called on the first heartbeat.
    pub fn caught_up(&self, node_id: Uuid, sid: u64) {
        // Every heartbeat comes here; only the first of a session writes.
        let current = |n: &LiveNode| n.session.as_ref().is_some_and(|s| s.0 == sid);
        if self
            .inner
            .read()
            .expect("fleet lock")
            .nodes
            .get(&node_id)
            .is_none_or(|n| !current(n) || n.caught_up)
        {
            return;
        }
        let mut g = self.inner.write().expect("fleet lock");
        if let Some(n) = g.nodes.get_mut(&node_id)
            && current(n)
        {
            n.caught_up = true;
        }
    }

    /// True when the node's agent is connected to this broker process and
    /// has delivered what it metered while away. Unlike `is_connected`,
    /// false for a node that was connected before a broker restart and has
    /// not come back yet, and for one that has just reconnected.
    pub fn is_caught_up(&self, id: Uuid) -> bool {
        self.inner
            .read()
            .expect("fleet lock")
            .nodes
            .get(&id)
            .is_some_and(|n| n.session.is_some() && n.caught_up)
    }

    /// Each node's id, last sign of life and state: what the liveness sweep
    /// reads four times a second, without copying and sorting whole nodes
    /// (that was ~2 % of the broker's CPU at a bell with 2,000 nodes).
    pub fn liveness(&self) -> Vec<(Uuid, Instant, &'static str, Duration)> {
        self.inner
            .read()
            .expect("fleet lock")
            .nodes
            .values()
            .map(|n| (n.id, n.last_seen, n.state, n.heartbeat))
            .collect()
    }

    /// Nodes known to this region, connected or not: what heartbeats are
    /// paced by, as a restarted broker's fleet reconnects all at once.
    pub fn len(&self) -> usize {
        self.inner.read().expect("fleet lock").nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `f` of every node, read in place and in no order: for what sums
    /// over the whole fleet every few seconds (the slice gauges), where a
    /// sorted copy of 20,000 nodes was most of the cost.
    pub fn with_nodes<R>(&self, f: impl FnOnce(&mut dyn Iterator<Item = &LiveNode>) -> R) -> R {
        let g = self.inner.read().expect("fleet lock");
        f(&mut g.nodes.values())
    }

    pub fn nodes(&self) -> Vec<LiveNode> {
        let mut v: Vec<_> = self
            .inner
            .read()
            .expect("fleet lock")
            .nodes
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// What a node's agent now says its process runtime can start.
    /// Placement's view does not hold it, so it is kept (booking checks
    /// it with `lacking_command`).
    pub fn set_commands(&self, node_id: Uuid, commands: Option<Arc<HashSet<String>>>) {
        let mut g = self.inner.write().expect("fleet lock");
        if let Some(n) = g.nodes.get_mut(&node_id) {
            n.commands = commands;
        }
    }

    /// Nodes whose agent reported the commands its process runtime can
    /// start, without `program` among them.
    pub fn lacking_command(&self, program: &str) -> Vec<Uuid> {
        let g = self.inner.read().expect("fleet lock");
        g.nodes
            .values()
            .filter(|n| n.runtimes.iter().any(|r| r == "process"))
            .filter(|n| n.commands.as_ref().is_some_and(|c| !c.contains(program)))
            .map(|n| n.id)
            .collect()
    }

    pub fn set_state(&self, node_id: Uuid, state: &'static str) {
        self.update(node_id, |n| n.state = state);
    }

    #[cfg(test)]
    pub(crate) fn set_heartbeat(&self, node_id: Uuid, every: Duration) {
        self.update(node_id, |n| n.heartbeat = every);
    }

    /// Placement reads `cordoned` from here, so a cordon takes effect on
    /// the next placement without a reload.
    pub fn set_cordoned(&self, node_id: Uuid, cordoned: bool) {
        self.update(node_id, |n| n.cordoned = cordoned);
    }

    /// Placement reads `approved` from here too, like `cordoned`.
    pub fn set_approved(&self, node_id: Uuid, approved: bool) {
        self.update(node_id, |n| n.approved = approved);
    }

    /// Changes one node in place, if the view has it.
    fn update(&self, node_id: Uuid, f: impl FnOnce(&mut LiveNode)) {
        if let Some(n) = self.write().nodes.get_mut(&node_id) {
            f(n);
        }
    }

    /// The fleet as the placement core sees it at this instant.
    pub fn snapshot(&self) -> Arc<placement::Fleet> {
        // The read lock is held throughout, so no writer changes the view
        // between building this snapshot and sharing it.
        let g = self.inner.read().expect("fleet lock");
        let mut cached = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = &*cached {
            return s.clone();
        }
        let sites = g
            .sites
            .values()
            .map(|s| placement::Site {
                id: s.id,
                name: s.name.clone(),
                kind: match s.kind.as_str() {
                    "school" => placement::SiteKind::School,
                    "district_pop" => placement::SiteKind::DistrictPop,
                    _ => placement::SiteKind::Cloud,
                },
                district: s.district.clone(),
            })
            .collect();
        let nodes = g
            .nodes
            .values()
            .map(|n| {
                let mut p = to_placement_node(n);
                if let Some((cached, bps)) = g.content.get(&n.site_id) {
                    p.cached = cached.clone();
                    p.staging_bytes_per_sec = *bps;
                }
                if !g.lending.is_empty() {
                    let site = g.sites.get(&n.site_id).map(|s| s.name.as_str());
                    p.lending =
                        lending::policy_for(&g.lending, n.site_id, site.unwrap_or(""), &n.name);
                }
                p
            })
            .collect();
        let s = Arc::new(placement::Fleet { sites, nodes });
        *cached = Some(s.clone());
        s
    }
}

fn to_placement_node(n: &LiveNode) -> placement::Node {
    placement::Node {
        id: n.id,
        name: n.name.clone(),
        site_id: n.site_id,
        tier: if n.tier == "cloud" {
            placement::Tier::Cloud
        } else {
            placement::Tier::Edge
        },
        liveness: match n.state {
            node_state::CONNECTED => placement::Liveness::Connected,
            node_state::LOST => placement::Liveness::Lost,
            _ => placement::Liveness::Disconnected,
        },
        healthy: true,
        cordoned: n.cordoned,
        approved: n.approved,
        runtimes: n.runtimes.clone(),
        cpu_millis: n.cpu_millis.max(0) as u32,
        memory_mib: n.memory_mib.max(0) as u64,
        devices: n
            .devices
            .iter()
            .map(|d| placement::Device {
                index: d.idx.max(0) as u32,
                vendor: d.vendor.clone(),
                model: d.model.clone(),
                memory_mib: d.memory_mib.max(0) as u64,
                healthy: d.healthy,
                max_slices: d.max_slices.max(1) as u32,
                isolation: match d.isolation.as_str() {
                    "hard" => placement::Isolation::Hard,
                    "soft" => placement::Isolation::Soft,
                    _ => placement::Isolation::None,
                },
            })
            .collect(),
        cached: Vec::new(),
        staging_bytes_per_sec: None,
        lending: None,
    }
}
