//! Data residency: a school (or one lesson) may require that its data stay
//! in the school, the district, or the education private network. A node
//! elsewhere is out, whatever else it offers; staged content follows the
//! seats, so it stays where they are.

use super::{Candidate, Ctx, Filter, Verdict, Work};
use crate::model::Residency;

pub(crate) struct DataResidency;

impl Filter for DataResidency {
    fn name(&self) -> &'static str {
        "residency"
    }

    fn check<'a>(&self, ctx: &Ctx<'a>, cand: &mut Candidate<'a>, _: &mut Work<'a>) -> Verdict {
        let site = ctx.sites.get(&cand.node.site_id).copied();
        if ctx.req.residency.allows(ctx.school, site) {
            Verdict::Pass
        } else {
            Verdict::Fail("")
        }
    }

    fn detail(&self, ctx: &Ctx<'_>, _: &[(&'static str, u32)]) -> String {
        match ctx.req.residency {
            Residency::Anywhere => String::new(),
            Residency::School => "data must stay in the school".into(),
            Residency::District => format!("data must stay in district {}", ctx.school.district),
            Residency::EducationNetwork => {
                "data must stay in the education network (no cloud site)".into()
            }
        }
    }
}
