//! Packing: prefer nodes that can take more of the class (fewer nodes per
//! class), and nodes whose devices are already in use (fewer devices
//! fragmented, whole devices kept whole for whole-device seats).

use super::Score;
use crate::capacity::Amount;
use crate::filters::{Candidate, Ctx};
use crate::policy::Weights;

pub(crate) struct Packing;

impl Score for Packing {
    fn name(&self) -> &'static str {
        "packing"
    }

    fn weight(&self, w: &Weights) -> f64 {
        w.packing
    }

    fn value(&self, ctx: &Ctx<'_>, cand: &Candidate<'_>, free: &[Amount]) -> f64 {
        let class = cand.fits.min(ctx.req.seats) as f64 / ctx.req.seats.max(1) as f64;
        let (used, total) = if ctx.gpu.is_some() {
            cand.node
                .devices
                .iter()
                .zip(free)
                .take(64)
                .enumerate()
                .filter(|(i, _)| cand.usable & (1 << i) != 0)
                .fold((0.0, 0.0), |(u, t), (_, (d, f))| {
                    let cap = d.memory_mib as f64;
                    (u + (cap - f.gmem as f64).max(0.0), t + cap)
                })
        } else {
            let f = free.last().map_or(0, |n| n.cpu) as f64;
            let cap = cand.node.cpu_millis as f64;
            ((cap - f).max(0.0), cap)
        };
        let busy = if total > 0.0 { used / total } else { 0.0 };
        0.7 * class + 0.3 * busy
    }

    fn most(&self, ctx: &Ctx<'_>, cand: &Candidate<'_>, empty: &[Amount]) -> Option<f64> {
        // Reservations only take capacity away, so the seats that fit on
        // the empty node bound `fits`; `busy` is a share, at most 1. Same
        // expression as `value`, so the bound holds after rounding too.
        let fits = ctx.need.seats_in(empty, cand.usable, ctx.req.seats);
        let class = fits.min(ctx.req.seats) as f64 / ctx.req.seats.max(1) as f64;
        let busy = 1.0;
        Some(0.7 * class + 0.3 * busy)
    }
}
