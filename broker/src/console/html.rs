//! The page shell and small HTML helpers. Pages are plain server-rendered
//! HTML (no template engine, no client framework): every value goes
//! through [`esc`], and the only script is the vendored console.js.

use axum::{
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
};

use super::{
    i18n::{Lang, t},
    session::Session,
    tz::Zone,
};
use crate::domain::ServiceError;

pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// Percent-encodes a query value.
pub fn qv(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

const NAV: &[(&str, &str)] = &[
    ("overview", "/console"),
    ("nodes", "/console/nodes"),
    ("timetable", "/console/timetable"),
    ("jobs", "/console/jobs"),
    ("vouchers", "/console/vouchers"),
    ("tokens", "/console/tokens"),
    ("regions", "/console/regions"),
    ("audit", "/console/audit"),
];

pub struct Page {
    pub title: String,
    /// The nav key this page belongs to.
    pub nav: &'static str,
    pub body: String,
    /// False where a refresh would lose something (a secret shown once).
    pub live: bool,
}

impl Page {
    pub fn new(title: impl Into<String>, nav: &'static str, body: String) -> Self {
        Self {
            title: title.into(),
            nav,
            body,
            live: true,
        }
    }
}

pub fn shell(
    lang: Lang,
    title: &str,
    header: &str,
    main: &str,
    footer: &str,
    live: bool,
) -> String {
    format!(
        r##"<!doctype html>
<html lang="{code}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · classgrid</title><link rel="stylesheet" href="/console/assets/console.css">
<script src="/console/assets/console.js" defer></script></head>
<body><a class="skip" href="#main">{skip}</a>{header}
<main id="main" tabindex="-1" data-live="{live}">{main}</main>{footer}</body></html>"##,
        code = lang.code(),
        title = esc(title),
        skip = t(lang, "skip"),
        live = if live { "on" } else { "off" },
    )
}

pub fn render(s: &Session, zone: &Zone, path: &str, p: Page) -> Response {
    let l = s.lang;
    let nav: String = NAV
        .iter()
        .map(|(k, href)| {
            let cur = if *k == p.nav {
                r#" aria-current="page""#
            } else {
                ""
            };
            format!(r#"<a href="{href}"{cur}>{}</a>"#, t(l, k))
        })
        .collect();
    let header = format!(
        r#"<header><span class="brand">{app}</span><nav aria-label="{navl}">{nav}</nav>
<div class="who"><span>{signed}: <strong>{user}</strong> ({role})</span>
<a href="/console/lang?to={other}&amp;back={back}" lang="{other}">{switch}</a>
<form method="post" action="/console/logout"><input type="hidden" name="_csrf" value="{csrf}"><button type="submit">{logout}</button></form></div></header>"#,
        app = t(l, "app"),
        navl = t(l, "nav"),
        signed = t(l, "signed_in_as"),
        user = esc(&s.username),
        role = crate::console::i18n::word(l, "role", s.caller.role.as_str()),
        other = l.other().code(),
        back = qv(path),
        switch = t(l, "switch_lang"),
        csrf = esc(&s.csrf),
        logout = t(l, "logout"),
    );
    let footer = format!(
        r#"<footer><span>{times}: {zone}</span> <span id="live-status" role="status" aria-live="polite" data-label="{live}"></span></footer>"#,
        times = t(l, "times_in"),
        zone = esc(&zone.name),
        live = t(l, "live"),
    );
    let body = format!("<h1>{}</h1>{}", esc(&p.title), p.body);
    Html(shell(l, &p.title, &header, &body, &footer, p.live)).into_response()
}

/// A service error as a page: the status a REST client would get, and the
/// field and rule in the user's language where there are any.
pub fn error(s: &Session, zone: &Zone, path: &str, e: &ServiceError) -> Response {
    let l = s.lang;
    let (code, msg) = match e {
        ServiceError::Invalid(fields) => (
            StatusCode::BAD_REQUEST,
            format!(
                "<p>{}</p><ul>{}</ul>",
                t(l, "invalid"),
                fields
                    .iter()
                    .map(|f| format!("<li><code>{}</code>: {}</li>", esc(&f.field), esc(&f.rule)))
                    .collect::<String>()
            ),
        ),
        ServiceError::NotFound(_) => (
            StatusCode::NOT_FOUND,
            format!("<p>{}</p>", t(l, "not_found")),
        ),
        ServiceError::Forbidden(m) => (
            StatusCode::FORBIDDEN,
            format!("<p>{}</p><p>{}</p>", t(l, "forbidden"), esc(m)),
        ),
        ServiceError::Internal(err) => {
            tracing::error!(error = %format!("{err:#}"), "console page failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("<p>{}</p>", t(l, "error")),
            )
        }
        ServiceError::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("<p>{}</p>", t(l, "error")),
        ),
        other => (
            StatusCode::CONFLICT,
            format!("<p>{}</p>", esc(&other.to_string())),
        ),
    };
    let body = format!(
        r#"<div class="notice error" role="alert">{msg}</div><p><a href="javascript:history.back()">{}</a></p>"#,
        t(l, "back")
    );
    let mut r = render(
        s,
        zone,
        path,
        Page {
            title: t(l, "error").into(),
            nav: "",
            body,
            live: false,
        },
    );
    *r.status_mut() = code;
    r
}

/// After a form: back to a page (303, so a reload does not post again).
pub fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// A table header cell: text, or a number column (right-aligned).
pub enum Th<'a> {
    Text(&'a str),
    Num(&'a str),
}

/// A table from its opening tag through `<tbody>`: every table in the
/// console has a header row of column headers, for screen readers.
pub fn table_open(id: Option<&str>, cols: &[Th<'_>]) -> String {
    let mut o = match id {
        Some(id) => format!("<table id={id}><thead><tr>"),
        None => "<table><thead><tr>".to_string(),
    };
    for c in cols {
        o += &match c {
            Th::Text(label) => format!("<th scope=col>{label}</th>"),
            Th::Num(label) => format!("<th scope=col class=num>{label}</th>"),
        };
    }
    o + "</tr></thead><tbody>"
}

pub fn state_badge(l: Lang, state: &str) -> String {
    let label = crate::console::i18n::word(l, "state", state);
    format!(
        r#"<span class="badge s-{}">{}</span>"#,
        esc(state),
        esc(&label)
    )
}

/// A lesson's state badge, and beside it, while the lesson is not over, a
/// failure badge when seats failed: the lifecycle state alone would show a
/// lesson whose every seat failed as a healthy `live` (decision 079).
pub fn lesson_badge(l: Lang, state: &str, failed: i64, seats: i64) -> String {
    let mut out = state_badge(l, state);
    if failed > 0 && !matches!(state, "ended" | "cancelled") {
        let key = if failed >= seats {
            "all_failed"
        } else {
            "degraded"
        };
        out += &format!(
            r#" <span class="badge s-failed" data-failed="{failed}">{} {failed}/{seats}</span>"#,
            esc(&crate::console::i18n::word(l, "state", key))
        );
    }
    out
}

pub fn mib(v: i64) -> String {
    if v >= 1024 {
        format!("{:.1} GiB", v as f64 / 1024.0)
    } else {
        format!("{v} MiB")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn markup_in_values_is_escaped() {
        assert_eq!(
            super::esc(r#"<script>"x"&'y'"#),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;"
        );
        assert_eq!(
            super::qv("/console/nodes?site=a b"),
            "/console/nodes%3Fsite%3Da%20b"
        );
    }
}
