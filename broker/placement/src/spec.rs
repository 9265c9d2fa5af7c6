//! Validation with clear errors that name the field and the rule
//! (DESIGN.md §6). `check_request` needs only the request; `check_possible`
//! needs the fleet, to say "no device anywhere could ever hold this".

use serde::Serialize;

use crate::filters::contains_ignore_case;
use crate::model::{Device, Fleet, GpuSpec, Request, SeatSpec};
use crate::policy::Policy;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SpecError {
    /// Dotted path of the offending field, e.g. `seat.gpu.memory_mib`.
    pub field: &'static str,
    pub rule: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

impl std::error::Error for SpecError {}

fn err(field: &'static str, rule: impl Into<String>) -> Result<(), SpecError> {
    Err(SpecError {
        field,
        rule: rule.into(),
    })
}

/// Rules on the seat spec alone.
pub fn check_seat(seat: &SeatSpec) -> Result<(), SpecError> {
    if seat.runtime.trim().is_empty() {
        return err("seat.runtime", "must name a runtime");
    }
    if let Some(g) = &seat.gpu {
        if g.count == 0 {
            return err("seat.gpu.count", "must be at least 1");
        }
        if g.memory_mib == 0 {
            return err("seat.gpu.memory_mib", "must be at least 1 MiB");
        }
        if g.compute_percent == 0 || g.compute_percent > 100 {
            return err("seat.gpu.compute_percent", "must be between 1 and 100");
        }
    }
    Ok(())
}

/// Rules on the request alone; `place` refuses, naming the field, when one fails.
pub fn check_request(req: &Request, policy: &Policy) -> Result<(), SpecError> {
    check_seat(&req.seat)?;
    if req.window.end <= req.window.start {
        return err("window", "end must be after start");
    }
    if req.window.len_ms() > policy.max_window_ms {
        return err(
            "window",
            format!(
                "{} min is longer than the {} min limit",
                req.window.len_ms() / 60_000,
                policy.max_window_ms / 60_000
            ),
        );
    }
    if req.seats == 0 {
        return err("seats", "must be at least 1");
    }
    if req.min_seats > req.seats {
        return err("min_seats", "must not exceed seats");
    }
    if req.max_rtt_ms.is_nan() || req.max_rtt_ms <= 0.0 {
        return err("max_rtt_ms", "must be a positive number of milliseconds");
    }
    if req.staging_lead_ms < 0 {
        return err("staging_lead_ms", "must not be negative");
    }
    Ok(())
}

/// A device of the right kind, ignoring health: health changes by the
/// minute, while this answers whether the region could ever hold the seat.
fn kind_fits(g: &GpuSpec, d: &Device) -> bool {
    (g.vendors.is_empty() || g.vendors.iter().any(|v| v.eq_ignore_ascii_case(&d.vendor)))
        && g.model
            .as_deref()
            .is_none_or(|m| contains_ignore_case(&d.model, m))
}

/// Whether any node of the fleet could hold one seat when empty. An empty
/// fleet passes: that is an outage for `place` to explain, not bad input.
pub fn check_possible(fleet: &Fleet, seat: &SeatSpec) -> Result<(), SpecError> {
    check_seat(seat)?;
    let nodes = &fleet.nodes;
    if nodes.is_empty() {
        return Ok(());
    }
    if !nodes.iter().any(|n| {
        n.runtimes
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&seat.runtime))
    }) {
        return err(
            "seat.runtime",
            format!("no node in the region offers runtime {}", seat.runtime),
        );
    }
    let max_cpu = nodes.iter().map(|n| n.cpu_millis).max().unwrap_or(0);
    if seat.cpu_millis > max_cpu {
        return err(
            "seat.cpu_millis",
            format!(
                "{} m is more than any node has (largest: {max_cpu} m)",
                seat.cpu_millis
            ),
        );
    }
    let max_mem = nodes.iter().map(|n| n.memory_mib).max().unwrap_or(0);
    if seat.memory_mib > max_mem {
        return err(
            "seat.memory_mib",
            format!(
                "{} MiB is more than any node has (largest: {max_mem} MiB)",
                seat.memory_mib
            ),
        );
    }
    let Some(g) = &seat.gpu else {
        return Ok(());
    };
    let devices = || nodes.iter().flat_map(|n| n.devices.iter());
    if !g.vendors.is_empty()
        && !devices().any(|d| g.vendors.iter().any(|v| v.eq_ignore_ascii_case(&d.vendor)))
    {
        return err(
            "seat.gpu.vendors",
            format!(
                "no device of vendor {} in the region",
                g.vendors.join(" or ")
            ),
        );
    }
    if !devices().any(|d| kind_fits(g, d)) {
        return err(
            "seat.gpu.model",
            format!(
                "no device model matches {:?} in the region",
                g.model.as_deref().unwrap_or("")
            ),
        );
    }
    if !devices().any(|d| kind_fits(g, d) && d.isolation >= g.min_isolation) {
        return err(
            "seat.gpu.min_isolation",
            format!(
                "no matching device isolates at {:?} or better",
                g.min_isolation
            ),
        );
    }
    let largest = devices()
        .filter(|d| kind_fits(g, d) && d.isolation >= g.min_isolation)
        .map(|d| d.memory_mib)
        .max()
        .unwrap_or(0);
    if g.memory_mib > largest {
        return err(
            "seat.gpu.memory_mib",
            format!(
                "{} MiB is more than any matching device has (largest: {largest} MiB)",
                g.memory_mib
            ),
        );
    }
    let most = nodes
        .iter()
        .map(|n| {
            n.devices
                .iter()
                .filter(|d| {
                    kind_fits(g, d)
                        && d.isolation >= g.min_isolation
                        && d.memory_mib >= g.memory_mib
                })
                .count()
        })
        .max()
        .unwrap_or(0);
    if g.count as usize > most {
        return err(
            "seat.gpu.count",
            format!(
                "{} devices per seat, but no node has more than {most} matching devices",
                g.count
            ),
        );
    }
    Ok(())
}
