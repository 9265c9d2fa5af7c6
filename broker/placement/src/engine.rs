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
use crate::explain::{Tally, bump, filter_counts, new_tally, nodes_line};
use crate::filters::{CALENDAR, Candidate, Ctx, PIPELINE, STATIC, Verdict, Work};
use crate::ids::IdMap;
use crate::model::{Fleet, NodeId, Owner, Request, Site, SiteKind, Tier};
use crate::policy::Policy;
use crate::preempt::evict_for;
use crate::rtt::{RttTable, describe};
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
struct RankOrder<'a> {
    pending: BinaryHeap<Pending>,
    /// Static survivors, taken out as they are read.
    waiting: Vec<Option<Candidate<'a>>>,
    ready: BinaryHeap<RankKey>,
    order: Vec<usize>,
}

/// A static survivor whose calendar is unread; greater is read first.
struct Pending {
    bound: f64,
    at: usize,
}

impl Ord for Pending {
    fn cmp(&self, o: &Self) -> Ordering {
        self.bound.total_cmp(&o.bound).then(o.at.cmp(&self.at))
    }
}

impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for Pending {}

/// What reading a calendar updates: the candidates that fit (in read
/// order), the flat free arrays, and the calendar filter's count.
struct Read<'a, 'c> {
    ctx: &'c Ctx<'a>,
    w: &'c crate::policy::Weights,
    cands: Vec<Candidate<'a>>,
    work: Work<'a>,
    tally: Tally,
}

impl<'a> RankOrder<'a> {
    fn new(ctx: &Ctx<'a>, w: &crate::policy::Weights, survivors: Vec<Candidate<'a>>) -> Self {
        let mut empty = Vec::new();
        let pending = survivors
            .iter()
            .enumerate()
            .map(|(at, c)| {
                capacity_slots(c.node, &mut empty);
                Pending {
                    bound: upper_bound(ctx, c, &empty, w),
                    at,
                }
            })
            .collect::<Vec<_>>();
        RankOrder {
            pending: BinaryHeap::from(pending),
            waiting: survivors.into_iter().map(Some).collect(),
            ready: BinaryHeap::new(),
            order: Vec::new(),
        }
    }

    /// Reads the best pending node's calendar.
    fn read_next(&mut self, r: &mut Read<'a, '_>) -> bool {
        let Some(p) = self.pending.pop() else {
            return false;
        };
        let mut c = self.waiting[p.at].take().expect("each node is read once");
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
                let settled = match (self.ready.peek(), self.pending.peek()) {
                    (Some(best), Some(next)) => best.score > next.bound,
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
        self.pending.len()
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
    let considered = fleet.nodes.len();
    if let Err(e) = check_request(req, policy) {
        return Decision::Refused(Explanation {
            nodes_considered: considered as u32,
            filters: Vec::new(),
            summary: format!("invalid request: {e}"),
        });
    }

    let sites: IdMap<_, &Site> = fleet.sites.iter().map(|s| (s.id, s)).collect();
    // A school missing from the fleet view still gets measured RTTs; its
    // configured ones fall to the cross-district class.
    let unknown_school = Site {
        id: req.school_site,
        name: req.school_site.to_string(),
        kind: SiteKind::School,
        district: String::new(),
    };
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

    // Static filters: every node, so their counts describe the whole fleet.
    // They read the node and the request only, a few comparisons each; the
    // calendar, which sweeps reservations, is left for `RankOrder`.
    let mut tally = new_tally();
    let mut survivors: Vec<Candidate> = Vec::new();
    let mut unused = Work::default();
    'nodes: for node in &fleet.nodes {
        let mut c = Candidate::new(node);
        for (i, f) in STATIC.iter().enumerate() {
            if let Verdict::Fail(tag) = f.check(&ctx, &mut c, &mut unused) {
                bump(&mut tally, i, tag);
                continue 'nodes;
            }
        }
        survivors.push(c);
    }

    let w = &policy.weights;
    let mut order = RankOrder::new(&ctx, w, survivors);
    let mut read = Read {
        ctx: &ctx,
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
    let mut rank_free: Vec<Option<Vec<Amount>>> = vec![None; order.waiting.len()];

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
    let mut used_preempt = vec![false; order.waiting.len()];
    for &view in views {
        let mut r = 0;
        while seats.len() < want {
            let Some(ci) = order.get(r, &mut read) else {
                break;
            };
            r += 1;
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
    let counts = filter_counts(&ctx, &tally);

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
        evictions(&ctx, &cands, &seats, &used_preempt, &mut work)
    } else {
        Vec::new()
    };

    let placements: Vec<SeatPlacement> = seats
        .iter()
        .enumerate()
        .map(|(n, s)| {
            let c = &cands[s.cand];
            let free = rank_free[s.cand].as_deref().unwrap_or(&[]);
            let (total, parts) = score(&ctx, c, free, w);
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
            let reason = seat_reason(&ctx, c, &devices, total, &parts, used_preempt[s.cand]);
            SeatPlacement {
                seat: n as u32,
                node_id: c.node.id,
                devices,
                rtt: c.rtt,
                score: total,
                parts,
                reason,
            }
        })
        .collect();

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
        if !used_preempt[ci] {
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
