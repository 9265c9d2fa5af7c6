//! Vivaldi network coordinates with a height term, following Serf's
//! `coordinate` package (Dabek et al., "Vivaldi: A Decentralized Network
//! Coordinate System", and Ledlie et al., "Network Coordinates in the Wild").
//!
//! Each participant (a site's edge, a node) has a point in a Euclidean space
//! plus a height: the RTT between two participants is estimated as the
//! distance between their points plus both heights. The height models the
//! access link (a school's DSL line, a server's NIC queue) that every path
//! through that participant pays, which a flat Euclidean space cannot.
//!
//! Units are milliseconds throughout. Parameters, with Serf's defaults:
//!
//! | parameter | default | meaning |
//! | --- | --- | --- |
//! | `dimensionality` | 8 | dimensions of the Euclidean part |
//! | `error_max` | 1.5 | initial and largest relative error of a coordinate |
//! | `ce` | 0.25 | how fast the error estimate follows new observations |
//! | `cc` | 0.25 | the largest step a single observation may move a coordinate |
//! | `adjustment_window` | 20 | samples in the non-Euclidean adjustment term |
//! | `height_min_ms` | 0.01 | the smallest height (Serf: 10 µs) |
//! | `latency_filter` | 3 | raw samples per peer; the median is used |
//! | `gravity_rho_ms` | 150 000 | pull towards the origin against drift (Serf: 150 s) |
//!
//! The module is pure: it owns no sockets and no clock, so the broker can run
//! it over reported measurements and tests can run it over a synthetic matrix.

use std::collections::HashMap;
use std::hash::Hash;

const ZERO: f64 = 1.0e-6;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    pub dimensionality: usize,
    pub error_max: f64,
    pub ce: f64,
    pub cc: f64,
    pub adjustment_window: usize,
    pub height_min_ms: f64,
    pub latency_filter: usize,
    pub gravity_rho_ms: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            dimensionality: 8,
            error_max: 1.5,
            ce: 0.25,
            cc: 0.25,
            adjustment_window: 20,
            height_min_ms: 0.01,
            latency_filter: 3,
            gravity_rho_ms: 150_000.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Coordinate {
    pub vec: Vec<f64>,
    /// Estimated relative error of this coordinate (0 = exact).
    pub error: f64,
    /// Mean residual of recent observations, for non-Euclidean effects.
    pub adjustment: f64,
    pub height: f64,
}

impl Coordinate {
    pub fn new(cfg: &Config) -> Self {
        Self {
            vec: vec![0.0; cfg.dimensionality],
            error: cfg.error_max,
            adjustment: 0.0,
            height: cfg.height_min_ms,
        }
    }

    fn raw_distance(&self, other: &Coordinate) -> f64 {
        magnitude(&diff(&self.vec, &other.vec)) + self.height + other.height
    }

    /// The estimated RTT in milliseconds.
    pub fn distance_ms(&self, other: &Coordinate) -> f64 {
        let dist = self.raw_distance(other);
        let adjusted = dist + self.adjustment + other.adjustment;
        if adjusted > 0.0 { adjusted } else { dist }
    }

    /// A bound on the estimate's error in milliseconds: each side's relative
    /// error applied to the estimate, added, so that it only shrinks when
    /// both coordinates have settled.
    pub fn error_bound_ms(&self, other: &Coordinate) -> f64 {
        self.distance_ms(other) * (self.error + other.error)
    }

    fn apply_force(&mut self, cfg: &Config, force: f64, other: &Coordinate, seed: u64) {
        let (unit, mag) = unit_vector_at(&self.vec, &other.vec, seed);
        for (v, u) in self.vec.iter_mut().zip(&unit) {
            *v += u * force;
        }
        if mag > ZERO {
            self.height =
                ((self.height + other.height) * force / mag + self.height).max(cfg.height_min_ms);
        }
    }
}

/// One participant's coordinate and the state Serf keeps beside it.
#[derive(Debug, Clone)]
pub struct Client<K> {
    coord: Coordinate,
    origin: Coordinate,
    adjustment_samples: Vec<f64>,
    adjustment_index: usize,
    filters: HashMap<K, Vec<f64>>,
    updates: u64,
}

impl<K: Eq + Hash + Clone> Client<K> {
    pub fn new(cfg: &Config) -> Self {
        Self {
            coord: Coordinate::new(cfg),
            origin: Coordinate::new(cfg),
            adjustment_samples: vec![0.0; cfg.adjustment_window],
            adjustment_index: 0,
            filters: HashMap::new(),
            updates: 0,
        }
    }

    pub fn coordinate(&self) -> &Coordinate {
        &self.coord
    }

    /// Takes one RTT observation to `peer`, whose coordinate is `other`.
    /// Non-finite or negative RTTs are ignored: a broken probe must not move
    /// a coordinate.
    pub fn update(&mut self, cfg: &Config, peer: &K, other: &Coordinate, rtt_ms: f64) {
        if !rtt_ms.is_finite() || rtt_ms < 0.0 || other.vec.len() != self.coord.vec.len() {
            return;
        }
        let rtt = self.filter(cfg, peer, rtt_ms).max(ZERO);
        self.updates += 1;
        self.update_vivaldi(cfg, other, rtt);
        self.update_adjustment(cfg, other, rtt);
        self.update_gravity(cfg);
    }

    fn filter(&mut self, cfg: &Config, peer: &K, rtt: f64) -> f64 {
        let samples = self.filters.entry(peer.clone()).or_default();
        samples.push(rtt);
        if samples.len() > cfg.latency_filter.max(1) {
            samples.remove(0);
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }

    fn update_vivaldi(&mut self, cfg: &Config, other: &Coordinate, rtt: f64) {
        let dist = self.coord.distance_ms(other);
        let wrongness = (dist - rtt).abs() / rtt;
        let total_error = (self.coord.error + other.error).max(ZERO);
        let weight = self.coord.error / total_error;
        self.coord.error = (cfg.ce * weight * wrongness
            + self.coord.error * (1.0 - cfg.ce * weight))
            .min(cfg.error_max);
        let force = cfg.cc * weight * (rtt - dist);
        let seed = self.updates;
        self.coord.apply_force(cfg, force, other, seed);
    }

    fn update_adjustment(&mut self, cfg: &Config, other: &Coordinate, rtt: f64) {
        if cfg.adjustment_window == 0 {
            return;
        }
        self.adjustment_samples[self.adjustment_index] = rtt - self.coord.raw_distance(other);
        self.adjustment_index = (self.adjustment_index + 1) % cfg.adjustment_window;
        let sum: f64 = self.adjustment_samples.iter().sum();
        self.coord.adjustment = sum / (2.0 * cfg.adjustment_window as f64);
    }

    fn update_gravity(&mut self, cfg: &Config) {
        let dist = self.origin.distance_ms(&self.coord);
        let force = -(dist / cfg.gravity_rho_ms).powi(2);
        let origin = self.origin.clone();
        self.coord.apply_force(cfg, force, &origin, self.updates);
    }
}

/// Coordinates for many participants computed in one place from pairwise
/// measurements: the broker's view, fed by edges (site → node) and agents
/// (node → peer). Each observation updates both ends, as if each had probed
/// the other.
#[derive(Debug, Clone)]
pub struct Space<K> {
    cfg: Config,
    clients: HashMap<K, Client<K>>,
}

impl<K: Eq + Hash + Clone> Space<K> {
    pub fn new(cfg: Config) -> Self {
        Self {
            cfg,
            clients: HashMap::new(),
        }
    }

    pub fn observe(&mut self, a: &K, b: &K, rtt_ms: f64) {
        if a == b {
            return;
        }
        let ca = self.coordinate_or_new(a);
        let cb = self.coordinate_or_new(b);
        let cfg = self.cfg;
        if let Some(x) = self.clients.get_mut(a) {
            x.update(&cfg, b, &cb, rtt_ms);
        }
        if let Some(y) = self.clients.get_mut(b) {
            y.update(&cfg, a, &ca, rtt_ms);
        }
    }

    fn coordinate_or_new(&mut self, k: &K) -> Coordinate {
        let cfg = self.cfg;
        self.clients
            .entry(k.clone())
            .or_insert_with(|| Client::new(&cfg))
            .coord
            .clone()
    }

    pub fn participants(&self) -> impl Iterator<Item = &K> {
        self.clients.keys()
    }

    pub fn coordinate(&self, k: &K) -> Option<&Coordinate> {
        self.clients.get(k).map(|c| &c.coord)
    }

    /// The estimated RTT between two participants and its error bound, both
    /// in milliseconds; None unless both have taken part in an observation.
    pub fn estimate(&self, a: &K, b: &K) -> Option<(f64, f64)> {
        let (x, y) = (self.coordinate(a)?, self.coordinate(b)?);
        Some((x.distance_ms(y), x.error_bound_ms(y)))
    }
}

fn diff(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

fn magnitude(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The unit vector from `b` towards `a` and the distance between them. Two
/// coincident points (every fresh coordinate is at the origin) are pushed
/// apart in a pseudo-random direction derived from `seed`, as Serf does with
/// a random one; a fixed seed keeps the module deterministic.
fn unit_vector_at(a: &[f64], b: &[f64], seed: u64) -> (Vec<f64>, f64) {
    let d = diff(a, b);
    let mag = magnitude(&d);
    if mag > ZERO {
        return (d.iter().map(|x| x / mag).collect(), mag);
    }
    let mut state = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(0xD1B5_4A32_D192_ED03)
        | 1;
    let mut r: Vec<f64> = a
        .iter()
        .map(|_| {
            // xorshift64*: enough spread for a push direction.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        })
        .collect();
    let m = magnitude(&r);
    if m > ZERO {
        r.iter_mut().for_each(|x| *x /= m);
        return (r, 0.0);
    }
    (d, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_participants_converge_to_their_rtt() {
        let mut s = Space::new(Config::default());
        for _ in 0..200 {
            s.observe(&"a", &"b", 20.0);
        }
        let (est, _) = s.estimate(&"a", &"b").unwrap();
        assert!((est - 20.0).abs() < 1.0, "estimate {est}");
    }

    #[test]
    fn broken_probe_values_do_not_move_coordinates() {
        let mut s = Space::new(Config::default());
        for _ in 0..50 {
            s.observe(&"a", &"b", 10.0);
        }
        let before = s.coordinate(&"a").unwrap().clone();
        s.observe(&"a", &"b", f64::NAN);
        s.observe(&"a", &"b", -3.0);
        assert_eq!(s.coordinate(&"a").unwrap(), &before);
    }

    #[test]
    fn unknown_participants_have_no_estimate() {
        let s: Space<&str> = Space::new(Config::default());
        assert!(s.estimate(&"a", &"b").is_none());
    }
}
