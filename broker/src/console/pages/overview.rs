//! Overview: sites and nodes with health, capacity and use per vendor,
//! seats live now, lessons today, staging in progress, and alerts.

use std::collections::BTreeMap;

use axum::{extract::State, http::Uri, response::Response};
use chrono::Utc;

use super::super::{
    html::{Page, Th, esc, lesson_badge, mib, render, state_badge, table_open},
    i18n::t,
    session::Session,
    zone,
};
use crate::{domain::ServiceError, state::App};

pub async fn page(State(app): State<App>, s: Session, uri: Uri) -> Response {
    match build(&app, &s).await {
        Ok(body) => render(
            &s,
            zone(),
            uri.path(),
            Page::new(t(s.lang, "overview"), "overview", body),
        ),
        Err(e) => super::super::html::error(&s, zone(), uri.path(), &e),
    }
}

async fn build(app: &App, s: &Session) -> Result<String, ServiceError> {
    let l = s.lang;
    let z = zone();
    let scoped = app.scoped(&s.caller);
    let now = Utc::now();
    let day0 = z.midnight(z.today(now));
    let day1 = day0 + chrono::Duration::days(1);
    let sites = scoped.sites();
    let nodes = scoped.nodes(None)?;
    let lessons = scoped
        .list_lessons(None, Some(day0), Some(day1), 500, 0)
        .await?;
    let filter = scoped.site_filter();
    let counts = app
        .store
        .seat_counts(filter.as_deref(), day0)
        .await
        .map_err(|e| ServiceError::Internal(e.into()))?;
    let staging = lessons.iter().filter(|l| l.state == "staging").count();
    let connected = nodes.iter().filter(|n| n.is_connected()).count();

    let mut o = format!(
        r#"<section class="cards" aria-label="{o}">
<div class="card"><div>{sl}</div><div class="v" id="seats-live">{}</div></div>
<div class="card"><div>{lt}</div><div class="v" id="lessons-today">{}</div></div>
<div class="card"><div>{st}</div><div class="v" id="staging-now">{staging}</div></div>
<div class="card"><div>{nd}</div><div class="v">{connected}/{}</div></div></section>"#,
        counts.running,
        lessons.len(),
        nodes.len(),
        o = t(l, "overview"),
        sl = t(l, "seats_live"),
        lt = t(l, "lessons_today"),
        st = t(l, "staging_now"),
        nd = t(l, "nodes"),
    );
    // District admins see the region's broker replicas and which one leads
    // (decision 078): the first question when the bell is late.
    if let Ok(r) = scoped.replicas().await {
        let list: Vec<String> = r
            .replicas
            .iter()
            .map(|x| {
                let role = if r.role(x) == "leader" {
                    t(l, "replica_leader")
                } else {
                    t(l, "replica_standby")
                };
                format!("{} ({role})", esc(&x.name))
            })
            .collect();
        o += &format!(
            r#"<p class="replicas" id="replicas">{}: {} · {} {} · {}</p>"#,
            t(l, "replicas"),
            list.join(", "),
            t(l, "leader_epoch"),
            r.lease.epoch,
            r.lease.since.map(|since| z.fmt(since)).unwrap_or_default(),
        );
    }

    // Alerts first: they are what an admin acts on.
    let mut alerts = Vec::new();
    for n in nodes.iter().filter(|n| !n.approved) {
        alerts.push(format!(
            r#"{}: <a href="/console/nodes/{}">{}</a>"#,
            t(l, "alert_awaiting_approval"),
            n.id,
            esc(&n.name),
        ));
    }
    for n in nodes.iter().filter(|n| !n.is_connected()) {
        alerts.push(format!(
            r#"{}: <a href="/console/nodes/{}">{}</a> ({}, {} {})"#,
            t(l, "alert_disconnected"),
            n.id,
            esc(&n.name),
            t(l, n.state),
            t(l, "last_seen"),
            z.fmt(n.last_seen_wall)
        ));
    }
    for (lesson, seat, node, msg) in app
        .store
        .failed_seats(filter.as_deref())
        .await
        .map_err(|e| ServiceError::Internal(e.into()))?
    {
        alerts.push(format!(
            r#"{}: <a href="/console/lessons/{lesson}">{} #{seat}</a> {} {}"#,
            t(l, "alert_failed_seat"),
            t(l, "lesson"),
            esc(node.as_deref().unwrap_or("")),
            esc(&msg)
        ));
    }
    if let Ok(v) = scoped.voucher_view().await {
        for a in &v.alerts {
            alerts.push(format!(
                "{}: {}",
                t(l, "alert_voucher"),
                super::voucher_alerts::text(l, z, &v, a)
            ));
        }
    }
    o += &format!(r#"<h2 id="alerts">{}</h2>"#, t(l, "alerts"));
    if alerts.is_empty() {
        o += &format!(r#"<p class="muted">{}</p>"#, t(l, "no_alerts"));
    } else {
        o += &format!(
            r#"<ul class="alerts" role="list">{}</ul>"#,
            alerts
                .iter()
                .map(|a| format!("<li>{a}</li>"))
                .collect::<String>()
        );
    }

    // A district admin would rather look than read: seats over today.
    o += &format!(
        r#"<h2>{}</h2><figure id="seats-today-chart">{}</figure>"#,
        t(l, "seats_today_chart"),
        super::overview_charts::seats_today(l, z, &lessons, day0, now, counts.running)
    );

    o += r#"<div class="grid2"><section>"#;
    o += &(format!("<h2>{}</h2>", t(l, "sites"))
        + &table_open(
            None,
            &[
                Th::Text(t(l, "site")),
                Th::Text(t(l, "kind")),
                Th::Text(t(l, "district")),
                Th::Num(t(l, "nodes")),
                Th::Text(t(l, "health")),
            ],
        ));
    for site in &sites {
        let of_site: Vec<_> = nodes.iter().filter(|n| n.site_id == site.id).collect();
        let up = of_site.iter().filter(|n| n.is_connected()).count();
        let health = if of_site.is_empty() {
            "—".to_string()
        } else if up == of_site.len() {
            state_badge(l, "connected")
        } else {
            state_badge(l, "disconnected")
        };
        o += &format!(
            r#"<tr><td><a href="/console/nodes?site={n}">{n}</a></td><td>{}</td><td>{}</td><td class="num">{up}/{}</td><td>{health}</td></tr>"#,
            esc(&crate::console::i18n::word(l, "site_kind", &site.kind)),
            esc(&site.district),
            of_site.len(),
            n = esc(&site.name)
        );
    }
    o += "</tbody></table></section><section>";

    // Capacity per vendor: what the devices have, what live reservations
    // hold now, and what the agents last measured.
    let held = app
        .store
        .held_now()
        .await
        .map_err(|e| ServiceError::Internal(e.into()))?;
    #[derive(Default)]
    struct V {
        devices: usize,
        mem: i64,
        held: i64,
        used: i64,
        util: i64,
    }
    let mut by: BTreeMap<String, V> = BTreeMap::new();
    for n in &nodes {
        for d in &n.devices {
            let v = by.entry(d.vendor.clone()).or_default();
            v.devices += 1;
            v.mem += d.memory_mib;
            v.used += d.memory_used_mib;
            v.util += d.utilization_percent as i64;
            v.held += held
                .iter()
                .filter(|h| h.node_id == n.id && h.device_idx == d.idx)
                .map(|h| h.gpu_memory_mib)
                .sum::<i64>();
        }
    }
    let cpu_total: i64 = nodes.iter().map(|n| n.cpu_millis as i64).sum();
    o += &(format!("<h2>{}</h2>", t(l, "capacity_by_vendor"))
        + &table_open(
            None,
            &[
                Th::Text(t(l, "vendor")),
                Th::Num(t(l, "devices")),
                Th::Num(t(l, "memory")),
                Th::Num(t(l, "reserved")),
                Th::Num(t(l, "used")),
                Th::Num("%"),
            ],
        ));
    for (vendor, v) in &by {
        o += &format!(
            r#"<tr><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            esc(vendor),
            v.devices,
            mib(v.mem),
            mib(v.held),
            mib(v.used),
            v.util / v.devices.max(1) as i64
        );
    }
    if by.is_empty() {
        o += &format!(
            r#"<tr><td colspan="6" class="muted">{}</td></tr>"#,
            t(l, "none")
        );
    }
    o += "</tbody></table>";
    if !by.is_empty() {
        let rows: Vec<_> = by
            .iter()
            .map(|(vendor, v)| (vendor.clone(), v.devices, v.mem, v.held))
            .collect();
        o += &format!(
            r#"<figure id="capacity-chart">{}</figure>"#,
            super::overview_charts::capacity(l, &rows)
        );
    }
    // CPU is counted in cores, not memory: a line of its own, so a
    // CPU-only fleet does not show cores under the Memory column.
    o += &format!(
        r#"<p id="cpu-capacity">{}: <strong>{:.1}</strong> {} · {}: {}</p>"#,
        t(l, "cpu_cores"),
        cpu_total as f64 / 1000.0,
        t(l, "cores"),
        t(l, "nodes"),
        nodes.len()
    );
    o += "</section></div>";

    o += &(format!("<h2>{}</h2>", t(l, "lessons_today"))
        + &table_open(
            None,
            &[
                Th::Text(t(l, "lesson")),
                Th::Text(t(l, "school")),
                Th::Text(t(l, "start")),
                Th::Text(t(l, "state")),
                Th::Num(t(l, "seats")),
            ],
        ));
    let ids: Vec<uuid::Uuid> = lessons.iter().map(|x| x.id).collect();
    let rollups = scoped.seat_rollups(&ids).await?;
    for ls in &lessons {
        let (failed, _) = rollups.get(&ls.id).copied().unwrap_or_default();
        o += &format!(
            r#"<tr><td>{}</td><td>{}</td><td>{}–{}</td><td>{}</td><td class="num">{}</td></tr>"#,
            super::lesson_link(ls),
            esc(&ls.school_site),
            z.hm(ls.start_at),
            z.hm(ls.end_at()),
            lesson_badge(l, &ls.state, failed, ls.seat_count as i64),
            ls.seat_count
        );
    }
    if lessons.is_empty() {
        o += &format!(
            r#"<tr><td colspan="5" class="muted">{}</td></tr>"#,
            t(l, "no_lessons")
        );
    }
    o += "</tbody></table>";
    Ok(o)
}
