//! The overview's charts: seats in today's lessons over the school day, and
//! accelerator memory by vendor with what reservations hold of it.

use chrono::{DateTime, Duration, Timelike, Utc};

use super::super::{
    i18n::{Lang, t},
    svg,
    tz::Zone,
};
use crate::store::lessons::LessonRow;

/// A step line of the seats that today's lessons (not cancelled) hold, from
/// their rows, over the school day (07:00-18:00, widened to whole hours
/// around any lesson outside it); a dot marks the seats running now.
pub fn seats_today(
    l: Lang,
    z: &Zone,
    lessons: &[LessonRow],
    day0: DateTime<Utc>,
    now: DateTime<Utc>,
    running_now: i64,
) -> String {
    let live: Vec<&LessonRow> = lessons.iter().filter(|x| x.state != "cancelled").collect();
    let (mut h0, mut h1) = (7i64, 18i64);
    for x in &live {
        let (a, b) = (z.local(x.start_at.max(day0)), z.local(x.end_at()));
        h0 = h0.min(a.hour().into());
        h1 = h1.max(i64::from(b.hour()) + i64::from(b.minute() > 0));
    }
    let (x0, x1) = (
        day0 + Duration::hours(h0),
        day0 + Duration::hours(h1.min(24)),
    );
    let spans: Vec<_> = live
        .iter()
        .map(|x| (x.start_at, x.end_at(), i64::from(x.seat_count)))
        .collect();
    let points = steps(&spans, x0, x1);
    let y_max = points
        .iter()
        .map(|p| p.1)
        .fold(running_now as f64, f64::max);
    let secs = |t: DateTime<Utc>| (t - x0).num_seconds() as f64;
    let mut series = vec![svg::Series {
        label: t(l, "seats_in_lessons").to_string(),
        points: points.iter().map(|(t, n)| (secs(*t), *n)).collect(),
    }];
    if now >= x0 && now <= x1 {
        series.push(svg::Series {
            label: t(l, "seats_running_now").to_string(),
            points: vec![(secs(now), running_now as f64)],
        });
    }
    svg::lines(
        t(l, "seats_today_chart"),
        &series,
        0.0,
        secs(x1),
        (y_max * 1.2).max(4.0).ceil(),
        "",
        &|s| z.hm(x0 + Duration::seconds(s as i64)),
    )
}

/// The step function of seats held: a point before and after each change.
type Span = (DateTime<Utc>, DateTime<Utc>, i64);

fn steps(spans: &[Span], x0: DateTime<Utc>, x1: DateTime<Utc>) -> Vec<(DateTime<Utc>, f64)> {
    let mut edges: Vec<(DateTime<Utc>, i64)> = Vec::new();
    for (start, end, seats) in spans {
        edges.push(((*start).clamp(x0, x1), *seats));
        edges.push(((*end).clamp(x0, x1), -*seats));
    }
    edges.sort();
    let mut out = vec![(x0, 0.0)];
    let mut n = 0i64;
    for (at, d) in edges {
        out.push((at, n as f64));
        n += d;
        out.push((at, n as f64));
    }
    out.push((x1, n as f64));
    out
}

/// Accelerator memory per vendor (GiB), and what reservations hold now.
pub fn capacity(l: Lang, rows: &[(String, usize, i64, i64)]) -> String {
    let bars: Vec<(String, f64, f64)> = rows
        .iter()
        .map(|(vendor, devices, mem, held)| {
            (
                format!("{vendor} ×{devices}"),
                *mem as f64 / 1024.0,
                *held as f64 / 1024.0,
            )
        })
        .collect();
    svg::part_bars(t(l, "capacity_chart"), &bars, "GiB", t(l, "reserved"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_step_up_at_a_start_and_down_at_an_end() {
        let x0 = DateTime::from_timestamp(0, 0).unwrap();
        let x1 = x0 + Duration::hours(10);
        let lesson = |start_h: i64, seats: i64| {
            let s = x0 + Duration::hours(start_h);
            (s, s + Duration::minutes(40), seats)
        };
        let p = steps(&[lesson(1, 45), lesson(1, 5)], x0, x1);
        let at = |h: f64| {
            p.iter()
                .rev()
                .find(|(t, _)| (*t - x0).num_seconds() as f64 <= h * 3600.0)
                .unwrap()
                .1
        };
        assert_eq!(at(0.5), 0.0);
        assert_eq!(at(1.2), 50.0);
        assert_eq!(at(2.0), 0.0);
    }
}
