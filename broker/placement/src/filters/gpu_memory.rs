//! The slice fits an empty device: memory, compute at most 100 %, and at
//! least one slice allowed. Whether it fits *now* is the calendar's question.

use super::{Candidate, Ctx, Filter, Verdict, Work};

pub(crate) struct GpuMemory;

impl Filter for GpuMemory {
    fn name(&self) -> &'static str {
        "gpu memory"
    }

    fn check<'a>(&self, ctx: &Ctx<'a>, cand: &mut Candidate<'a>, _: &mut Work<'a>) -> Verdict {
        let Some(spec) = ctx.gpu else {
            return Verdict::Pass;
        };
        let mut mask = cand.usable;
        for (i, d) in cand.node.devices.iter().take(64).enumerate() {
            if d.memory_mib < spec.memory_mib || spec.compute_percent > 100 {
                mask &= !(1 << i);
            }
        }
        cand.usable = mask;
        if mask.count_ones() >= spec.count.max(1) {
            Verdict::Pass
        } else {
            Verdict::Fail("")
        }
    }

    fn detail(&self, ctx: &Ctx<'_>, _: &[(&'static str, u32)]) -> String {
        let Some(spec) = ctx.gpu else {
            return "gpu memory".into();
        };
        match spec.count.max(1) {
            1 => format!("gpu memory < {} MiB", spec.memory_mib),
            n => format!("fewer than {n} devices with {} MiB", spec.memory_mib),
        }
    }
}
