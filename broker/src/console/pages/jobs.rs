//! Jobs: ad-hoc and batch work, filterable by state.

use std::collections::HashMap;

use axum::{
    extract::{Query, State},
    http::Uri,
    response::Response,
};

use super::{
    super::{
        html::{Page, Th, error, esc, render, state_badge, table_open},
        i18n::t,
        session::Session,
        zone,
    },
    opt,
};
use crate::state::App;

pub async fn page(
    State(app): State<App>,
    s: Session,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let l = s.lang;
    let z = zone();
    let state = opt(&q, "state");
    let jobs = match app.scoped(&s.caller).console_jobs(state).await {
        Ok(j) => j,
        Err(e) => return error(&s, z, uri.path(), &e),
    };
    let opts: String = ["queued", "running", "succeeded", "failed", "cancelled"]
        .iter()
        .map(|v| {
            format!(
                r#"<option value="{v}"{}>{}</option>"#,
                if state == Some(*v) { " selected" } else { "" },
                esc(&crate::console::i18n::word(l, "state", v))
            )
        })
        .collect();
    let mut o = format!(
        r#"<form class="filters" method="get" action="/console/jobs"><label for="f-state">{}<select id="f-state" name="state"><option value="">{}</option>{opts}</select></label><button type="submit">{}</button></form>"#,
        t(l, "state"),
        t(l, "all"),
        t(l, "apply")
    );
    o += &table_open(
        None,
        &[
            Th::Text(t(l, "name")),
            Th::Text(t(l, "school")),
            Th::Text(t(l, "state")),
            Th::Num(t(l, "priority")),
            Th::Text(t(l, "node")),
            Th::Text(t(l, "endpoint")),
            Th::Text(t(l, "created")),
            Th::Text(t(l, "message")),
        ],
    );
    for j in &jobs {
        // An unnamed job by school and submission time, not its UUID.
        let name = if j.name.is_empty() {
            format!("{} {}", j.school_site, z.hm(j.created_at))
        } else {
            j.name.clone()
        };
        o += &format!(
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>"#,
            esc(&name),
            esc(&j.school_site),
            state_badge(l, &j.state),
            j.priority,
            j.node_id
                .map(|id| format!(
                    r#"<a href="/console/nodes/{id}">{}</a>"#,
                    esc(j.node_name.as_deref().unwrap_or(""))
                ))
                .unwrap_or_default(),
            esc(&j.endpoint),
            z.fmt(j.created_at),
            // A queued job's message is its placement explanation.
            esc(&crate::console::i18n::explanation(l, &j.message))
        );
    }
    if jobs.is_empty() {
        o += &format!(
            r#"<tr><td colspan="8" class="muted">{}</td></tr>"#,
            t(l, "no_jobs")
        );
    }
    o += "</tbody></table>";
    render(&s, z, uri.path(), Page::new(t(l, "jobs"), "jobs", o))
}
