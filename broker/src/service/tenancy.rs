//! The one place where every request is scoped to its tenant. Transports
//! (gRPC, REST, the console) reach the domain only through [`Scoped`]: a
//! platform sees only its schools, a school admin only their school (read
//! only), a district admin everything. What a caller may not see does not
//! exist for them (NOT_FOUND, never "forbidden"), so existence is not leaked.
//! Every mutating call is audited here, with its outcome.

use chrono::{DateTime, Utc};
use tracing::Instrument;
use uuid::Uuid;

use super::lessons::LessonView;
use super::vouchers::{BalanceView, RawLedgerQuery, RawVoucher};
use crate::{
    auth::{Caller, Role},
    domain::{
        ServiceError,
        lesson::{RawBooking, RawJob},
    },
    fleet::LiveNode,
    state::Broker,
    store::{jobs::JobRow, lessons::LessonRow, sites::SiteRow},
};
use crate::{
    store::vouchers::{LedgerRow, VoucherRow},
    vouchers::report::{GroupBy, UsageRow},
};

pub struct Scoped<'a> {
    pub app: &'a Broker,
    pub caller: &'a Caller,
}

impl Broker {
    pub fn scoped<'a>(&'a self, caller: &'a Caller) -> Scoped<'a> {
        Scoped { app: self, caller }
    }
}

/// What `caller` sees of a lesson's seats (decision 103). A course platform
/// (and the teachers behind it) reaches a seat through its link on the
/// school's edge and never sees the node's address: a seat with a link
/// shows it with `endpoint` empty. Admins keep the address for debugging
/// (school admins already read their school's nodes). A seat with no link
/// (one a peer region hosts, or at a school whose edge serves no links)
/// keeps its address, the only way to it.
pub fn shown_to(caller: &Caller, mut v: LessonView) -> LessonView {
    if caller.role == Role::Platform {
        for s in v.seats.iter_mut().filter(|s| !s.link.is_empty()) {
            s.endpoint.clear();
        }
    }
    v
}

impl Scoped<'_> {
    /// [`shown_to`] this caller.
    pub(super) fn shown(&self, v: LessonView) -> LessonView {
        shown_to(self.caller, v)
    }

    pub(super) fn writer(&self) -> Result<(), ServiceError> {
        if self.caller.may_write() {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!(
                "a {} token is read-only",
                self.caller.role.as_str()
            )))
        }
    }

    /// A site the caller may see, by name or id; others are "unknown".
    pub fn site(&self, field: &str, key: &str) -> Result<SiteRow, ServiceError> {
        self.app
            .fleet
            .site(key)
            .filter(|s| self.caller.sees_site(s.id))
            .ok_or_else(|| {
                ServiceError::field(
                    field,
                    format!(
                        "unknown site `{}`",
                        key.chars().take(128).collect::<String>()
                    ),
                )
            })
    }

    async fn audited<T>(
        &self,
        action: &str,
        target: impl Fn(&T) -> String,
        fallback: &str,
        op: impl std::future::Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        self.app
            .audited(self.caller, action, target, fallback, op)
            .await
    }

    pub async fn book_lesson(&self, raw: RawBooking) -> Result<LessonView, ServiceError> {
        let school = raw.school_site.clone();
        self.audited(
            "lesson.book",
            |v: &LessonView| format!("lesson:{}", v.lesson.id),
            &format!("site:{school}"),
            async {
                self.writer()?;
                if !raw.school_site.trim().is_empty() {
                    self.site("school_site", raw.school_site.trim())?;
                }
                let v = self.app.book_lesson(raw).await?;
                // A request_id another tenant already used answers with their
                // lesson; never show it.
                if !self.caller.sees_site(v.lesson.school_site_id) {
                    return Err(ServiceError::Conflict(
                        "this request_id (Idempotency-Key) is already used; choose another".into(),
                    ));
                }
                Ok(self.shown(v))
            },
        )
        // The booking's first step inside the broker: the caller's scope
        // and the audit, around the plan, the write and the dispatch.
        .instrument(classgrid_common::traced_span!(
            "tenancy",
            action = "lesson.book"
        ))
        .await
    }

    pub async fn lesson(&self, id: Uuid) -> Result<LessonView, ServiceError> {
        let v = self.app.lesson(id).await?;
        if self.caller.sees_site(v.lesson.school_site_id) {
            Ok(self.shown(v))
        } else {
            Err(ServiceError::NotFound(format!("lesson {id}")))
        }
    }

    pub async fn list_lessons(
        &self,
        school_site: Option<&str>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        page_size: i64,
        offset: i64,
    ) -> Result<Vec<LessonRow>, ServiceError> {
        if !(1..=500).contains(&page_size) {
            return Err(ServiceError::field(
                "page_size",
                "must be between 1 and 500",
            ));
        }
        if offset < 0 {
            return Err(ServiceError::field(
                "page_token",
                "is not a token from a previous page",
            ));
        }
        let sites: Option<Vec<Uuid>> = match school_site.filter(|s| !s.is_empty()) {
            Some(s) => Some(vec![self.site("school_site", s)?.id]),
            None if self.caller.is_district_admin() => None,
            None => Some(self.caller.sites.clone()),
        };
        Ok(self
            .app
            .store
            .list_lessons_in(sites.as_deref(), from, to, page_size, offset)
            .await?)
    }

    pub async fn cancel_lesson(&self, id: Uuid, reason: &str) -> Result<LessonView, ServiceError> {
        self.audited(
            "lesson.cancel",
            |_| format!("lesson:{id}"),
            &format!("lesson:{id}"),
            async {
                self.lesson(id).await?;
                self.writer()?;
                self.app
                    .cancel_lesson(id, reason)
                    .await
                    .map(|v| self.shown(v))
            },
        )
        .await
    }

    /// Pauses or resumes the class's seat links (issue 22); the school's
    /// edge applies it at its next sync.
    pub async fn pause_links(&self, id: Uuid, paused: bool) -> Result<LessonView, ServiceError> {
        self.audited(
            if paused {
                "lesson.links.pause"
            } else {
                "lesson.links.resume"
            },
            |_| format!("lesson:{id}"),
            &format!("lesson:{id}"),
            async {
                self.lesson(id).await?;
                self.writer()?;
                self.app
                    .store
                    .set_links_paused(id, paused, &self.caller.actor)
                    .await?;
                self.app.lesson(id).await.map(|v| self.shown(v))
            },
        )
        .await
    }

    /// Resets or stops one seat of the lesson (issue 22).
    pub async fn control_seat(
        &self,
        id: Uuid,
        seat: i32,
        action: super::seat_controls::SeatAction,
    ) -> Result<LessonView, ServiceError> {
        self.audited(
            action.audit_name(),
            |_| format!("lesson:{id}/seat:{seat}"),
            &format!("lesson:{id}/seat:{seat}"),
            async {
                self.lesson(id).await?;
                self.writer()?;
                self.app
                    .control_seat(id, seat, action, &self.caller.actor)
                    .await?;
                self.app.lesson(id).await.map(|v| self.shown(v))
            },
        )
        .await
    }

    pub async fn submit_job(&self, raw: RawJob) -> Result<JobRow, ServiceError> {
        let school = raw.school_site.clone();
        self.audited(
            "job.submit",
            |j: &JobRow| format!("job:{}", j.id),
            &format!("site:{school}"),
            async {
                self.writer()?;
                if !raw.school_site.trim().is_empty() {
                    self.site("school_site", raw.school_site.trim())?;
                }
                let j = self.app.submit_job(raw).await?;
                if !self.caller.sees_site(j.school_site_id) {
                    return Err(ServiceError::Conflict(
                        "this request_id (Idempotency-Key) is already used; choose another".into(),
                    ));
                }
                Ok(j)
            },
        )
        .await
    }

    pub async fn job(&self, id: Uuid) -> Result<JobRow, ServiceError> {
        let j = self.app.job(id).await?;
        if self.caller.sees_site(j.school_site_id) {
            Ok(j)
        } else {
            Err(ServiceError::NotFound(format!("job {id}")))
        }
    }

    pub async fn cancel_job(&self, id: Uuid) -> Result<JobRow, ServiceError> {
        self.audited(
            "job.cancel",
            |_| format!("job:{id}"),
            &format!("job:{id}"),
            async {
                self.job(id).await?;
                self.writer()?;
                self.app.cancel_job(id).await
            },
        )
        .await
    }

    pub fn sites(&self) -> Vec<SiteRow> {
        self.app
            .fleet
            .sites()
            .into_iter()
            .filter(|s| self.caller.sees_site(s.id))
            .collect()
    }

    pub async fn create_site(
        &self,
        name: &str,
        kind: &str,
        district: &str,
    ) -> Result<SiteRow, ServiceError> {
        self.audited(
            "site.create",
            |s: &SiteRow| format!("site:{}", s.name),
            &format!("site:{name}"),
            async {
                if !self.caller.is_district_admin() {
                    return Err(ServiceError::Forbidden(
                        "only a district admin may create sites".into(),
                    ));
                }
                self.app.create_site(name, kind, district).await
            },
        )
        .await
    }

    /// Nodes at sites the caller sees, optionally of one site.
    pub fn nodes(&self, site: Option<&str>) -> Result<Vec<LiveNode>, ServiceError> {
        let only = match site.filter(|s| !s.is_empty()) {
            Some(s) => Some(self.site("site", s)?.id),
            None => None,
        };
        Ok(self
            .app
            .fleet
            .nodes()
            .into_iter()
            .filter(|n| self.caller.sees_site(n.site_id) && only.is_none_or(|s| s == n.site_id))
            .collect())
    }

    pub fn node(&self, key: &str) -> Result<LiveNode, ServiceError> {
        self.app
            .find_node(key)
            .filter(|n| self.caller.sees_site(n.site_id))
            .ok_or_else(|| {
                ServiceError::NotFound(format!(
                    "node {}",
                    key.chars().take(128).collect::<String>()
                ))
            })
    }

    /// Cordons a node, or lifts its cordon: placement stops (or resumes)
    /// choosing it; what already runs there keeps running. District admins
    /// only; audited.
    pub async fn set_cordon(&self, key: &str, cordoned: bool) -> Result<LiveNode, ServiceError> {
        let action = if cordoned {
            "node.cordon"
        } else {
            "node.uncordon"
        };
        let fallback = format!("node:{}", key.chars().take(128).collect::<String>());
        self.audited(action, node_target, &fallback, async {
            let node = self.node(key)?;
            if !self.caller.is_district_admin() {
                return Err(ServiceError::Forbidden(
                    "only a district admin may cordon nodes".into(),
                ));
            }
            self.app.store.set_node_cordoned(node.id, cordoned).await?;
            self.app.fleet.set_cordoned(node.id, cordoned);
            self.app.clock.notify_one();
            Ok(self.app.fleet.node(node.id).unwrap_or(node))
        })
        .await
    }

    /// Approves a node that joined with a token asking for approval:
    /// placement may use it from now on. District admins only; audited as
    /// `node.approve`. Approving an approved node changes nothing and says
    /// so (`false`), so a retried call is harmless.
    pub async fn approve_node(&self, key: &str) -> Result<(LiveNode, bool), ServiceError> {
        let fallback = format!("node:{}", key.chars().take(128).collect::<String>());
        self.audited(
            "node.approve",
            |(n, _): &(LiveNode, bool)| node_target(n),
            &fallback,
            async {
                let node = self.node(key)?;
                if !self.caller.is_district_admin() {
                    return Err(ServiceError::Forbidden(
                        "only a district admin may approve nodes".into(),
                    ));
                }
                let changed = self.app.store.approve_node(node.id).await?;
                self.app.fleet.set_approved(node.id, true);
                self.app.clock.notify_one();
                Ok((self.app.fleet.node(node.id).unwrap_or(node), changed))
            },
        )
        .await
    }

    /// Drains a node before maintenance: it is cordoned and its agent is
    /// told that no new work will come. Running lesson seats are never
    /// stopped (DESIGN §5) and jobs end within their own runtime limit, so
    /// the node empties by itself; the console shows when it has.
    pub async fn drain_node(&self, key: &str, reason: &str) -> Result<LiveNode, ServiceError> {
        let fallback = format!("node:{}", key.chars().take(128).collect::<String>());
        self.audited("node.drain", node_target, &fallback, async {
            if reason.chars().count() > 500 {
                return Err(ServiceError::field(
                    "reason",
                    "must be at most 500 characters",
                ));
            }
            let node = self.node(key)?;
            if !self.caller.is_district_admin() {
                return Err(ServiceError::Forbidden(
                    "only a district admin may drain nodes".into(),
                ));
            }
            self.app.store.set_node_cordoned(node.id, true).await?;
            self.app.fleet.set_cordoned(node.id, true);
            use classgrid_proto::v1::{BrokerMessage, Drain, broker_message::Msg};
            let reason = if reason.trim().is_empty() {
                format!("drained by {}", self.caller.actor)
            } else {
                reason.trim().to_string()
            };
            self.app.fleet.send(
                node.id,
                BrokerMessage {
                    msg: Some(Msg::Drain(Drain { reason })),
                },
            );
            Ok(self.app.fleet.node(node.id).unwrap_or(node))
        })
        .await
    }
}

fn node_target(n: &LiveNode) -> String {
    format!("node:{}", n.id)
}

/// Vouchers, balances, the ledger and usage, scoped like everything else:
/// issuing and quotas are for district admins; reads cover the caller's
/// schools only.
impl Scoped<'_> {
    fn district_admin(&self, what: &str) -> Result<(), ServiceError> {
        if self.caller.is_district_admin() {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(format!(
                "only a district admin may {what}"
            )))
        }
    }

    /// The schools a read covers: the one asked for (if visible), every
    /// school for a district admin (None), or the caller's own.
    fn school_scope(&self, school_site: &str) -> Result<Option<Vec<SiteRow>>, ServiceError> {
        if !school_site.trim().is_empty() {
            return Ok(Some(vec![self.site("school_site", school_site.trim())?]));
        }
        if self.caller.is_district_admin() {
            return Ok(None);
        }
        Ok(Some(
            self.caller
                .sites
                .iter()
                .filter_map(|id| self.app.fleet.site_by_id(*id))
                .filter(|s| s.kind == "school")
                .collect(),
        ))
    }

    pub async fn issue_voucher(&self, raw: RawVoucher) -> Result<VoucherRow, ServiceError> {
        let school = raw.school_site.chars().take(128).collect::<String>();
        self.audited(
            "voucher.issue",
            |v: &VoucherRow| format!("voucher:{}", v.id),
            &format!("site:{school}"),
            async {
                self.district_admin("issue vouchers")?;
                self.app.issue_voucher(raw).await
            },
        )
        .await
    }

    pub async fn set_quota(
        &self,
        school_site: &str,
        max_concurrent_seats: i64,
    ) -> Result<Option<i32>, ServiceError> {
        let target = format!("site:{}", school_site.chars().take(128).collect::<String>());
        self.audited("quota.set", |_| target.clone(), &target, async {
            self.district_admin("set seat quotas")?;
            self.app.set_quota(school_site, max_concurrent_seats).await
        })
        .await
    }

    pub async fn list_vouchers(
        &self,
        school_site: &str,
        include_expired: bool,
    ) -> Result<Vec<VoucherRow>, ServiceError> {
        let scope = self.school_scope(school_site)?;
        let all = self.app.list_vouchers(school_site, include_expired).await?;
        Ok(match scope {
            None => all,
            Some(schools) => all
                .into_iter()
                .filter(|v| schools.iter().any(|s| s.id == v.school_site_id))
                .collect(),
        })
    }

    pub async fn voucher_balances(&self, school_site: &str) -> Result<BalanceView, ServiceError> {
        let Some(schools) = self.school_scope(school_site)? else {
            return self.app.voucher_balances("").await;
        };
        let mut view = BalanceView {
            schools: Vec::new(),
            alerts: Vec::new(),
        };
        for s in &schools {
            let b = self.app.voucher_balances(&s.id.to_string()).await?;
            view.schools.extend(b.schools);
            view.alerts.extend(b.alerts);
        }
        Ok(view)
    }

    /// Ledger entries of the caller's schools, oldest first, `after_id`
    /// paging kept across schools by merging each school's page.
    pub async fn voucher_ledger(&self, q: RawLedgerQuery) -> Result<Vec<LedgerRow>, ServiceError> {
        let Some(schools) = self.school_scope(&q.school_site)? else {
            return self.app.voucher_ledger(q).await;
        };
        let limit = if q.page_size == 0 { 100 } else { q.page_size };
        let mut rows = Vec::new();
        for s in &schools {
            rows.extend(
                self.app
                    .voucher_ledger(RawLedgerQuery {
                        school_site: s.id.to_string(),
                        ..q.clone()
                    })
                    .await?,
            );
        }
        if schools.is_empty() {
            // Still validate the query, so that bad input is reported alike.
            self.app
                .voucher_ledger(RawLedgerQuery {
                    page_size: limit,
                    ..q
                })
                .await
                .map(|_| ())?;
            return Ok(Vec::new());
        }
        rows.sort_by_key(|r| r.id);
        rows.truncate(limit.max(0) as usize);
        Ok(rows)
    }

    pub async fn usage_report(
        &self,
        by: &str,
        school_site: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<(GroupBy, Vec<UsageRow>), ServiceError> {
        let Some(schools) = self.school_scope(school_site)? else {
            return self.app.usage_report(by, school_site, from, to).await;
        };
        // Checked here too, so that a caller without schools hears the same.
        let group = GroupBy::parse(by)
            .ok_or_else(|| ServiceError::field("by", format!("must be {}", GroupBy::NAMES)))?;
        if let (Some(f), Some(t)) = (from, to)
            && t <= f
        {
            return Err(ServiceError::field("to", "must be after from"));
        }
        let mut merged: Vec<UsageRow> = Vec::new();
        for s in &schools {
            let (_, rows) = self
                .app
                .usage_report(by, &s.id.to_string(), from, to)
                .await?;
            for r in rows {
                match merged.iter_mut().find(|m| m.key == r.key) {
                    Some(m) => {
                        m.charged_uah += r.charged_uah;
                        m.metered_slice_seconds += r.metered_slice_seconds;
                        m.lessons += r.lessons;
                        m.jobs += r.jobs;
                    }
                    None => merged.push(r),
                }
            }
        }
        merged.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((group, merged))
    }
}

impl Broker {
    /// A scoped watch: the lesson now, then again after every change to it,
    /// until it ends or is cancelled; the stream stops when dropped.
    pub async fn watch_lesson(
        self: &std::sync::Arc<Self>,
        caller: &Caller,
        id: Uuid,
    ) -> Result<tokio_stream::wrappers::ReceiverStream<LessonView>, ServiceError> {
        // Subscribe before the first read so that no change falls in between.
        let mut events = self.lesson_events.subscribe();
        let first = self.scoped(caller).lesson(id).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let app = self.clone();
        let caller = caller.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            let mut done = crate::domain::states::lesson::is_final(&first.lesson.state);
            if tx.send(first).await.is_err() {
                return;
            }
            while !done {
                // A client that went away ends the task now, not at the next change.
                let event = tokio::select! {
                    e = events.recv() => e,
                    _ = tx.closed() => return,
                };
                match event {
                    Ok(changed) if changed != id => continue,
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
                let Ok(v) = app.lesson(id).await.map(|v| shown_to(&caller, v)) else {
                    return;
                };
                done = crate::domain::states::lesson::is_final(&v.lesson.state);
                if tx.send(v).await.is_err() {
                    return;
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}
