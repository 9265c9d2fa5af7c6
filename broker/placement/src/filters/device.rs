//! The node has enough healthy devices of a vendor, model and isolation the
//! seat accepts. Memory is the next filter's question.

use super::{Candidate, Ctx, Filter, Verdict, Work, contains_ignore_case};
use crate::model::{Device, GpuSpec};

pub(crate) struct DeviceFit;

/// Devices past position 63 are not used: no agent reports that many.
fn device_matches(spec: &GpuSpec, d: &Device) -> bool {
    d.healthy
        && d.isolation >= spec.min_isolation
        && (spec.vendors.is_empty()
            || spec
                .vendors
                .iter()
                .any(|v| v.eq_ignore_ascii_case(&d.vendor)))
        && spec
            .model
            .as_deref()
            .is_none_or(|m| contains_ignore_case(&d.model, m))
}

impl Filter for DeviceFit {
    fn name(&self) -> &'static str {
        "device"
    }

    fn check<'a>(&self, ctx: &Ctx<'a>, cand: &mut Candidate<'a>, _: &mut Work<'a>) -> Verdict {
        let Some(spec) = ctx.gpu else {
            return Verdict::Pass;
        };
        let mut mask = 0u64;
        for (i, d) in cand.node.devices.iter().take(64).enumerate() {
            if device_matches(spec, d) {
                mask |= 1 << i;
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
            return "no device".into();
        };
        let mut what = Vec::new();
        if !spec.vendors.is_empty() {
            what.push(spec.vendors.join("|"));
        }
        if let Some(m) = &spec.model {
            what.push(format!("model {m}"));
        }
        what.push(format!("isolation >= {:?}", spec.min_isolation).to_lowercase());
        let n = spec.count.max(1);
        let lead = if n > 1 {
            format!("fewer than {n} healthy devices")
        } else {
            "no healthy device".to_string()
        };
        format!("{lead} ({})", what.join(", "))
    }
}
