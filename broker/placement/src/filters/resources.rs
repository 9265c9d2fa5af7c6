//! The node's cpu and memory can hold one seat when empty.

use super::{Candidate, Ctx, Filter, Verdict, Work};

pub(crate) struct NodeResources;

impl Filter for NodeResources {
    fn name(&self) -> &'static str {
        "cpu/memory"
    }

    fn check<'a>(&self, ctx: &Ctx<'a>, cand: &mut Candidate<'a>, _: &mut Work<'a>) -> Verdict {
        let (n, s) = (cand.node, &ctx.req.seat);
        if n.cpu_millis < s.cpu_millis {
            Verdict::Fail("cpu")
        } else if n.memory_mib < s.memory_mib {
            Verdict::Fail("memory")
        } else {
            Verdict::Pass
        }
    }

    fn detail(&self, ctx: &Ctx<'_>, _: &[(&'static str, u32)]) -> String {
        let s = &ctx.req.seat;
        format!("cpu/memory < {} m/{} MiB", s.cpu_millis, s.memory_mib)
    }
}
