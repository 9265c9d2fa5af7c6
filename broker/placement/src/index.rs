//! `FleetIndex`: the fleet grouped once per snapshot so that `place_indexed`
//! decides whole groups of nodes with one run of the static filters.
//!
//! Every static filter reads a node's own fields and, for `residency` and
//! `rtt`, where its site stands from the school's: the same site, the same
//! district, or elsewhere. A node's **kind** is all of its fields but `id`,
//! `name`, `site_id` and `tier` (approval, health, runtimes, cpu and memory,
//! devices, cache, bandwidth, lending policy). Two nodes of one kind, on
//! sites that stand the same way from the school (bucket: own site, own
//! district, elsewhere; site kind; tier), and whose RTT from the school is
//! the configured class (no measurement or estimate for the pair), meet the
//! same first failing filter with the same tag, and have the same score
//! bound. So the index keeps, per snapshot:
//!
//! - per site, its nodes by (tier, kind) (cells);
//! - per district and for the whole fleet, how many nodes of each (site
//!   kind, tier, kind), with up to two representatives from different sites
//!   (districts);
//! - node id to position, for the few nodes the RTT table measured or
//!   estimated from this school, which are checked one by one.
//!
//! A request then runs the static filters once per (bucket, site kind,
//! tier, kind) on a representative, with the configured RTT, and counts the
//! group's nodes under the filter that failed, exactly as checking each would
//! have. Groups that pass wait in the rank order by their bound, and their
//! nodes are listed only when the rank order reaches them. Nothing in the
//! index depends on the RTT table or the calendar, so a changed table needs
//! no rebuild; a changed fleet is a new snapshot and a new index.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::filters::{Candidate, Ctx, STATIC, Verdict, Work};
use crate::ids::IdMap;
use crate::model::{Fleet, LendingPolicy, Node, NodeId, Site, SiteId, SiteKind, Tier};
use crate::rtt::{RttTable, SchoolRtt};

const NONE: u32 = u32::MAX;

/// Site kind, tier and node kind: what, with the bucket, decides a group.
pub(crate) type GroupKey = (SiteKind, Tier, u32);

/// Where a site stands from the school.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Bucket {
    /// The school's own site.
    Own,
    /// Another site of the school's district.
    District,
    /// Any other known site.
    Elsewhere,
}

struct Cell {
    tier: Tier,
    kind: u32,
    members: Vec<u32>,
}

/// Nodes of one (site kind, tier, kind) in a district or the fleet.
pub(crate) struct Tally {
    pub key: GroupKey,
    pub count: u32,
    /// Up to two node positions from different sites (in a district) or
    /// different districts (in the fleet), so one lies outside whatever the
    /// request's own site or district is.
    pub reps: [u32; 2],
}

#[derive(Default)]
struct Totals {
    list: Vec<Tally>,
    at: IdMap<GroupKey, usize>,
}

impl Totals {
    /// Adds node `pos`, whose "place" (site or district) is `place`.
    fn add(&mut self, key: GroupKey, pos: u32, place: u32, place_of: impl Fn(u32) -> u32) {
        let i = *self.at.entry(key).or_insert_with(|| {
            self.list.push(Tally {
                key,
                count: 0,
                reps: [NONE, NONE],
            });
            self.list.len() - 1
        });
        let t = &mut self.list[i];
        t.count += 1;
        if t.reps[0] == NONE {
            t.reps[0] = pos;
        } else if t.reps[1] == NONE && place_of(t.reps[0]) != place {
            t.reps[1] = pos;
        }
    }

    fn count(&self, key: &GroupKey) -> u32 {
        self.at.get(key).map_or(0, |&i| self.list[i].count)
    }
}

struct District {
    sites: Vec<u32>,
    totals: Totals,
}

/// The fleet grouped for `place_indexed`; build one per fleet snapshot.
pub struct FleetIndex {
    fleet: Arc<Fleet>,
    /// Per node: the position in `fleet.sites` of its site (the entry a
    /// lookup by id finds, the last of equal ids), or `NONE`.
    node_site: Vec<u32>,
    kind_of: Vec<u32>,
    kinds: usize,
    by_id: IdMap<NodeId, u32>,
    /// The next node with the same id, or `NONE`.
    same_id: Vec<u32>,
    /// Nodes on a site the fleet does not list: always checked one by one.
    loose: Vec<u32>,
    site_by_id: IdMap<SiteId, u32>,
    site_district: Vec<u32>,
    cells: Vec<Vec<Cell>>,
    districts: Vec<District>,
    district_by_name: HashMap<String, u32>,
    everywhere: Totals,
    /// Per school, its pinned nodes sorted by RTT, for one RTT table.
    sorted: Mutex<SortedRtts>,
}

/// The sorted pins of one RTT table (named by its stamp) on this snapshot.
/// A table with another stamp replaces them all.
#[derive(Default)]
struct SortedRtts {
    table: u64,
    /// Schools placed once under `table` and not yet sorted: sorting costs
    /// more than one scan, so a school is sorted the second time it is seen.
    seen: IdMap<SiteId, ()>,
    schools: IdMap<SiteId, Arc<Pins>>,
}

impl std::fmt::Debug for FleetIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetIndex")
            .field("nodes", &self.fleet.nodes.len())
            .field("sites", &self.fleet.sites.len())
            .field("kinds", &self.kinds)
            .field("groups", &self.everywhere.list.len())
            .finish()
    }
}

impl FleetIndex {
    /// Groups `fleet`'s nodes; linear in the fleet, done once per snapshot.
    pub fn new(fleet: Arc<Fleet>) -> Self {
        let mut site_by_id: IdMap<SiteId, u32> = IdMap::default();
        for (i, s) in fleet.sites.iter().enumerate() {
            site_by_id.insert(s.id, i as u32);
        }
        let mut district_by_name: HashMap<String, u32> = HashMap::new();
        let mut districts: Vec<District> = Vec::new();
        let mut site_district = vec![NONE; fleet.sites.len()];
        for (i, s) in fleet.sites.iter().enumerate() {
            if site_by_id[&s.id] != i as u32 {
                continue; // shadowed by a later entry with the same id
            }
            let d = *district_by_name
                .entry(s.district.clone())
                .or_insert_with(|| {
                    districts.push(District {
                        sites: Vec::new(),
                        totals: Totals::default(),
                    });
                    (districts.len() - 1) as u32
                });
            site_district[i] = d;
            districts[d as usize].sites.push(i as u32);
        }

        let n = fleet.nodes.len();
        let mut kind_of = vec![0u32; n];
        let mut kind_reps: Vec<u32> = Vec::new();
        let mut by_hash: HashMap<u64, Vec<u32>> = HashMap::new();
        let mut node_site = vec![NONE; n];
        let mut by_id: IdMap<NodeId, u32> = IdMap::default();
        let mut same_id = vec![NONE; n];
        let mut last_of_id: IdMap<NodeId, u32> = IdMap::default();
        let mut loose = Vec::new();
        let mut cells: Vec<Vec<Cell>> = (0..fleet.sites.len()).map(|_| Vec::new()).collect();
        let mut everywhere = Totals::default();
        for (p, node) in fleet.nodes.iter().enumerate() {
            let p32 = p as u32;
            match last_of_id.insert(node.id, p32) {
                Some(prev) => same_id[prev as usize] = p32,
                None => {
                    by_id.insert(node.id, p32);
                }
            }
            let bucket = by_hash.entry(kind_hash(node)).or_default();
            let kind = match bucket
                .iter()
                .find(|&&k| same_kind(&fleet.nodes[kind_reps[k as usize] as usize], node))
            {
                Some(&k) => k,
                None => {
                    kind_reps.push(p32);
                    let k = (kind_reps.len() - 1) as u32;
                    bucket.push(k);
                    k
                }
            };
            kind_of[p] = kind;
            let Some(&s) = site_by_id.get(&node.site_id) else {
                loose.push(p32);
                continue;
            };
            node_site[p] = s;
            let site_cells = &mut cells[s as usize];
            match site_cells
                .iter_mut()
                .find(|c| c.tier == node.tier && c.kind == kind)
            {
                Some(c) => c.members.push(p32),
                None => site_cells.push(Cell {
                    tier: node.tier,
                    kind,
                    members: vec![p32],
                }),
            }
            let key = (fleet.sites[s as usize].kind, node.tier, kind);
            let d = site_district[s as usize];
            districts[d as usize]
                .totals
                .add(key, p32, s, |q| node_site[q as usize]);
            everywhere.add(key, p32, d, |q| {
                site_district[node_site[q as usize] as usize]
            });
        }
        FleetIndex {
            node_site,
            kind_of,
            kinds: kind_reps.len(),
            by_id,
            same_id,
            loose,
            site_by_id,
            site_district,
            cells,
            districts,
            district_by_name,
            everywhere,
            fleet,
            sorted: Mutex::default(),
        }
    }

    fn sorted_rtts(&self, table: u64) -> MutexGuard<'_, SortedRtts> {
        // The guarded maps are only ever replaced whole or added to, so a
        // panic elsewhere cannot leave them half-written.
        let mut g = self.sorted.lock().unwrap_or_else(|e| e.into_inner());
        if g.table != table {
            *g = SortedRtts {
                table,
                ..Default::default()
            };
        }
        g
    }

    /// `school`'s pinned nodes sorted by RTT under the table stamped
    /// `table`: cached, or sorted now (by `sort`) if the school was seen
    /// under this table before; `None` the first time.
    pub(crate) fn sorted_pins(
        &self,
        table: u64,
        school: SiteId,
        sort: impl FnOnce() -> Pins,
    ) -> Option<Arc<Pins>> {
        {
            let mut g = self.sorted_rtts(table);
            if let Some(p) = g.schools.get(&school) {
                return Some(p.clone());
            }
            let first_time = g.seen.insert(school, ()).is_none();
            if first_time {
                return None;
            }
        }
        let p = Arc::new(sort());
        let mut g = self.sorted_rtts(table);
        g.schools.insert(school, p.clone());
        Some(p)
    }

    /// Sorts, for every school `rtt` measured or estimated nodes from, its
    /// pinned nodes by RTT now, so that the first placement at each school
    /// under this table finds them sorted (else it is the second). Returns
    /// how many schools were sorted. Linear in the table's entries for this
    /// fleet, times the log of a school's.
    pub fn sort_rtts(&self, rtt: &RttTable) -> usize {
        let mut n = 0;
        for &id in rtt.schools() {
            let placeholder;
            let school = match self.site_by_id.get(&id) {
                Some(&s) => &self.fleet.sites[s as usize],
                None => {
                    placeholder = unknown_school(id);
                    &placeholder
                }
            };
            let plan = Plan::new(self, id, &school.district);
            let p = Arc::new(plan.pins(&rtt.for_school(school), true));
            self.sorted_rtts(rtt.stamp()).schools.insert(id, p);
            n += 1;
        }
        n
    }

    /// How many schools' pinned nodes are held sorted for `rtt`.
    pub fn sorted_schools(&self, rtt: &RttTable) -> usize {
        let g = self.sorted.lock().unwrap_or_else(|e| e.into_inner());
        if g.table == rtt.stamp() {
            g.schools.len()
        } else {
            0
        }
    }

    /// Nodes on sites the fleet does not list.
    pub(crate) fn loose(&self) -> &[u32] {
        &self.loose
    }

    /// The snapshot this index was built from.
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// Distinct node kinds (everything but id, name, site and tier).
    pub fn kinds(&self) -> usize {
        self.kinds
    }

    /// Groups of (site kind, tier, kind) over the whole fleet.
    pub fn groups(&self) -> usize {
        self.everywhere.list.len()
    }
}

/// Which nodes the RTT table pins for one school (a measurement or an
/// estimate from it): they are taken out of their groups and checked apart.
pub(crate) struct Pins {
    /// Bit per node position; empty when nothing is pinned.
    bits: Vec<u64>,
    /// Pinned nodes taken out of each (bucket, key) group.
    taken: IdMap<(Bucket, GroupKey), u32>,
    /// Pinned nodes on listed sites, to check one by one (not sorted).
    pub listed: Vec<u32>,
    /// Pinned nodes on listed sites by group, sorted (instead of `listed`).
    pub runs: Vec<Run>,
}

/// The pinned nodes of one (bucket, key) group, sorted.
pub(crate) struct Run {
    group: (Bucket, GroupKey),
    /// Measured, then estimated (a node with both is measured), each by
    /// (RTT, fleet position): the order of their score bounds.
    pub lists: [Vec<Pin>; 2],
}

/// A pinned node: its RTT from the school and its fleet position.
#[derive(Clone, Copy)]
pub(crate) struct Pin {
    pub ms: f64,
    pub at: u32,
}

impl Pins {
    fn is_pinned(&self, pos: u32) -> bool {
        let q = pos as usize;
        self.bits
            .get(q / 64)
            .is_some_and(|w| w & (1 << (q % 64)) != 0)
    }
}

/// One request's view of the index: which bucket each site is in, and the
/// groups to decide.
pub(crate) struct Plan<'a> {
    pub index: &'a FleetIndex,
    school_site: u32,
    district: u32,
}

/// A group to decide: its bucket, key, how many unpinned nodes it holds, and
/// a node to run the filters on.
pub(crate) struct Group {
    pub bucket: Bucket,
    pub key: GroupKey,
    pub count: u32,
    pub rep: u32,
}

impl<'a> Plan<'a> {
    pub fn new(index: &'a FleetIndex, school: SiteId, district: &str) -> Self {
        Plan {
            index,
            school_site: index.site_by_id.get(&school).copied().unwrap_or(NONE),
            district: index
                .district_by_name
                .get(district)
                .copied()
                .unwrap_or(NONE),
        }
    }

    /// The nodes `school` pins; with `sorted`, grouped into [`Run`]s
    /// sorted by RTT (what [`FleetIndex`] caches), else `listed` in the
    /// table's order.
    pub fn pins(&self, school: &SchoolRtt<'_>, sorted: bool) -> Pins {
        let ix = self.index;
        let mut p = Pins {
            bits: Vec::new(),
            taken: IdMap::default(),
            listed: Vec::new(),
            runs: Vec::new(),
        };
        if school.pinned_len() == 0 {
            return p;
        }
        p.bits = vec![0; ix.fleet.nodes.len().div_ceil(64)];
        let mut runs: IdMap<(Bucket, GroupKey), usize> = IdMap::default();
        let measured = school.measured().map(|(id, ms)| (0, id, ms));
        let estimated = school.estimated().map(|(id, ms)| (1, id, ms));
        for (source, id, ms) in measured.chain(estimated) {
            let mut at = ix.by_id.get(id).copied().unwrap_or(NONE);
            while at != NONE {
                let q = at as usize;
                if ix.node_site[q] != NONE && p.bits[q / 64] & (1 << (q % 64)) == 0 {
                    p.bits[q / 64] |= 1 << (q % 64);
                    let g = self.group_of(at).expect("on a listed site");
                    if sorted {
                        let r = *runs.entry(g).or_insert_with(|| {
                            p.runs.push(Run {
                                group: g,
                                lists: [Vec::new(), Vec::new()],
                            });
                            p.runs.len() - 1
                        });
                        p.runs[r].lists[source].push(Pin { ms, at });
                    } else {
                        *p.taken.entry(g).or_default() += 1;
                        p.listed.push(at);
                    }
                }
                at = ix.same_id[q];
            }
        }
        for r in &mut p.runs {
            let n = r.lists[0].len() + r.lists[1].len();
            p.taken.insert(r.group, n as u32);
            for l in &mut r.lists {
                l.sort_unstable_by(|a, b| a.ms.total_cmp(&b.ms).then(a.at.cmp(&b.at)));
            }
        }
        p
    }

    /// The position in `fleet.sites` of the site node `pos` is on (the
    /// entry a lookup by id finds); only for nodes on listed sites.
    pub fn site_of(&self, pos: u32) -> u32 {
        self.index.node_site[pos as usize]
    }

    /// The group a node on a listed site belongs to; `None` for a node on a
    /// site the fleet does not list.
    pub fn group_of(&self, pos: u32) -> Option<(Bucket, GroupKey)> {
        let ix = self.index;
        let q = pos as usize;
        let s = ix.node_site[q];
        (s != NONE).then(|| {
            let key = (
                ix.fleet.sites[s as usize].kind,
                ix.fleet.nodes[q].tier,
                ix.kind_of[q],
            );
            (self.bucket_of(s), key)
        })
    }

    fn bucket_of(&self, site: u32) -> Bucket {
        if site == self.school_site {
            Bucket::Own
        } else if self.index.site_district[site as usize] == self.district {
            Bucket::District
        } else {
            Bucket::Elsewhere
        }
    }

    fn own_cells(&self) -> &'a [Cell] {
        match self.school_site {
            NONE => &[],
            s => &self.index.cells[s as usize],
        }
    }

    fn own_count(&self, key: &GroupKey) -> u32 {
        if self.school_site == NONE
            || self.index.fleet.sites[self.school_site as usize].kind != key.0
        {
            return 0;
        }
        self.own_cells()
            .iter()
            .find(|c| c.tier == key.1 && c.kind == key.2)
            .map_or(0, |c| c.members.len() as u32)
    }

    /// Every non-empty group of unpinned nodes on known sites.
    pub fn groups(&self, pins: &Pins) -> Vec<Group> {
        let ix = self.index;
        let mut out = Vec::new();
        let mut push = |bucket, key, count: u32, rep| {
            let count = count - pins.taken.get(&(bucket, key)).copied().unwrap_or(0);
            if count > 0 {
                out.push(Group {
                    bucket,
                    key,
                    count,
                    rep,
                });
            }
        };
        if self.school_site != NONE {
            let kind = ix.fleet.sites[self.school_site as usize].kind;
            for c in self.own_cells() {
                push(
                    Bucket::Own,
                    (kind, c.tier, c.kind),
                    c.members.len() as u32,
                    c.members[0],
                );
            }
        }
        let district = (self.district != NONE).then(|| &ix.districts[self.district as usize]);
        if let Some(d) = district {
            for t in &d.totals.list {
                let rep = pick(&t.reps, |q| ix.node_site[q as usize] != self.school_site);
                push(
                    Bucket::District,
                    t.key,
                    t.count - self.own_count(&t.key),
                    rep,
                );
            }
        }
        for t in &ix.everywhere.list {
            let inside = district.map_or(0, |d| d.totals.count(&t.key));
            let rep = pick(&t.reps, |q| {
                ix.site_district[ix.node_site[q as usize] as usize] != self.district
            });
            push(Bucket::Elsewhere, t.key, t.count - inside, rep);
        }
        out
    }

    /// The unpinned nodes of group `g`, in any order.
    pub fn members(&self, pins: &Pins, g: &Group, mut each: impl FnMut(u32, u32)) {
        let ix = self.index;
        let mut cell = |site: u32| {
            if ix.fleet.sites[site as usize].kind != g.key.0 {
                return;
            }
            if let Some(c) = ix.cells[site as usize]
                .iter()
                .find(|c| c.tier == g.key.1 && c.kind == g.key.2)
            {
                for &m in &c.members {
                    if !pins.is_pinned(m) {
                        each(m, site);
                    }
                }
            }
        };
        match g.bucket {
            Bucket::Own => cell(self.school_site),
            Bucket::District => {
                for &s in &ix.districts[self.district as usize].sites {
                    if s != self.school_site {
                        cell(s);
                    }
                }
            }
            Bucket::Elsewhere => {
                for (d, district) in ix.districts.iter().enumerate() {
                    if d as u32 != self.district {
                        for &s in &district.sites {
                            cell(s);
                        }
                    }
                }
            }
        }
    }
}

/// What a request at a school the fleet does not list sees as its school:
/// measured RTTs still count, its configured ones fall to the
/// cross-district class.
pub(crate) fn unknown_school(id: SiteId) -> Site {
    Site {
        id,
        name: id.to_string(),
        kind: SiteKind::School,
        district: String::new(),
    }
}

/// The first representative that `ok` accepts. Only called where the counts
/// say one exists.
fn pick(reps: &[u32; 2], ok: impl Fn(u32) -> bool) -> u32 {
    reps.iter()
        .copied()
        .find(|&r| r != NONE && ok(r))
        .unwrap_or(reps[0])
}

/// What a run of static filters says: passed, or the first that failed and
/// its tag.
pub(crate) type Checked = Result<(), (usize, &'static str)>;

/// Runs the static filters `range` on `cand`: `Ok(())` if it passes them
/// all, else the first that failed and its tag.
pub(crate) fn run_filters<'a>(
    range: std::ops::Range<usize>,
    ctx: &Ctx<'a>,
    cand: &mut Candidate<'a>,
    work: &mut Work<'a>,
) -> Checked {
    for i in range {
        if let Verdict::Fail(tag) = STATIC[i].check(ctx, cand, work) {
            return Err((i, tag));
        }
    }
    Ok(())
}

/// Runs every static filter on `cand`.
pub(crate) fn run_static<'a>(
    ctx: &Ctx<'a>,
    cand: &mut Candidate<'a>,
    work: &mut Work<'a>,
) -> Checked {
    run_filters(0..STATIC.len(), ctx, cand, work)
}

/// Everything but id, name, site and tier. Destructured, so that a new
/// field on `Node` must be placed on one side or the other here.
fn same_kind(a: &Node, b: &Node) -> bool {
    let Node {
        id: _,
        name: _,
        site_id: _,
        tier: _,
        liveness,
        healthy,
        cordoned,
        approved,
        runtimes,
        cpu_millis,
        memory_mib,
        devices,
        cached,
        staging_bytes_per_sec,
        lending,
    } = a;
    *liveness == b.liveness
        && *healthy == b.healthy
        && *cordoned == b.cordoned
        && *approved == b.approved
        && *runtimes == b.runtimes
        && *cpu_millis == b.cpu_millis
        && *memory_mib == b.memory_mib
        && *devices == b.devices
        && *cached == b.cached
        && staging_bytes_per_sec.map(f64::to_bits) == b.staging_bytes_per_sec.map(f64::to_bits)
        && same_lending(lending.as_ref(), b.lending.as_ref())
}

fn same_lending(a: Option<&LendingPolicy>, b: Option<&LendingPolicy>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            let LendingPolicy {
                owner_site,
                utc_offset_minutes,
                weekdays,
                start_minute,
                end_minute,
            } = a;
            *owner_site == b.owner_site
                && *utc_offset_minutes == b.utc_offset_minutes
                && *weekdays == b.weekdays
                && *start_minute == b.start_minute
                && *end_minute == b.end_minute
        }
        _ => false,
    }
}

/// A hash of what `same_kind` compares (a part of it is enough).
fn kind_hash(n: &Node) -> u64 {
    let mut h = DefaultHasher::new();
    n.liveness.hash(&mut h);
    (n.healthy, n.cordoned, n.approved).hash(&mut h);
    n.runtimes.hash(&mut h);
    (n.cpu_millis, n.memory_mib).hash(&mut h);
    for d in &n.devices {
        (d.index, &d.vendor, &d.model, d.memory_mib, d.healthy).hash(&mut h);
        (d.max_slices, d.isolation).hash(&mut h);
    }
    n.cached.hash(&mut h);
    n.staging_bytes_per_sec.map(f64::to_bits).hash(&mut h);
    n.lending.as_ref().map(|l| l.owner_site).hash(&mut h);
    h.finish()
}
