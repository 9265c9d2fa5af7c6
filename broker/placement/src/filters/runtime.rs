//! The node offers the runtime the seat asks for.

use super::{Candidate, Ctx, Filter, Verdict, Work};

pub(crate) struct Runtime;

impl Filter for Runtime {
    fn name(&self) -> &'static str {
        "runtime"
    }

    fn check<'a>(&self, ctx: &Ctx<'a>, cand: &mut Candidate<'a>, _: &mut Work<'a>) -> Verdict {
        let want = &ctx.req.seat.runtime;
        if cand
            .node
            .runtimes
            .iter()
            .any(|r| r.eq_ignore_ascii_case(want))
        {
            Verdict::Pass
        } else {
            Verdict::Fail("")
        }
    }

    fn detail(&self, ctx: &Ctx<'_>, _: &[(&'static str, u32)]) -> String {
        format!("no runtime {}", ctx.req.seat.runtime)
    }
}
