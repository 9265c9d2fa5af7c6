//! Lending policies from the broker config: a school keeps its own nodes for
//! its own classes in its hours and lends them out otherwise.
//!
//! ```toml
//! [[lending]]
//! site = "school-a"                 # the owner school; all of its nodes…
//! node = "gpu-1"                    # …or just this one
//! weekdays = ["mon", "tue", "wed", "thu", "fri"]
//! hours = "08:00-17:00"             # the owner's wall clock; "22:00-06:00" runs past midnight
//! utc_offset = "+08:00"
//! ```
//!
//! Each value is checked while the file is read, so a mistake stops start-up
//! with the line and key (toml reports the span of the value).

use classgrid_placement::LendingPolicy;
use serde::Deserialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LendingRule {
    pub site: String,
    #[serde(default)]
    pub node: Option<String>,
    pub weekdays: Weekdays,
    pub hours: Hours,
    #[serde(default)]
    pub utc_offset: UtcOffset,
}

/// Bit 0 = Monday … bit 6 = Sunday, as the placement core reads it.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct Weekdays(pub u8);

/// Minutes of day, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct Hours {
    pub start_minute: u32,
    pub end_minute: u32,
}

/// Minutes east of UTC.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct UtcOffset(pub i32);

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl TryFrom<Vec<String>> for Weekdays {
    type Error = String;
    fn try_from(v: Vec<String>) -> Result<Self, String> {
        if v.is_empty() {
            return Err("must name at least one day (mon … sun)".into());
        }
        let mut bits = 0u8;
        for d in &v {
            let i = DAYS
                .iter()
                .position(|x| x.eq_ignore_ascii_case(d.trim()))
                .ok_or_else(|| {
                    format!("`{d}` is not a day; use mon, tue, wed, thu, fri, sat, sun")
                })?;
            bits |= 1 << i;
        }
        Ok(Weekdays(bits))
    }
}

pub(crate) fn minute_of_day(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

impl TryFrom<String> for Hours {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("`{s}` must be HH:MM-HH:MM on a 24-hour clock, e.g. 08:00-17:00");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (start, end) = (
            minute_of_day(a).ok_or_else(bad)?,
            minute_of_day(b).ok_or_else(bad)?,
        );
        if start == end {
            return Err(format!("`{s}` is empty: start and end must differ"));
        }
        Ok(Hours {
            start_minute: start,
            end_minute: end,
        })
    }
}

impl TryFrom<String> for UtcOffset {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("`{s}` must be ±HH:MM between -12:00 and +14:00, e.g. +08:00");
        let (sign, rest) = match s.trim().as_bytes().first() {
            Some(b'+') => (1, &s.trim()[1..]),
            Some(b'-') => (-1, &s.trim()[1..]),
            _ => return Err(bad()),
        };
        let m = minute_of_day(rest).ok_or_else(bad)? as i32 * sign;
        if !(-12 * 60..=14 * 60).contains(&m) {
            return Err(bad());
        }
        Ok(UtcOffset(m))
    }
}

/// The policy for a node, if any rule names it; a rule naming the node wins
/// over one for its whole site. The owner is always the node's own site.
pub fn policy_for(
    rules: &[LendingRule],
    site_id: Uuid,
    site_name: &str,
    node_name: &str,
) -> Option<LendingPolicy> {
    let matching = |r: &&LendingRule| r.site == site_name;
    let rule = rules
        .iter()
        .filter(matching)
        .find(|r| r.node.as_deref() == Some(node_name))
        .or_else(|| rules.iter().filter(matching).find(|r| r.node.is_none()))?;
    Some(LendingPolicy {
        owner_site: site_id,
        utc_offset_minutes: rule.utc_offset.0,
        weekdays: rule.weekdays.0,
        start_minute: rule.hours.start_minute,
        end_minute: rule.hours.end_minute,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        lending: Vec<LendingRule>,
    }

    fn parse(text: &str) -> Result<Vec<LendingRule>, String> {
        toml::from_str::<File>(text)
            .map(|f| f.lending)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn node_rule_wins_over_site_rule_and_others_are_unrestricted() {
        let rules = parse(
            r#"
[[lending]]
site = "school-a"
weekdays = ["mon", "fri"]
hours = "08:00-17:00"
utc_offset = "+08:00"
[[lending]]
site = "school-a"
node = "gpu-1"
weekdays = ["sat"]
hours = "22:00-06:00"
"#,
        )
        .unwrap();
        let site = Uuid::now_v7();
        let p = policy_for(&rules, site, "school-a", "gpu-2").unwrap();
        assert_eq!(
            (p.owner_site, p.weekdays, p.start_minute, p.end_minute),
            (site, 0b001_0001, 480, 1020)
        );
        assert_eq!(p.utc_offset_minutes, 480);
        let p = policy_for(&rules, site, "school-a", "gpu-1").unwrap();
        assert_eq!(
            (p.weekdays, p.start_minute, p.end_minute),
            (0b010_0000, 1320, 360)
        );
        assert!(policy_for(&rules, site, "school-b", "gpu-1").is_none());
    }

    /// From config to the snapshot to a decision: during school hours on a
    /// weekday another school is refused with the lending filter named, the
    /// owner is admitted, and at the weekend the node is lent out.
    #[test]
    fn configured_lending_reaches_the_snapshot_and_placement() {
        use crate::{
            fleet::Fleet,
            store::{nodes::NodeRow, sites::SiteRow},
        };
        use classgrid_placement::{self as placement, Decision, Request, SeatSpec, Window};

        let site = |name: &str| SiteRow {
            id: Uuid::now_v7(),
            name: name.into(),
            kind: "school".into(),
            district: "d1".into(),
        };
        let (owner, other) = (site("school-own"), site("school-other"));
        let node = NodeRow {
            id: Uuid::now_v7(),
            site_id: owner.id,
            name: "gpu-1".into(),
            tier: "edge".into(),
            state: "connected".into(),
            cordoned: false,
            approved: true,
            cpu_millis: 8000,
            memory_mib: 16384,
            runtimes: vec!["process".into()],
            warnings: vec![],
            agent_version: String::new(),
            last_seen: chrono::Utc::now(),
        };
        let fleet = Fleet::load(vec![owner.clone(), other.clone()], vec![(node, vec![])]);
        fleet.set_lending(
            parse(
                "[[lending]]\nsite = \"school-own\"\nweekdays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"]\nhours = \"08:00-17:00\"\nutc_offset = \"+08:00\"\n",
            )
            .unwrap(),
        );
        let snap = fleet.snapshot();
        assert_eq!(snap.nodes[0].lending.as_ref().unwrap().owner_site, owner.id);

        // Monday 2024-01-01, 10:00 at UTC+8 is 02:00 UTC.
        let monday_10 = 1_704_067_200_000 + 2 * 3_600_000;
        let req = |school: Uuid, start: i64| Request {
            school_site: school,
            window: Window::new(start, start + 3_600_000),
            seats: 1,
            min_seats: 1,
            seat: SeatSpec {
                cpu_millis: 100,
                memory_mib: 64,
                gpu: None,
                runtime: "process".into(),
            },
            max_rtt_ms: 1000.0,
            datasets: vec![],
            staging_lead_ms: 0,
            may_preempt: true,
            residency: Default::default(),
        };
        let place = |r: &Request| {
            placement::place(
                &snap,
                &Default::default(),
                &Default::default(),
                r,
                &Default::default(),
            )
        };
        match place(&req(other.id, monday_10)) {
            Decision::Refused(e) => assert!(e.summary.contains("kept for owner"), "{}", e.summary),
            Decision::Admitted(_) => panic!("another school got the node in the owner's hours"),
        }
        assert!(matches!(
            place(&req(owner.id, monday_10)),
            Decision::Admitted(_)
        ));
        let saturday_10 = monday_10 + 5 * 86_400_000;
        assert!(matches!(
            place(&req(other.id, saturday_10)),
            Decision::Admitted(_)
        ));
    }

    #[test]
    fn malformed_lending_names_line_and_key() {
        let e = parse("[[lending]]\nsite = \"s\"\nweekdays = [\"mon\"]\nhours = \"8-17\"\n")
            .unwrap_err();
        assert!(e.contains("line 4") && e.contains("HH:MM-HH:MM"), "{e}");
        let e =
            parse("[[lending]]\nsite = \"s\"\nweekdays = [\"monday\"]\nhours = \"08:00-09:00\"\n")
                .unwrap_err();
        assert!(e.contains("line 3") && e.contains("not a day"), "{e}");
        let e = parse(
            "[[lending]]\nsite = \"s\"\nweekdays = [\"mon\"]\nhours = \"08:00-09:00\"\nutc_offset = \"+15:00\"\n",
        )
        .unwrap_err();
        assert!(e.contains("line 5") && e.contains("utc_offset"), "{e}");
        let e = parse("[[lending]]\nsite = \"s\"\nweekday = [\"mon\"]\nhours = \"08:00-09:00\"\n")
            .unwrap_err();
        assert!(e.contains("weekday"), "unknown keys are named: {e}");
    }
}
