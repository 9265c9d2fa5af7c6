//! Lesson detail: the seat map (node, device, RTT with its source, state,
//! endpoint per seat) and the placement explanation.

use axum::{
    extract::{Path, State},
    http::Uri,
    response::Response,
};
use uuid::Uuid;

use super::super::{
    html::{Page, error, esc, mib, render, state_badge},
    i18n::t,
    session::Session,
    zone,
};
use crate::{app::App, domain::ServiceError};

pub async fn detail(
    State(app): State<App>,
    s: Session,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    let l = s.lang;
    let z = zone();
    let Ok(id) = id.parse::<Uuid>() else {
        return error(
            &s,
            z,
            uri.path(),
            &ServiceError::field("id", "must be a lesson id (a UUID)"),
        );
    };
    let v = match app.scoped(&s.caller).lesson(id).await {
        Ok(v) => v,
        Err(e) => return error(&s, z, uri.path(), &e),
    };
    let ls = &v.lesson;
    let mut o = format!(
        r#"<p>{}: <strong>{}</strong> · {}: {}–{} · {}: {} · {}: {}–{} · {}: {} ms</p>"#,
        t(l, "school"),
        esc(&ls.school_site),
        t(l, "start"),
        z.fmt(ls.start_at),
        z.hm(ls.end_at()),
        t(l, "state"),
        state_badge(l, &ls.state),
        t(l, "window"),
        z.fmt(ls.window_start),
        z.hm(ls.window_end),
        t(l, "max_rtt"),
        ls.max_rtt_ms
    );
    if !ls.message.is_empty() {
        o += &format!(r#"<div class="notice">{}</div>"#, esc(&ls.message));
    }
    let explanation = ls.explanation();
    let seat_reason = |n: i32| -> Option<String> {
        explanation
            .pointer("/admission/seats")?
            .as_array()?
            .iter()
            .find(|x| x.get("seat").and_then(|v| v.as_i64()) == Some(n as i64))?
            .get("reason")?
            .as_str()
            .map(str::to_string)
    };
    o += &format!(
        r#"<h2>{}</h2><div class="seatmap" id="seat-map">"#,
        t(l, "seat_map")
    );
    for st in &v.seats {
        let node = match (st.node_id, &st.node_name) {
            (Some(nid), Some(name)) => {
                format!(r#"<a href="/console/nodes/{nid}">{}</a>"#, esc(name))
            }
            _ => "—".into(),
        };
        let rtt = match (st.rtt_ms, &st.rtt_source) {
            (Some(ms), Some(src)) => match st.rtt_error_ms {
                Some(e) => format!("{ms:.1} ms ({} ±{e:.1} ms)", esc(src)),
                None => format!("{ms:.1} ms ({})", esc(src)),
            },
            _ => "—".into(),
        };
        let endpoint = if st.endpoint.is_empty() {
            "—".to_string()
        } else {
            format!("<code>{}</code>", esc(&st.endpoint))
        };
        o += &format!(
            r#"<article class="seat" aria-label="{seat} {n}"><h3>{seat} {n} {}</h3><div>{}: {node}</div><div>{}: {} · {} · {}%</div><div>{}: {rtt}</div><div>{}: {endpoint}</div>{}{}</article>"#,
            state_badge(l, &st.state),
            t(l, "node"),
            t(l, "device"),
            esc(&st
                .device_indexes
                .iter()
                .map(|i| format!("#{i}"))
                .collect::<Vec<_>>()
                .join(",")),
            mib(st.gpu_memory_mib),
            st.gpu_compute_pct,
            t(l, "rtt"),
            t(l, "endpoint"),
            if st.message.is_empty() {
                String::new()
            } else {
                format!(r#"<div class="muted">{}</div>"#, esc(&st.message))
            },
            seat_reason(st.number)
                .map(|r| format!(r#"<div class="muted">{}</div>"#, esc(&r)))
                .unwrap_or_default(),
            seat = t(l, "seat"),
            n = st.number,
        );
    }
    o += "</div>";
    o += &format!(r#"<h2>{}</h2>"#, t(l, "explanation"));
    let summary = explanation
        .pointer("/admission/explanation/summary")
        .or_else(|| explanation.get("summary"))
        .and_then(|v| v.as_str())
        .unwrap_or("");
    o += &format!(r#"<p id="explanation-summary">{}</p>"#, esc(summary));
    if let Some(filters) = explanation
        .pointer("/admission/explanation/filters")
        .or_else(|| explanation.get("filters"))
        .and_then(|v| v.as_array())
        && !filters.is_empty()
    {
        o += "<ul>";
        for f in filters {
            o += &format!(
                "<li>{} — {}</li>",
                f.get("removed").and_then(|v| v.as_u64()).unwrap_or(0),
                esc(f.get("detail").and_then(|v| v.as_str()).unwrap_or(""))
            );
        }
        o += "</ul>";
    }
    let title = if ls.title.is_empty() {
        format!("{} {}", t(l, "lesson"), ls.id)
    } else {
        format!("{} {}", t(l, "lesson"), ls.title)
    };
    render(&s, z, uri.path(), Page::new(title, "timetable", o))
}
