//! Timetable: a day or week Gantt chart of lessons per school or per node,
//! with each lesson's staging lead before it and grace after it drawn, as
//! the capacity calendar reserves them.

use std::collections::{BTreeMap, HashMap};

use axum::{
    extract::{Query, State},
    http::Uri,
    response::Response,
};
use chrono::{DateTime, Duration, NaiveDate, Utc};

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

/// Local hours a day view shows when every lesson fits in them.
const DAY_FROM_H: i64 = 7;
const DAY_TO_H: i64 = 19;

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
    // A school day fills the width of a day view; a lesson outside it
    // widens the view to the whole day.
    let (g0, g1) = if week {
        (from, to)
    } else {
        let (d0, d1) = (
            from + Duration::hours(DAY_FROM_H),
            from + Duration::hours(DAY_TO_H),
        );
        if lessons
            .iter()
            .all(|x| x.window_start >= d0 && x.window_end <= d1)
        {
            (d0, d1)
        } else {
            (from, to)
        }
    };
    o += &gantt(l, &rows, g0, g1, days);
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
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="num">{}</td></tr>"#,
            super::lesson_link(ls),
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

fn gantt(
    l: Lang,
    rows: &BTreeMap<String, Vec<Bar>>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    days: i64,
) -> String {
    let z = zone();
    let (w, left, row_h, top) = (1300.0, 170.0, 28.0, 22.0);
    let h = top + row_h * rows.len().max(1) as f64 + 6.0;
    let span = (to - from).num_seconds().max(1) as f64;
    let x = |t: DateTime<Utc>| {
        left + ((t - from).num_seconds() as f64 / span).clamp(0.0, 1.0) * (w - left - 8.0)
    };
    let mut o = format!(
        r#"<svg class="gantt" viewBox="0 0 {w} {h}" role="img" aria-label="{}"><title>{}</title>"#,
        t(l, "timetable"),
        t(l, "timetable")
    );
    let ticks = if days == 1 {
        (span / 3600.0).round().max(1.0) as i64
    } else {
        days
    };
    for i in 0..=ticks {
        let tt = from + Duration::seconds((span as i64) * i / ticks);
        let label = if days == 1 {
            z.hm(tt)
        } else {
            z.local(tt).format("%m-%d %a").to_string()
        };
        let xx = x(tt);
        o += &format!(r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top}" y2="{h}" stroke="#dde"/>"##);
        if days > 1 || ticks <= 12 || i % 2 == 0 {
            o += &format!(
                r##"<text x="{xx:.1}" y="14" font-size="11" text-anchor="middle" fill="#333">{}</text>"##,
                esc(&label)
            );
        }
    }
    let now = Utc::now();
    if now > from && now < to {
        o += &format!(
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{top}" y2="{h}" stroke="#b3471d" stroke-width="2"/>"##,
            x(now)
        );
    }
    for (i, (row, bars)) in rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        o += &format!(
            r##"<text x="{}" y="{:.1}" font-size="12" text-anchor="end" fill="#222">{}</text>"##,
            left - 6.0,
            y + 17.0,
            esc(row)
        );
        for (j, b) in bars.iter().enumerate() {
            let ls = b.lesson;
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
                y + 4.0,
                (s0 - ws).max(0.5),
                y + 4.0,
                (e0 - s0).max(1.0),
                y + 4.0,
                (we - e0).max(0.5),
                s0 + 3.0,
                y + 17.0,
                esc(&b
                    .label
                    .chars()
                    .take(((e0 - s0) / 6.5).max(0.0) as usize)
                    .collect::<String>())
            );
        }
    }
    o + "</svg>"
}
