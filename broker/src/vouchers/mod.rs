//! Compute vouchers, pure: what a seat costs in accelerator-hours, which
//! vouchers pay for a booking, how a metered charge is split, seat quotas,
//! alerts and report rendering. No I/O here; `store::vouchers` and
//! `service::vouchers` do the database work around it.

pub mod alerts;
pub mod allocate;
pub mod config;
pub mod cost;
pub mod held;
pub mod quota;
pub mod report;
pub mod weights;

pub use allocate::{EligibleVoucher, Need, Shortfall, allocate};
pub use config::VoucherConfig;
pub use cost::{SeatCost, metered_uah, worst_case_uah};
pub use held::Held;
pub use weights::WeightTable;

/// Amounts are integers in micro accelerator-hours (µAh): one hour of one
/// whole weight-1.0 device is 1,000,000. Integer sums keep every balance and
/// report total exact.
pub type MicroHours = i64;

pub const UAH_PER_HOUR: i64 = 1_000_000;

/// Hours as people read them: `1.250000`. Exact, from the integer.
pub fn hours(uah: MicroHours) -> String {
    let sign = if uah < 0 { "-" } else { "" };
    let a = uah.unsigned_abs();
    format!(
        "{sign}{}.{:06}",
        a / UAH_PER_HOUR as u64,
        a % UAH_PER_HOUR as u64
    )
}

pub fn hours_f64(uah: MicroHours) -> f64 {
    uah as f64 / UAH_PER_HOUR as f64
}

/// Hours from a transport, refused unless positive, finite and at most
/// 1,000,000 h; rounded to the nearest µAh.
pub fn parse_hours(h: f64) -> Option<MicroHours> {
    (h.is_finite() && h > 0.0 && h <= 1_000_000.0)
        .then(|| (h * UAH_PER_HOUR as f64).round() as i64)
        .filter(|v| *v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_render_exactly_from_micro_hours() {
        assert_eq!(hours(1_250_000), "1.250000");
        assert_eq!(hours(-7), "-0.000007");
        assert_eq!(hours(0), "0.000000");
    }

    #[test]
    fn parse_hours_refuses_non_positive_and_absurd_amounts() {
        assert_eq!(parse_hours(2.5), Some(2_500_000));
        assert_eq!(parse_hours(0.0), None);
        assert_eq!(parse_hours(-1.0), None);
        assert_eq!(parse_hours(f64::NAN), None);
        assert_eq!(parse_hours(1e7), None);
        assert_eq!(parse_hours(1e-9), None);
    }
}
