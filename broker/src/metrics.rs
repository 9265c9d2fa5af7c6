//! Prometheus metrics, rendered at `/metrics`.

use std::sync::Mutex;

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, gauge::Gauge, histogram::Histogram},
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
        *m.registry.lock().expect("metrics lock") = r;
        m
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry.lock().expect("metrics lock"));
        out
    }
}
