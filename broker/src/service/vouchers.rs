//! Compute vouchers for district admins and schools: issue, list, balances
//! with alerts, the ledger, usage reports and seat quotas. Admission and
//! settlement hooks for the booking path live in the submodules.

pub(crate) mod admission;
pub(crate) mod borrowed;
pub(crate) mod settlement;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    domain::{ServiceError, error::Checks, spec::check_text},
    state::Broker,
    store::{
        sites::SiteRow,
        vouchers::{self as store, LedgerFilter, LedgerRow, NewEntry, NewVoucher, VoucherRow},
    },
    vouchers::{
        MicroHours,
        alerts::{Alert, VoucherState, alerts},
        parse_hours,
        report::{GroupBy, UsageRow},
    },
};

const MAX_VALIDITY_DAYS: i64 = 3660;
const MAX_SITES: usize = 64;
pub const KINDS: &[&str] = &["issue", "hold", "charge", "release", "expiry"];

/// A voucher as a transport delivers it.
#[derive(Debug, Clone, Default)]
pub struct RawVoucher {
    pub request_id: String,
    pub school_site: String,
    pub programme: String,
    pub issued_by: String,
    pub accelerator_hours: f64,
    /// None means now.
    pub valid_from: Option<DateTime<Utc>>,
    pub valid_until: Option<DateTime<Utc>>,
    pub tiers: Vec<String>,
    pub sites: Vec<String>,
}

/// A school's vouchers, their totals and its quota.
#[derive(Debug, Clone)]
pub struct SchoolBalance {
    pub school: SiteRow,
    pub issued_uah: MicroHours,
    pub held_uah: MicroHours,
    pub charged_uah: MicroHours,
    pub expired_uah: MicroHours,
    pub balance_uah: MicroHours,
    pub max_concurrent_seats: Option<i32>,
    pub vouchers: Vec<VoucherRow>,
}

#[derive(Debug, Clone)]
pub struct BalanceView {
    pub schools: Vec<SchoolBalance>,
    pub alerts: Vec<Alert>,
}

/// Ledger query as a transport delivers it.
#[derive(Debug, Clone, Default)]
pub struct RawLedgerQuery {
    pub school_site: String,
    pub voucher_id: String,
    pub lesson_id: String,
    pub job_id: String,
    pub kinds: Vec<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub after_id: i64,
    pub page_size: i64,
}

fn parse_uuid(c: &mut Checks, field: &str, s: &str) -> Option<Uuid> {
    if s.is_empty() {
        return None;
    }
    match s.parse() {
        Ok(id) => Some(id),
        Err(_) => {
            c.fail(field, "must be a UUID");
            None
        }
    }
}

impl Broker {
    fn school_site(&self, field: &str, key: &str) -> Result<SiteRow, ServiceError> {
        let site = self
            .fleet
            .site(key.trim())
            .ok_or_else(|| ServiceError::field(field, format!("unknown site `{}`", trunc(key))))?;
        if site.kind != "school" {
            return Err(ServiceError::field(
                field,
                format!(
                    "vouchers and quotas belong to schools; `{}` is a {} site",
                    site.name, site.kind
                ),
            ));
        }
        Ok(site)
    }

    fn optional_school(&self, key: &str) -> Result<Option<SiteRow>, ServiceError> {
        if key.trim().is_empty() {
            Ok(None)
        } else {
            self.school_site("school_site", key).map(Some)
        }
    }

    pub async fn issue_voucher(&self, raw: RawVoucher) -> Result<VoucherRow, ServiceError> {
        let now = Utc::now();
        let mut c = Checks::default();
        check_text(&mut c, "request_id", &raw.request_id, 128, false);
        check_text(&mut c, "programme", &raw.programme, 200, true);
        check_text(&mut c, "issued_by", &raw.issued_by, 128, false);
        let school = match self.school_site("school_site", &raw.school_site) {
            Ok(s) => Some(s),
            Err(ServiceError::Invalid(e)) => {
                e.into_iter().for_each(|f| c.fail(f.field, f.rule));
                None
            }
            Err(e) => return Err(e),
        };
        let amount = parse_hours(raw.accelerator_hours);
        if amount.is_none() {
            c.fail(
                "accelerator_hours",
                format!(
                    "must be more than 0 and at most 1000000, not {}",
                    raw.accelerator_hours
                ),
            );
        }
        let valid_from = raw.valid_from.unwrap_or(now);
        match raw.valid_until {
            None => c.fail("valid_until", "is required (RFC 3339 time)"),
            Some(u) if u <= valid_from => c.fail("valid_until", "must be after valid_from"),
            Some(u) if u <= now => c.fail("valid_until", "must be in the future"),
            Some(u) if u - valid_from > chrono::Duration::days(MAX_VALIDITY_DAYS) => c.fail(
                "valid_until",
                format!("must be at most {MAX_VALIDITY_DAYS} days after valid_from"),
            ),
            Some(_) => {}
        }
        let mut tiers: Vec<String> = raw.tiers.iter().map(|t| t.trim().to_string()).collect();
        tiers.sort();
        tiers.dedup();
        for (i, t) in tiers.iter().enumerate() {
            if t != "edge" && t != "cloud" {
                c.fail(format!("tiers[{i}]"), "must be edge or cloud");
            }
        }
        if raw.sites.len() > MAX_SITES {
            c.fail("sites", format!("must list at most {MAX_SITES} sites"));
        }
        let mut site_ids = Vec::new();
        for (i, s) in raw.sites.iter().take(MAX_SITES).enumerate() {
            match self.fleet.site(s.trim()) {
                Some(site) => site_ids.push(site.id),
                None => c.fail(
                    format!("sites[{i}]"),
                    format!("unknown site `{}`", trunc(s)),
                ),
            }
        }
        site_ids.sort();
        site_ids.dedup();
        c.finish()?;
        let (Some(school), Some(amount), Some(valid_until)) = (school, amount, raw.valid_until)
        else {
            return Err(ServiceError::field("voucher", "incomplete"));
        };
        let request_id = Some(raw.request_id.as_str()).filter(|r| !r.is_empty());
        if let Some(rid) = request_id
            && let Some(id) = self.store.voucher_by_request_id(rid).await?
        {
            return self.voucher(id).await;
        }
        let id = Uuid::now_v7();
        let mut tx = self.store.begin().await?;
        let inserted = store::insert_voucher(
            &mut tx,
            &NewVoucher {
                id,
                request_id,
                school_site_id: school.id,
                programme: raw.programme.trim(),
                issued_by: raw.issued_by.trim(),
                amount_uah: amount,
                valid_from,
                valid_until,
                tiers: &tiers,
                site_ids: &site_ids,
            },
        )
        .await;
        match inserted {
            Ok(()) => {}
            // A concurrent retry with the same request_id won: answer with its voucher.
            Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some("23505") => {
                drop(tx);
                let rid = request_id.unwrap_or_default();
                return match self.store.voucher_by_request_id(rid).await? {
                    Some(existing) => self.voucher(existing).await,
                    None => Err(ServiceError::Conflict("voucher request_id in use".into())),
                };
            }
            Err(e) => return Err(e.into()),
        }
        let note = format!("issued for programme `{}`", raw.programme.trim());
        store::append(
            &mut tx,
            &NewEntry {
                voucher_id: id,
                school_site_id: school.id,
                kind: "issue",
                amount_uah: amount,
                owner: None,
                borrowed_lesson_id: None,
                hold_id: None,
                node_class: None,
                metered_slice_seconds: None,
                note: &note,
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(voucher = %id, school = %school.name, hours = %crate::vouchers::hours(amount), "voucher issued");
        self.voucher(id).await
    }

    pub async fn voucher(&self, id: Uuid) -> Result<VoucherRow, ServiceError> {
        self.store
            .list_vouchers(None, Some(id))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ServiceError::NotFound(format!("voucher {id}")))
    }

    pub async fn list_vouchers(
        &self,
        school_site: &str,
        include_expired: bool,
    ) -> Result<Vec<VoucherRow>, ServiceError> {
        let school = self.optional_school(school_site)?;
        let now = Utc::now();
        Ok(self
            .store
            .list_vouchers(school.map(|s| s.id), None)
            .await?
            .into_iter()
            .filter(|v| include_expired || (!v.expired && v.valid_until > now))
            .collect())
    }

    /// Balances per school (one, or every school with vouchers), with
    /// low-balance and expiring-soon alerts.
    pub async fn voucher_balances(&self, school_site: &str) -> Result<BalanceView, ServiceError> {
        let school = self.optional_school(school_site)?;
        let rows = self
            .store
            .list_vouchers(school.as_ref().map(|s| s.id), None)
            .await?;
        let mut schools: Vec<SchoolBalance> = Vec::new();
        if let Some(s) = &school {
            schools.push(self.empty_balance(s.clone()).await?);
        }
        for v in &rows {
            if !schools.iter().any(|s| s.school.id == v.school_site_id) {
                let site = self.fleet.site_by_id(v.school_site_id).unwrap_or(SiteRow {
                    id: v.school_site_id,
                    name: v.school_site.clone(),
                    kind: "school".into(),
                    district: String::new(),
                });
                schools.push(self.empty_balance(site).await?);
            }
            let Some(s) = schools.iter_mut().find(|s| s.school.id == v.school_site_id) else {
                continue;
            };
            s.issued_uah += v.issued_uah;
            s.held_uah += v.held_uah;
            s.charged_uah += v.charged_uah;
            s.expired_uah += v.expired_uah;
            s.balance_uah += v.balance_uah;
            s.vouchers.push(v.clone());
        }
        let states: Vec<VoucherState> = rows
            .iter()
            .map(|v| VoucherState {
                id: v.id,
                school: v.school_site.clone(),
                programme: v.programme.clone(),
                issued: v.issued_uah,
                balance: v.balance_uah,
                valid_until: v.valid_until,
                expired: v.expired,
            })
            .collect();
        let cfg = &self.cfg.vouchers;
        Ok(BalanceView {
            schools,
            alerts: alerts(
                &states,
                Utc::now(),
                cfg.low_balance_percent,
                cfg.expiring_soon,
            ),
        })
    }

    async fn empty_balance(&self, school: SiteRow) -> Result<SchoolBalance, ServiceError> {
        let max_concurrent_seats = self.store.quota(school.id).await?;
        Ok(SchoolBalance {
            school,
            issued_uah: 0,
            held_uah: 0,
            charged_uah: 0,
            expired_uah: 0,
            balance_uah: 0,
            max_concurrent_seats,
            vouchers: Vec::new(),
        })
    }

    pub async fn voucher_ledger(&self, q: RawLedgerQuery) -> Result<Vec<LedgerRow>, ServiceError> {
        let mut c = Checks::default();
        let school = match self.optional_school(&q.school_site) {
            Ok(s) => s,
            Err(ServiceError::Invalid(e)) => {
                e.into_iter().for_each(|f| c.fail(f.field, f.rule));
                None
            }
            Err(e) => return Err(e),
        };
        let voucher_id = parse_uuid(&mut c, "voucher_id", &q.voucher_id);
        let lesson_id = parse_uuid(&mut c, "lesson_id", &q.lesson_id);
        let job_id = parse_uuid(&mut c, "job_id", &q.job_id);
        for (i, k) in q.kinds.iter().enumerate() {
            if !KINDS.contains(&k.as_str()) {
                c.fail(
                    format!("kinds[{i}]"),
                    format!("must be one of {}", KINDS.join(", ")),
                );
            }
        }
        let page_size = if q.page_size == 0 { 100 } else { q.page_size };
        if !(1..=1000).contains(&page_size) {
            c.fail("page_size", "must be between 1 and 1000");
        }
        if q.after_id < 0 {
            c.fail("after_id", "must not be negative");
        }
        if let (Some(f), Some(t)) = (q.from, q.to)
            && t <= f
        {
            c.fail("to", "must be after from");
        }
        c.finish()?;
        Ok(self
            .store
            .ledger(&LedgerFilter {
                school_site_id: school.map(|s| s.id),
                voucher_id,
                lesson_id,
                job_id,
                kinds: q.kinds,
                from: q.from,
                to: q.to,
                after_id: q.after_id,
                limit: page_size,
            })
            .await?)
    }

    pub async fn usage_report(
        &self,
        by: &str,
        school_site: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<(GroupBy, Vec<UsageRow>), ServiceError> {
        let mut c = Checks::default();
        let group = GroupBy::parse(by);
        if group.is_none() {
            c.fail("by", format!("must be {}", GroupBy::NAMES));
        }
        if let (Some(f), Some(t)) = (from, to)
            && t <= f
        {
            c.fail("to", "must be after from");
        }
        let school = match self.optional_school(school_site) {
            Ok(s) => s,
            Err(ServiceError::Invalid(e)) => {
                e.into_iter().for_each(|f| c.fail(f.field, f.rule));
                None
            }
            Err(e) => return Err(e),
        };
        c.finish()?;
        let group = group.unwrap_or(GroupBy::School);
        let rows = self
            .store
            .usage(group, school.map(|s| s.id), from, to)
            .await?;
        Ok((group, rows))
    }

    /// Sets a school's seat quota; 0 removes it.
    pub async fn set_quota(
        &self,
        school_site: &str,
        max_concurrent_seats: i64,
    ) -> Result<Option<i32>, ServiceError> {
        let school = self.school_site("school_site", school_site)?;
        if !(0..=100_000).contains(&max_concurrent_seats) {
            return Err(ServiceError::field(
                "max_concurrent_seats",
                format!("must be between 0 (no quota) and 100000, not {max_concurrent_seats}"),
            ));
        }
        let max = (max_concurrent_seats > 0).then_some(max_concurrent_seats as i32);
        self.store.set_quota(school.id, max).await?;
        tracing::info!(school = %school.name, ?max, "seat quota set");
        Ok(max)
    }
}

fn trunc(s: &str) -> String {
    s.chars().take(128).collect()
}
