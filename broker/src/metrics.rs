//! Prometheus metrics, rendered at `/metrics` in the classic text format
//! (see `classgrid_common::exposition` for why not OpenMetrics).

use std::sync::{Mutex, atomic::AtomicU64};

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
    pub agent_handshakes: Gauge,
    pub agent_refused: Counter,
    /// Seats of lessons not yet ended or cancelled, by seat state; set from
    /// the database every few seconds (see `refresh_seat_states`).
    pub open_seats: Family<Vec<(String, String)>, Gauge>,
    /// Failed seats of lessons not yet over: the alerting signal that a
    /// class, or part of it, has no working environment.
    pub seats_failed: Gauge,
    /// Device slices by node tier, device vendor and `state` (`free` or
    /// `reserved`) at this instant; set by `telemetry::gauges`.
    pub slices: Family<Vec<(String, String)>, Gauge>,
    /// Accelerator time left on each school's vouchers valid now, in
    /// accelerator-seconds (Prometheus's base unit; vouchers are issued in
    /// hours, 3600 of these); set by `telemetry::gauges`. Schools are few per region, so the label is
    /// bounded.
    pub voucher_balance: Family<Vec<(String, String)>, Gauge<f64, AtomicU64>>,
    /// Refused bookings by the filter that removed the most nodes (a fixed
    /// set of placement filter names); see `refused`.
    pub booking_refusals: Family<Vec<(String, String)>, Counter>,
}

/// Labels of one series: the few fixed names each family uses.
fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
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
            agent_handshakes: Gauge::default(),
            agent_refused: Counter::default(),
            open_seats: Family::default(),
            seats_failed: Gauge::default(),
            slices: Family::default(),
            voucher_balance: Family::default(),
            booking_refusals: Family::default(),
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
            "agent_handshakes",
            "Agent streams open whose register message has not arrived yet",
            m.agent_handshakes.clone(),
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
        r.register(
            "slices",
            "Device slices of connected, approved, uncordoned nodes' healthy devices, by tier, vendor and state (free or reserved now)",
            m.slices.clone(),
        );
        r.register(
            "voucher_balance_accelerator_seconds",
            "Accelerator time left on each school's vouchers valid now, in accelerator-seconds",
            m.voucher_balance.clone(),
        );
        r.register(
            "booking_refusals",
            "Lesson bookings refused by placement, by the filter that removed the most nodes",
            m.booking_refusals.clone(),
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

    /// Replaces the slice gauges with `rows` of (tier, vendor, free,
    /// reserved); a tier and vendor no longer in the fleet loses its series.
    pub fn set_slices(&self, rows: &[(String, String, i64, i64)]) {
        self.slices.clear();
        for (tier, vendor, free, reserved) in rows {
            for (state, n) in [("free", free), ("reserved", reserved)] {
                self.slices
                    .get_or_create(&labels(&[
                        ("tier", tier),
                        ("vendor", vendor),
                        ("state", state),
                    ]))
                    .set(*n);
            }
        }
    }

    /// Replaces the voucher gauges with (school site, micro-hours) rows.
    pub fn set_voucher_balances(&self, rows: &[(String, i64)]) {
        self.voucher_balance.clear();
        for (school, uah) in rows {
            self.voucher_balance
                .get_or_create(&labels(&[("school_site", school)]))
                .set(*uah as f64 * 3600.0 / crate::vouchers::UAH_PER_HOUR as f64);
        }
    }

    /// Counts one refused booking under its main reason: the filter that
    /// removed the most nodes, or `no_nodes` when the region had none to
    /// consider. Returns the new count, as `Counter::inc` does.
    pub fn refused(&self, why: &classgrid_placement::Explanation) -> u64 {
        let reason = why
            .filters
            .iter()
            .max_by_key(|f| f.removed)
            .map_or("no_nodes", |f| f.filter);
        self.booking_refusals
            .get_or_create(&labels(&[("reason", reason)]))
            .inc();
        self.bookings_refused.inc()
    }

    /// The exposition in Prometheus's classic text format
    /// ([`classgrid_common::exposition::CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry.lock().expect("metrics lock"));
        classgrid_common::exposition::to_text(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn counters_carry_help_and_type_under_their_total_name() {
        let m = Metrics::default();
        m.bookings_admitted.inc();
        let text = m.render();
        assert!(
            text.contains(
                "# HELP classgrid_bookings_admitted_total Lesson bookings admitted.\n\
                 # TYPE classgrid_bookings_admitted_total counter\n\
                 classgrid_bookings_admitted_total 1\n"
            ),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn slices_and_balances_replace_their_series() {
        let m = Metrics::default();
        m.set_slices(&[("edge".into(), "nvidia".into(), 5, 3)]);
        m.set_voucher_balances(&[("school-a".into(), 2_500_000)]);
        let text = m.render();
        for want in [
            r#"classgrid_slices{tier="edge",vendor="nvidia",state="free"} 5"#,
            r#"classgrid_slices{tier="edge",vendor="nvidia",state="reserved"} 3"#,
            r#"classgrid_voucher_balance_accelerator_seconds{school_site="school-a"} 9000.0"#,
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        m.set_slices(&[("cloud".into(), "huawei".into(), 1, 0)]);
        let text = m.render();
        assert!(!text.contains(r#"vendor="nvidia""#), "{text}");
    }

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
