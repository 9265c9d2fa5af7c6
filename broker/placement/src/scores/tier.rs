//! Tier and cost: the school's own site first, then the district point of
//! presence, then other schools' lent servers, then cloud.

use super::Score;
use crate::capacity::Amount;
use crate::filters::{Candidate, Ctx};
use crate::model::{SiteKind, Tier};
use crate::policy::Weights;

pub(crate) struct TierOrder;

impl Score for TierOrder {
    fn name(&self) -> &'static str {
        "tier"
    }

    fn weight(&self, w: &Weights) -> f64 {
        w.tier
    }

    fn value(&self, ctx: &Ctx<'_>, cand: &Candidate<'_>, _: &[Amount]) -> f64 {
        if cand.node.site_id == ctx.school.id {
            return 1.0;
        }
        if cand.node.tier == Tier::Cloud {
            return 0.0;
        }
        let Some(site) = cand.site else {
            return 0.25;
        };
        let same_district = site.district == ctx.school.district;
        match (site.kind, same_district) {
            (SiteKind::Cloud, _) => 0.0,
            (SiteKind::DistrictPop, true) => 0.75,
            (SiteKind::DistrictPop, false) => 0.5,
            (SiteKind::School, true) => 0.5,
            (SiteKind::School, false) => 0.25,
        }
    }
}
