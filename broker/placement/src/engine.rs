//! `place`: filter the fleet once, rank the survivors once, then give seats
//! out in rank order from plain per-node free-capacity arrays, so each seat
//! sees what earlier seats of the same request took.
//!
//! Seats of one request are identical and a node's score does not depend on
//! which seat lands there, so filling nodes best-first is exact for the
//! weighted score (and for mean RTT when only the RTT weight is set): no
//! exchange of two seats between nodes can improve the sum.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};

use crate::calendar::Calendar;
use crate::capacity::{Amount, SeatNeed, capacity_slots, consume};
use crate::decision::{Admission, Decision, DeviceGrant, Explanation, SeatPlacement};
use crate::explain::{Tally, bump, bump_by, filter_counts, new_tally, nodes_line};
use crate::filters::{CALENDAR, Candidate, Ctx, PIPELINE, RTT_AT, STATIC, Verdict, Work};
use crate::ids::IdMap;
use crate::index::{
    Bucket, Checked, FleetIndex, Group, GroupKey, Pin, Pins, Plan as IndexPlan, run_filters,
    run_static, unknown_school,
};
use crate::model::{Fleet, Node, NodeId, Owner, Request, RttSource, Site, SiteKind, Tier};
use crate::policy::Policy;
use crate::preempt::evict_for;
use crate::rtt::{RttTable, describe, source_name};
use crate::scores::{score, total, upper_bound};
use crate::spec::check_request;

impl SeatNeed {
    pub(crate) fn of(req: &Request) -> Self {
        SeatNeed {
            cpu: req.seat.cpu_millis as u64,
            mem: req.seat.memory_mib,
            gpu: req
                .seat
                .gpu
                .as_ref()
                .map(|g| (g.memory_mib, g.compute_percent, g.count.max(1))),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum View {
    /// Every reservation held.
    Free,
    /// Preemptible reservations released.
    Preempt,
}

/// Candidates in rank order, produced on demand, reading calendars only as
/// far as the order needs.
///
/// Every node that passed the static filters waits in `pending`, keyed by
/// the highest score it could reach (`upper_bound`: its calendar-dependent
/// parts at their maximum). `ready` holds the nodes whose calendar was read,
/// keyed by their exact score. The best of `ready` is the next in rank order
/// as soon as it beats the best bound still pending: no unread node can
/// then score as high. Ties keep reading, so the order is the full scan's,
/// node for node. A class usually fills from its own site's nodes, so the
/// calendars of the rest of the city are never swept.
///
/// With a [`FleetIndex`], whole groups of equal nodes wait in `groups` under
/// their common bound and are listed into `pending` (each node under its
/// fleet position, as the full scan would have) before any node of an equal
/// or lower bound is read, so the reading order is still the full scan's.
///
/// Nodes whose RTT the school measured or estimated come as `streams`: a
/// group's nodes sorted by RTT, so by bound, highest first. A stream waits
/// under the bound of its next node and, like a group, is listed (one node
/// at a time) whenever that bound is at least the best pending one; the
/// rest of the stream cannot rank higher.
struct RankOrder<'a, G: Groups<'a>> {
    pending: BinaryHeap<Pending<'a>>,
    groups: BinaryHeap<Pending<'a, usize>>,
    streams: BinaryHeap<Pending<'a, Head<'a>>>,
    /// Nodes in `groups` and `streams`, not yet listed.
    in_groups: usize,
    src: G,
    ready: BinaryHeap<RankKey>,
    order: Vec<usize>,
}

/// Where grouped static survivors come from.
pub(crate) trait Groups<'a> {
    /// The nodes of group `g`: (fleet position, candidate).
    fn list(&self, g: usize, out: &mut Vec<(usize, Candidate<'a>)>);
    /// The `i`-th node of stream `s`: (fleet position, candidate, bound),
    /// bounds never rising with `i`; `None` past its end.
    fn stream_at(&mut self, s: usize, i: usize) -> Option<(usize, Candidate<'a>, f64)>;
}

/// The full scan has no groups.
struct NoGroups;

impl<'a> Groups<'a> for NoGroups {
    fn list(&self, _: usize, _: &mut Vec<(usize, Candidate<'a>)>) {}
    fn stream_at(&mut self, _: usize, _: usize) -> Option<(usize, Candidate<'a>, f64)> {
        None
    }
}

/// The next unlisted node of stream `s`, its `i`-th.
struct Head<'a> {
    s: usize,
    i: usize,
    cand: Candidate<'a>,
}

/// A static survivor (or group of them) whose calendar is unread; greater
/// is read first.
struct Pending<'a, T = Candidate<'a>> {
    bound: f64,
    at: usize,
    what: T,
    _n: std::marker::PhantomData<&'a ()>,
}

impl<T> Ord for Pending<'_, T> {
    fn cmp(&self, o: &Self) -> Ordering {
        self.bound.total_cmp(&o.bound).then(o.at.cmp(&self.at))
    }
}

impl<T> PartialOrd for Pending<'_, T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl<T> PartialEq for Pending<'_, T> {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl<T> Eq for Pending<'_, T> {}

/// What reading a calendar updates: the candidates that fit (in read
/// order), the flat free arrays, and the calendar filter's count.
struct Read<'a, 'c> {
    ctx: &'c Ctx<'a>,
    w: &'c crate::policy::Weights,
    cands: Vec<Candidate<'a>>,
    work: Work<'a>,
    tally: Tally,
}

/// The highest score `c` could reach, whatever its calendar holds.
pub(crate) fn bound_of(
    ctx: &Ctx<'_>,
    c: &Candidate<'_>,
    w: &crate::policy::Weights,
    empty: &mut Vec<Amount>,
) -> f64 {
    capacity_slots(c.node, empty);
    upper_bound(ctx, c, empty, w)
}

impl<'a, G: Groups<'a>> RankOrder<'a, G> {
    fn new(src: G) -> Self {
        RankOrder {
            pending: BinaryHeap::new(),
            groups: BinaryHeap::new(),
            streams: BinaryHeap::new(),
            in_groups: 0,
            src,
            ready: BinaryHeap::new(),
            order: Vec::new(),
        }
    }

    /// A static survivor at fleet position `at`.
    fn push(&mut self, at: usize, cand: Candidate<'a>, bound: f64) {
        self.pending.push(Pending {
            bound,
            at,
            what: cand,
            _n: std::marker::PhantomData,
        });
    }

    /// `size` static survivors of group `g`, all with `bound`; `at` orders
    /// equal groups.
    fn push_group(&mut self, g: usize, at: usize, size: usize, bound: f64) {
        self.in_groups += size;
        self.groups.push(Pending {
            bound,
            at,
            what: g,
            _n: std::marker::PhantomData,
        });
    }

    /// Stream `s` of `len` static survivors, listed as the order reaches
    /// them.
    fn push_stream(&mut self, s: usize, len: usize) {
        if let Some((at, cand, bound)) = self.src.stream_at(s, 0) {
            self.in_groups += len;
            self.streams.push(Pending {
                bound,
                at,
                what: Head { s, i: 0, cand },
                _n: std::marker::PhantomData,
            });
        }
    }

    /// The best bound still unread.
    fn next_bound(&self) -> Option<f64> {
        let p = self.pending.peek().map(|p| p.bound);
        let g = self.groups.peek().map(|g| g.bound);
        let s = self.streams.peek().map(|s| s.bound);
        [p, g, s]
            .into_iter()
            .flatten()
            .max_by(|a, b| a.total_cmp(b))
    }

    /// Lists stream `h`'s head; the stream waits again under its next node's
    /// bound, no higher.
    fn list_stream(&mut self, h: Pending<'a, Head<'a>>) {
        let Head { s, i, cand } = h.what;
        self.in_groups -= 1;
        self.push(h.at, cand, h.bound);
        if let Some((at, cand, bound)) = self.src.stream_at(s, i + 1) {
            debug_assert!(bound.total_cmp(&h.bound).is_le(), "stream bounds rose");
            self.streams.push(Pending {
                bound,
                at,
                what: Head { s, i: i + 1, cand },
                _n: std::marker::PhantomData,
            });
        }
    }

    /// Reads the best pending node's calendar.
    fn read_next(&mut self, r: &mut Read<'a, '_>) -> bool {
        // List every group and stream head that could hold a node as good
        // as the next pending one, so equal bounds are read in fleet order.
        let mut listed = Vec::new();
        loop {
            let top = self.pending.peek().map(|p| p.bound);
            let reaches = |b: f64| top.is_none_or(|t| b.total_cmp(&t).is_ge());
            if self.groups.peek().is_some_and(|g| reaches(g.bound)) {
                let g = self.groups.pop().expect("peeked");
                listed.clear();
                self.src.list(g.what, &mut listed);
                self.in_groups -= listed.len();
                for (at, c) in listed.drain(..) {
                    self.push(at, c, g.bound);
                }
            } else if self.streams.peek().is_some_and(|h| reaches(h.bound)) {
                let h = self.streams.pop().expect("peeked");
                self.list_stream(h);
            } else {
                break;
            }
        }
        let Some(p) = self.pending.pop() else {
            return false;
        };
        let mut c = p.what;
        match CALENDAR.check(r.ctx, &mut c, &mut r.work) {
            Verdict::Fail(tag) => bump(&mut r.tally, PIPELINE.len() - 1, tag),
            Verdict::Pass => {
                self.ready.push(RankKey {
                    score: total(r.ctx, &c, &r.work.free_pre[c.slots.clone()], r.w),
                    rtt: c.rtt.ms,
                    id: c.node.id,
                    idx: r.cands.len(),
                });
                r.cands.push(c);
            }
        }
        true
    }

    /// Reads every calendar still unread (the full scan, and refusals).
    fn read_all(&mut self, r: &mut Read<'a, '_>) {
        while self.read_next(r) {}
    }

    /// The `i`-th best candidate, as an index into `r.cands`.
    fn get(&mut self, i: usize, r: &mut Read<'a, '_>) -> Option<usize> {
        while self.order.len() <= i {
            loop {
                let settled = match (self.ready.peek(), self.next_bound()) {
                    (Some(best), Some(next)) => best.score > next,
                    (Some(_), None) => true,
                    (None, None) => return None,
                    (None, Some(_)) => false,
                };
                if settled {
                    break;
                }
                self.read_next(r);
            }
            self.order.push(self.ready.pop()?.idx);
        }
        Some(self.order[i])
    }

    /// Static survivors whose calendar was never read.
    fn unread(&self) -> usize {
        self.pending.len() + self.in_groups
    }
}

/// Greater is better: higher score, then lower RTT, then node id so that
/// equal nodes are chosen the same way every time.
struct RankKey {
    score: f64,
    rtt: f64,
    id: NodeId,
    idx: usize,
}

impl Ord for RankKey {
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then(o.rtt.total_cmp(&self.rtt))
            .then(o.id.cmp(&self.id))
    }
}

impl PartialOrd for RankKey {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for RankKey {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for RankKey {}

struct Seat {
    cand: usize,
    devices: Vec<usize>,
}

pub fn place(
    fleet: &Fleet,
    calendar: &Calendar,
    rtt: &RttTable,
    req: &Request,
    policy: &Policy,
) -> Decision {
    place_with(fleet, calendar, rtt, req, policy, Scan::Indexed)
}

/// How much of the fleet's calendars `place` reads.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// Only as far as the rank order needs (what `place` does).
    Indexed,
    /// Every node's, before ranking: the reference the property test holds
    /// `Indexed` to.
    Full,
}

/// `place`, choosing how far to read calendars. Public for the property
/// test and the benchmark only.
#[doc(hidden)]
pub fn place_with(
    fleet: &Fleet,
    calendar: &Calendar,
    rtt: &RttTable,
    req: &Request,
    policy: &Policy,
    scan: Scan,
) -> Decision {
    in_context(fleet, calendar, rtt, req, policy, |ctx| {
        scan_fleet(ctx, &fleet.nodes, policy, scan)
    })
}

/// The static filters on every node, so their counts describe the whole
/// fleet. They read the node and the request only, a few comparisons each;
/// the calendar, which sweeps reservations, is left for `RankOrder`.
fn scan_fleet<'a>(ctx: &Ctx<'a>, nodes: &'a [Node], policy: &Policy, scan: Scan) -> Decision {
    let mut tally = new_tally();
    let mut order = RankOrder::new(NoGroups);
    let mut unused = Work::default();
    let mut empty = Vec::new();
    for (at, node) in nodes.iter().enumerate() {
        let mut c = Candidate::new(node);
        match run_static(ctx, &mut c, &mut unused) {
            Err((i, tag)) => bump(&mut tally, i, tag),
            Ok(()) => {
                let b = bound_of(ctx, &c, &policy.weights, &mut empty);
                order.push(at, c, b);
            }
        }
    }
    decide(ctx, policy, nodes.len(), order, tally, scan)
}

/// `place` on a fleet indexed once per snapshot ([`FleetIndex`]): the
/// static filters run once per group of equal nodes that stand the same way
/// from the school, and once for each node whose RTT from the school was
/// measured or estimated. The decision is `place`'s, seat for seat and word
/// for word (`tests/fleet_index.rs`).
///
/// The second time a school is placed under one RTT table (or after
/// [`FleetIndex::sort_rtts`]), its measured and estimated nodes are held
/// sorted by RTT per group, so they too are decided a group at a time
/// (the RTT limit by a binary search) and read in rank order, only as far as
/// the seats need.
pub fn place_indexed(
    index: &FleetIndex,
    calendar: &Calendar,
    rtt: &RttTable,
    req: &Request,
    policy: &Policy,
) -> Decision {
    let fleet: &Fleet = index.fleet();
    in_context(fleet, calendar, rtt, req, policy, |ctx| {
        let plan = IndexPlan::new(index, ctx.school.id, &ctx.school.district);
        let sorted = if ctx.school_rtt.pinned_len() == 0 {
            None
        } else {
            index.sorted_pins(rtt.stamp(), ctx.school.id, || {
                plan.pins(&ctx.school_rtt, true)
            })
        };
        let unsorted;
        let pins = match &sorted {
            Some(p) => p.as_ref(),
            None => {
                // Unsorted, a node the table pins costs a few hash lookups
                // here, more than the scan's pass over it; where the
                // school pins half the fleet or more, the scan is cheaper
                // and decides the same.
                if ctx.school_rtt.pinned_len() * 2 >= fleet.nodes.len() {
                    return scan_fleet(ctx, &fleet.nodes, policy, Scan::Indexed);
                }
                unsorted = plan.pins(&ctx.school_rtt, false);
                &unsorted
            }
        };
        let w = &policy.weights;
        let mut tally = new_tally();
        let mut unused = Work::default();
        let mut empty = Vec::new();

        // Groups: one run of the static filters on a representative, with
        // the configured RTT that every unpinned member has.
        let configured = ctx.configured();
        let mut listed = Listed {
            plan: &plan,
            pins,
            ctx,
            w,
            groups: Vec::new(),
            templates: Vec::new(),
            streams: Vec::new(),
            empty: Vec::new(),
        };
        let mut ready = Vec::new();
        for g in plan.groups(pins) {
            let mut c = Candidate::new(&fleet.nodes[g.rep as usize]);
            match run_static(&configured, &mut c, &mut unused) {
                Err((i, tag)) => bump_by(&mut tally, i, tag, g.count),
                Ok(()) => {
                    let b = bound_of(ctx, &c, w, &mut empty);
                    ready.push((listed.groups.len(), g.count as usize, b));
                    listed.groups.push(g);
                    listed.templates.push(c);
                }
            }
        }
        // Sorted pinned nodes, a group at a time: the filters before `rtt`
        // read neither the RTT nor anything but the node's kind and where
        // its site stands, the ones after it only the kind (`RTT_AT`), so
        // one node answers for the group; `rtt` is a binary search.
        for run in &pins.runs {
            let count = |l: &[Pin]| l.len() as u32;
            let first = |lists: [&[Pin]; 2]| lists.iter().find_map(|l| l.first()).map(|p| p.at);
            let all = [&run.lists[0][..], &run.lists[1][..]];
            let Some(rep) = first(all) else { continue };
            let node = &fleet.nodes[rep as usize];
            if let Err((i, tag)) =
                run_filters(0..RTT_AT, ctx, &mut Candidate::new(node), &mut unused)
            {
                bump_by(&mut tally, i, tag, count(all[0]) + count(all[1]));
                continue;
            }
            let near = all.map(|l| &l[..l.partition_point(|p| p.ms <= ctx.req.max_rtt_ms)]);
            for (source, (l, n)) in [RttSource::Measured, RttSource::Estimated]
                .into_iter()
                .zip(all.into_iter().zip(near))
            {
                if l.len() > n.len() {
                    bump_by(&mut tally, RTT_AT, source_name(source), count(l) - count(n));
                }
            }
            let Some(at) = first(near) else { continue };
            // `rtt` fills in the site and the RTT, and passes, as sorted.
            let mut c = Candidate::new(&fleet.nodes[at as usize]);
            match run_filters(RTT_AT..STATIC.len(), ctx, &mut c, &mut unused) {
                Err((i, tag)) => bump_by(&mut tally, i, tag, count(near[0]) + count(near[1])),
                Ok(()) => {
                    listed.templates.push(c);
                    for n in near.into_iter().filter(|n| !n.is_empty()) {
                        listed.streams.push(Stream {
                            template: listed.templates.len() - 1,
                            pins: n,
                        });
                    }
                }
            }
        }
        let streams = listed
            .streams
            .iter()
            .map(|s| s.pins.len())
            .collect::<Vec<_>>();
        let mut order = RankOrder::new(listed);
        for (g, size, b) in ready {
            order.push_group(g, g, size, b);
        }
        for (s, len) in streams.into_iter().enumerate() {
            order.push_stream(s, len);
        }
        // Nodes on sites the fleet does not list, and pinned nodes when not
        // sorted: one by one. Only `rtt` reads a pinned node's own RTT; the
        // filters before it give the answer its group's first pinned node
        // got, and so do the filters after it, which read neither the RTT
        // nor the site (`RTT_AT`).
        let mut verdicts: IdMap<(Bucket, GroupKey), PinnedGroup> = IdMap::default();
        for &at in index.loose().iter().chain(&pins.listed) {
            let node = &fleet.nodes[at as usize];
            let mut c = Candidate::new(node);
            let Some(g) = plan.group_of(at) else {
                match run_static(ctx, &mut c, &mut unused) {
                    Err((i, tag)) => bump(&mut tally, i, tag),
                    Ok(()) => {
                        let b = bound_of(ctx, &c, w, &mut empty);
                        order.push(at as usize, c, b);
                    }
                }
                continue;
            };
            let v = verdicts.entry(g).or_insert_with(|| PinnedGroup {
                before: run_filters(0..RTT_AT, ctx, &mut Candidate::new(node), &mut unused),
                after: None,
            });
            let checked = v
                .before
                .and_then(|()| run_filters(RTT_AT..RTT_AT + 1, ctx, &mut c, &mut unused))
                .and_then(|()| {
                    let (after, usable) = *v.after.get_or_insert_with(|| {
                        let mut t = c.clone();
                        let r = run_filters(RTT_AT + 1..STATIC.len(), ctx, &mut t, &mut unused);
                        (r, t.usable)
                    });
                    c.usable = usable;
                    after
                });
            match checked {
                Err((i, tag)) => bump(&mut tally, i, tag),
                Ok(()) => {
                    let b = bound_of(ctx, &c, w, &mut empty);
                    order.push(at as usize, c, b);
                }
            }
        }
        decide(ctx, policy, fleet.nodes.len(), order, tally, Scan::Indexed)
    })
}

/// What the static filters around `rtt` said about a group's pinned nodes.
struct PinnedGroup {
    before: Checked,
    /// The filters after `rtt`, and the devices they left usable; run once
    /// a node of the group has passed `rtt`.
    after: Option<(Checked, u64)>,
}

/// The groups of an [`IndexPlan`] that passed, with the candidate their
/// representative became, and the sorted pinned nodes that passed.
struct Listed<'p, 'a> {
    plan: &'p IndexPlan<'a>,
    pins: &'p Pins,
    ctx: &'p Ctx<'a>,
    w: &'p crate::policy::Weights,
    groups: Vec<Group>,
    /// Per group, then per run of pinned nodes that passed: the candidate
    /// its first node became.
    templates: Vec<Candidate<'a>>,
    streams: Vec<Stream<'p>>,
    empty: Vec<Amount>,
}

/// Pinned nodes of one group and source within the RTT limit, by RTT.
struct Stream<'p> {
    template: usize,
    pins: &'p [Pin],
}

impl<'a> Groups<'a> for Listed<'_, 'a> {
    fn list(&self, g: usize, out: &mut Vec<(usize, Candidate<'a>)>) {
        let t = &self.templates[g];
        let fleet = self.plan.index.fleet();
        self.plan.members(self.pins, &self.groups[g], |at, site| {
            let mut c = t.clone();
            c.node = &fleet.nodes[at as usize];
            c.site = Some(&fleet.sites[site as usize]);
            out.push((at as usize, c));
        });
    }

    fn stream_at(&mut self, s: usize, i: usize) -> Option<(usize, Candidate<'a>, f64)> {
        let st = &self.streams[s];
        let at = st.pins.get(i)?.at;
        let fleet = self.plan.index.fleet();
        let mut c = self.templates[st.template].clone();
        c.node = &fleet.nodes[at as usize];
        c.site = Some(&fleet.sites[self.plan.site_of(at) as usize]);
        c.rtt = self.ctx.school_rtt.lookup(c.node, c.site);
        let b = bound_of(self.ctx, &c, self.w, &mut self.empty);
        Some((at as usize, c, b))
    }
}

/// Checks the request, builds the context every filter reads, and runs `f`.
fn in_context(
    fleet: &Fleet,
    calendar: &Calendar,
    rtt: &RttTable,
    req: &Request,
    policy: &Policy,
    f: impl for<'c> FnOnce(&Ctx<'c>) -> Decision,
) -> Decision {
    if let Err(e) = check_request(req, policy) {
        return Decision::Refused(Explanation {
            nodes_considered: fleet.nodes.len() as u32,
            filters: Vec::new(),
            summary: format!("invalid request: {e}"),
        });
    }
    let sites: IdMap<_, &Site> = fleet.sites.iter().map(|s| (s.id, s)).collect();
    let unknown_school = unknown_school(req.school_site);
    let school = sites
        .get(&req.school_site)
        .copied()
        .unwrap_or(&unknown_school);
    let ctx = Ctx {
        req,
        school,
        sites: &sites,
        rtt,
        school_rtt: rtt.for_school(school),
        calendar,
        gpu: req.seat.gpu.as_ref(),
        need: SeatNeed::of(req),
        preempt: req.may_preempt,
    };
    f(&ctx)
}

/// Ranks the static survivors in `order`, reads calendars as far as the
/// rank order needs (all of them for `Scan::Full`), assigns the seats and
/// explains.
fn decide<'a, G: Groups<'a>>(
    ctx: &Ctx<'a>,
    policy: &Policy,
    considered: usize,
    mut order: RankOrder<'a, G>,
    tally: Tally,
    scan: Scan,
) -> Decision {
    let req = ctx.req;
    let w = &policy.weights;
    let mut read = Read {
        ctx,
        w,
        cands: Vec::new(),
        work: Work::default(),
        tally,
    };
    if scan == Scan::Full {
        order.read_all(&mut read);
    }
    // Parts are reported from the ranking-time capacity, before seats took any.
    let free_at_rank = |c: &Candidate, work: &Work| work.free_pre[c.slots.clone()].to_vec();
    let mut rank_free: Vec<Option<Vec<Amount>>> = Vec::new();

    // Assign.
    let views: &[View] = if !ctx.preempt {
        &[View::Preempt] // equal to Free when nothing may be preempted
    } else if policy.preempt_as_last_resort {
        &[View::Free, View::Preempt]
    } else {
        &[View::Preempt]
    };
    let want = req.seats as usize;
    let mut seats: Vec<Seat> = Vec::with_capacity(want);
    let mut used_preempt: Vec<bool> = Vec::new();
    for &view in views {
        let mut r = 0;
        while seats.len() < want {
            let Some(ci) = order.get(r, &mut read) else {
                break;
            };
            r += 1;
            if rank_free.len() <= ci {
                rank_free.resize(ci + 1, None);
                used_preempt.resize(ci + 1, false);
            }
            let c = &read.cands[ci];
            loop {
                if seats.len() == want {
                    break;
                }
                if rank_free[ci].is_none() {
                    rank_free[ci] = Some(free_at_rank(c, &read.work));
                }
                let Work {
                    free_all, free_pre, ..
                } = &mut read.work;
                let (take_from, mirror) = match view {
                    View::Free => (free_all, free_pre),
                    View::Preempt => (free_pre, free_all),
                };
                match ctx.need.take(&mut take_from[c.slots.clone()], c.usable) {
                    Some(devices) => {
                        consume(&mut mirror[c.slots.clone()], &ctx.need, &devices);
                        used_preempt[ci] |= view == View::Preempt && ctx.preempt;
                        seats.push(Seat { cand: ci, devices });
                    }
                    None => break,
                }
            }
        }
    }
    let unread = order.unread();
    let Read {
        cands,
        mut work,
        tally,
        ..
    } = read;
    let counts = filter_counts(ctx, &tally);

    let min = req.min_seats.max(1) as usize;
    if seats.len() < min {
        let nodes = nodes_line(cands.len(), considered, &counts);
        let summary = if cands.is_empty() {
            nodes
        } else {
            format!(
                "only {}/{} seats fit (at least {} needed) on {nodes}",
                seats.len(),
                req.seats,
                min
            )
        };
        return Decision::Refused(Explanation {
            nodes_considered: considered as u32,
            filters: counts,
            summary,
        });
    }

    let preempted = if ctx.preempt {
        evictions(ctx, &cands, &seats, &used_preempt, &mut work)
    } else {
        Vec::new()
    };

    // Seats taken in a row from one candidate on the same devices (four
    // quarter seats of one T4) share their score and reason: computed once
    // and copied, since formatting the reason was most of a term's dry run.
    let mut placements: Vec<SeatPlacement> = Vec::with_capacity(seats.len());
    for (n, s) in seats.iter().enumerate() {
        if let Some(prev) = placements.last()
            && seats[n - 1].cand == s.cand
            && seats[n - 1].devices == s.devices
        {
            let same = SeatPlacement {
                seat: n as u32,
                ..prev.clone()
            };
            placements.push(same);
            continue;
        }
        let c = &cands[s.cand];
        let free = rank_free[s.cand].as_deref().unwrap_or(&[]);
        let (total, parts) = score(ctx, c, free, w);
        let devices: Vec<DeviceGrant> = match ctx.gpu {
            Some(g) => s
                .devices
                .iter()
                .map(|&p| DeviceGrant {
                    index: c.node.devices[p].index,
                    memory_mib: g.memory_mib,
                    compute_percent: g.compute_percent,
                })
                .collect(),
            None => Vec::new(),
        };
        let reason = seat_reason(ctx, c, &devices, total, &parts, used_preempt[s.cand]);
        placements.push(SeatPlacement {
            seat: n as u32,
            node_id: c.node.id,
            devices,
            rtt: c.rtt,
            score: total,
            parts,
            reason,
        });
    }

    let mut nodes_used: Vec<_> = placements.iter().map(|p| p.node_id).collect();
    nodes_used.sort();
    nodes_used.dedup();
    let mean_rtt = placements.iter().map(|p| p.rtt.ms).sum::<f64>() / placements.len() as f64;
    let mut summary = format!(
        "{}/{} seats on {} node{}, mean rtt {:.1} ms; {}",
        placements.len(),
        req.seats,
        nodes_used.len(),
        if nodes_used.len() == 1 { "" } else { "s" },
        mean_rtt,
        nodes_line(cands.len(), considered, &counts)
    );
    if unread > 0 {
        // Exact, not sampled: these passed every static filter and could
        // not outrank the nodes chosen, whatever their calendars hold.
        summary.push_str(&format!(
            "; {unread} other node{} not read (none could rank higher)",
            if unread == 1 { "" } else { "s" }
        ));
    }
    if !preempted.is_empty() {
        summary.push_str(&format!("; preempts {} job(s)", preempted.len()));
    }
    Decision::Admitted(Admission {
        seats: placements,
        preempted,
        explanation: Explanation {
            nodes_considered: considered as u32,
            filters: counts,
            summary,
        },
    })
}

fn evictions(
    ctx: &Ctx<'_>,
    cands: &[Candidate<'_>],
    seats: &[Seat],
    used_preempt: &[bool],
    work: &mut Work<'_>,
) -> Vec<Owner> {
    let mut evicted = HashSet::new();
    let mut out = Vec::new();
    for (ci, c) in cands.iter().enumerate() {
        if !used_preempt.get(ci).copied().unwrap_or(false) {
            continue;
        }
        // What this request takes on the node, per slot.
        let n = c.node.devices.len();
        let mut new = vec![Amount::default(); n + 1];
        for s in seats.iter().filter(|s| s.cand == ci) {
            new[n].cpu += ctx.need.cpu;
            new[n].mem += ctx.need.mem;
            if let Some((gmem, compute, _)) = ctx.need.gpu {
                for &p in &s.devices {
                    new[p].gmem += gmem;
                    new[p].compute += compute;
                    new[p].slices += 1;
                }
            }
        }
        out.extend(evict_for(
            ctx.calendar,
            c.node,
            ctx.req.window,
            &new,
            &mut evicted,
            &mut work.sweep,
        ));
    }
    out
}

fn seat_reason(
    ctx: &Ctx<'_>,
    c: &Candidate<'_>,
    devices: &[DeviceGrant],
    total: f64,
    parts: &[crate::decision::ScorePart],
    preempting: bool,
) -> String {
    let where_ = if c.node.site_id == ctx.school.id {
        "the school's own site".to_string()
    } else {
        match c.site {
            Some(s) => {
                let kind = match s.kind {
                    SiteKind::School => "school",
                    SiteKind::DistrictPop => "district pop",
                    SiteKind::Cloud => "cloud",
                };
                format!("{kind} {}", s.name)
            }
            None => "an unknown site".to_string(),
        }
    };
    let tier = match c.node.tier {
        Tier::Edge => "edge",
        Tier::Cloud => "cloud",
    };
    let gpu = if devices.is_empty() {
        "no gpu".to_string()
    } else {
        let ds: Vec<String> = devices
            .iter()
            .map(|d| {
                let model = c
                    .node
                    .devices
                    .iter()
                    .find(|x| x.index == d.index)
                    .map_or("", |x| x.model.as_str());
                format!(
                    "gpu {} {model} ({} MiB, {}%)",
                    d.index, d.memory_mib, d.compute_percent
                )
            })
            .collect();
        ds.join(" + ")
    };
    let ps: Vec<String> = parts
        .iter()
        .map(|p| format!("{} {:.2}×{}", p.name, p.value, p.weight))
        .collect();
    format!(
        "node {} ({tier}) at {where_}: {gpu}; rtt {}; score {:.2} = {}{}",
        c.node.name,
        describe(&c.rtt),
        total,
        ps.join(" + "),
        if preempting {
            "; capacity freed by preempting jobs"
        } else {
            ""
        }
    )
}
