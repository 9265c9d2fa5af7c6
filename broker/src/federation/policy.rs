//! A region's lending policy towards one peer: how many slices, of which
//! tiers and vendors, in which hours, and at what weight. The lender checks
//! it on every offer; it is kept as JSON on the peering row.

use chrono::{DateTime, Timelike, Utc};
use classgrid_placement::{Node, Tier};
use serde::{Deserialize, Serialize};

use crate::{
    domain::{error::Checks, spec::VENDORS},
    fleet::lending::minute_of_day,
};

const DAY_MIN: i64 = 1440;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LendingTerms {
    /// Slices lent to this peer at any one time, at most.
    pub max_slices: u32,
    /// "edge", "cloud"; empty lends every tier.
    #[serde(default)]
    pub tiers: Vec<String>,
    /// Accelerator vendors lent; empty lends every vendor.
    #[serde(default)]
    pub vendors: Vec<String>,
    /// Lending hours in UTC minutes of the day, `[from, to)`; past midnight
    /// when `to < from`; None lends all day.
    #[serde(default)]
    pub hours: Option<(u32, u32)>,
    #[serde(default = "one")]
    pub weight: f64,
}

fn one() -> f64 {
    1.0
}

impl Default for LendingTerms {
    /// Lends nothing until an admin says what.
    fn default() -> Self {
        Self {
            max_slices: 0,
            tiers: Vec::new(),
            vendors: Vec::new(),
            hours: None,
            weight: 1.0,
        }
    }
}

impl LendingTerms {
    /// Parses what an admin gave (`peers offer|accept --lend-…`); every
    /// mistake is named by its field.
    pub fn parse(
        max_slices: i32,
        tiers: &[String],
        vendors: &[String],
        hours: &str,
        weight: f64,
    ) -> Result<Self, crate::domain::ServiceError> {
        let mut c = Checks::default();
        c.check(
            (0..=100_000).contains(&max_slices),
            "lending.max_slices",
            "must be between 0 and 100000",
        );
        for (i, t) in tiers.iter().enumerate() {
            if t != "edge" && t != "cloud" {
                c.fail(format!("lending.tiers[{i}]"), "must be edge or cloud");
            }
        }
        for (i, v) in vendors.iter().enumerate() {
            if !VENDORS.contains(&v.as_str()) {
                c.fail(
                    format!("lending.vendors[{i}]"),
                    format!("must be one of {}", VENDORS.join(", ")),
                );
            }
        }
        let hours = if hours.trim().is_empty() {
            None
        } else {
            match hours
                .split_once('-')
                .and_then(|(a, b)| Some((minute_of_day(a)?, minute_of_day(b)?)))
            {
                Some(h) => Some(h),
                None => {
                    c.fail(
                        "lending.hours",
                        "must be HH:MM-HH:MM in UTC, e.g. 16:00-22:00",
                    );
                    None
                }
            }
        };
        let weight = if weight == 0.0 { 1.0 } else { weight };
        c.check(
            weight.is_finite() && weight > 0.0 && weight <= 1000.0,
            "lending.weight",
            "must be above 0 and at most 1000",
        );
        c.finish()?;
        Ok(Self {
            max_slices: max_slices as u32,
            tiers: tiers.to_vec(),
            vendors: vendors.to_vec(),
            hours,
            weight,
        })
    }

    /// The terms stored on a peering; a row that cannot be read lends nothing.
    pub fn from_json(v: &serde_json::Value) -> Self {
        serde_json::from_value(v.clone()).unwrap_or_default()
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// "HH:MM-HH:MM", or "" for all day.
    pub fn hours_text(&self) -> String {
        match self.hours {
            None => String::new(),
            Some((a, b)) => format!("{:02}:{:02}-{:02}:{:02}", a / 60, a % 60, b / 60, b % 60),
        }
    }

    /// Whether the lesson `[start, end)` lies inside the lending hours.
    pub fn window_allowed(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        let Some((from, to)) = self.hours else {
            return true;
        };
        let span = (i64::from(to) - i64::from(from)).rem_euclid(DAY_MIN);
        if span == 0 {
            return true;
        }
        let len = ((end - start).num_seconds().max(0) + 59) / 60;
        let at = i64::from(start.hour() * 60 + start.minute());
        // On the clock face shifted so the hours start at 0, the lesson must
        // start inside them and end before they close.
        let offset = (at - i64::from(from)).rem_euclid(DAY_MIN);
        offset + len <= span
    }

    /// Whether a node may take this peer's seats (tier and vendor).
    pub fn node_allowed(&self, n: &Node) -> bool {
        let tier = match n.tier {
            Tier::Edge => "edge",
            Tier::Cloud => "cloud",
        };
        (self.tiers.is_empty() || self.tiers.iter().any(|t| t == tier))
            && (self.vendors.is_empty()
                || n.devices.iter().all(|d| self.vendors.contains(&d.vendor)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, h, m, 0).unwrap()
    }

    #[test]
    fn lending_hours_hold_the_whole_lesson() {
        let t = LendingTerms::parse(4, &[], &[], "16:00-22:00", 1.0).unwrap();
        assert!(t.window_allowed(at(16, 0), at(16, 40)));
        assert!(t.window_allowed(at(21, 20), at(22, 0)));
        assert!(!t.window_allowed(at(21, 30), at(22, 10)));
        assert!(!t.window_allowed(at(10, 0), at(10, 40)));
        let night = LendingTerms::parse(4, &[], &[], "22:00-06:00", 1.0).unwrap();
        assert!(night.window_allowed(
            at(23, 40),
            at(0, 0) + chrono::Duration::hours(24) + chrono::Duration::minutes(20)
        ));
        assert!(!night.window_allowed(at(12, 0), at(12, 40)));
        assert!(
            LendingTerms::parse(1, &[], &[], "", 1.0)
                .unwrap()
                .window_allowed(at(3, 0), at(4, 0))
        );
    }

    #[test]
    fn bad_terms_are_named_by_field() {
        let e = LendingTerms::parse(-1, &["fog".into()], &["acme".into()], "25:00-x", -2.0)
            .unwrap_err()
            .to_string();
        for f in [
            "lending.max_slices",
            "lending.tiers[0]",
            "lending.vendors[0]",
            "lending.hours",
            "lending.weight",
        ] {
            assert!(e.contains(f), "{f} missing from {e}");
        }
    }
}
