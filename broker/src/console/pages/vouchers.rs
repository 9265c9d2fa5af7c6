//! Vouchers and usage: balances per school with alerts, the latest ledger
//! rows, and usage per month drawn from the voucher service's report.

use axum::{extract::State, http::Uri, response::Response};

use super::super::{
    html::{Page, Th, error, esc, render, table_open},
    i18n::t,
    session::Session,
    svg, zone,
};
use crate::{
    domain::ServiceError, service::vouchers::RawLedgerQuery, state::App,
    store::vouchers::LedgerRow, vouchers::hours_f64,
};

pub async fn page(State(app): State<App>, s: Session, uri: Uri) -> Response {
    match build(&app, &s).await {
        Ok(body) => render(
            &s,
            zone(),
            uri.path(),
            Page::new(t(s.lang, "vouchers"), "vouchers", body),
        ),
        Err(e) => error(&s, zone(), uri.path(), &e),
    }
}

async fn build(app: &App, s: &Session) -> Result<String, ServiceError> {
    let l = s.lang;
    let z = zone();
    let scoped = app.scoped(&s.caller);
    let view = scoped.voucher_view().await?;
    let mut o = String::new();
    if !view.alerts.is_empty() {
        o += &format!(
            r#"<div class="notice error" role="status"><strong>{}</strong><ul>{}</ul></div>"#,
            t(l, "alerts"),
            view.alerts
                .iter()
                .map(|a| format!("<li>{}</li>", super::voucher_alerts::text(l, z, &view, a)))
                .collect::<String>()
        );
    }
    o += &(format!("<h2>{}</h2>", t(l, "balances"))
        + &table_open(
            Some("balances"),
            &[
                Th::Text(t(l, "school")),
                Th::Num(t(l, "issued")),
                Th::Num(t(l, "held")),
                Th::Num(t(l, "charged")),
                Th::Num(t(l, "expired")),
                Th::Num(t(l, "balance")),
                Th::Num(t(l, "vouchers")),
            ],
        ));
    for b in &view.schools {
        o += &format!(
            r#"<tr><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num"><strong>{}</strong></td><td class="num">{}</td></tr>"#,
            esc(&b.school.name),
            super::voucher_alerts::hours(b.issued_uah),
            super::voucher_alerts::hours(b.held_uah),
            super::voucher_alerts::hours(b.charged_uah),
            super::voucher_alerts::hours(b.expired_uah),
            super::voucher_alerts::hours(b.balance_uah),
            b.vouchers.len()
        );
    }
    if view.schools.is_empty() {
        o += &format!(
            r#"<tr><td colspan="7" class="muted">{}</td></tr>"#,
            t(l, "no_vouchers")
        );
    }
    o += &format!(
        "</tbody></table><p class=muted>{}: {}</p>",
        t(l, "hours"),
        t(l, "balance")
    );

    // Usage per month, per school the caller sees, from the report.
    let schools: Vec<String> = if s.caller.is_district_admin() {
        vec![String::new()]
    } else {
        view.schools.iter().map(|b| b.school.name.clone()).collect()
    };
    let mut months: std::collections::BTreeMap<String, f64> = Default::default();
    let mut ledger: Vec<LedgerRow> = Vec::new();
    for school in &schools {
        let (_, rows) = app.usage_report("month", school, None, None).await?;
        for r in rows {
            *months.entry(r.label.clone()).or_default() += hours_f64(r.charged_uah);
        }
        ledger.extend(
            app.voucher_ledger(RawLedgerQuery {
                school_site: school.clone(),
                page_size: 1000,
                ..Default::default()
            })
            .await?,
        );
    }
    o += &format!("<h2>{}</h2>", t(l, "usage_by_month"));
    if months.is_empty() {
        o += &format!(r#"<p class="muted">{}</p>"#, t(l, "none"));
    } else {
        let rows: Vec<(String, f64)> = months.into_iter().collect();
        o += &svg::bars(t(l, "usage_by_month"), &rows, t(l, "hours"));
    }
    ledger.sort_by_key(|r| std::cmp::Reverse(r.id));
    ledger.truncate(50);
    o += &(format!("<h2>{}</h2>", t(l, "ledger"))
        + &table_open(
            None,
            &[
                Th::Text(t(l, "at")),
                Th::Text(t(l, "school")),
                Th::Text(t(l, "kind")),
                Th::Num(t(l, "amount")),
                Th::Text(t(l, "lesson")),
                Th::Text(t(l, "note")),
            ],
        ));
    for r in &ledger {
        o += &format!(
            r#"<tr><td>{}</td><td>{}</td><td>{}</td><td class="num">{}</td><td>{}</td><td>{}</td></tr>"#,
            z.fmt(r.at),
            esc(&r.school_site),
            esc(&crate::console::i18n::word(l, "ledger", &r.kind)),
            super::voucher_alerts::hours(r.amount_uah),
            r.lesson_id
                .map(|id| format!(
                    r#"<a href="/console/lessons/{id}">{}</a>"#,
                    &id.to_string()[..8]
                ))
                .unwrap_or_default(),
            esc(&r.note)
        );
    }
    if ledger.is_empty() {
        o += &format!(
            r#"<tr><td colspan="6" class="muted">{}</td></tr>"#,
            t(l, "none")
        );
    }
    o += "</tbody></table>";
    Ok(o)
}
