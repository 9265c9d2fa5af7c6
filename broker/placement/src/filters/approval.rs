//! The node has been approved by a district admin. A node that joined with a
//! token asking for approval waits here, connected and visible, until then.

use super::{Candidate, Ctx, Filter, Verdict, Work};

pub(crate) struct Approval;

impl Filter for Approval {
    fn name(&self) -> &'static str {
        "approval"
    }

    fn check<'a>(&self, _: &Ctx<'a>, cand: &mut Candidate<'a>, _: &mut Work<'a>) -> Verdict {
        if cand.node.approved {
            Verdict::Pass
        } else {
            Verdict::Fail("")
        }
    }

    fn detail(&self, _: &Ctx<'_>, _: &[(&'static str, u32)]) -> String {
        "not approved".into()
    }
}
