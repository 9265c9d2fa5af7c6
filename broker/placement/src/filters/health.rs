//! The node is connected, healthy and not cordoned.

use super::{Candidate, Ctx, Filter, Verdict, Work, with_tags};
use crate::model::Liveness;

pub(crate) struct Health;

impl Filter for Health {
    fn name(&self) -> &'static str {
        "health"
    }

    fn check<'a>(&self, _: &Ctx<'a>, cand: &mut Candidate<'a>, _: &mut Work<'a>) -> Verdict {
        let n = cand.node;
        match n.liveness {
            Liveness::Disconnected => Verdict::Fail("disconnected"),
            Liveness::Lost => Verdict::Fail("lost"),
            Liveness::Connected if !n.healthy => Verdict::Fail("unhealthy"),
            Liveness::Connected if n.cordoned => Verdict::Fail("cordoned"),
            Liveness::Connected => Verdict::Pass,
        }
    }

    fn detail(&self, _: &Ctx<'_>, tags: &[(&'static str, u32)]) -> String {
        with_tags("not ready".into(), tags)
    }
}
