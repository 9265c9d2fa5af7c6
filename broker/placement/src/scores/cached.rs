//! Content already cached near the node: the share of dataset bytes that
//! need no staging. No datasets means nothing to stage anywhere.

use super::Score;
use crate::capacity::Amount;
use crate::filters::{Candidate, Ctx, uncached_bytes};
use crate::policy::Weights;

pub(crate) struct Cached;

impl Score for Cached {
    fn name(&self) -> &'static str {
        "cached"
    }

    fn weight(&self, w: &Weights) -> f64 {
        w.cached
    }

    fn value(&self, ctx: &Ctx<'_>, cand: &Candidate<'_>, _: &[Amount]) -> f64 {
        let total: u64 = ctx.req.datasets.iter().map(|d| d.size_bytes).sum();
        if total == 0 {
            return 1.0;
        }
        1.0 - uncached_bytes(cand.node, &ctx.req.datasets) as f64 / total as f64
    }
}
