//! The audit log, newest first, filtered by actor, action, target and time.

use std::collections::HashMap;

use axum::{
    extract::{Query, State},
    http::Uri,
    response::Response,
};
use chrono::NaiveDateTime;

use super::{
    super::{
        html::{Page, Th, error, esc, render, state_badge, table_open},
        i18n::t,
        session::Session,
        zone,
    },
    opt,
};
use crate::{domain::ServiceError, state::App};

pub async fn page(
    State(app): State<App>,
    s: Session,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let l = s.lang;
    let z = zone();
    let since = match opt(&q, "since") {
        None => None,
        Some(v) => match NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M")
            .or_else(|_| NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M"))
        {
            Ok(t) => Some(z.midnight(t.date()) + (t - t.date().and_hms_opt(0, 0, 0).unwrap_or(t))),
            Err(_) => {
                return error(
                    &s,
                    z,
                    uri.path(),
                    &ServiceError::field("since", "must be a local time like 2026-09-01T08:00"),
                );
            }
        },
    };
    for k in ["actor", "action", "target"] {
        if opt(&q, k).is_some_and(|v| v.chars().count() > 200) {
            return error(
                &s,
                z,
                uri.path(),
                &ServiceError::field(k, "must be at most 200 characters"),
            );
        }
    }
    let rows = match app
        .list_audit(
            &s.caller,
            opt(&q, "actor"),
            opt(&q, "action"),
            opt(&q, "target"),
            since,
            300,
        )
        .await
    {
        Ok(r) => r,
        Err(e) => return error(&s, z, uri.path(), &e),
    };
    let mut names = super::names::Names::load(&app, &s).await;
    names
        .load_lessons(&app, &s, rows.iter().map(|r| r.target.as_str()))
        .await;
    let field = |k: &str, label: &str, kind: &str| {
        format!(
            r#"<label for="f-{k}">{label}<input id="f-{k}" name="{k}" type="{kind}" value="{}" maxlength="200"></label>"#,
            esc(q.get(k).map(|s| s.as_str()).unwrap_or(""))
        )
    };
    let mut o = format!(
        r#"<form class="filters" method="get" action="/console/audit" role="search">{}{}{}{}<button type="submit">{}</button></form>"#,
        field("actor", t(l, "actor"), "text"),
        field("action", t(l, "action"), "text"),
        field("target", t(l, "target"), "text"),
        field("since", t(l, "since"), "datetime-local"),
        t(l, "apply")
    );
    o += &table_open(
        Some("audit-table"),
        &[
            Th::Text(t(l, "at")),
            Th::Text(t(l, "actor")),
            Th::Text(t(l, "role")),
            Th::Text(t(l, "action")),
            Th::Text(t(l, "target")),
            Th::Text(t(l, "result")),
            Th::Text(t(l, "detail")),
        ],
    );
    for r in &rows {
        o += &format!(
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            z.fmt(r.at),
            names.reference(l, &app, &r.actor),
            esc(&crate::console::i18n::word(l, "role", &r.role)),
            esc(&r.action),
            names.reference(l, &app, &r.target),
            state_badge(l, &r.result),
            // Where the request came from and what the service said, as
            // recorded: data, like the action's code, not the console's words.
            if r.detail.is_empty() {
                format!("<code>{}</code>", esc(&r.source))
            } else {
                format!(
                    "<code>{}</code> <code>{}</code>",
                    esc(&r.source),
                    esc(&r.detail)
                )
            }
        );
    }
    if rows.is_empty() {
        o += &format!(
            r#"<tr><td colspan="7" class="muted">{}</td></tr>"#,
            t(l, "none")
        );
    }
    o += "</tbody></table>";
    render(&s, z, uri.path(), Page::new(t(l, "audit"), "audit", o))
}
