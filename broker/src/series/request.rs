//! A series booking as a transport delivers it, validated: the rule, the
//! policy, the lesson template (checked by the single booking's own rules),
//! and the occurrences still to come.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

use super::rule::Rule;
use crate::domain::{
    FieldError, ServiceError,
    error::Checks,
    lesson::{Booking, DEFAULT_LESSON_SECONDS, Limits, RawBooking, parse_booking},
    spec::{Dataset, SeatSpec, Workload},
};

/// What happens when some occurrences do not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// One occurrence refused and none is booked.
    AllOrNothing,
    /// Book those that fit; explain the rest.
    BookWhatFits,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::AllOrNothing => "all_or_nothing",
            Policy::BookWhatFits => "book_what_fits",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "all_or_nothing" => Some(Policy::AllOrNothing),
            "book_what_fits" => Some(Policy::BookWhatFits),
            _ => None,
        }
    }
}

/// A series booking as a transport delivers it. Dates are `YYYY-MM-DD` and
/// the start time `HH:MM`, both in the region's time zone.
#[derive(Debug, Clone, Default)]
pub struct RawSeries {
    pub request_id: String,
    /// The lesson: school, title, duration, seats, seat spec, workload,
    /// datasets, RTT limit (its `start` and `request_id` are not used).
    pub lesson: RawBooking,
    pub rrule: String,
    pub start_time: String,
    pub term_start: String,
    pub term_end: String,
    pub exception_dates: Vec<String>,
    pub policy: String,
}

/// What every occurrence books, as kept with the series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub seats: u32,
    pub min_seats: u32,
    pub seat: SeatSpec,
    pub workload: Workload,
    pub datasets: Vec<Dataset>,
    pub max_rtt_ms: u32,
}

/// A validated series.
#[derive(Debug, Clone)]
pub struct SeriesRequest {
    pub request_id: Option<String>,
    pub rule: Rule,
    pub policy: Policy,
    /// The first future occurrence's booking; the others differ only in
    /// their start.
    pub lesson: Booking,
    /// Starts of the occurrences still to come, in order.
    pub occurrences: Vec<DateTime<Utc>>,
    /// Occurrences of the term already past, not booked.
    pub past: usize,
}

impl SeriesRequest {
    pub fn template(&self) -> Template {
        template_of(&self.lesson)
    }

    /// One booking per occurrence to come.
    pub fn bookings(&self) -> Vec<Booking> {
        self.occurrences
            .iter()
            .map(|s| occurrence(&self.lesson, *s))
            .collect()
    }
}

pub fn template_of(b: &Booking) -> Template {
    Template {
        seats: b.seats,
        min_seats: b.min_seats,
        seat: b.seat.clone(),
        workload: b.workload.clone(),
        datasets: b.datasets.clone(),
        max_rtt_ms: b.max_rtt_ms,
    }
}

/// `lesson` at `start`, with no request id of its own (the series has one).
pub fn occurrence(lesson: &Booking, start: DateTime<Utc>) -> Booking {
    Booking {
        request_id: None,
        start,
        ..lesson.clone()
    }
}

fn parse_date(c: &mut Checks, field: &str, s: &str) -> Option<NaiveDate> {
    match NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d") {
        Ok(d) => Some(d),
        Err(_) if s.trim().is_empty() => {
            c.fail(field, "is required (YYYY-MM-DD)");
            None
        }
        Err(_) => {
            c.fail(field, "must be a date, YYYY-MM-DD");
            None
        }
    }
}

/// A local time `HH:MM` (or `HH:MM:SS`).
pub fn parse_time_of_day(s: &str) -> Option<NaiveTime> {
    let s = s.trim();
    NaiveTime::parse_from_str(s, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M:%S"))
        .ok()
}

pub fn parse_series(
    raw: RawSeries,
    now: DateTime<Utc>,
    limits: &Limits,
    tz: chrono_tz::Tz,
) -> Result<SeriesRequest, ServiceError> {
    let mut c = Checks::default();
    crate::domain::spec::check_text(&mut c, "request_id", &raw.request_id, 128, false);
    let term_start = parse_date(&mut c, "term_start", &raw.term_start);
    let term_end = parse_date(&mut c, "term_end", &raw.term_end);
    let start_time = parse_time_of_day(&raw.start_time);
    if start_time.is_none() {
        c.fail("start_time", "must be a local time, HH:MM");
    }
    if raw.exception_dates.len() > 366 {
        c.fail("exception_dates", "must list at most 366 dates");
    }
    let exceptions: Vec<NaiveDate> = raw
        .exception_dates
        .iter()
        .enumerate()
        .filter_map(|(i, d)| parse_date(&mut c, &format!("exception_dates[{i}]"), d))
        .collect();
    let policy = Policy::parse(raw.policy.trim()).unwrap_or_else(|| {
        c.fail("policy", "must be all_or_nothing or book_what_fits");
        Policy::AllOrNothing
    });
    let duration_s = match raw.lesson.duration_seconds {
        0 => DEFAULT_LESSON_SECONDS,
        s => s,
    };
    let mut occurrences = Vec::new();
    let mut past = 0;
    if let (Some(term_start), Some(term_end), Some(start_time)) = (term_start, term_end, start_time)
    {
        let rule = Rule {
            rrule: raw.rrule.trim().to_string(),
            start_time,
            duration: Duration::seconds(duration_s.max(1)),
            term_start,
            term_end,
            exceptions: exceptions.clone(),
        };
        match rule.expand(tz) {
            Ok(all) => {
                past = all.iter().filter(|s| **s <= now).count();
                occurrences = all.into_iter().filter(|s| *s > now).collect();
                if occurrences.is_empty() {
                    c.fail("term_end", "every occurrence of the term is already past");
                }
            }
            Err(errors) => errors.into_iter().for_each(|e| c.fail(e.field, e.rule)),
        }
    }
    // The template by the single booking's rules, at the first occurrence
    // (or, if there is none, an hour from now, to check the rest).
    let first = occurrences
        .first()
        .copied()
        .unwrap_or(now + Duration::hours(1));
    let lesson = parse_booking(
        RawBooking {
            request_id: String::new(),
            start: Some(first),
            ..raw.lesson
        },
        now,
        limits,
    );
    let lesson = match lesson {
        Ok(b) => Some(b),
        Err(ServiceError::Invalid(fields)) => {
            fields
                .into_iter()
                .for_each(|FieldError { field, rule }| c.fail(field, rule));
            None
        }
        Err(e) => return Err(e),
    };
    c.finish()?;
    let (Some(lesson), Some(term_start), Some(term_end), Some(start_time)) =
        (lesson, term_start, term_end, start_time)
    else {
        return Err(ServiceError::field("series", "is incomplete"));
    };
    Ok(SeriesRequest {
        request_id: Some(raw.request_id).filter(|r| !r.is_empty()),
        rule: Rule {
            rrule: raw.rrule.trim().to_string(),
            start_time,
            duration: lesson.duration,
            term_start,
            term_end,
            exceptions,
        },
        policy,
        lesson,
        occurrences,
        past,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::spec::RawSeat;

    fn limits() -> Limits {
        Limits {
            default_max_rtt_ms: 30,
            max_window: std::time::Duration::from_secs(4 * 3600),
        }
    }

    fn raw() -> RawSeries {
        RawSeries {
            lesson: RawBooking {
                school_site: "school-a".into(),
                title: "AI, class 7-3".into(),
                seats: 45,
                seat: Some(RawSeat {
                    runtime: "container".into(),
                    cpu_millis: 250,
                    memory_mib: 512,
                    gpu: None,
                }),
                workload: Workload {
                    image: "lab:1".into(),
                    command: "jupyter".into(),
                    args: vec!["lab".into()],
                    env: Default::default(),
                },
                max_rtt_ms: 40,
                ..Default::default()
            },
            rrule: "FREQ=WEEKLY;BYDAY=TU".into(),
            start_time: "10:00".into(),
            term_start: "2027-02-17".into(),
            term_end: "2027-06-30".into(),
            exception_dates: vec!["2027-05-04".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_term_part_gone_books_only_what_is_to_come() {
        let now: DateTime<Utc> = "2027-03-10T00:00:00Z".parse().unwrap();
        let s = parse_series(raw(), now, &limits(), chrono_tz::Asia::Shanghai).unwrap();
        assert_eq!(s.past, 3);
        assert_eq!(s.occurrences.len(), 15);
        assert_eq!(s.policy, Policy::AllOrNothing);
        let b = s.bookings();
        assert_eq!(b[0].start.to_rfc3339(), "2027-03-16T02:00:00+00:00");
        assert!(b.iter().all(|b| b.seats == 45 && b.request_id.is_none()));
    }

    #[test]
    fn every_bad_field_of_rule_and_template_is_named() {
        let now: DateTime<Utc> = "2027-01-01T00:00:00Z".parse().unwrap();
        let mut r = raw();
        r.start_time = "25:99".into();
        r.term_end = "30/06/2027".into();
        r.exception_dates.push("soon".into());
        r.policy = "most".into();
        r.lesson.seats = 0;
        let Err(ServiceError::Invalid(f)) =
            parse_series(r, now, &limits(), chrono_tz::Asia::Shanghai)
        else {
            panic!("invalid")
        };
        let fields: Vec<&str> = f.iter().map(|e| e.field.as_str()).collect();
        for want in [
            "start_time",
            "term_end",
            "exception_dates[1]",
            "policy",
            "seats",
        ] {
            assert!(fields.contains(&want), "{want} in {fields:?}");
        }
    }
}
