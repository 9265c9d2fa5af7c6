//! `RTT(school site → node) <= max_rtt_ms`, with the source of each RTT kept
//! for the explanation and the scores.

use super::{Candidate, Ctx, Filter, Verdict, Work, with_tags};
use crate::rtt::source_name;

pub(crate) struct RttLimit;

impl Filter for RttLimit {
    fn name(&self) -> &'static str {
        "rtt"
    }

    fn check<'a>(&self, ctx: &Ctx<'a>, cand: &mut Candidate<'a>, _: &mut Work<'a>) -> Verdict {
        cand.site = ctx.sites.get(&cand.node.site_id).copied();
        cand.rtt = ctx.school_rtt.lookup(cand.node, cand.site);
        if cand.rtt.ms <= ctx.req.max_rtt_ms {
            Verdict::Pass
        } else {
            Verdict::Fail(source_name(cand.rtt.source))
        }
    }

    fn detail(&self, ctx: &Ctx<'_>, tags: &[(&'static str, u32)]) -> String {
        with_tags(format!("rtt > {} ms", ctx.req.max_rtt_ms), tags)
    }
}
