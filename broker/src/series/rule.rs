//! A series' occurrences: the RRULE expanded by the `rrule` crate from the
//! term's first day at the lesson's local start time, in the region's time
//! zone, up to the term's last day, less the exception dates.
//!
//! Times are local: "every Tuesday at 10:00" stays 10:00 on the wall clock
//! whatever the offset (Asia/Shanghai has none to change; a zone with
//! daylight saving keeps the wall-clock time across it).

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc};
use rrule::{Frequency, RRule, RRuleSet, Unvalidated};

use crate::domain::FieldError;

/// Occurrences in one series, at most. With at most one a day (no BYHOUR)
/// and a term of at most a year the rule cannot reach it; it bounds the
/// expansion's own loop whatever the rule says.
pub const MAX_OCCURRENCES: usize = 400;
/// A term lasts a year at most.
const MAX_TERM_DAYS: i64 = 366;

/// A series' rule, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The RRULE's parts, without `RRULE:` (e.g. `FREQ=WEEKLY;BYDAY=TU`).
    pub rrule: String,
    /// The local start time of every occurrence.
    pub start_time: NaiveTime,
    pub duration: Duration,
    /// The term, both days included, in the region's zone.
    pub term_start: NaiveDate,
    pub term_end: NaiveDate,
    /// Local dates without an occurrence (holidays).
    pub exceptions: Vec<NaiveDate>,
}

impl Rule {
    /// The occurrences' starts in order, or the fields that make the rule
    /// unusable, each with the rule it breaks.
    pub fn expand(&self, tz: chrono_tz::Tz) -> Result<Vec<DateTime<Utc>>, Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.term_end < self.term_start {
            errors.push(FieldError::new(
                "term_end",
                format!("must not be before term_start ({})", self.term_start),
            ));
        } else if (self.term_end - self.term_start).num_days() >= MAX_TERM_DAYS {
            errors.push(FieldError::new(
                "term_end",
                format!("a term lasts at most {MAX_TERM_DAYS} days"),
            ));
        }
        for (i, d) in self.exceptions.iter().enumerate() {
            if *d < self.term_start || *d > self.term_end {
                errors.push(FieldError::new(
                    format!("exception_dates[{i}]"),
                    format!(
                        "{d} is outside the term ({} to {})",
                        self.term_start, self.term_end
                    ),
                ));
            }
        }
        let parsed = parse_rrule(&self.rrule).map_err(|rule| FieldError::new("rrule", rule));
        let rrule = match parsed {
            Ok(r) if errors.is_empty() => r,
            Ok(_) => return Err(errors),
            Err(e) => {
                errors.push(e);
                return Err(errors);
            }
        };
        let rtz = rrule::Tz::Tz(tz);
        let first = local(tz, self.term_start, self.start_time).with_timezone(&rtz);
        // The day after the term's last, at midnight: `before` is exclusive
        // in effect, since no occurrence starts at midnight of that day
        // unless the rule's start time is 00:00, which then belongs to it.
        let end = local(tz, self.term_end + Duration::days(1), NaiveTime::MIN).with_timezone(&rtz);
        let set: RRuleSet = rrule
            .build(first)
            .map_err(|e| vec![FieldError::new("rrule", e.to_string())])?
            .before(end);
        let found = set.all((MAX_OCCURRENCES + 1) as u16);
        if found.limited || found.dates.len() > MAX_OCCURRENCES {
            return Err(vec![FieldError::new(
                "rrule",
                format!("yields more than {MAX_OCCURRENCES} occurrences in the term"),
            )]);
        }
        let starts: Vec<DateTime<Utc>> = found
            .dates
            .iter()
            .filter(|d| d.with_timezone(&tz).date_naive() <= self.term_end)
            .filter(|d| !self.exceptions.contains(&d.with_timezone(&tz).date_naive()))
            .map(|d| d.with_timezone(&Utc))
            .collect();
        if starts.is_empty() {
            return Err(vec![FieldError::new(
                "rrule",
                format!(
                    "yields no occurrence from {} to {} (exception dates left out)",
                    self.term_start, self.term_end
                ),
            )]);
        }
        if let Some(w) = starts.windows(2).find(|w| w[1] < w[0] + self.duration) {
            return Err(vec![FieldError::new(
                "rrule",
                format!(
                    "occurrences overlap: one starts at {} before the one of {} ends",
                    w[1].with_timezone(&tz).format("%F %R"),
                    w[0].with_timezone(&tz).format("%F %R")
                ),
            )]);
        }
        Ok(starts)
    }
}

/// A local date and time in `tz`; in a gap of a daylight-saving change, the
/// time just after it.
fn local(tz: chrono_tz::Tz, d: NaiveDate, t: NaiveTime) -> DateTime<chrono_tz::Tz> {
    let naive = d.and_time(t);
    tz.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            tz.from_local_datetime(&(naive + Duration::hours(1)))
                .earliest()
        })
        .unwrap_or_else(|| tz.from_utc_datetime(&naive))
}

/// The RRULE's parts, parsed, or the rule they break. The start comes from
/// the term and the start time, so DTSTART is refused; lessons recur at
/// most daily, at their start time, so sub-daily frequencies and BYHOUR,
/// BYMINUTE and BYSECOND are refused.
fn parse_rrule(s: &str) -> Result<RRule<Unvalidated>, String> {
    let s = s.trim();
    let s = s.strip_prefix("RRULE:").unwrap_or(s);
    if s.is_empty() {
        return Err("is required, e.g. FREQ=WEEKLY;BYDAY=TU".into());
    }
    if s.len() > 500 {
        return Err("must be at most 500 characters".into());
    }
    if s.contains('\n') || s.to_ascii_uppercase().contains("DTSTART") {
        return Err(
            "must be one RRULE without DTSTART: the start is term_start at start_time".into(),
        );
    }
    let r: RRule<Unvalidated> = s
        .parse()
        .map_err(|e: rrule::RRuleError| format!("is not an RFC 5545 RRULE: {e}"))?;
    if !matches!(
        r.get_freq(),
        Frequency::Yearly | Frequency::Monthly | Frequency::Weekly | Frequency::Daily
    ) {
        return Err("must recur at most daily (FREQ=DAILY, WEEKLY, MONTHLY or YEARLY)".into());
    }
    if !(r.get_by_hour().is_empty() && r.get_by_minute().is_empty() && r.get_by_second().is_empty())
    {
        return Err(
            "must not set BYHOUR, BYMINUTE or BYSECOND: every occurrence starts at start_time"
                .into(),
        );
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    /// "Class 7-3 has AI every Tuesday 10:00–10:40 from 17 February to 30
    /// June, except the May holiday."
    fn tuesdays() -> Rule {
        Rule {
            rrule: "FREQ=WEEKLY;BYDAY=TU".into(),
            start_time: NaiveTime::from_hms_opt(10, 0, 0).unwrap(),
            duration: Duration::minutes(40),
            term_start: date("2027-02-17"),
            term_end: date("2027-06-30"),
            exceptions: vec![date("2027-05-04")],
        }
    }

    #[test]
    fn every_tuesday_of_a_shanghai_term_less_the_may_holiday() {
        let starts = tuesdays().expand(chrono_tz::Asia::Shanghai).unwrap();
        // 17 Feb 2027 is a Wednesday: the first Tuesday is the 23rd, the last
        // the 29th of June; 19 Tuesdays, less 4 May.
        assert_eq!(starts.len(), 18);
        assert_eq!(starts[0].to_rfc3339(), "2027-02-23T02:00:00+00:00");
        assert_eq!(starts[17].to_rfc3339(), "2027-06-29T02:00:00+00:00");
        // No daylight saving in Shanghai: 10:00 local is 02:00 UTC all term,
        // a week apart to the second, but for the missing holiday week.
        assert!(
            starts
                .iter()
                .all(|s| s.format("%a %T").to_string() == "Tue 02:00:00")
        );
        let gaps: Vec<i64> = starts
            .windows(2)
            .map(|w| (w[1] - w[0]).num_days())
            .collect();
        assert_eq!(gaps.iter().filter(|g| **g == 14).count(), 1, "{gaps:?}");
        assert!(gaps.iter().all(|g| *g == 7 || *g == 14));
        assert!(!starts.iter().any(|s| s.date_naive() == date("2027-05-04")));
    }

    #[test]
    fn three_lessons_a_week_for_eighteen_weeks() {
        let r = Rule {
            rrule: "FREQ=WEEKLY;BYDAY=MO,WE,FR;COUNT=54".into(),
            term_start: date("2027-03-01"),
            term_end: date("2027-07-31"),
            exceptions: Vec::new(),
            ..tuesdays()
        };
        let starts = r.expand(chrono_tz::Asia::Shanghai).unwrap();
        assert_eq!(starts.len(), 54);
        assert_eq!(starts[0].to_rfc3339(), "2027-03-01T02:00:00+00:00");
    }

    #[test]
    fn the_wall_clock_time_holds_across_daylight_saving_where_there_is_some() {
        let r = Rule {
            term_start: date("2027-03-01"),
            term_end: date("2027-04-30"),
            exceptions: Vec::new(),
            ..tuesdays()
        };
        let starts = r.expand(chrono_tz::Europe::Berlin).unwrap();
        assert_eq!(starts[0].to_rfc3339(), "2027-03-02T09:00:00+00:00");
        assert_eq!(
            starts.last().unwrap().to_rfc3339(),
            "2027-04-27T08:00:00+00:00"
        );
    }

    #[test]
    fn a_term_that_starts_on_the_day_counts_it_and_the_last_day_counts_too() {
        let r = Rule {
            rrule: "RRULE:FREQ=DAILY".into(),
            term_start: date("2027-09-01"),
            term_end: date("2027-09-03"),
            exceptions: vec![date("2027-09-02")],
            ..tuesdays()
        };
        let starts = r.expand(chrono_tz::Asia::Shanghai).unwrap();
        let days: Vec<String> = starts
            .iter()
            .map(|s| {
                s.with_timezone(&chrono_tz::Asia::Shanghai)
                    .format("%F")
                    .to_string()
            })
            .collect();
        assert_eq!(days, ["2027-09-01", "2027-09-03"]);
    }

    /// Odd rules a platform may send end in occurrences or a named error,
    /// never a panic (a panic would be a 500).
    #[test]
    fn odd_rules_never_panic() {
        for rrule in [
            "FREQ=DAILY;UNTIL=19000101T000000Z",
            "FREQ=MONTHLY;BYMONTHDAY=31;BYSETPOS=-1",
            "FREQ=WEEKLY;INTERVAL=0",
            "FREQ=YEARLY;BYWEEKNO=53;BYDAY=MO",
            "FREQ=DAILY;COUNT=0",
            "FREQ=WEEKLY;UNTIL=20270301",
            "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
            "FREQ=WEEKLY;BYDAY=XX",
            "FREQ=WEEKLY;WKST=SU;BYDAY=-1MO",
            "FREQ=MONTHLY;BYDAY=5FR",
            ";;;",
            "FREQ=",
        ] {
            let r = Rule {
                rrule: rrule.into(),
                ..tuesdays()
            };
            match r.expand(chrono_tz::Asia::Shanghai) {
                Ok(starts) => assert!(!starts.is_empty(), "{rrule}"),
                Err(e) => assert!(e.iter().all(|f| !f.rule.is_empty()), "{rrule}: {e:?}"),
            }
        }
        let never = Rule {
            rrule: "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30".into(),
            ..tuesdays()
        };
        let e = never.expand(chrono_tz::Asia::Shanghai).unwrap_err();
        assert!(e[0].rule.contains("yields no occurrence"), "{e:?}");
    }

    fn fields(r: Rule) -> Vec<String> {
        r.expand(chrono_tz::Asia::Shanghai)
            .unwrap_err()
            .into_iter()
            .map(|e| format!("{}: {}", e.field, e.rule))
            .collect()
    }

    #[test]
    fn bad_rules_are_named_by_field_with_the_rule_they_break() {
        let f = fields(Rule {
            rrule: "FREQ=SOMETIMES".into(),
            ..tuesdays()
        });
        assert!(f[0].starts_with("rrule: is not an RFC 5545 RRULE"), "{f:?}");
        let f = fields(Rule {
            rrule: "FREQ=HOURLY".into(),
            ..tuesdays()
        });
        assert!(f[0].contains("at most daily"), "{f:?}");
        let f = fields(Rule {
            rrule: "FREQ=WEEKLY;BYHOUR=9,11".into(),
            ..tuesdays()
        });
        assert!(f[0].contains("BYHOUR"), "{f:?}");
        let f = fields(Rule {
            term_end: date("2027-01-01"),
            exceptions: vec![date("2027-08-01")],
            ..tuesdays()
        });
        assert!(
            f.iter()
                .any(|e| e.starts_with("term_end: must not be before")),
            "{f:?}"
        );
        assert!(
            f.iter()
                .any(|e| e.starts_with("exception_dates[0]: 2027-08-01 is outside")),
            "{f:?}"
        );
        let f = fields(Rule {
            rrule: "FREQ=DAILY".into(),
            term_end: date("2028-03-01"),
            ..tuesdays()
        });
        assert!(f[0].contains("a term lasts at most 366 days"), "{f:?}");
        let f = fields(Rule {
            rrule: "FREQ=YEARLY;BYMONTH=8".into(),
            ..tuesdays()
        });
        assert!(f[0].contains("yields no occurrence"), "{f:?}");
        let f = fields(Rule {
            rrule: "FREQ=DAILY".into(),
            duration: Duration::hours(25),
            ..tuesdays()
        });
        assert!(f[0].contains("occurrences overlap"), "{f:?}");
    }
}
