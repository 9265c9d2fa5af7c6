//! Node detail (devices, slices, assignments, utilisation over time, RTT
//! from each site, discovery warnings) and the approve, cordon, uncordon and
//! drain actions, each through `Scoped`, which audits them.

use std::collections::HashMap;

use axum::{
    Form,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use chrono::Utc;

use super::super::{
    html::{Page, Th, error, esc, mib, render, see_other, state_badge, table_open},
    i18n::{Lang, t},
    session::Session,
    svg, zone,
};
use crate::{domain::ServiceError, state::App};

const PLOT_HOURS: i64 = 6;

pub async fn detail(
    State(app): State<App>,
    s: Session,
    uri: Uri,
    Path(id): Path<String>,
) -> Response {
    match build(&app, &s, &id).await {
        Ok((title, body)) => render(&s, zone(), uri.path(), Page::new(title, "nodes", body)),
        Err(e) => error(&s, zone(), uri.path(), &e),
    }
}

fn internal(e: sqlx::Error) -> ServiceError {
    ServiceError::Internal(e.into())
}

async fn build(app: &App, s: &Session, id: &str) -> Result<(String, String), ServiceError> {
    let l = s.lang;
    let z = zone();
    let scoped = app.scoped(&s.caller);
    let n = scoped.node(id)?;
    let site = app
        .fleet
        .site_by_id(n.site_id)
        .map(|s| s.name)
        .unwrap_or_default();
    let held = app.store.held_now().await.map_err(internal)?;
    let mut o = format!(
        r#"<p>{}: <strong>{}</strong> · {}: {} · {}: {} {}{} · {}: {} · {}: {}</p>"#,
        t(l, "site"),
        esc(&site),
        t(l, "tier"),
        esc(&crate::console::i18n::word(l, "tier", &n.tier)),
        t(l, "state"),
        state_badge(l, n.state),
        if n.approved {
            String::new()
        } else {
            format!(
                r#"<span class="badge s-awaiting_approval" id="approval-state">{}</span> "#,
                t(l, "awaiting_approval")
            )
        },
        if n.cordoned {
            format!(
                r#"<span class="badge s-cordoned" id="cordon-state">{}</span>"#,
                t(l, "cordoned")
            )
        } else {
            String::new()
        },
        t(l, "runtimes"),
        esc(&n
            .runtimes
            .iter()
            .map(|r| crate::console::i18n::word(l, "runtime", r))
            .collect::<Vec<_>>()
            .join(", ")),
        t(l, "last_seen"),
        z.fmt(n.last_seen_wall)
    );
    if let Some(edge) = n.relay.as_ref().filter(|_| n.is_connected()) {
        o += &format!(
            r#"<p id="relay">{}: <strong>{}</strong></p>"#,
            t(l, "relayed_by"),
            esc(edge)
        );
    }
    if s.caller.is_district_admin() {
        let form = |action: &str, label: &str, class: &str| {
            format!(
                r#"<form class="inline" method="post" action="/console/nodes/{}/{action}"><input type="hidden" name="_csrf" value="{}"><button type="submit" class="{class}">{label}</button></form> "#,
                n.id,
                esc(&s.csrf)
            )
        };
        o += &format!(r#"<div role="group" aria-label="{}">"#, t(l, "actions"));
        if !n.approved {
            o += &form("approve", t(l, "approve"), "");
        }
        o += &if n.cordoned {
            form("uncordon", t(l, "uncordon"), "")
        } else {
            form("cordon", t(l, "cordon"), "danger")
        };
        o += &form("drain", t(l, "drain"), "danger");
        o += "</div>";
    }

    o += &(format!("<h2>{}</h2>", t(l, "devices"))
        + &table_open(
            None,
            &[
                Th::Text("#"),
                Th::Text(t(l, "vendor")),
                Th::Text(t(l, "model")),
                Th::Num(t(l, "memory")),
                Th::Num(t(l, "used")),
                Th::Num("%"),
                Th::Text(t(l, "health")),
                Th::Text(t(l, "isolation")),
                Th::Num(t(l, "slices")),
                Th::Text(t(l, "reserved")),
            ],
        ));
    for d in &n.devices {
        let h: Vec<_> = held
            .iter()
            .filter(|h| h.node_id == n.id && h.device_idx == d.idx)
            .collect();
        let slices: i64 = h.iter().map(|h| h.slices).sum();
        let hm: i64 = h.iter().map(|h| h.gpu_memory_mib).sum();
        let hc: i64 = h.iter().map(|h| h.gpu_compute_pct).sum();
        o += &format!(
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td>{}</td><td><span class="badge">{}</span></td><td class="num">{slices}/{}</td><td class="num">{} · {hc}%</td></tr>"#,
            d.idx,
            esc(&d.vendor),
            esc(&d.model),
            mib(d.memory_mib),
            mib(d.memory_used_mib),
            d.utilization_percent,
            if d.healthy {
                state_badge(l, "ok")
            } else {
                state_badge(l, "failed")
            },
            esc(&crate::console::i18n::word(l, "isolation", &d.isolation)),
            d.max_slices,
            mib(hm)
        );
    }
    if n.devices.is_empty() {
        o += &format!(
            r#"<tr><td colspan="10" class="muted">{}</td></tr>"#,
            t(l, "none")
        );
    }
    o += "</tbody></table>";

    let since = Utc::now() - chrono::Duration::hours(PLOT_HOURS);
    let samples = app
        .store
        .device_samples(n.id, since)
        .await
        .map_err(internal)?;
    o += &format!(r#"<h2>{}</h2>"#, t(l, "utilisation"));
    if samples.is_empty() {
        o += &format!(r#"<p class="muted">{}</p>"#, t(l, "no_samples"));
    } else {
        let series: Vec<svg::Series> = n
            .devices
            .iter()
            .map(|d| svg::Series {
                label: format!("#{} {} {}", d.idx, d.vendor, d.model),
                points: samples
                    .iter()
                    .filter(|x| x.idx == d.idx)
                    .map(|x| (x.at.timestamp() as f64, x.utilization_percent as f64))
                    .collect(),
            })
            .collect();
        let (x0, x1) = (since.timestamp() as f64, Utc::now().timestamp() as f64);
        let fmt = |x: f64| {
            chrono::DateTime::from_timestamp(x as i64, 0)
                .map(|t| z.hm(t))
                .unwrap_or_default()
        };
        o += &svg::lines(t(l, "utilisation"), &series, x0, x1, 100.0, "%", &fmt);
    }

    let assignments = app.store.node_assignments(n.id).await.map_err(internal)?;
    o += &(format!("<h2>{}</h2>", t(l, "assignments"))
        + &table_open(
            None,
            &[
                Th::Text(t(l, "kind")),
                Th::Text(t(l, "state")),
                Th::Text(t(l, "device")),
                Th::Text(t(l, "slices")),
                Th::Text(t(l, "endpoint")),
                Th::Text(t(l, "end")),
            ],
        ));
    for a in &assignments {
        let what = match (a.lesson_id, a.job_id) {
            (Some(lid), _) => format!(
                r#"<a href="/console/lessons/{lid}">{} #{}</a>"#,
                t(l, "seat"),
                a.seat_number.unwrap_or(0)
            ),
            (_, Some(j)) => format!("{} {}", t(l, "jobs"), &j.to_string()[..8]),
            _ => esc(&crate::console::i18n::word(l, "assignment_kind", &a.kind)),
        };
        o += &format!(
            r#"<tr><td>{what}</td><td>{}</td><td>{}</td><td>{} · {}%</td><td><code>{}</code></td><td>{}</td></tr>"#,
            state_badge(l, &a.state),
            esc(&a
                .device_indexes
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")),
            mib(a.gpu_memory_mib),
            a.gpu_compute_pct,
            esc(&a.endpoint),
            z.fmt(a.ends_at)
        );
    }
    if assignments.is_empty() {
        o += &format!(
            r#"<tr><td colspan="6" class="muted">{}</td></tr>"#,
            t(l, "none")
        );
    }
    o += "</tbody></table>";

    let rtts = app.store.rtt_to_node(n.id).await.map_err(internal)?;
    o += &(format!("<h2>{}</h2>", t(l, "rtt_from_sites"))
        + &table_open(
            None,
            &[
                Th::Text(t(l, "site")),
                Th::Num(t(l, "rtt")),
                Th::Text(t(l, "source")),
                Th::Text(t(l, "measured_at")),
            ],
        ));
    for r in rtts
        .iter()
        .filter(|r| s.caller.is_district_admin() || scoped.site("site", &r.site).is_ok())
    {
        o += &format!(
            r#"<tr><td>{}</td><td class="num">{:.1} ms</td><td>{} ({} {})</td><td>{}</td></tr>"#,
            esc(&r.site),
            r.median_ms,
            crate::console::i18n::word(l, "rtt_source", "measured"),
            r.samples,
            t(l, "samples"),
            z.fmt(r.measured_at)
        );
    }
    if rtts.is_empty() {
        o += &format!(
            r#"<tr><td colspan="4" class="muted">{}</td></tr>"#,
            t(l, "none")
        );
    }
    o += "</tbody></table>";

    o += &warnings_section(l, &n.warnings);
    Ok((format!("{} {}", t(l, "node"), n.name), o))
}

/// The agent's discovery warnings as it sent them when it last registered:
/// how many, what they mean for the device list above, and each one with the
/// tool's own line (when the warning quotes one) set apart as code, so that
/// an admin can find that line in the tool's output on the node.
fn warnings_section(l: Lang, warnings: &[String]) -> String {
    let mut o = format!(r#"<h2 id="warnings">{}"#, t(l, "warnings"));
    if warnings.is_empty() {
        o += &format!(r#"</h2><p class="muted">{}</p>"#, t(l, "none"));
        return o;
    }
    o += &format!(
        r#" ({})</h2><p class="muted">{}</p><ol class="warnings">"#,
        warnings.len(),
        warnings_hint(l)
    );
    // The agent words its warnings in English (they quote vendor tools);
    // `lang` says so, for screen readers and for the words check.
    for w in warnings {
        o += r#"<li lang="en">"#;
        o += &warning_html(w);
        o += "</li>";
    }
    o + "</ol>"
}

/// The section's own sentence, kept beside the code that shows it; i18n.rs
/// holds the words that several pages share.
fn warnings_hint(l: Lang) -> &'static str {
    match l {
        Lang::Zh => {
            "节点代理上次连接时报告的问题：上面的设备列表可能缺少设备或信息。请在该节点上手动运行每条中提到的工具，查看其完整输出。"
        }
        Lang::En => {
            "Problems the node's agent reported when it last connected: the device list above may be missing devices or details. Run the tool named in each line on the node to see its full output."
        }
    }
}

/// One warning. The agent's parsers end a warning about a row with
/// ` (the line reads "…")`, the line as Rust's `{:?}` quotes it; that part is
/// shown as code. Anything else is shown as plain text.
fn warning_html(w: &str) -> String {
    const QUOTE: &str = " (the line reads \"";
    if let Some(at) = w.find(QUOTE)
        && let Some(quoted) = w[at + QUOTE.len()..].strip_suffix("\")")
    {
        return format!("{} <code>{}</code>", esc(&w[..at]), esc(&unquote(quoted)));
    }
    esc(w)
}

/// Undoes the escapes of `{:?}` that a tool line can hold (quotes,
/// backslashes, tabs); other escapes are kept as printed.
fn unquote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('t') => out.push('\t'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_warnings_says_none() {
        let html = warnings_section(Lang::En, &[]);
        assert!(html.contains("Discovery warnings</h2>"), "{html}");
        assert!(html.contains(r#"<p class="muted">"#));
        assert!(!html.contains("<ol"));
    }

    #[test]
    fn warnings_are_counted_escaped_and_show_the_tool_line_as_code() {
        // Strings as the agent sends them (ParseWarning's Display and a
        // runner warning without a line).
        let warnings = vec![
            "npu-smi info, line 9: the output is truncated: it stops on a rule between two chips \
             (the line reads \"+---+<x>\\\"q\\\"\")"
                .to_string(),
            "mx-smi: not found on PATH <script>".to_string(),
        ];
        let html = warnings_section(Lang::En, &warnings);
        assert!(html.contains("Discovery warnings (2)</h2>"), "{html}");
        // Marked as English: the agent's words, quoting a vendor tool.
        assert_eq!(html.matches(r#"<li lang="en">"#).count(), 2);
        assert!(
            html.contains(
                "<li lang=\"en\">npu-smi info, line 9: the output is truncated: it stops on a rule between \
                 two chips <code>+---+&lt;x&gt;&quot;q&quot;</code></li>"
            ),
            "{html}"
        );
        assert!(html.contains("not found on PATH &lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"));
    }

    #[test]
    fn a_warning_that_only_looks_quoted_is_plain_text() {
        assert_eq!(
            warning_html("x (the line reads \"unterminated"),
            esc("x (the line reads \"unterminated")
        );
    }
}

pub async fn act(
    State(app): State<App>,
    s: Session,
    headers: HeaderMap,
    uri: Uri,
    Path((id, action)): Path<(String, String)>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Err(why) = s.check_form(&headers, f.get("_csrf").map(|v| v.as_str()).unwrap_or("")) {
        return (StatusCode::FORBIDDEN, format!("{why}\n")).into_response();
    }
    let scoped = app.scoped(&s.caller);
    let r = match action.as_str() {
        "approve" => scoped.approve_node(&id).await.map(|(n, _)| n),
        "cordon" => scoped.set_cordon(&id, true).await,
        "uncordon" => scoped.set_cordon(&id, false).await,
        "drain" => {
            scoped
                .drain_node(&id, f.get("reason").map(|v| v.as_str()).unwrap_or(""))
                .await
        }
        _ => Err(ServiceError::field(
            "action",
            "must be approve, cordon, uncordon or drain",
        )),
    };
    match r {
        Ok(n) => see_other(&format!("/console/nodes/{}", n.id)),
        Err(e) => error(&s, zone(), uri.path(), &e),
    }
}
