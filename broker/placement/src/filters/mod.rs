//! Hard constraints. Each filter answers one yes/no question about one node
//! (Nomad's feasibility checkers, kube-scheduler's Filter). They run in
//! [`PIPELINE`] order and the first that says no is the one a refusal counts,
//! so cheap questions go first and the calendar, which sweeps reservations,
//! goes last.

mod approval;
mod calendar;
mod device;
mod gpu_memory;
mod health;
mod lending;
mod residency;
mod resources;
mod rtt;
mod runtime;
mod staging;

use std::ops::Range;

use crate::calendar::Calendar;
use crate::capacity::{Amount, SeatNeed, Sweep};
use crate::ids::IdMap;
use crate::model::{GpuSpec, Node, Request, Reservation, Rtt, RttSource, Site, SiteId};
use crate::rtt::{RttTable, SchoolRtt};

pub(crate) use staging::uncached_bytes;

/// What every filter may read: the request and the world it is placed in.
pub(crate) struct Ctx<'a> {
    pub req: &'a Request,
    pub school: &'a Site,
    pub sites: &'a IdMap<SiteId, &'a Site>,
    pub rtt: &'a RttTable,
    pub school_rtt: SchoolRtt<'a>,
    pub calendar: &'a Calendar,
    pub gpu: Option<&'a GpuSpec>,
    pub need: SeatNeed,
    /// Preemptible reservations count as free capacity.
    pub preempt: bool,
}

impl<'a> Ctx<'a> {
    /// The same context with every node's RTT at its configured class: what
    /// a node the school has no measurement or estimate for gets.
    pub fn configured(&self) -> Ctx<'a> {
        Ctx {
            school_rtt: self.school_rtt.configured(),
            ..*self
        }
    }
}

/// One node on its way through the pipeline; filters fill in what later
/// filters and the scores reuse.
#[derive(Clone)]
pub(crate) struct Candidate<'a> {
    pub node: &'a Node,
    pub site: Option<&'a Site>,
    pub rtt: Rtt,
    /// Device positions (bit i = `node.devices[i]`) that can hold the slice.
    pub usable: u64,
    /// This node's slots (devices, then the node) in the flat free arrays.
    pub slots: Range<usize>,
    /// Seats of this request that fit, at most the seat count.
    pub fits: u32,
}

impl<'a> Candidate<'a> {
    pub fn new(node: &'a Node) -> Self {
        Candidate {
            node,
            site: None,
            rtt: Rtt {
                ms: f64::INFINITY,
                source: RttSource::Configured,
                error_ms: None,
            },
            usable: 0,
            slots: 0..0,
            fits: 0,
        }
    }
}

/// Per-request buffers, reused across nodes so filtering allocates nothing
/// per node. The free arrays hold every surviving candidate's slots back to
/// back: the plain per-node capacity the seats are assigned from.
#[derive(Default)]
pub(crate) struct Work<'c> {
    pub sweep: Sweep,
    pub rows: Vec<&'c Reservation>,
    pub cap: Vec<Amount>,
    /// Free with every reservation held.
    pub free_all: Vec<Amount>,
    /// Free with preemptible reservations released (equal to `free_all`
    /// when the request may not preempt).
    pub free_pre: Vec<Amount>,
    /// Scratch for one node's free slots before they join the flat arrays.
    pub rows_free: Vec<Amount>,
}

pub(crate) enum Verdict {
    Pass,
    /// Fails, with a tag that the explanation groups by (e.g. the RTT source).
    Fail(&'static str),
}

pub(crate) trait Filter: Sync {
    /// Short stable name, used in [`crate::FilterCount::filter`].
    fn name(&self) -> &'static str;
    fn check<'a>(&self, ctx: &Ctx<'a>, cand: &mut Candidate<'a>, work: &mut Work<'a>) -> Verdict;
    /// The phrase after the count in a summary, given how many removed nodes
    /// carried each tag.
    fn detail(&self, ctx: &Ctx<'_>, tags: &[(&'static str, u32)]) -> String;
}

pub(crate) const PIPELINE: &[&dyn Filter] = &[
    // First: a node nobody approved is out whatever its health, and saying
    // so points the admin at the one thing to do.
    &approval::Approval,
    &health::Health,
    &runtime::Runtime,
    &residency::DataResidency,
    &rtt::RttLimit,
    &device::DeviceFit,
    &gpu_memory::GpuMemory,
    &resources::NodeResources,
    &staging::Staging,
    &lending::Lending,
    CALENDAR,
];

/// The one filter that reads reservations. It stays last: every filter
/// before it reads only the node and the request, so `place` runs those on
/// the whole fleet (exact counts) and reads calendars only for the nodes
/// the rank order reaches.
pub(crate) const CALENDAR: &dyn Filter = &calendar::CalendarFree;

/// Where `rtt` stands in [`STATIC`]. The filters before it read the node's
/// kind and site but not its RTT; the filters after it read the node's kind
/// only (`crate::index`). So a node whose RTT was measured gets the answer
/// of the other nodes of its group from every static filter but `rtt`:
/// `place_indexed` runs the others once per group.
pub(crate) const RTT_AT: usize = 4;

/// `PIPELINE` without the calendar.
pub(crate) const STATIC: &[&dyn Filter] = match PIPELINE.split_last() {
    Some((_, rest)) => rest,
    None => &[],
};

#[cfg(test)]
#[test]
fn rtt_comes_after_the_filters_that_do_not_read_it() {
    let names: Vec<_> = STATIC.iter().map(|f| f.name()).collect();
    assert_eq!(names[RTT_AT], "rtt");
    assert_eq!(
        names[..RTT_AT],
        ["approval", "health", "runtime", "residency"],
        "a filter before rtt must not read the RTT (see RTT_AT)"
    );
    assert_eq!(
        names[RTT_AT + 1..],
        ["device", "gpu memory", "cpu/memory", "staging", "lending"],
        "a filter after rtt must read neither the RTT nor the site (see RTT_AT)"
    );
}

/// `base (3 a, 2 b)` or `base (a)` when there is one tag; `base` when none.
pub(crate) fn with_tags(base: String, tags: &[(&'static str, u32)]) -> String {
    let tags: Vec<_> = tags.iter().filter(|(t, _)| !t.is_empty()).collect();
    match tags.as_slice() {
        [] => base,
        [(t, _)] => format!("{base} ({t})"),
        many => {
            let parts: Vec<String> = many.iter().map(|(t, n)| format!("{n} {t}")).collect();
            format!("{base} ({})", parts.join(", "))
        }
    }
}

/// Case-insensitive substring without allocating.
pub(crate) fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}
