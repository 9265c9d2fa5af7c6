//! Tunables of the placement policy. Every field has a default so that the
//! broker's config file only names what a district changes.

/// Weights of the scores; each score is in `[0, 1]` before weighting and the
/// total is divided by the sum of the weights, so the seat score stays in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Weights {
    pub rtt: f64,
    pub cached: f64,
    pub tier: f64,
    pub packing: f64,
}

impl Default for Weights {
    fn default() -> Self {
        // RTT dominates: students feel it every keystroke. Cached content and
        // tier are close behind; packing only breaks near-ties.
        Weights {
            rtt: 0.5,
            cached: 0.2,
            tier: 0.2,
            packing: 0.1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Policy {
    pub weights: Weights,
    /// Longest window a single request may reserve.
    pub max_window_ms: i64,
    /// When a lesson may preempt, fill free capacity first and preempt jobs
    /// only for the seats that did not fit. Off: preemptible capacity counts
    /// as free from the start, ranked by score alone.
    pub preempt_as_last_resort: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            weights: Weights::default(),
            // A week covers long batch jobs; lessons are about an hour.
            max_window_ms: 7 * 24 * 3_600_000,
            preempt_as_last_resort: true,
        }
    }
}
