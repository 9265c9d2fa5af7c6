//! Turning filter counts into the sentence a teacher reads:
//! `0/120 nodes: 80 rtt > 30 ms (configured), 31 gpu memory < 4096 MiB, 9 calendar busy`.

use crate::decision::FilterCount;
use crate::filters::{Ctx, PIPELINE};

/// Per filter (in pipeline order): nodes removed, and per tag how many.
pub(crate) type Tally = Vec<(u32, Vec<(&'static str, u32)>)>;

pub(crate) fn new_tally() -> Tally {
    vec![(0, Vec::new()); PIPELINE.len()]
}

pub(crate) fn bump(tally: &mut Tally, filter: usize, tag: &'static str) {
    bump_by(tally, filter, tag, 1);
}

/// `by` nodes removed by `filter` with `tag`: a whole group at once.
pub(crate) fn bump_by(tally: &mut Tally, filter: usize, tag: &'static str, by: u32) {
    let (n, tags) = &mut tally[filter];
    *n += by;
    match tags.iter_mut().find(|(t, _)| *t == tag) {
        Some((_, c)) => *c += by,
        None => tags.push((tag, by)),
    }
}

pub(crate) fn filter_counts(ctx: &Ctx<'_>, tally: &Tally) -> Vec<FilterCount> {
    PIPELINE
        .iter()
        .zip(tally)
        .filter(|(_, (n, _))| *n > 0)
        .map(|(f, (n, tags))| {
            let mut tags = tags.clone();
            tags.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            FilterCount {
                filter: f.name(),
                removed: *n,
                detail: f.detail(ctx, &tags),
            }
        })
        .collect()
}

/// `k/n nodes` followed by what removed the others.
pub(crate) fn nodes_line(fit: usize, considered: usize, counts: &[FilterCount]) -> String {
    let mut s = format!("{fit}/{considered} nodes");
    if !counts.is_empty() {
        let parts: Vec<String> = counts
            .iter()
            .map(|c| format!("{} {}", c.removed, c.detail))
            .collect();
        s.push_str(": ");
        s.push_str(&parts.join(", "));
    }
    s
}
