//! Soft preferences. Each score rates one candidate node in `[0, 1]` (higher
//! is better); the engine weighs them with [`crate::Weights`] and divides by
//! the sum of weights. A seat's score is its node's score: seats of one
//! request are identical, so ranking nodes once per request is enough.

mod cached;
mod packing;
mod rtt;
mod tier;

use crate::capacity::Amount;
use crate::decision::ScorePart;
use crate::filters::{Candidate, Ctx};
use crate::policy::Weights;

pub(crate) trait Score: Sync {
    fn name(&self) -> &'static str;
    fn weight(&self, w: &Weights) -> f64;
    /// `free` is the candidate's slots (devices, then node) as the calendar left them.
    fn value(&self, ctx: &Ctx<'_>, cand: &Candidate<'_>, free: &[Amount]) -> f64;
    /// The most this score can be for a node whose calendar has not been
    /// read yet; `None` when the value does not depend on the calendar (it
    /// is then computed from the node alone, with no free slots). `empty`
    /// is the node's slots with nothing reserved.
    fn most(&self, _ctx: &Ctx<'_>, _cand: &Candidate<'_>, _empty: &[Amount]) -> Option<f64> {
        None
    }
}

pub(crate) const SCORES: &[&dyn Score] = &[
    &rtt::LowRtt,
    &cached::Cached,
    &tier::TierOrder,
    &packing::Packing,
];

/// Weighted total in `[0, 1]`, handing each part to `part`.
fn weigh(
    ctx: &Ctx<'_>,
    cand: &Candidate<'_>,
    free: &[Amount],
    w: &Weights,
    mut part: impl FnMut(ScorePart),
) -> f64 {
    let mut total = 0.0;
    let mut weights = 0.0;
    for s in SCORES {
        let value = s.value(ctx, cand, free).clamp(0.0, 1.0);
        let weight = sanitize(s.weight(w));
        total += value * weight;
        weights += weight;
        part(ScorePart {
            name: s.name(),
            value,
            weight,
        });
    }
    if weights > 0.0 { total / weights } else { 0.0 }
}

/// The highest total `cand` can reach whatever its calendar holds: the
/// calendar-dependent scores at their `most`, the others exact. Computed
/// with the same operations in the same order as `total`, and IEEE rounding
/// is monotone, so `total(c) <= upper_bound(c)` holds bit for bit, which is
/// what lets `place` stop before reading every node's calendar.
pub(crate) fn upper_bound(
    ctx: &Ctx<'_>,
    cand: &Candidate<'_>,
    empty: &[Amount],
    w: &Weights,
) -> f64 {
    let mut total = 0.0;
    let mut weights = 0.0;
    for s in SCORES {
        let value = match s.most(ctx, cand, empty) {
            Some(v) => v,
            None => s.value(ctx, cand, &[]),
        }
        .clamp(0.0, 1.0);
        let weight = sanitize(s.weight(w));
        total += value * weight;
        weights += weight;
    }
    if weights > 0.0 { total / weights } else { 0.0 }
}

/// Weighted total only: the ranking path, run for every candidate.
pub(crate) fn total(ctx: &Ctx<'_>, cand: &Candidate<'_>, free: &[Amount], w: &Weights) -> f64 {
    weigh(ctx, cand, free, w, |_| {})
}

/// Weighted total and its parts, for the seats actually placed.
pub(crate) fn score(
    ctx: &Ctx<'_>,
    cand: &Candidate<'_>,
    free: &[Amount],
    w: &Weights,
) -> (f64, Vec<ScorePart>) {
    let mut parts = Vec::with_capacity(SCORES.len());
    let t = weigh(ctx, cand, free, w, |p| parts.push(p));
    (t, parts)
}

/// A negative or non-finite weight in config is treated as zero rather than
/// turning preferences upside down.
fn sanitize(w: f64) -> f64 {
    if w.is_finite() && w > 0.0 { w } else { 0.0 }
}
