//! Nodes: a table with filters (site, state, vendor, name). Cordoned nodes
//! and nodes awaiting approval are states to filter by too, since they are
//! what keeps placement away from a connected node.

use std::collections::HashMap;

use axum::{
    extract::{Query, State},
    http::Uri,
    response::Response,
};

use super::{
    super::{
        html::{Page, Th, error, esc, mib, render, state_badge, table_open},
        i18n::t,
        session::Session,
        zone,
    },
    opt,
};
use crate::state::App;

const STATES: &[&str] = &[
    "connected",
    "disconnected",
    "lost",
    "cordoned",
    "awaiting_approval",
];

pub async fn list(
    State(app): State<App>,
    s: Session,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let l = s.lang;
    let z = zone();
    let scoped = app.scoped(&s.caller);
    let site = opt(&q, "site");
    let state = opt(&q, "state");
    let vendor = opt(&q, "vendor");
    let name = opt(&q, "q");
    if let Some(st) = state
        && !STATES.contains(&st)
    {
        return error(
            &s,
            z,
            uri.path(),
            &crate::domain::ServiceError::field(
                "state",
                format!("must be one of {}", STATES.join(", ")),
            ),
        );
    }
    let nodes = match scoped.nodes(site) {
        Ok(n) => n,
        Err(e) => return error(&s, z, uri.path(), &e),
    };
    let mut vendors: Vec<String> = nodes
        .iter()
        .flat_map(|n| n.devices.iter().map(|d| d.vendor.clone()))
        .collect();
    vendors.sort();
    vendors.dedup();
    let shown: Vec<_> = nodes
        .iter()
        .filter(|n| match state {
            Some("cordoned") => n.cordoned,
            Some("awaiting_approval") => !n.approved,
            Some(st) => n.state == st,
            None => true,
        })
        .filter(|n| vendor.is_none_or(|v| n.devices.iter().any(|d| d.vendor == v)))
        .filter(|n| name.is_none_or(|q| n.name.to_lowercase().contains(&q.to_lowercase())))
        .collect();
    let sites = scoped.sites();
    // Options as (value, what the admin reads).
    let select = |id: &str, label: &str, all: &[(&str, &str)], cur: Option<&str>| {
        let opts: String = all
            .iter()
            .map(|(v, shown)| {
                format!(
                    r#"<option value="{}"{}>{}</option>"#,
                    esc(v),
                    if cur == Some(*v) { " selected" } else { "" },
                    esc(shown)
                )
            })
            .collect();
        format!(
            r#"<label for="f-{id}">{label}<select id="f-{id}" name="{id}"><option value="">{}</option>{opts}</select></label>"#,
            t(l, "all")
        )
    };
    let mut o = format!(
        r#"<form class="filters" method="get" action="/console/nodes" role="search" aria-label="{f}">{}{}{}<label for="f-q">{}<input id="f-q" name="q" value="{}" maxlength="128"></label><button type="submit">{}</button></form>"#,
        select(
            "site",
            t(l, "site"),
            &sites
                .iter()
                .map(|s| (s.name.as_str(), s.name.as_str()))
                .collect::<Vec<_>>(),
            site
        ),
        select(
            "state",
            t(l, "state"),
            &STATES.iter().map(|s| (*s, t(l, s))).collect::<Vec<_>>(),
            state
        ),
        select(
            "vendor",
            t(l, "vendor"),
            &vendors
                .iter()
                .map(|v| (v.as_str(), v.as_str()))
                .collect::<Vec<_>>(),
            vendor
        ),
        t(l, "search"),
        esc(name.unwrap_or("")),
        t(l, "apply"),
        f = t(l, "filter"),
    );
    o += &table_open(
        Some("nodes-table"),
        &[
            Th::Text(t(l, "node")),
            Th::Text(t(l, "site")),
            Th::Text(t(l, "tier")),
            Th::Text(t(l, "state")),
            Th::Text(t(l, "devices")),
            Th::Num(t(l, "memory")),
            Th::Text(t(l, "last_seen")),
        ],
    );
    for n in &shown {
        let site = app
            .fleet
            .site_by_id(n.site_id)
            .map(|s| s.name)
            .unwrap_or_default();
        let devs: Vec<String> = n
            .devices
            .iter()
            .map(|d| format!("{} {}", d.vendor, d.model))
            .collect();
        let flags: String = [(!n.approved, "awaiting_approval"), (n.cordoned, "cordoned")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, f)| format!(" {}", state_badge(l, f)))
            .collect();
        o += &format!(
            r#"<tr><td><a href="/console/nodes/{}">{}</a></td><td>{}</td><td>{}</td><td>{}{flags}</td><td>{}</td><td class="num">{}</td><td>{}</td></tr>"#,
            n.id,
            esc(&n.name),
            esc(&site),
            esc(&crate::console::i18n::word(l, "tier", &n.tier)),
            state_badge(l, n.state),
            esc(&devs.join(", ")),
            mib(n.devices.iter().map(|d| d.memory_mib).sum()),
            z.fmt(n.last_seen_wall)
        );
    }
    if shown.is_empty() {
        o += &format!(
            r#"<tr><td colspan="7" class="muted">{}</td></tr>"#,
            t(l, "none")
        );
    }
    o += "</tbody></table>";
    o += &format!(r#"<p class="muted">{}</p>"#, t(l, "approve_hint"));
    render(&s, z, uri.path(), Page::new(t(l, "nodes"), "nodes", o))
}
