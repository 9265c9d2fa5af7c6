//! A school's own node stays with its classes during the hours its lending
//! policy reserves; other schools may use it only outside them.

use super::{Candidate, Ctx, Filter, Verdict, Work};
use crate::model::{LendingPolicy, Window};

pub(crate) struct Lending;

const MINUTE: i64 = 60_000;
const DAY: i64 = 24 * 60 * MINUTE;

/// Whether `window` (UTC) overlaps any of the owner's reserved hours, read on
/// the owner's wall clock. Hours with `end_minute < start_minute` run past
/// midnight and belong to the weekday they start on.
fn owner_hours_overlap(p: &LendingPolicy, window: Window) -> bool {
    let start = p.start_minute.min(1440) as i64 * MINUTE;
    let end = p.end_minute.min(1440) as i64 * MINUTE;
    if p.weekdays & 0x7f == 0 || start == end || window.start >= window.end {
        return false;
    }
    let offset = p.utc_offset_minutes as i64 * MINUTE;
    let (ws, we) = (window.start + offset, window.end + offset);
    let first = ws.div_euclid(DAY) - 1; // yesterday's overnight hours may reach in
    let last = (we - 1).div_euclid(DAY);
    if last - first > 8 {
        // Longer than a week: some reserved hour is always inside.
        return true;
    }
    (first..=last).any(|day| {
        // 1970-01-01 was a Thursday; bit 0 is Monday.
        let weekday = (day + 3).rem_euclid(7);
        if p.weekdays & (1 << weekday) == 0 {
            return false;
        }
        let from = day * DAY + start;
        let to = if end > start {
            day * DAY + end
        } else {
            (day + 1) * DAY + end
        };
        from < we && ws < to
    })
}

impl Filter for Lending {
    fn name(&self) -> &'static str {
        "lending"
    }

    fn check<'a>(&self, ctx: &Ctx<'a>, cand: &mut Candidate<'a>, _: &mut Work<'a>) -> Verdict {
        match &cand.node.lending {
            Some(p) if p.owner_site != ctx.school.id && owner_hours_overlap(p, ctx.req.window) => {
                Verdict::Fail("")
            }
            _ => Verdict::Pass,
        }
    }

    fn detail(&self, _: &Ctx<'_>, _: &[(&'static str, u32)]) -> String {
        "kept for owner school's classes".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    // 2024-01-01 was a Monday.
    const MON_2024_01_01: i64 = 1_704_067_200_000;

    fn school_hours() -> LendingPolicy {
        LendingPolicy {
            owner_site: Uuid::nil(),
            utc_offset_minutes: 8 * 60,
            weekdays: 0b001_1111,
            start_minute: 8 * 60,
            end_minute: 17 * 60,
        }
    }

    fn local(day: i64, hour: i64) -> i64 {
        // Wall clock at UTC+8 → UTC.
        MON_2024_01_01 + day * DAY + hour * 60 * MINUTE - 8 * 60 * MINUTE
    }

    #[test]
    fn weekday_school_hours_are_kept() {
        let p = school_hours();
        assert!(owner_hours_overlap(
            &p,
            Window::new(local(0, 9), local(0, 10))
        ));
        assert!(owner_hours_overlap(
            &p,
            Window::new(local(4, 16), local(4, 18))
        ));
    }

    #[test]
    fn evenings_and_weekends_are_lent() {
        let p = school_hours();
        assert!(!owner_hours_overlap(
            &p,
            Window::new(local(0, 17), local(0, 23))
        ));
        assert!(!owner_hours_overlap(
            &p,
            Window::new(local(5, 9), local(5, 12))
        ));
        assert!(!owner_hours_overlap(
            &p,
            Window::new(local(6, 0), local(6, 24))
        ));
    }

    #[test]
    fn overnight_hours_reach_into_next_day() {
        let p = LendingPolicy {
            start_minute: 22 * 60,
            end_minute: 6 * 60,
            weekdays: 0b000_0001, // Monday night only
            ..school_hours()
        };
        assert!(owner_hours_overlap(
            &p,
            Window::new(local(1, 5), local(1, 7))
        ));
        assert!(!owner_hours_overlap(
            &p,
            Window::new(local(1, 7), local(1, 21))
        ));
    }
}
