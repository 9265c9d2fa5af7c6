//! Job priority as a configurable weighted sum of named factors, the way
//! exam-patrol systems rank work under scarce compute (DESIGN.md §8).

use serde::Serialize;

/// `(factor name, weight)` pairs, e.g. `[("history", 0.4), ("importance", 0.2)]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PriorityWeights(pub Vec<(String, f64)>);

/// `Σ weight(name) · value` over the factors given. A factor without a weight
/// counts zero, so platforms may send extra factors before a district weighs
/// them; a weight without a factor also counts zero. Non-finite values count
/// zero so one bad factor cannot make a job jump the whole queue.
pub fn job_priority(weights: &PriorityWeights, factors: &[(String, f64)]) -> f64 {
    factors
        .iter()
        .filter(|(_, v)| v.is_finite())
        .map(|(name, v)| {
            weights
                .0
                .iter()
                .filter(|(w_name, w)| w_name == name && w.is_finite())
                .map(|(_, w)| w * v)
                .sum::<f64>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, v: f64) -> (String, f64) {
        (name.to_string(), v)
    }

    #[test]
    fn priority_is_weighted_sum_of_named_factors() {
        let w = PriorityWeights(vec![
            f("history", 0.4),
            f("anomaly", 0.3),
            f("importance", 0.2),
            f("health", 0.1),
        ]);
        let p = job_priority(
            &w,
            &[
                f("history", 1.0),
                f("anomaly", 0.5),
                f("importance", 0.0),
                f("health", 1.0),
            ],
        );
        assert!((p - (0.4 + 0.15 + 0.1)).abs() < 1e-12);
    }

    #[test]
    fn unweighted_and_non_finite_factors_count_zero() {
        let w = PriorityWeights(vec![f("history", 1.0)]);
        assert_eq!(
            job_priority(&w, &[f("unknown", 5.0), f("history", f64::NAN)]),
            0.0
        );
    }
}
