//! Lesson detail: the command, the seat map (node, device, RTT with its
//! source, state, endpoint per seat, the output of a seat whose program
//! ended), the placement explanation once for the class, and a cancel
//! button behind a confirmation.

use std::collections::HashMap;

use axum::{
    Form,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use uuid::Uuid;

use super::super::{
    html::{Page, error, esc, mib, render, see_other, state_badge},
    i18n::{explanation as explanation_text, t, word},
    session::Session,
    zone,
};
use super::class_sheet;
use crate::{domain::ServiceError, service::lessons::LessonView, state::App};

/// The class sheet's link, how many students are in, and the teacher's
/// pause/resume of the class's links, while the lesson is not over.
async fn links_bar(app: &App, s: &Session, v: &LessonView) -> String {
    let l = s.lang;
    let ls = &v.lesson;
    if v.seats.iter().all(|st| st.link.is_empty()) {
        return String::new();
    }
    let opened = v
        .seats
        .iter()
        .filter(|st| st.link_opened_at.is_some())
        .count();
    let mut o = format!(
        r#"<p id="seat-links"><a class="button" href="/console/lessons/{}/sheet" id="class-sheet-link">{}</a> {}: <strong id="links-opened">{opened}/{}</strong></p>"#,
        ls.id,
        t(l, "class_sheet"),
        t(l, "opened_count"),
        v.seats.len()
    );
    if matches!(ls.state.as_str(), "ended" | "cancelled") {
        return o;
    }
    let paused = app.store.links_paused(ls.id).await.unwrap_or(false);
    if paused {
        o += &format!(
            r#"<div class="notice warn" id="links-paused" role="status">{}</div>"#,
            t(l, "links_paused")
        );
    }
    let (action, label) = if paused {
        ("resume", t(l, "resume_links"))
    } else {
        ("pause", t(l, "pause_links"))
    };
    o += &format!(
        r#"<form class="inline" method="post" action="/console/lessons/{}/links/{action}"><input type="hidden" name="_csrf" value="{}"><button type="submit" id="links-{action}">{label}</button></form>"#,
        ls.id,
        esc(&s.csrf)
    );
    o
}

pub async fn detail(
    State(app): State<App>,
    s: Session,
    uri: Uri,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
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
    let failed = v.seats.iter().filter(|st| st.state == "failed").count();
    if failed > 0 && !matches!(ls.state.as_str(), "ended" | "cancelled") {
        let (key, class) = if failed >= v.seats.len() {
            ("all_failed", "error")
        } else {
            ("degraded", "warn")
        };
        o += &format!(
            r#"<div class="notice {class}" id="failed-seats" role="status"><strong>{}</strong>: {} {failed}/{}</div>"#,
            word(l, "state", key),
            t(l, "failed_seats"),
            v.seats.len()
        );
    }
    if !ls.message.is_empty() {
        o += &format!(r#"<div class="notice">{}</div>"#, esc(&ls.message));
    }
    let w = &ls.workload.0;
    let command = std::iter::once(w.command.as_str())
        .chain(w.args.iter().map(String::as_str))
        .map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    // A notebook seat has no command of its own: it runs JupyterLab.
    let command =
        if command.trim_matches(['\'', ' ']).is_empty() && ls.seat_spec.0.runtime == "notebook" {
            "JupyterLab (notebook)".to_string()
        } else {
            command
        };
    o += &format!(
        r#"<p>{}: <code id="lesson-command">{}</code>{}</p>"#,
        t(l, "command"),
        esc(&command),
        if w.image.is_empty() {
            String::new()
        } else {
            format!(" · <code>{}</code>", esc(&w.image))
        }
    );
    o += &links_bar(&app, &s, &v).await;
    // Cancelling releases every seat of a class, so it asks first; the
    // question is a page of its own, as the console runs no script.
    if !matches!(ls.state.as_str(), "ended" | "cancelled") {
        if q.get("confirm").map(String::as_str) == Some("cancel") {
            o += &format!(
                r#"<div class="notice error" role="alert"><p>{}</p><form class="inline" method="post" action="/console/lessons/{}/cancel"><input type="hidden" name="_csrf" value="{}"><button type="submit" class="danger" id="cancel-confirm">{}</button></form> <a href="/console/lessons/{}">{}</a></div>"#,
                t(l, "cancel_confirm"),
                ls.id,
                esc(&s.csrf),
                t(l, "cancel_lesson"),
                ls.id,
                t(l, "back")
            );
        } else {
            o += &format!(
                r#"<p><a class="button danger" id="cancel-lesson" href="/console/lessons/{}?confirm=cancel">{}</a></p>"#,
                ls.id,
                t(l, "cancel_lesson")
            );
        }
    }
    let tails = app
        .scoped(&s.caller)
        .seat_output_tails(&v)
        .await
        .unwrap_or_default();
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
    // The same reason for every seat of a class is said once, above the
    // map; a seat shows its own only where it differs.
    let mut reasons: HashMap<String, usize> = HashMap::new();
    for st in &v.seats {
        if let Some(r) = seat_reason(st.number) {
            *reasons.entry(r).or_default() += 1;
        }
    }
    let common = reasons.into_iter().max_by_key(|(_, n)| *n).map(|(r, _)| r);
    o += &format!(r#"<h2>{}</h2>"#, t(l, "seat_map"));
    if let Some(r) = &common {
        o += &format!(
            r#"<p class="muted" id="seat-reason">{}</p>"#,
            esc(&explanation_text(l, r))
        );
    }
    o += r#"<div class="seatmap" id="seat-map">"#;
    for st in &v.seats {
        let node = match (st.node_id, &st.node_name) {
            (Some(nid), Some(name)) => {
                format!(r#"<a href="/console/nodes/{nid}">{}</a>"#, esc(name))
            }
            _ => "—".into(),
        };
        let rtt = match (st.rtt_ms, &st.rtt_source) {
            (Some(ms), Some(src)) => match st.rtt_error_ms {
                Some(e) => format!(
                    "{ms:.1} ms ({} ±{e:.1} ms)",
                    esc(&crate::console::i18n::word(l, "rtt_source", src))
                ),
                None => format!(
                    "{ms:.1} ms ({})",
                    esc(&crate::console::i18n::word(l, "rtt_source", src))
                ),
            },
            _ => "—".into(),
        };
        // Students open the link; the node's own address is for IT.
        let endpoint = if !st.link.is_empty() {
            format!(
                r#"<a class="seat-link" href="{0}">{0}</a> {1}"#,
                esc(&st.link),
                class_sheet::opened(&s, st)
            )
        } else if st.endpoint.is_empty() {
            "—".to_string()
        } else {
            format!("<code>{}</code>", esc(&st.endpoint))
        };
        o += &format!(
            r#"<article class="seat" aria-label="{seat} {n}"><h3>{seat} {n} {}</h3><div>{}: {node}</div><div>{}: {}</div><div>{}: {rtt}</div><div>{}: {endpoint}</div>{}{}</article>"#,
            state_badge(l, &st.state),
            t(l, "node"),
            t(l, "device"),
            // A CPU seat holds no device: "CPU", not "0 MiB · 0 %".
            if st.device_indexes.is_empty() {
                t(l, "cpu").to_string()
            } else {
                format!(
                    "{} · {} · {}%",
                    esc(&st
                        .device_indexes
                        .iter()
                        .map(|i| format!("#{i}"))
                        .collect::<Vec<_>>()
                        .join(",")),
                    mib(st.gpu_memory_mib),
                    st.gpu_compute_pct
                )
            },
            t(l, "rtt"),
            if st.link.is_empty() {
                t(l, "endpoint")
            } else {
                t(l, "seat_link")
            },
            if st.message.is_empty() {
                String::new()
            } else {
                format!(r#"<div class="muted">{}</div>"#, esc(&st.message))
            },
            seat_reason(st.number)
                .filter(|r| Some(r) != common.as_ref())
                .map(|r| format!(
                    r#"<div class="muted">{}</div>"#,
                    esc(&explanation_text(l, &r))
                ))
                .unwrap_or_default()
                + &tails
                    .get(&st.id)
                    .map(|t_| format!(
                        r#"<details class="output"><summary>{}</summary><pre>{}</pre></details>"#,
                        t(l, "output_tail"),
                        esc(t_)
                    ))
                    .unwrap_or_default()
                + &if matches!(ls.state.as_str(), "ready" | "live") {
                    class_sheet::seat_buttons(&s, ls.id, st)
                } else {
                    String::new()
                },
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
    o += &format!(
        r#"<p id="explanation-summary">{}</p>"#,
        esc(&explanation_text(l, summary))
    );
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
                esc(&explanation_text(
                    l,
                    f.get("detail").and_then(|v| v.as_str()).unwrap_or("")
                ))
            );
        }
        o += "</ul>";
    }
    let title = if ls.title.is_empty() {
        // An untitled lesson by school and time, which people recognise.
        format!(
            "{} {} {}",
            t(l, "lesson"),
            ls.school_site,
            z.fmt(ls.start_at)
        )
    } else {
        format!("{} {}", t(l, "lesson"), ls.title)
    };
    render(&s, z, uri.path(), Page::new(title, "timetable", o))
}

/// Cancels the lesson after the confirmation form; its seats are released.
pub async fn cancel(
    State(app): State<App>,
    s: Session,
    headers: HeaderMap,
    uri: Uri,
    Path(id): Path<String>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Err(why) = s.check_form(&headers, f.get("_csrf").map(|v| v.as_str()).unwrap_or("")) {
        return (StatusCode::FORBIDDEN, format!("{why}\n")).into_response();
    }
    let Ok(id) = id.parse::<Uuid>() else {
        return error(
            &s,
            zone(),
            uri.path(),
            &ServiceError::field("id", "must be a lesson id (a UUID)"),
        );
    };
    let reason = format!("cancelled in the console by {}", s.username);
    match app.scoped(&s.caller).cancel_lesson(id, &reason).await {
        Ok(v) => see_other(&format!("/console/lessons/{}", v.lesson.id)),
        Err(e) => error(&s, zone(), uri.path(), &e),
    }
}
