//! What a booking may cost at worst, and what it did cost by the meter.
//! A slice counts by its fraction of a device: `compute_percent / 100` per
//! granted device. A seat without accelerators costs nothing
//! (docs/decisions/022).

use super::{MicroHours, UAH_PER_HOUR, WeightTable};

/// One seat's share of accelerators, and the weight of their model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeatCost {
    /// Device-equivalents: the sum of `compute_percent / 100` over grants.
    pub fraction: f64,
    pub weight: f64,
}

impl SeatCost {
    /// `grants` are (compute percent, device model) per granted device.
    pub fn of<S: AsRef<str>>(grants: &[(u32, S)], weights: &WeightTable) -> Self {
        let fraction = grants
            .iter()
            .map(|(pct, _)| f64::from((*pct).min(100)) / 100.0)
            .sum();
        let models: Vec<&str> = grants.iter().map(|(_, m)| m.as_ref()).collect();
        Self {
            fraction,
            weight: if models.is_empty() {
                0.0
            } else {
                weights.mean_weight(&models)
            },
        }
    }

    pub fn is_free(&self) -> bool {
        self.fraction == 0.0 || self.weight == 0.0
    }
}

/// The hold for `seats` over `seconds`: fraction × weight × hours, summed
/// over seats and rounded up so that a hold never falls short of a charge.
pub fn worst_case_uah(seats: &[SeatCost], seconds: i64) -> MicroHours {
    let secs = seconds.max(0) as f64;
    seats
        .iter()
        .map(|s| (s.fraction * s.weight * secs / 3600.0 * UAH_PER_HOUR as f64).ceil() as i64)
        .sum()
}

/// The charge for what an agent metered: `slice_seconds` is already wall
/// seconds × device fraction, so only the model weight remains.
pub fn metered_uah(slice_seconds: f64, weight: f64) -> MicroHours {
    if !(slice_seconds.is_finite() && weight.is_finite()) || slice_seconds <= 0.0 {
        return 0;
    }
    (slice_seconds * weight / 3600.0 * UAH_PER_HOUR as f64).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarter_t4_for_forty_minutes_costs_a_sixth_of_an_hour() {
        let w = WeightTable::default();
        let seat = SeatCost::of(&[(25, "Tesla T4")], &w);
        assert_eq!(seat.fraction, 0.25);
        assert_eq!(worst_case_uah(&[seat], 2400), 166_667);
        assert_eq!(worst_case_uah(&[seat; 45], 2400), 45 * 166_667);
    }

    #[test]
    fn heavier_models_cost_more_and_cpu_seats_nothing() {
        let w = WeightTable::default();
        let b910 = SeatCost::of(&[(50, "Ascend 910B2C")], &w);
        assert_eq!(worst_case_uah(&[b910], 3600), 2_500_000);
        let cpu = SeatCost::of::<&str>(&[], &w);
        assert!(cpu.is_free());
        assert_eq!(worst_case_uah(&[cpu], 3600), 0);
    }

    #[test]
    fn metered_charge_is_slice_seconds_times_weight() {
        assert_eq!(metered_uah(900.0, 1.0), 250_000);
        assert_eq!(metered_uah(900.0, 5.0), 1_250_000);
        assert_eq!(metered_uah(-3.0, 1.0), 0);
        assert_eq!(metered_uah(f64::NAN, 1.0), 0);
    }
}
