//! Prometheus metrics, rendered at `/metrics`.

use std::sync::Mutex;

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

pub struct Metrics {
    registry: Mutex<Registry>,
    pub bookings_admitted: Counter,
    pub bookings_refused: Counter,
    pub booking_seconds: Histogram,
    pub booking_batch_size: Histogram,
    pub progress_batch_size: Histogram,
    pub seats_dispatched: Counter,
    pub agent_sessions: Gauge,
    pub agent_refused: Counter,
    /// Seats of lessons not yet ended or cancelled, by seat state; set from
    /// the database every few seconds (see `refresh_seat_states`).
    pub open_seats: Family<Vec<(String, String)>, Gauge>,
    /// Failed seats of lessons not yet over: the alerting signal that a
    /// class, or part of it, has no working environment.
    pub seats_failed: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("classgrid");
        let m = Self {
            registry: Mutex::new(Registry::default()),
            bookings_admitted: Counter::default(),
            bookings_refused: Counter::default(),
            booking_seconds: Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            booking_batch_size: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0]),
            progress_batch_size: Histogram::new([1.0, 4.0, 16.0, 64.0, 256.0]),
            seats_dispatched: Counter::default(),
            agent_sessions: Gauge::default(),
            agent_refused: Counter::default(),
            open_seats: Family::default(),
            seats_failed: Gauge::default(),
        };
        r.register(
            "bookings_admitted",
            "Lesson bookings admitted",
            m.bookings_admitted.clone(),
        );
        r.register(
            "bookings_refused",
            "Lesson bookings refused by placement",
            m.bookings_refused.clone(),
        );
        r.register(
            "booking_seconds",
            "Time to admit or refuse a booking",
            m.booking_seconds.clone(),
        );
        r.register(
            "booking_batch_size",
            "Bookings written per database transaction",
            m.booking_batch_size.clone(),
        );
        r.register(
            "progress_batch_size",
            "Agents' bursts of progress reports written per statement",
            m.progress_batch_size.clone(),
        );
        r.register(
            "seats_dispatched",
            "Seats and jobs sent to agents",
            m.seats_dispatched.clone(),
        );
        r.register(
            "agent_sessions",
            "Connected agent streams",
            m.agent_sessions.clone(),
        );
        r.register(
            "agent_refused",
            "Agent registrations refused",
            m.agent_refused.clone(),
        );
        r.register(
            "seats",
            "Seats of lessons not yet ended or cancelled, by state",
            m.open_seats.clone(),
        );
        r.register(
            "seats_failed",
            "Failed seats of lessons not yet ended or cancelled",
            m.seats_failed.clone(),
        );
        *m.registry.lock().expect("metrics lock") = r;
        m
    }
}

/// Seat states that `classgrid_seats` always shows, 0 included, so a
/// dashboard's query for failed seats has a series before the first failure.
const SEAT_STATES: &[&str] = &[
    "planned", "staged", "starting", "running", "released", "failed", "replaced",
];

impl Metrics {
    /// Sets the seat gauges from (state, count) rows of open lessons.
    pub fn set_seat_states(&self, rows: &[(String, i64)]) {
        for st in SEAT_STATES {
            let n = rows.iter().find(|(s, _)| s == st).map_or(0, |(_, n)| *n);
            self.open_seats
                .get_or_create(&vec![("state".to_string(), st.to_string())])
                .set(n);
        }
        self.seats_failed.set(
            rows.iter()
                .find(|(s, _)| s == "failed")
                .map_or(0, |(_, n)| *n),
        );
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry.lock().expect("metrics lock"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn failed_seats_are_counted_and_every_state_has_a_series() {
        let m = Metrics::default();
        m.set_seat_states(&[("failed".into(), 3), ("running".into(), 42)]);
        let text = m.render();
        assert!(text.contains("classgrid_seats_failed 3"), "{text}");
        assert!(
            text.contains(r#"classgrid_seats{state="running"} 42"#),
            "{text}"
        );
        assert!(
            text.contains(r#"classgrid_seats{state="starting"} 0"#),
            "{text}"
        );
    }
}
