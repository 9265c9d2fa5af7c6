//! Booking requests for lessons and jobs, validated into trusted values.

use chrono::{DateTime, Duration, Utc};

use super::{
    error::{Checks, ServiceError},
    spec::{self, Dataset, RawDataset, RawSeat, SeatSpec, Workload},
};

pub const DEFAULT_LESSON_SECONDS: i64 = 2400;
/// Clocks of platforms and broker drift; a start this close to now is "now".
const START_SKEW: Duration = Duration::seconds(30);
const MAX_SEATS: i64 = 1000;

/// A lesson booking as a transport delivers it.
#[derive(Debug, Clone, Default)]
pub struct RawBooking {
    pub request_id: String,
    pub school_site: String,
    pub title: String,
    pub start: Option<DateTime<Utc>>,
    pub duration_seconds: i64,
    pub seats: i64,
    pub min_seats: i64,
    pub seat: Option<RawSeat>,
    pub workload: Workload,
    pub datasets: Vec<RawDataset>,
    pub max_rtt_ms: i64,
    /// "", "school", "district" or "education_network".
    pub residency: String,
}

#[derive(Debug, Clone)]
pub struct Booking {
    pub request_id: Option<String>,
    pub school_site: String,
    pub title: String,
    pub start: DateTime<Utc>,
    pub duration: Duration,
    pub seats: u32,
    pub min_seats: u32,
    pub seat: SeatSpec,
    pub workload: Workload,
    pub datasets: Vec<Dataset>,
    pub max_rtt_ms: u32,
    pub residency: classgrid_placement::Residency,
}

impl Booking {
    pub fn end(&self) -> DateTime<Utc> {
        self.start + self.duration
    }
}

pub struct Limits {
    pub default_max_rtt_ms: u32,
    pub max_window: std::time::Duration,
}

pub fn parse_booking(
    raw: RawBooking,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Booking, ServiceError> {
    let mut c = Checks::default();
    spec::check_text(&mut c, "request_id", &raw.request_id, 128, false);
    spec::check_text(&mut c, "school_site", &raw.school_site, 128, true);
    spec::check_text(&mut c, "title", &raw.title, 200, false);
    let start = match raw.start {
        None => {
            c.fail("start", "is required (RFC 3339 time)");
            now
        }
        Some(s) if s < now - START_SKEW => {
            c.fail("start", "must not be in the past");
            s
        }
        Some(s) => s,
    };
    let duration_s = if raw.duration_seconds == 0 {
        DEFAULT_LESSON_SECONDS
    } else {
        raw.duration_seconds
    };
    let max_s = limits.max_window.as_secs() as i64;
    if duration_s < 1 || duration_s > max_s {
        c.fail(
            "duration_seconds",
            format!("must be between 1 and {max_s} seconds, not {duration_s}"),
        );
    }
    if raw.seats < 1 || raw.seats > MAX_SEATS {
        c.fail(
            "seats",
            format!("must be between 1 and {MAX_SEATS}, not {}", raw.seats),
        );
    }
    let min_seats = if raw.min_seats == 0 {
        raw.seats
    } else {
        raw.min_seats
    };
    if raw.min_seats < 0 || (raw.seats >= 1 && min_seats > raw.seats) {
        c.fail(
            "min_seats",
            "must be between 1 and seats (0 means all seats)",
        );
    }
    let seat = match &raw.seat {
        Some(s) => spec::parse_seat(&mut c, "seat", s),
        None => {
            c.fail("seat", "is required");
            spec::parse_seat(&mut Checks::default(), "seat", &RawSeat::default())
        }
    };
    spec::check_workload(&mut c, "workload", &seat.runtime, &raw.workload);
    let datasets = spec::parse_datasets(&mut c, &raw.datasets);
    let max_rtt_ms = if raw.max_rtt_ms == 0 {
        limits.default_max_rtt_ms as i64
    } else {
        raw.max_rtt_ms
    };
    if !(1..=10_000).contains(&max_rtt_ms) {
        c.fail(
            "max_rtt_ms",
            format!("must be between 1 and 10000 ms, not {max_rtt_ms}"),
        );
    }
    let residency = classgrid_placement::Residency::parse(&raw.residency).unwrap_or_else(|| {
        c.fail(
            "residency",
            "must be school, district, education_network or empty (anywhere)",
        );
        Default::default()
    });
    c.finish()?;
    Ok(Booking {
        request_id: Some(raw.request_id).filter(|r| !r.is_empty()),
        school_site: raw.school_site.trim().to_string(),
        title: raw.title,
        start,
        duration: Duration::seconds(duration_s),
        seats: raw.seats as u32,
        min_seats: min_seats as u32,
        seat,
        workload: raw.workload,
        datasets,
        max_rtt_ms: max_rtt_ms as u32,
        residency,
    })
}

/// An ad-hoc job as a transport delivers it.
#[derive(Debug, Clone, Default)]
pub struct RawJob {
    pub request_id: String,
    pub school_site: String,
    pub name: String,
    pub spec: Option<RawSeat>,
    pub workload: Workload,
    pub max_runtime_seconds: i64,
    pub priority: i64,
    pub preemptible: bool,
    pub grace_seconds: i64,
}

#[derive(Debug, Clone)]
pub struct JobRequest {
    pub request_id: Option<String>,
    pub school_site: String,
    pub name: String,
    pub spec: SeatSpec,
    pub workload: Workload,
    pub max_runtime: Duration,
    pub priority: i32,
    pub preemptible: bool,
    pub grace: Duration,
}

pub const DEFAULT_JOB_SECONDS: i64 = 3600;

pub fn parse_job(raw: RawJob, limits: &Limits) -> Result<JobRequest, ServiceError> {
    let mut c = Checks::default();
    spec::check_text(&mut c, "request_id", &raw.request_id, 128, false);
    spec::check_text(&mut c, "school_site", &raw.school_site, 128, true);
    spec::check_text(&mut c, "name", &raw.name, 200, false);
    let spec = match &raw.spec {
        Some(s) => spec::parse_seat(&mut c, "spec", s),
        None => {
            c.fail("spec", "is required");
            spec::parse_seat(&mut Checks::default(), "spec", &RawSeat::default())
        }
    };
    spec::check_workload(&mut c, "workload", &spec.runtime, &raw.workload);
    let max_s = limits.max_window.as_secs() as i64;
    let runtime = if raw.max_runtime_seconds == 0 {
        DEFAULT_JOB_SECONDS.min(max_s)
    } else {
        raw.max_runtime_seconds
    };
    if runtime < 1 || runtime > max_s {
        c.fail(
            "max_runtime_seconds",
            format!("must be between 1 and {max_s}, not {runtime}"),
        );
    }
    if !(-1000..=1000).contains(&raw.priority) {
        c.fail("priority", "must be between -1000 and 1000");
    }
    let grace = if raw.grace_seconds == 0 {
        60
    } else {
        raw.grace_seconds
    };
    if !(1..=3600).contains(&grace) {
        c.fail("grace_seconds", "must be between 1 and 3600 (0 means 60)");
    }
    c.finish()?;
    Ok(JobRequest {
        request_id: Some(raw.request_id).filter(|r| !r.is_empty()),
        school_site: raw.school_site.trim().to_string(),
        name: raw.name,
        spec,
        workload: raw.workload,
        max_runtime: Duration::seconds(runtime),
        priority: raw.priority as i32,
        preemptible: raw.preemptible,
        grace: Duration::seconds(grace),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            default_max_rtt_ms: 50,
            max_window: std::time::Duration::from_secs(12 * 3600),
        }
    }

    fn good(now: DateTime<Utc>) -> RawBooking {
        RawBooking {
            school_site: "school-x".into(),
            start: Some(now + Duration::minutes(10)),
            seats: 45,
            seat: Some(RawSeat {
                cpu_millis: 500,
                memory_mib: 1024,
                ..Default::default()
            }),
            workload: Workload {
                command: "python3".into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn fields(e: ServiceError) -> Vec<String> {
        match e {
            ServiceError::Invalid(v) => v.into_iter().map(|f| f.field).collect(),
            other => panic!("expected field errors, got {other}"),
        }
    }

    #[test]
    fn defaults_fill_duration_min_seats_and_rtt() {
        let now = Utc::now();
        let b = parse_booking(good(now), now, &limits()).unwrap();
        assert_eq!(b.duration, Duration::seconds(2400));
        assert_eq!(b.min_seats, 45);
        assert_eq!(b.max_rtt_ms, 50);
        assert_eq!(b.seat.runtime, "process");
    }

    #[test]
    fn zero_or_negative_seats_name_the_field() {
        let now = Utc::now();
        for n in [0, -3] {
            let mut r = good(now);
            r.seats = n;
            assert!(
                fields(parse_booking(r, now, &limits()).unwrap_err())
                    .contains(&"seats".to_string())
            );
        }
    }

    #[test]
    fn residency_is_parsed_or_named() {
        let now = Utc::now();
        let mut r = good(now);
        r.residency = "district".into();
        let b = parse_booking(r, now, &limits()).unwrap();
        assert_eq!(b.residency, classgrid_placement::Residency::District);
        let mut r = good(now);
        r.residency = "moon".into();
        assert_eq!(
            fields(parse_booking(r, now, &limits()).unwrap_err()),
            vec!["residency"]
        );
    }

    #[test]
    fn start_in_the_past_is_refused() {
        let now = Utc::now();
        let mut r = good(now);
        r.start = Some(now - Duration::hours(1));
        assert_eq!(
            fields(parse_booking(r, now, &limits()).unwrap_err()),
            vec!["start"]
        );
    }

    #[test]
    fn unknown_vendor_and_compute_over_100_are_refused() {
        let now = Utc::now();
        let mut r = good(now);
        r.seat.as_mut().unwrap().gpu = Some(spec::RawGpu {
            vendors: vec!["nvidia".into(), "voodoo".into()],
            memory_mib: 4096,
            compute_percent: 150,
            ..Default::default()
        });
        let f = fields(parse_booking(r, now, &limits()).unwrap_err());
        assert!(f.contains(&"seat.gpu.vendors[1]".to_string()), "{f:?}");
        assert!(f.contains(&"seat.gpu.compute_percent".to_string()), "{f:?}");
    }

    #[test]
    fn malformed_duration_and_window_over_limit_are_refused() {
        let now = Utc::now();
        let mut r = good(now);
        r.duration_seconds = -5;
        assert_eq!(
            fields(parse_booking(r, now, &limits()).unwrap_err()),
            vec!["duration_seconds"]
        );
        let mut r = good(now);
        r.duration_seconds = 13 * 3600;
        assert_eq!(
            fields(parse_booking(r, now, &limits()).unwrap_err()),
            vec!["duration_seconds"]
        );
    }

    #[test]
    fn nul_characters_are_refused_by_name() {
        let now = Utc::now();
        let mut r = good(now);
        r.title = "a\0b".into();
        r.workload.args = vec!["x\0".into()];
        let f = fields(parse_booking(r, now, &limits()).unwrap_err());
        assert!(
            f.contains(&"title".to_string()) && f.contains(&"workload".to_string()),
            "{f:?}"
        );
    }

    #[test]
    fn oversize_fields_are_refused() {
        let now = Utc::now();
        let mut r = good(now);
        r.title = "x".repeat(10_000);
        r.school_site = "s".repeat(500);
        let f = fields(parse_booking(r, now, &limits()).unwrap_err());
        assert!(f.contains(&"title".to_string()) && f.contains(&"school_site".to_string()));
    }
}
