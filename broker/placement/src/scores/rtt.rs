//! Lower RTT is better: linear from 1 at 0 ms to 0 at the request's limit.

use super::Score;
use crate::capacity::Amount;
use crate::filters::{Candidate, Ctx};
use crate::policy::Weights;

pub(crate) struct LowRtt;

impl Score for LowRtt {
    fn name(&self) -> &'static str {
        "rtt"
    }

    fn weight(&self, w: &Weights) -> f64 {
        w.rtt
    }

    fn value(&self, ctx: &Ctx<'_>, cand: &Candidate<'_>, _: &[Amount]) -> f64 {
        // Linear, so that with only this weight the engine minimises the
        // class's mean RTT exactly (the quality test holds it to that).
        let limit = ctx.req.max_rtt_ms;
        let scale = if limit.is_finite() && limit > 0.0 {
            limit
        } else {
            2.0 * ctx.rtt.topology().cloud_ms
        };
        1.0 - cand.rtt.ms / scale
    }
}
