//! The class sheet (issue 22): one line per seat with its private link and
//! a QR code, for the teacher to print and hand out, with who has opened
//! their link so far; and the teacher's pause/resume of the class's links.
//! The QR codes are SVG from the `qrcode` crate, inline, so the page prints
//! with no script and no image request.

use std::collections::HashMap;

use axum::{
    Form,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use uuid::Uuid;

use super::super::{
    html::{Page, error, esc, render, see_other, state_badge},
    i18n::t,
    session::Session,
    zone,
};
use crate::{
    domain::ServiceError, service::seat_controls::SeatAction, state::App, store::lessons::SeatRow,
};

/// A link's QR code as inline SVG (without the XML prolog the crate writes).
pub fn qr_svg(link: &str) -> String {
    let Ok(code) = qrcode::QrCode::new(link.as_bytes()) else {
        return String::new();
    };
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(132, 132)
        .quiet_zone(true)
        .build();
    match svg.find("<svg") {
        Some(i) => svg[i..].to_string(),
        None => svg,
    }
}

fn parse_lesson_id(s: &Session, uri: &Uri, id: &str) -> Result<Uuid, Response> {
    id.parse::<Uuid>().map_err(|_| {
        error(
            s,
            zone(),
            uri.path(),
            &ServiceError::field("id", "must be a lesson id (a UUID)"),
        )
    })
}

/// A teacher's form, its CSRF token checked, and its lesson id.
fn checked_form(
    s: &Session,
    headers: &HeaderMap,
    uri: &Uri,
    f: &HashMap<String, String>,
    id: &str,
) -> Result<Uuid, Response> {
    if let Err(why) = s.check_form(headers, f.get("_csrf").map(|v| v.as_str()).unwrap_or("")) {
        return Err((StatusCode::FORBIDDEN, format!("{why}\n")).into_response());
    }
    parse_lesson_id(s, uri, id)
}

/// "Opened 10:02" or "Not opened yet", for a seat.
pub fn opened(s: &Session, st: &SeatRow) -> String {
    let l = s.lang;
    match st.link_opened_at {
        Some(at) => format!(
            r#"<span class="badge s-running">{} {}</span>"#,
            t(l, "link_opened"),
            zone().hm(at)
        ),
        None => format!(r#"<span class="muted">{}</span>"#, t(l, "link_not_opened")),
    }
}

pub async fn sheet(
    State(app): State<App>,
    s: Session,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    let l = s.lang;
    let z = zone();
    let id = match parse_lesson_id(&s, &uri, &id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let v = match app.scoped(&s.caller).lesson(id).await {
        Ok(v) => v,
        Err(e) => return error(&s, z, uri.path(), &e),
    };
    let ls = &v.lesson;
    let mut o = format!(
        r#"<p class="sheet-head"><strong>{}</strong> · {} · {}–{}</p><p class="muted">{}</p><p class="no-print" id="print-hint">{} <a href="/console/lessons/{}">{}</a></p>"#,
        esc(&ls.school_site),
        esc(&ls.title),
        z.fmt(ls.start_at),
        z.hm(ls.end_at()),
        t(l, "sheet_hint"),
        t(l, "print"),
        ls.id,
        t(l, "back"),
    );
    if v.seats.iter().all(|st| st.link.is_empty()) {
        o += &format!(
            r#"<div class="notice warn" id="no-seat-links">{}</div>"#,
            t(l, "no_seat_links")
        );
    }
    o += &format!(
        r#"<table class="sheet" id="class-sheet"><thead><tr><th>{}</th><th>{}</th><th>QR</th><th class="no-print">{}</th></tr></thead><tbody>"#,
        t(l, "seat"),
        t(l, "seat_link"),
        t(l, "state"),
    );
    for st in &v.seats {
        o += &format!(
            r#"<tr class="sheet-seat"><td class="seat-no">{}</td><td><code class="seat-link">{}</code></td><td class="qr">{}</td><td class="no-print">{} {}</td></tr>"#,
            st.number,
            esc(&st.link),
            if st.link.is_empty() {
                String::new()
            } else {
                qr_svg(&st.link)
            },
            state_badge(l, &st.state),
            opened(&s, st),
        );
    }
    o += "</tbody></table>";
    let mut page = Page::new(
        format!("{} · {}", t(l, "class_sheet"), ls.title),
        "timetable",
        o,
    );
    // The sheet is printed; refreshing it under the print dialog would
    // lose the print.
    page.live = false;
    render(&s, z, uri.path(), page)
}

/// The teacher's pause or resume of the class's links, from the lesson page.
pub async fn links(
    State(app): State<App>,
    s: Session,
    headers: HeaderMap,
    uri: Uri,
    Path((id, action)): Path<(String, String)>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let id = match checked_form(&s, &headers, &uri, &f, &id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let paused = match action.as_str() {
        "pause" => true,
        "resume" => false,
        _ => {
            return error(
                &s,
                zone(),
                uri.path(),
                &ServiceError::field("action", "must be pause or resume"),
            );
        }
    };
    match app.scoped(&s.caller).pause_links(id, paused).await {
        Ok(v) => see_other(&format!("/console/lessons/{}", v.lesson.id)),
        Err(e) => error(&s, zone(), uri.path(), &e),
    }
}

/// The teacher's reset (keeping or wiping the work) or stop of one seat.
pub async fn seat(
    State(app): State<App>,
    s: Session,
    headers: HeaderMap,
    uri: Uri,
    Path((id, seat, action)): Path<(String, String, String)>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let id = match checked_form(&s, &headers, &uri, &f, &id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Some(seat) = seat.parse::<i32>().ok().filter(|n| *n >= 0) else {
        return error(
            &s,
            zone(),
            uri.path(),
            &ServiceError::field("seat", "must be a seat number (0 or more)"),
        );
    };
    let wipe = f.get("wipe_work").map(String::as_str) == Some("true");
    let action = match SeatAction::parse(&action, wipe) {
        Ok(a) => a,
        Err(e) => return error(&s, zone(), uri.path(), &e),
    };
    match app.scoped(&s.caller).control_seat(id, seat, action).await {
        Ok(v) => see_other(&format!("/console/lessons/{}", v.lesson.id)),
        Err(e) => error(&s, zone(), uri.path(), &e),
    }
}

/// A seat's reset, reset-wiping and stop buttons on the lesson page.
pub fn seat_buttons(s: &Session, lesson: Uuid, st: &SeatRow) -> String {
    let l = s.lang;
    let form = |action: &str, wipe: bool, label: &str, class: &str| {
        format!(
            r#"<form class="inline" method="post" action="/console/lessons/{lesson}/seats/{}/{action}"><input type="hidden" name="_csrf" value="{}"><input type="hidden" name="wipe_work" value="{wipe}"><button type="submit" class="small {class}">{label}</button></form>"#,
            st.number,
            esc(&s.csrf),
        )
    };
    format!(
        r#"<div class="seat-actions">{}{}{}</div>"#,
        form("reset", false, t(l, "reset_seat"), ""),
        form("reset", true, t(l, "reset_seat_wipe"), "danger"),
        if st.state == "released" {
            String::new()
        } else {
            form("stop", false, t(l, "stop_seat"), "danger")
        },
    )
}
