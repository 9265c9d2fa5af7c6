//! Vivaldi estimates on a synthetic latency matrix: sites and nodes scattered
//! over a region, each behind an access link of its own. Coordinates learn
//! from 70% of the pairs; the other 30% are the "missing" RTTs the broker
//! estimates, and those are what is scored.

use classgrid_edge::vivaldi::{Config, Space};
use rand::{Rng, SeedableRng, rngs::StdRng};

struct Matrix {
    rtt: Vec<Vec<f64>>,
}

/// `n` points in a 2-D region 80 ms across, each with an access-link height
/// of 0.5 to 8 ms, and ±5% jitter per sample.
fn synthetic(n: usize, rng: &mut StdRng) -> Matrix {
    let pts: Vec<(f64, f64, f64)> = (0..n)
        .map(|_| {
            (
                rng.random_range(0.0..80.0),
                rng.random_range(0.0..80.0),
                rng.random_range(0.5..8.0),
            )
        })
        .collect();
    let rtt = pts
        .iter()
        .map(|a| {
            pts.iter()
                .map(|b| ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt() + a.2 + b.2)
                .collect()
        })
        .collect();
    Matrix { rtt }
}

#[test]
fn vivaldi_estimates_missing_rtts_within_15_percent_median_error() {
    let mut rng = StdRng::seed_from_u64(7);
    let n = 60;
    let m = synthetic(n, &mut rng);
    let mut known = Vec::new();
    let mut held_out = Vec::new();
    for i in 0..n {
        for j in (i + 1)..n {
            if rng.random_bool(0.7) {
                known.push((i, j));
            } else {
                held_out.push((i, j));
            }
        }
    }
    let mut space = Space::new(Config::default());
    // Probes arrive in no particular order, round after round.
    for _ in 0..40 {
        for _ in 0..known.len() {
            let (i, j) = known[rng.random_range(0..known.len())];
            let jitter = rng.random_range(0.95..1.05);
            space.observe(&i, &j, m.rtt[i][j] * jitter);
        }
    }
    let mut errors: Vec<f64> = held_out
        .iter()
        .map(|&(i, j)| {
            let (est, bound) = space.estimate(&i, &j).expect("both have coordinates");
            assert!(bound.is_finite() && bound >= 0.0);
            (est - m.rtt[i][j]).abs() / m.rtt[i][j]
        })
        .collect();
    errors.sort_by(f64::total_cmp);
    let median = errors[errors.len() / 2];
    println!(
        "{} held-out pairs, median relative error {:.3}",
        errors.len(),
        median
    );
    assert!(median <= 0.15, "median relative error {median:.3} > 0.15");
}
