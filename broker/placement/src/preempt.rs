//! Which batch jobs a lesson must evict. Seats were assigned as if every
//! preemptible reservation were gone; here, node by node, we evict only
//! enough job owners for the new seats to fit beside what remains, then drop
//! any eviction that turned out not to be needed.

use std::collections::HashSet;

use crate::calendar::Calendar;
use crate::capacity::{Amount, Sweep, capacity_slots};
use crate::model::{Node, Owner, Reservation, Window};

/// How far the new use overshoots capacity, summed over slots and
/// dimensions as fractions of capacity; zero means it fits.
fn deficit(cap: &[Amount], peak: &[Amount], new: &[Amount]) -> f64 {
    fn over(p: u64, n: u64, c: u64) -> f64 {
        (p + n).saturating_sub(c) as f64 / c.max(1) as f64
    }
    cap.iter()
        .zip(peak)
        .zip(new)
        .map(|((c, p), n)| {
            over(p.cpu, n.cpu, c.cpu)
                + over(p.mem, n.mem, c.mem)
                + over(p.gmem, n.gmem, c.gmem)
                + over(p.compute as u64, n.compute as u64, c.compute as u64)
                + over(p.slices as u64, n.slices as u64, c.slices as u64)
        })
        .sum()
}

/// `new[slot]` is what this request's seats take on `node`. Owners already
/// in `evicted` (from earlier nodes) count as gone. Appends this node's
/// evictions to `evicted` and returns them.
pub(crate) fn evict_for(
    calendar: &Calendar,
    node: &Node,
    window: Window,
    new: &[Amount],
    evicted: &mut HashSet<Owner>,
    sweep: &mut Sweep,
) -> Vec<Owner> {
    let rows: Vec<&Reservation> = calendar.overlapping(node.id, window).collect();
    let mut cap = Vec::new();
    capacity_slots(node, &mut cap);
    let d_with = |gone: &HashSet<Owner>, sweep: &mut Sweep| {
        sweep.run(node, &rows, window, |r| gone.contains(&r.owner));
        deficit(&cap, &sweep.peak_all, new)
    };
    if d_with(evicted, sweep) == 0.0 {
        return Vec::new();
    }
    let mut choices: Vec<Owner> = Vec::new();
    for r in &rows {
        if r.preemptible
            && matches!(r.owner, Owner::Job(_))
            && !evicted.contains(&r.owner)
            && !choices.contains(&r.owner)
        {
            choices.push(r.owner);
        }
    }
    let mut mine = Vec::new();
    let mut gone = evicted.clone();
    let mut current = d_with(&gone, sweep);
    while current > 0.0 && !choices.is_empty() {
        // Greedy: the owner whose leaving closes the most of the gap.
        let mut best = (0, f64::INFINITY);
        for (i, o) in choices.iter().enumerate() {
            gone.insert(*o);
            let d = d_with(&gone, sweep);
            gone.remove(o);
            if d < best.1 {
                best = (i, d);
            }
        }
        let o = choices.swap_remove(best.0);
        gone.insert(o);
        mine.push(o);
        current = best.1;
    }
    // Undo evictions that a later, larger one made unnecessary.
    let mut i = mine.len();
    while i > 0 {
        i -= 1;
        let o = mine[i];
        gone.remove(&o);
        if d_with(&gone, sweep) == 0.0 {
            mine.remove(i);
        } else {
            gone.insert(o);
        }
    }
    evicted.extend(mine.iter().copied());
    mine
}
