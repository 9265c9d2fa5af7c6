//! Staging is feasible: every dataset is cached on the node (or its site's
//! edge), or the uncached bytes, fetched one after another over the node's
//! measured bandwidth, arrive within the staging lead.
//!
//! A node without a bandwidth measurement is feasible only when nothing
//! needs staging: promising a class its data on a guess is how lessons start
//! with empty notebooks.

use super::{Candidate, Ctx, Filter, Verdict, Work, with_tags};
use crate::model::{DatasetRef, Node};

pub(crate) struct Staging;

/// Bytes of `datasets` not cached on `node`.
pub(crate) fn uncached_bytes(node: &Node, datasets: &[DatasetRef]) -> u64 {
    datasets
        .iter()
        .filter(|d| {
            !node
                .cached
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&d.sha256))
        })
        .map(|d| d.size_bytes)
        .sum()
}

impl Filter for Staging {
    fn name(&self) -> &'static str {
        "staging"
    }

    fn check<'a>(&self, ctx: &Ctx<'a>, cand: &mut Candidate<'a>, _: &mut Work<'a>) -> Verdict {
        if ctx.req.datasets.is_empty() {
            return Verdict::Pass;
        }
        let bytes = uncached_bytes(cand.node, &ctx.req.datasets);
        if bytes == 0 {
            return Verdict::Pass;
        }
        match cand.node.staging_bytes_per_sec {
            Some(bps) if bps.is_finite() && bps > 0.0 => {
                let ms = bytes as f64 / bps * 1000.0;
                if ms <= ctx.req.staging_lead_ms as f64 {
                    Verdict::Pass
                } else {
                    Verdict::Fail("too slow")
                }
            }
            _ => Verdict::Fail("no bandwidth measured"),
        }
    }

    fn detail(&self, ctx: &Ctx<'_>, tags: &[(&'static str, u32)]) -> String {
        let lead_min = ctx.req.staging_lead_ms as f64 / 60_000.0;
        with_tags(format!("staging > {lead_min:.0} min lead"), tags)
    }
}
