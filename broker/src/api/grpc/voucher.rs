//! `VoucherService`: decode → scoped service → encode. Issuing and quotas
//! are for district admins; reads cover the caller's schools.

use classgrid_proto::v1::{self as pb, voucher_service_server::VoucherService};
use tonic::{Request, Response, Status};

use super::{convert, status};
use crate::{
    auth::gate::caller,
    service::vouchers::{RawLedgerQuery, RawVoucher, SchoolBalance},
    state::App,
    store::vouchers::{LedgerRow, VoucherRow},
    vouchers::{hours_f64, report},
};

pub struct Vouchers(pub App);

fn voucher(v: &VoucherRow) -> pb::Voucher {
    pb::Voucher {
        id: v.id.to_string(),
        school_site: v.school_site.clone(),
        programme: v.programme.clone(),
        issued_by: v.issued_by.clone(),
        valid_from: Some(convert::ts(v.valid_from)),
        valid_until: Some(convert::ts(v.valid_until)),
        tiers: v.tiers.clone(),
        site_ids: v.site_ids.iter().map(|s| s.to_string()).collect(),
        created: Some(convert::ts(v.created_at)),
        issued_hours: hours_f64(v.issued_uah),
        held_hours: hours_f64(v.held_uah),
        charged_hours: hours_f64(v.charged_uah),
        expired_hours: hours_f64(v.expired_uah),
        balance_hours: hours_f64(v.balance_uah),
        balance_micro_hours: v.balance_uah,
        expired: v.expired,
    }
}

fn school(s: &SchoolBalance) -> pb::SchoolBalance {
    pb::SchoolBalance {
        school_site: s.school.name.clone(),
        issued_hours: hours_f64(s.issued_uah),
        held_hours: hours_f64(s.held_uah),
        charged_hours: hours_f64(s.charged_uah),
        expired_hours: hours_f64(s.expired_uah),
        balance_hours: hours_f64(s.balance_uah),
        balance_micro_hours: s.balance_uah,
        max_concurrent_seats: s.max_concurrent_seats.unwrap_or(0),
        vouchers: s.vouchers.iter().map(voucher).collect(),
    }
}

fn entry(e: &LedgerRow) -> pb::LedgerEntry {
    let id = |o: Option<uuid::Uuid>| o.map(|u| u.to_string()).unwrap_or_default();
    pb::LedgerEntry {
        id: e.id,
        voucher_id: e.voucher_id.to_string(),
        school_site: e.school_site.clone(),
        kind: e.kind.clone(),
        accelerator_hours: hours_f64(e.amount_uah),
        micro_hours: e.amount_uah,
        lesson_id: id(e.lesson_id),
        job_id: id(e.job_id),
        hold_id: e.hold_id.unwrap_or(0),
        node_class: e.node_class.clone().unwrap_or_default(),
        metered_slice_seconds: e.metered_slice_seconds.unwrap_or(0.0),
        at: Some(convert::ts(e.at)),
        note: e.note.clone(),
    }
}

#[tonic::async_trait]
impl VoucherService for Vouchers {
    async fn issue(
        &self,
        req: Request<pb::IssueVoucherRequest>,
    ) -> Result<Response<pb::Voucher>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let raw = RawVoucher {
            request_id: r.request_id,
            school_site: r.school_site,
            programme: r.programme,
            issued_by: if r.issued_by.trim().is_empty() {
                c.actor.clone()
            } else {
                r.issued_by
            },
            accelerator_hours: r.accelerator_hours,
            valid_from: convert::from_ts("valid_from", r.valid_from.as_ref()).map_err(status)?,
            valid_until: convert::from_ts("valid_until", r.valid_until.as_ref()).map_err(status)?,
            tiers: r.tiers,
            sites: r.sites,
        };
        let v = self.0.scoped(&c).issue_voucher(raw).await.map_err(status)?;
        Ok(Response::new(voucher(&v)))
    }

    async fn list(
        &self,
        req: Request<pb::ListVouchersRequest>,
    ) -> Result<Response<pb::ListVouchersResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let vs = self
            .0
            .scoped(&c)
            .list_vouchers(&r.school_site, r.include_expired)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListVouchersResponse {
            vouchers: vs.iter().map(voucher).collect(),
        }))
    }

    async fn balance(
        &self,
        req: Request<pb::BalanceRequest>,
    ) -> Result<Response<pb::BalanceResponse>, Status> {
        let c = caller(&req)?;
        let b = self
            .0
            .scoped(&c)
            .voucher_balances(&req.get_ref().school_site)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::BalanceResponse {
            schools: b.schools.iter().map(school).collect(),
            alerts: b
                .alerts
                .iter()
                .map(|a| pb::VoucherAlert {
                    kind: a.kind.to_string(),
                    school_site: a.school.clone(),
                    voucher_id: a.voucher_id.to_string(),
                    message: a.message.clone(),
                })
                .collect(),
        }))
    }

    async fn ledger(
        &self,
        req: Request<pb::LedgerRequest>,
    ) -> Result<Response<pb::LedgerResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let page_size = i64::from(r.page_size);
        let q = RawLedgerQuery {
            school_site: r.school_site,
            voucher_id: r.voucher_id,
            lesson_id: r.lesson_id,
            job_id: r.job_id,
            kinds: r.kinds,
            from: convert::from_ts("from", r.from.as_ref()).map_err(status)?,
            to: convert::from_ts("to", r.to.as_ref()).map_err(status)?,
            after_id: r.after_id,
            page_size,
        };
        let rows = self.0.scoped(&c).voucher_ledger(q).await.map_err(status)?;
        let full = rows.len() as i64 == if page_size == 0 { 100 } else { page_size };
        Ok(Response::new(pb::LedgerResponse {
            next_after_id: if full {
                rows.last().map(|e| e.id).unwrap_or(0)
            } else {
                0
            },
            entries: rows.iter().map(entry).collect(),
        }))
    }

    async fn usage_report(
        &self,
        req: Request<pb::UsageReportRequest>,
    ) -> Result<Response<pb::UsageReportResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let from = convert::from_ts("from", r.from.as_ref()).map_err(status)?;
        let to = convert::from_ts("to", r.to.as_ref()).map_err(status)?;
        let (by, rows) = self
            .0
            .scoped(&c)
            .usage_report(&r.by, &r.school_site, from, to)
            .await
            .map_err(status)?;
        let total: i64 = rows.iter().map(|u| u.charged_uah).sum();
        Ok(Response::new(pb::UsageReportResponse {
            by: by.name().to_string(),
            csv: report::csv(by, &rows),
            rows: rows
                .iter()
                .map(|u| pb::UsageRow {
                    key: u.key.clone(),
                    label: u.label.clone(),
                    charged_hours: hours_f64(u.charged_uah),
                    charged_micro_hours: u.charged_uah,
                    metered_slice_seconds: u.metered_slice_seconds,
                    lessons: u.lessons,
                    jobs: u.jobs,
                })
                .collect(),
            total_charged_hours: hours_f64(total),
            total_charged_micro_hours: total,
        }))
    }

    async fn set_quota(
        &self,
        req: Request<pb::SetQuotaRequest>,
    ) -> Result<Response<pb::Quota>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let max = self
            .0
            .scoped(&c)
            .set_quota(&r.school_site, i64::from(r.max_concurrent_seats))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Quota {
            school_site: r.school_site,
            max_concurrent_seats: max.unwrap_or(0),
        }))
    }
}
