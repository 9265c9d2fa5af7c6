//! `classgrid vouchers …` and `classgrid usage`: compute vouchers, balances
//! with alerts, the ledger, seat quotas and usage reports (CSV for
//! spreadsheets).

use chrono::{DateTime, Utc};
use clap::Subcommand;
use classgrid_proto::v1::{self as pb, voucher_service_client::VoucherServiceClient};
use serde_json::{Value, json};

use crate::{
    client::{Global, Output, input},
    commands::parse_time,
};

#[derive(Subcommand)]
pub enum Vouchers {
    /// Issue accelerator-hours to a school (district admins).
    Issue {
        #[arg(long)]
        school: String,
        /// Accelerator-hours (a T4 for one hour is 1.0).
        #[arg(long)]
        hours: f64,
        /// The programme that funded it.
        #[arg(long)]
        programme: String,
        /// Last moment it may be used: RFC 3339 or +DURATION.
        #[arg(long)]
        until: String,
        /// First moment it may be used; default now.
        #[arg(long)]
        from: Option<String>,
        /// Only nodes of this tier pay from it: edge or cloud (repeatable).
        #[arg(long = "tier")]
        tiers: Vec<String>,
        /// Only nodes at this site pay from it (repeatable).
        #[arg(long = "site")]
        sites: Vec<String>,
        #[arg(long, default_value = "")]
        issued_by: String,
        /// Makes a retried issue return the same voucher.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Vouchers with their balances.
    List {
        #[arg(long, default_value = "")]
        school: String,
        /// Include vouchers past their date.
        #[arg(long)]
        all: bool,
    },
    /// Balances per school, and low-balance / expiring-soon alerts.
    Balance {
        #[arg(long, default_value = "")]
        school: String,
    },
    /// The append-only ledger: issue, hold, charge, release and expiry rows.
    Ledger {
        #[arg(long, default_value = "")]
        school: String,
        #[arg(long, default_value = "")]
        voucher: String,
        #[arg(long, default_value = "")]
        lesson: String,
        #[arg(long, default_value = "")]
        job: String,
        /// issue, hold, charge, release or expiry (repeatable).
        #[arg(long = "kind")]
        kinds: Vec<String>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i32,
        /// Rows after this ledger id (paging).
        #[arg(long, default_value_t = 0)]
        after: i64,
    },
    /// Set a school's quota of concurrent seats; 0 removes it.
    Quota {
        #[arg(long)]
        school: String,
        #[arg(long)]
        max_seats: i32,
    },
}

#[derive(clap::Args)]
pub struct UsageArgs {
    /// Group by school, voucher, month or node-class.
    #[arg(long, default_value = "school")]
    by: String,
    #[arg(long, default_value = "")]
    school: String,
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    to: Option<String>,
    /// Print CSV (header and one line per group) instead of a table.
    #[arg(long)]
    csv: bool,
}

fn time(t: Option<&prost_types::Timestamp>) -> String {
    crate::tz::show(t)
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn opt_time(flag: &str, s: &Option<String>) -> anyhow::Result<Option<prost_types::Timestamp>> {
    s.as_deref()
        .map(|s| parse_time(flag, s).map(ts))
        .transpose()
}

fn print_json(v: Value) {
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
}

/// Aligned columns, as everywhere in the CLI.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn h(x: f64) -> String {
    format!("{x:.3}")
}

fn voucher_json(v: &pb::Voucher) -> Value {
    json!({
        "id": v.id, "school_site": v.school_site, "programme": v.programme, "issued_by": v.issued_by,
        "valid_from": time(v.valid_from.as_ref()), "valid_until": time(v.valid_until.as_ref()),
        "tiers": v.tiers, "site_ids": v.site_ids, "issued_hours": v.issued_hours,
        "held_hours": v.held_hours, "charged_hours": v.charged_hours, "expired_hours": v.expired_hours,
        "balance_hours": v.balance_hours, "balance_micro_hours": v.balance_micro_hours, "expired": v.expired,
    })
}

fn vouchers_out(o: Output, vs: &[pb::Voucher]) {
    match o {
        Output::Json => print_json(Value::Array(vs.iter().map(voucher_json).collect())),
        Output::Table => table(
            &[
                "ID",
                "SCHOOL",
                "PROGRAMME",
                "ISSUED",
                "HELD",
                "CHARGED",
                "BALANCE",
                "UNTIL",
                "LIMIT",
            ],
            vs.iter()
                .map(|v| {
                    let mut limit: Vec<String> = v.tiers.clone();
                    if !v.site_ids.is_empty() {
                        limit.push(format!("{} site(s)", v.site_ids.len()));
                    }
                    vec![
                        v.id.clone(),
                        v.school_site.clone(),
                        v.programme.clone(),
                        h(v.issued_hours),
                        h(v.held_hours),
                        h(v.charged_hours),
                        if v.expired {
                            "expired".into()
                        } else {
                            h(v.balance_hours)
                        },
                        time(v.valid_until.as_ref()),
                        if limit.is_empty() {
                            "any".into()
                        } else {
                            limit.join(",")
                        },
                    ]
                })
                .collect(),
        ),
    }
}

pub async fn vouchers(g: &Global, c: Vouchers) -> anyhow::Result<()> {
    let mut client = VoucherServiceClient::new(g.channel().await?);
    match c {
        Vouchers::Issue {
            school,
            hours,
            programme,
            until,
            from,
            tiers,
            sites,
            issued_by,
            request_id,
        } => {
            let v = client
                .issue(pb::IssueVoucherRequest {
                    request_id,
                    school_site: school,
                    programme,
                    issued_by,
                    accelerator_hours: hours,
                    valid_from: opt_time("--from", &from)?,
                    valid_until: Some(ts(parse_time("--until", &until)?)),
                    tiers,
                    sites,
                })
                .await?
                .into_inner();
            vouchers_out(g.output, std::slice::from_ref(&v));
        }
        Vouchers::List { school, all } => {
            let r = client
                .list(pb::ListVouchersRequest {
                    school_site: school,
                    include_expired: all,
                })
                .await?
                .into_inner();
            vouchers_out(g.output, &r.vouchers);
        }
        Vouchers::Balance { school } => {
            let r = client
                .balance(pb::BalanceRequest {
                    school_site: school,
                })
                .await?
                .into_inner();
            balance_out(g.output, &r);
        }
        Vouchers::Ledger {
            school,
            voucher,
            lesson,
            job,
            kinds,
            from,
            to,
            limit,
            after,
        } => {
            let r = client
                .ledger(pb::LedgerRequest {
                    school_site: school,
                    voucher_id: voucher,
                    lesson_id: lesson,
                    job_id: job,
                    kinds,
                    from: opt_time("--from", &from)?,
                    to: opt_time("--to", &to)?,
                    after_id: after,
                    page_size: limit,
                })
                .await?
                .into_inner();
            ledger_out(g.output, &r);
        }
        Vouchers::Quota { school, max_seats } => {
            let q = client
                .set_quota(pb::SetQuotaRequest {
                    school_site: school,
                    max_concurrent_seats: max_seats,
                })
                .await?
                .into_inner();
            match g.output {
                Output::Json => print_json(
                    json!({"school_site": q.school_site, "max_concurrent_seats": q.max_concurrent_seats}),
                ),
                Output::Table if q.max_concurrent_seats == 0 => {
                    println!("school {} has no seat quota", q.school_site)
                }
                Output::Table => println!(
                    "school {} may run at most {} seats at once",
                    q.school_site, q.max_concurrent_seats
                ),
            }
        }
    }
    Ok(())
}

fn balance_out(o: Output, r: &pb::BalanceResponse) {
    let alerts: Vec<Value> = r
        .alerts
        .iter()
        .map(|a| json!({"kind": a.kind, "school_site": a.school_site, "voucher_id": a.voucher_id, "message": a.message}))
        .collect();
    match o {
        Output::Json => print_json(json!({
            "schools": r.schools.iter().map(|s| json!({
                "school_site": s.school_site, "issued_hours": s.issued_hours, "held_hours": s.held_hours,
                "charged_hours": s.charged_hours, "expired_hours": s.expired_hours,
                "balance_hours": s.balance_hours, "balance_micro_hours": s.balance_micro_hours,
                "max_concurrent_seats": s.max_concurrent_seats,
                "vouchers": s.vouchers.iter().map(voucher_json).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "alerts": alerts,
        })),
        Output::Table => {
            table(
                &[
                    "SCHOOL",
                    "ISSUED",
                    "HELD",
                    "CHARGED",
                    "EXPIRED",
                    "BALANCE",
                    "VOUCHERS",
                    "SEAT QUOTA",
                ],
                r.schools
                    .iter()
                    .map(|s| {
                        vec![
                            s.school_site.clone(),
                            h(s.issued_hours),
                            h(s.held_hours),
                            h(s.charged_hours),
                            h(s.expired_hours),
                            h(s.balance_hours),
                            s.vouchers.len().to_string(),
                            if s.max_concurrent_seats == 0 {
                                "none".into()
                            } else {
                                s.max_concurrent_seats.to_string()
                            },
                        ]
                    })
                    .collect(),
            );
            for a in &r.alerts {
                println!("alert ({}): {}", a.kind, a.message);
            }
        }
    }
}

fn ledger_out(o: Output, r: &pb::LedgerResponse) {
    match o {
        Output::Json => print_json(json!({
            "entries": r.entries.iter().map(|e| json!({
                "id": e.id, "voucher_id": e.voucher_id, "school_site": e.school_site, "kind": e.kind,
                "accelerator_hours": e.accelerator_hours, "micro_hours": e.micro_hours,
                "lesson_id": e.lesson_id, "job_id": e.job_id, "hold_id": e.hold_id,
                "node_class": e.node_class, "metered_slice_seconds": e.metered_slice_seconds,
                "at": time(e.at.as_ref()), "note": e.note,
            })).collect::<Vec<_>>(),
            "next_after_id": r.next_after_id,
        })),
        Output::Table => {
            table(
                &[
                    "ID", "AT", "SCHOOL", "KIND", "HOURS", "FOR", "VOUCHER", "NOTE",
                ],
                r.entries
                    .iter()
                    .map(|e| {
                        let owner = if !e.lesson_id.is_empty() {
                            format!("lesson {}", e.lesson_id)
                        } else if !e.job_id.is_empty() {
                            format!("job {}", e.job_id)
                        } else {
                            String::new()
                        };
                        vec![
                            e.id.to_string(),
                            time(e.at.as_ref()),
                            e.school_site.clone(),
                            e.kind.clone(),
                            format!("{:+.6}", e.accelerator_hours),
                            owner,
                            e.voucher_id.clone(),
                            e.note.clone(),
                        ]
                    })
                    .collect(),
            );
            if r.next_after_id > 0 {
                println!("more: --after {}", r.next_after_id);
            }
        }
    }
}

pub async fn usage(g: &Global, a: UsageArgs) -> anyhow::Result<()> {
    if a.csv && g.output == Output::Json {
        return Err(input("--csv and --output json: choose one"));
    }
    let mut client = VoucherServiceClient::new(g.channel().await?);
    let r = client
        .usage_report(pb::UsageReportRequest {
            by: a.by,
            school_site: a.school,
            from: opt_time("--from", &a.from)?,
            to: opt_time("--to", &a.to)?,
        })
        .await?
        .into_inner();
    if a.csv {
        print!("{}", r.csv);
        return Ok(());
    }
    match g.output {
        Output::Json => print_json(json!({
            "by": r.by,
            "rows": r.rows.iter().map(|u| json!({
                "key": u.key, "label": u.label, "charged_hours": u.charged_hours,
                "charged_micro_hours": u.charged_micro_hours,
                "metered_slice_seconds": u.metered_slice_seconds, "lessons": u.lessons, "jobs": u.jobs,
            })).collect::<Vec<_>>(),
            "total_charged_hours": r.total_charged_hours,
            "total_charged_micro_hours": r.total_charged_micro_hours,
        })),
        Output::Table => {
            table(
                &[
                    &r.by.to_uppercase(),
                    "LABEL",
                    "CHARGED HOURS",
                    "SLICE-SECONDS",
                    "LESSONS",
                    "JOBS",
                ],
                r.rows
                    .iter()
                    .map(|u| {
                        vec![
                            u.key.clone(),
                            u.label.clone(),
                            format!("{:.6}", u.charged_hours),
                            format!("{:.0}", u.metered_slice_seconds),
                            u.lessons.to_string(),
                            u.jobs.to_string(),
                        ]
                    })
                    .collect(),
            );
            println!("total: {:.6} accelerator-hours", r.total_charged_hours);
        }
    }
    Ok(())
}
