//! Regions: this region's peerings (issue 21): each peer's state, or since
//! when it has been unreachable, the inter-region RTT with its source, what
//! this region lends it, and the lessons lent and borrowed. District admins
//! only; peerings are made with `classgrid peers offer|accept`.

use axum::{extract::State, http::Uri, response::Response};

use super::super::{
    html::{Page, Th, error, esc, render, state_badge, table_open},
    i18n::t,
    session::Session,
    zone,
};
use crate::{federation::policy::LendingTerms, state::App};

pub async fn page(State(app): State<App>, s: Session, uri: Uri) -> Response {
    let l = s.lang;
    let z = zone();
    let rows = match app.list_peerings(&s.caller).await {
        Ok(r) => r,
        Err(e) => return error(&s, z, uri.path(), &e),
    };
    let mut o = table_open(
        Some("regions-table"),
        &[
            Th::Text(t(l, "peer_region")),
            Th::Text(t(l, "state")),
            Th::Text(t(l, "inter_region_rtt")),
            Th::Text(t(l, "lends")),
            Th::Text(t(l, "lent_borrowed")),
            Th::Text(t(l, "message")),
        ],
    );
    for (p, (lent, borrowed)) in &rows {
        let terms = LendingTerms::from_json(&p.lending.0);
        let state = match p.disconnected_since {
            Some(since) => format!(
                "{} {} {}",
                state_badge(l, "disconnected"),
                t(l, "unreachable_since"),
                z.fmt(since)
            ),
            None => state_badge(l, &p.state),
        };
        let rtt = match (p.rtt_ms, p.rtt_source.as_deref()) {
            // The source as recorded (measured, configured), like the
            // RTTs on the node pages.
            (Some(ms), Some(src)) => format!("{ms:.1} ms (<code>{}</code>)", esc(src)),
            _ => String::new(),
        };
        let any = |v: &[String]| {
            if v.is_empty() {
                "*".to_string()
            } else {
                v.join(", ")
            }
        };
        o += &format!(
            r#"<tr><td><strong>{}</strong><br><code>{}</code></td><td>{}</td><td>{}</td><td>{} {} · {} · {} · {}</td><td>{} / {}</td><td>{}</td></tr>"#,
            esc(&p.name),
            esc(&p.url),
            state,
            rtt,
            terms.max_slices,
            t(l, "slices"),
            esc(&any(&terms.tiers)),
            esc(&any(&terms.vendors)),
            esc(&if terms.hours.is_some() {
                format!("{} UTC", terms.hours_text())
            } else {
                "00:00-24:00".into()
            }),
            lent,
            borrowed,
            esc(&p.message)
        );
    }
    if rows.is_empty() {
        o += &format!(
            r#"<tr><td colspan="6" class="muted">{}</td></tr>"#,
            t(l, "no_peers")
        );
    }
    o += "</tbody></table>";
    render(&s, z, uri.path(), Page::new(t(l, "regions"), "regions", o))
}
