//! A series' later occurrence placed on its earlier occurrence's nodes
//! first (issue 26, decision 111). A term's occurrences of one class ask for
//! the same seats at the same hour week after week; placing each on the
//! whole fleet re-reads, for every one, the nodes earlier classes filled at
//! that hour. Trying the nodes the previous occurrence got — through the
//! same engine and every filter, on a fleet of just those nodes — admits
//! most occurrences after reading a dozen calendars instead of hundreds,
//! and keeps a class on the same machines all term (staged data and warm
//! caches stay where its students were). When those nodes cannot take
//! every seat, the caller places the occurrence on the whole fleet.

use crate::{Admission, Calendar, Decision, Fleet, Policy, Request, RttTable, engine::place};

/// Whether two requests ask for the same thing at possibly different
/// times: everything but the window.
pub fn same_shape(a: &Request, b: &Request) -> bool {
    a.school_site == b.school_site
        && a.seats == b.seats
        && a.min_seats == b.min_seats
        && a.seat == b.seat
        && a.max_rtt_ms == b.max_rtt_ms
        && a.datasets == b.datasets
        && a.staging_lead_ms == b.staging_lead_ms
        && a.may_preempt == b.may_preempt
        && a.residency == b.residency
}

/// `req` placed on the nodes of `prev` alone, when they take every seat
/// without preempting anything; None otherwise (place it on the whole
/// fleet). Every filter applies as on the whole fleet: only the nodes
/// considered differ, which the explanation says.
pub fn place_again(
    prev: &Admission,
    fleet: &Fleet,
    calendar: &Calendar,
    rtt: &RttTable,
    req: &Request,
    policy: &Policy,
) -> Option<Decision> {
    let mut ids: Vec<_> = prev.seats.iter().map(|s| s.node_id).collect();
    ids.sort();
    ids.dedup();
    let nodes: Vec<_> = fleet
        .nodes
        .iter()
        .filter(|n| ids.binary_search(&n.id).is_ok())
        .cloned()
        .collect();
    if nodes.len() != ids.len() {
        // A node of the earlier occurrence is not in this fleet.
        return None;
    }
    let few = Fleet {
        sites: fleet.sites.clone(),
        nodes,
    };
    match place(&few, calendar, rtt, req, policy) {
        Decision::Admitted(mut a)
            if a.seats.len() == req.seats as usize && a.preempted.is_empty() =>
        {
            a.explanation
                .summary
                .push_str("; on the nodes of the series' earlier occurrence");
            Some(Decision::Admitted(a))
        }
        _ => None,
    }
}
