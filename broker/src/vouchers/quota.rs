//! Per-school quota: at most N seats running at once. The peak over a window
//! is reached where some interval starts, as in the capacity trigger.

use chrono::{DateTime, Utc};

/// Seats busy over `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub seats: i64,
}

/// The most seats of `busy` running at one instant within `[start, end)`.
pub fn peak(busy: &[Busy], start: DateTime<Utc>, end: DateTime<Utc>) -> i64 {
    let inside = |b: &Busy| b.start < end && start < b.end;
    let mut points = vec![start];
    points.extend(
        busy.iter()
            .filter(|b| inside(b) && b.start > start)
            .map(|b| b.start),
    );
    points
        .iter()
        .map(|t| {
            busy.iter()
                .filter(|b| b.start <= *t && *t < b.end)
                .map(|b| b.seats)
                .sum::<i64>()
        })
        .max()
        .unwrap_or(0)
}

/// The refusal sentence, or None when `requested` more seats fit.
pub fn check(max: i64, peak: i64, requested: i64, school: &str) -> Option<String> {
    (peak + requested > max).then(|| {
        format!(
            "quota: school {school} may run at most {max} concurrent seats; {peak} are already booked at the busiest moment of this window and {requested} more were asked for"
        )
    })
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn back_to_back_lessons_do_not_add_up() {
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let h = Duration::hours(1);
        let busy = [
            Busy {
                start: t0,
                end: t0 + h,
                seats: 30,
            },
            Busy {
                start: t0 + h,
                end: t0 + h * 2,
                seats: 20,
            },
            Busy {
                start: t0 + h * 3,
                end: t0 + h * 4,
                seats: 45,
            },
        ];
        assert_eq!(peak(&busy, t0, t0 + h * 2), 30);
        assert_eq!(peak(&busy, t0 + h / 2, t0 + h * 2), 30);
        assert_eq!(peak(&busy, t0 + h * 2, t0 + h * 3), 0);
        assert!(check(40, 30, 10, "s").is_none());
        let msg = check(40, 30, 11, "s").unwrap();
        assert!(
            msg.contains("at most 40") && msg.contains("30 are already"),
            "{msg}"
        );
    }
}
