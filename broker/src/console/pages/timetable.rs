//! Timetable: a day or week Gantt chart of lessons per school or per node,
//! with each lesson's staging lead before it and grace after it drawn, as
//! the capacity calendar reserves them. The axis shows the school day
//! (07:00-18:00, wider only when a lesson falls outside it), on each day of
//! a week that starts on Monday; lessons that overlap get a lane each.

use std::collections::{BTreeMap, HashMap};

use axum::{
    extract::{Query, State},
    http::Uri,
    response::Response,
};
use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc};

use super::{
    super::{
        html::{Page, Th, error, esc, lesson_badge, render, table_open},
        i18n::{Lang, t},
        session::Session,
        svg::COLOURS,
        zone,
    },
    opt,
};
use crate::{domain::ServiceError, state::App, store::lessons::LessonRow};

/// The school day, in local hours, that each day of the chart shows when
/// every lesson fits in it.
const DAY_FROM_H: i64 = 7;
const DAY_TO_H: i64 = 18;

struct Bar<'a> {
    lesson: &'a LessonRow,
    label: String,
}

pub async fn page(
    State(app): State<App>,
    s: Session,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    match build(&app, &s, &q).await {
        Ok(body) => render(
            &s,
            zone(),
            uri.path(),
            Page::new(t(s.lang, "timetable"), "timetable", body),
        ),
        Err(e) => error(&s, zone(), uri.path(), &e),
    }
}

async fn build(
    app: &App,
    s: &Session,
    q: &HashMap<String, String>,
) -> Result<String, ServiceError> {
    let l = s.lang;
    let z = zone();
    let week = match opt(q, "view") {
        None | Some("day") => false,
        Some("week") => true,
        Some(_) => return Err(ServiceError::field("view", "must be day or week")),
    };
    let by_node = match opt(q, "by") {
        None | Some("school") => false,
        Some("node") => true,
        Some(_) => return Err(ServiceError::field("by", "must be school or node")),
    };
    let date = match opt(q, "date") {
        None => z.today(Utc::now()),
        Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map_err(|_| ServiceError::field("date", "must be a date like 2026-09-01"))?,
    };
    let days = if week { 7 } else { 1 };
    // A week is Monday to Sunday, as Chinese school timetables are.
    let date = if week {
        date - Duration::days(date.weekday().num_days_from_monday().into())
    } else {
        date
    };
    let from = z.midnight(date);
    let to = from + Duration::days(days);
    let scoped = app.scoped(&s.caller);
    let mut lessons = scoped
        .list_lessons(
            None,
            Some(from - Duration::hours(2)),
            Some(to + Duration::hours(2)),
            500,
            0,
        )
        .await?;
    lessons.retain(|x| x.window_end > from && x.window_start < to && x.state != "cancelled");
    lessons.sort_by_key(|x| x.start_at);

    // Rows: schools, or the nodes the lessons' seats are on.
    let mut rows: BTreeMap<String, Vec<Bar>> = BTreeMap::new();
    for ls in &lessons {
        let title = if ls.title.is_empty() {
            ls.school_site.clone()
        } else {
            ls.title.clone()
        };
        if by_node {
            let seats = app
                .store
                .seats_of(ls.id)
                .await
                .map_err(|e| ServiceError::Internal(e.into()))?;
            let mut per: BTreeMap<String, usize> = BTreeMap::new();
            for st in seats.iter().filter(|st| st.state != "replaced") {
                *per.entry(st.node_name.clone().unwrap_or_else(|| "—".into()))
                    .or_default() += 1;
            }
            for (node, n) in per {
                rows.entry(node).or_default().push(Bar {
                    lesson: ls,
                    label: format!("{title} ×{n}"),
                });
            }
        } else {
            rows.entry(ls.school_site.clone()).or_default().push(Bar {
                lesson: ls,
                label: title,
            });
        }
    }

    let link = |d: NaiveDate, wk: bool, node: bool| {
        format!(
            "/console/timetable?view={}&amp;by={}&amp;date={}",
            if wk { "week" } else { "day" },
            if node { "node" } else { "school" },
            d.format("%Y-%m-%d")
        )
    };
    let step = Duration::days(days);
    let mut o = format!(
        r#"<nav class="filters" aria-label="{tt}"><a href="{}">{}</a> · <a href="{}">{}</a> · <a href="{}">{}</a> | <a href="{}"{}>{}</a> · <a href="{}"{}>{}</a> | <a href="{}"{}>{}</a> · <a href="{}"{}>{}</a></nav>"#,
        link(date - step, week, by_node),
        t(l, "prev"),
        link(z.today(Utc::now()), week, by_node),
        esc(&date.format("%Y-%m-%d").to_string()),
        link(date + step, week, by_node),
        t(l, "next"),
        link(date, false, by_node),
        cur(!week),
        t(l, "day"),
        link(date, true, by_node),
        cur(week),
        t(l, "week"),
        link(date, week, false),
        cur(!by_node),
        t(l, "by_school"),
        link(date, week, true),
        cur(by_node),
        t(l, "by_node"),
        tt = t(l, "timetable"),
    );
    // The school day on each day shown, widened to whole hours around any
    // lesson window outside it.
    let (mut h0, mut h1) = (DAY_FROM_H, DAY_TO_H);
    for x in &lessons {
        let (a, b) = (
            z.local(x.window_start.max(from)),
            z.local(x.window_end.min(to)),
        );
        if a.date_naive() == b.date_naive() {
            h0 = h0.min(a.hour().into());
            h1 = h1.max(i64::from(b.hour()) + i64::from(b.minute() > 0 || b.second() > 0));
        } else {
            // Across midnight: the whole day.
            (h0, h1) = (0, 24);
        }
    }
    let segments: Vec<(DateTime<Utc>, DateTime<Utc>)> = (0..days)
        .map(|d| {
            let m = z.midnight(date + Duration::days(d));
            (m + Duration::hours(h0), m + Duration::hours(h1))
        })
        .collect();
    o += &format!(
        r#"<p><a href="/console/timetable/import" id="term-import">{}</a></p>"#,
        t(l, "term_import")
    );
    o += &gantt(l, &rows, &segments);
    o += &format!(
        r##"<ul class="legend"><li><svg width="14" height="10" aria-hidden="true"><rect width="14" height="10" fill="{c}" fill-opacity="0.35"/></svg> {}</li><li><svg width="14" height="10" aria-hidden="true"><rect width="14" height="10" fill="{c}"/></svg> {}</li><li><svg width="14" height="10" aria-hidden="true"><rect width="14" height="10" fill="#888" fill-opacity="0.5"/></svg> {}</li></ul>"##,
        t(l, "legend_staging"),
        t(l, "legend_lesson"),
        t(l, "legend_grace"),
        c = COLOURS[0]
    );
    // The same lessons as a table: for screen readers and keyboards.
    o += &table_open(
        Some("timetable-lessons"),
        &[
            Th::Text(t(l, "lesson")),
            Th::Text(t(l, "school")),
            Th::Text(t(l, "legend_staging")),
            Th::Text(t(l, "start")),
            Th::Text(t(l, "end")),
            Th::Text(t(l, "state")),
            Th::Num(t(l, "seats")),
        ],
    );
    let ids: Vec<uuid::Uuid> = lessons.iter().map(|x| x.id).collect();
    let rollups = app.scoped(&s.caller).seat_rollups(&ids).await?;
    for ls in &lessons {
        let (failed, _) = rollups.get(&ls.id).copied().unwrap_or_default();
        o += &format!(
            r#"<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="num">{}</td></tr>"#,
            super::lesson_link(ls),
            // An occurrence of a series links to the series as a whole.
            ls.series_id
                .map(|id| format!(
                    r#" · <a href="/console/series/{id}" class="series">{}</a>"#,
                    t(l, "series")
                ))
                .unwrap_or_default(),
            esc(&ls.school_site),
            z.fmt(ls.window_start),
            z.fmt(ls.start_at),
            z.fmt(ls.end_at()),
            lesson_badge(l, &ls.state, failed, ls.seat_count as i64),
            ls.seat_count
        );
    }
    if lessons.is_empty() {
        o += &format!(
            r#"<tr><td colspan="7" class="muted">{}</td></tr>"#,
            t(l, "no_lessons")
        );
    }
    o += "</tbody></table>";
    Ok(o)
}

fn cur(on: bool) -> &'static str {
    if on { r#" aria-current="true""# } else { "" }
}

/// Time to x over the segments shown (one per day), each the same width;
/// a time between two segments (a night) maps to the next one's start.
struct Axis<'a> {
    segments: &'a [(DateTime<Utc>, DateTime<Utc>)],
    left: f64,
    width: f64,
}

impl Axis<'_> {
    fn x(&self, t: DateTime<Utc>) -> f64 {
        let w = self.width / self.segments.len().max(1) as f64;
        for (i, (a, b)) in self.segments.iter().enumerate() {
            let x0 = self.left + w * i as f64;
            if t <= *a {
                return x0;
            }
            if t <= *b {
                let span = (*b - *a).num_seconds().max(1) as f64;
                return x0 + (t - *a).num_seconds() as f64 / span * w;
            }
        }
        self.left + self.width
    }
}

/// Lanes for bars in start order: each bar takes the first lane whose last
/// bar ended (window included) before it begins. Returns each bar's lane
/// and the number of lanes.
fn lanes(windows: &[(DateTime<Utc>, DateTime<Utc>)]) -> (Vec<usize>, usize) {
    let mut ends: Vec<DateTime<Utc>> = Vec::new();
    let mut out = Vec::with_capacity(windows.len());
    for (s, e) in windows {
        match ends.iter().position(|end| end <= s) {
            Some(i) => {
                ends[i] = *e;
                out.push(i);
            }
            None => {
                ends.push(*e);
                out.push(ends.len() - 1);
            }
        }
    }
    let n = ends.len().max(1);
    (out, n)
}

fn gantt(
    l: Lang,
    rows: &BTreeMap<String, Vec<Bar>>,
    segments: &[(DateTime<Utc>, DateTime<Utc>)],
) -> String {
    let z = zone();
    let (w, left, lane_h, top, gap) = (1300.0, 170.0, 24.0, 22.0, 6.0);
    let axis = Axis {
        segments,
        left,
        width: w - left - 8.0,
    };
    let x = |t: DateTime<Utc>| axis.x(t);
    let placed: Vec<(Vec<usize>, usize)> = rows
        .values()
        .map(|bars| {
            lanes(
                &bars
                    .iter()
                    .map(|b| (b.lesson.window_start, b.lesson.window_end))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let rows_h: f64 = placed
        .iter()
        .map(|(_, n)| lane_h * *n as f64 + gap)
        .sum::<f64>()
        .max(lane_h + gap);
    let h = top + rows_h + 4.0;
    let mut o = format!(
        r#"<svg class="gantt" viewBox="0 0 {w} {h}" role="img" aria-label="{}"><title>{}</title>"#,
        t(l, "timetable"),
        t(l, "timetable")
    );
    let week = segments.len() > 1;
    for (a, b) in segments {
        let hours = (*b - *a).num_hours().max(1);
        for i in 0..=hours {
            let tt = *a + Duration::hours(i);
            let xx = x(tt);
            // A day's first hour starts a new column: a darker line, and
            // in a week the day's name over it.
            let first = i == 0;
            let stroke = if first && week { "#99a" } else { "#dde" };
            o += &format!(
                r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top}" y2="{h}" stroke="{stroke}"/>"##
            );
            let label = if week {
                first.then(|| {
                    let d = z.local(tt);
                    format!("{} {}", d.format("%m-%d"), weekday(l, d.weekday()))
                })
            } else {
                Some(z.hm(tt))
            };
            if let Some(label) = label {
                let anchor = if week { "start" } else { "middle" };
                o += &format!(
                    r##"<text class="{}" x="{:.1}" y="14" font-size="11" text-anchor="{anchor}" fill="#333">{}</text>"##,
                    if week { "day" } else { "hour" },
                    if week { xx + 3.0 } else { xx },
                    esc(&label)
                );
            }
        }
    }
    let now = Utc::now();
    if segments.iter().any(|(a, b)| now > *a && now < *b) {
        o += &format!(
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{top}" y2="{h}" stroke="#b3471d" stroke-width="2"/>"##,
            x(now)
        );
    }
    let mut y_row = top;
    for ((row, bars), (lane_of, n)) in rows.iter().zip(&placed) {
        let row_h = lane_h * *n as f64;
        o += &format!(
            r##"<line x1="0" x2="{w}" y1="{:.1}" y2="{:.1}" stroke="#eef"/><text x="{}" y="{:.1}" font-size="12" text-anchor="end" fill="#222">{}</text>"##,
            y_row + row_h + gap / 2.0,
            y_row + row_h + gap / 2.0,
            left - 6.0,
            y_row + 16.0,
            esc(row)
        );
        for (j, b) in bars.iter().enumerate() {
            let ls = b.lesson;
            let y = y_row + lane_h * lane_of[j] as f64;
            let c = COLOURS[j % COLOURS.len()];
            let (ws, s0, e0, we) = (
                x(ls.window_start),
                x(ls.start_at),
                x(ls.end_at()),
                x(ls.window_end),
            );
            let tip = format!(
                "{} · {}–{} ({} {}, {} {})",
                b.label,
                z.hm(ls.start_at),
                z.hm(ls.end_at()),
                t(l, "legend_staging"),
                z.hm(ls.window_start),
                t(l, "legend_grace"),
                z.hm(ls.window_end)
            );
            o += &format!(
                r##"<a href="/console/lessons/{}"><title>{}</title><rect x="{ws:.1}" y="{:.1}" width="{:.1}" height="18" fill="{c}" fill-opacity="0.35"/><rect x="{s0:.1}" y="{:.1}" width="{:.1}" height="18" fill="{c}"/><rect x="{e0:.1}" y="{:.1}" width="{:.1}" height="18" fill="#888" fill-opacity="0.5"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#fff">{}</text></a>"##,
                ls.id,
                esc(&tip),
                y + 2.0,
                (s0 - ws).max(0.5),
                y + 2.0,
                (e0 - s0).max(1.0),
                y + 2.0,
                (we - e0).max(0.5),
                s0 + 3.0,
                y + 15.0,
                esc(&fit_label(&b.label, e0 - s0 - 4.0))
            );
        }
        y_row += row_h + gap;
    }
    o + "</svg>"
}

/// As much of a label as fits in `width` pixels of 11 px text (CJK
/// characters are about twice as wide as Latin ones), with an ellipsis
/// when cut.
fn fit_label(label: &str, width: f64) -> String {
    let w = |c: char| if c.is_ascii() { 6.2 } else { 11.0 };
    let total: f64 = label.chars().map(w).sum();
    if total <= width {
        return label.to_string();
    }
    let mut used = w('…');
    let mut out = String::new();
    for c in label.chars() {
        used += w(c);
        if used > width {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        return out;
    }
    out + "…"
}

fn weekday(l: Lang, d: chrono::Weekday) -> &'static str {
    use chrono::Weekday::*;
    t(
        l,
        match d {
            Mon => "mon",
            Tue => "tue",
            Wed => "wed",
            Thu => "thu",
            Fri => "fri",
            Sat => "sat",
            Sun => "sun",
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: i64, m: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(0, 0).unwrap() + Duration::hours(h) + Duration::minutes(m)
    }

    #[test]
    fn overlapping_lessons_get_a_lane_each_and_later_ones_reuse_free_lanes() {
        let (lane, n) = lanes(&[
            (at(8, 0), at(9, 0)),
            (at(8, 30), at(9, 30)),
            (at(9, 0), at(10, 0)),
            (at(9, 10), at(9, 40)),
        ]);
        assert_eq!(lane, vec![0, 1, 0, 2]);
        assert_eq!(n, 3);
        assert_eq!(lanes(&[]).1, 1, "an empty row still has its height");
    }

    #[test]
    fn a_forty_minute_lesson_is_wide_on_a_school_day_axis() {
        let seg = [(at(7, 0), at(18, 0))];
        let a = Axis {
            segments: &seg,
            left: 170.0,
            width: 1122.0,
        };
        let w = a.x(at(10, 40)) - a.x(at(10, 0));
        assert!(w > 60.0, "40 minutes are {w:.1} px");
        assert_eq!(a.x(at(6, 0)), 170.0, "before the day: its start");
        assert_eq!(a.x(at(20, 0)), 1292.0, "after the day: its end");
    }

    #[test]
    fn a_night_between_two_days_maps_to_the_next_days_start() {
        let seg = [(at(7, 0), at(18, 0)), (at(31, 0), at(42, 0))];
        let a = Axis {
            segments: &seg,
            left: 0.0,
            width: 200.0,
        };
        assert_eq!(a.x(at(22, 0)), 100.0);
        assert_eq!(a.x(at(31, 0)), 100.0);
    }

    #[test]
    fn labels_are_cut_to_their_bar_with_an_ellipsis() {
        assert_eq!(fit_label("Python", 100.0), "Python");
        assert_eq!(fit_label("机器学习入门", 40.0), "机器…");
        assert_eq!(fit_label("机器学习", 5.0), "");
    }
}
