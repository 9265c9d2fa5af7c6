//! Ad-hoc jobs: run now in the capacity lessons leave, queue otherwise, and
//! yield to lessons when one needs their capacity.

use chrono::Utc;
use classgrid_placement::{Owner, Request, Reservation, SeatPlacement, job_priority};
use tracing::info;
use uuid::Uuid;

use super::window_ms;
use crate::{
    bind::grants,
    domain::{
        ServiceError,
        lesson::{RawJob, parse_job},
        states::job as js,
    },
    reserve::{Plan, Reserved, only_seat},
    state::Broker,
    store::{
        assignments,
        assignments::Payload,
        jobs::{self as job_store, JobRow, NewJob},
        reservations,
    },
};

impl Broker {
    pub async fn submit_job(&self, raw: RawJob) -> Result<JobRow, ServiceError> {
        let j = parse_job(raw, &self.limits())?;
        if let Some(rid) = &j.request_id {
            if let Some(id) = self.store.job_by_request_id(rid).await? {
                return self.job(id).await;
            }
        }
        let site = self.fleet.site(&j.school_site).ok_or_else(|| {
            ServiceError::field("school_site", format!("unknown site `{}`", j.school_site))
        })?;
        classgrid_placement::check_possible(&self.fleet.snapshot(), &j.spec.to_placement())
            .map_err(|e| {
                ServiceError::field(
                    format!("spec.{}", e.field.trim_start_matches("seat.")),
                    e.rule,
                )
            })?;
        let id = Uuid::now_v7();
        let mut tx = self.store.begin().await?;
        self.fence(&mut tx).await?;
        let inserted = job_store::insert(
            &mut tx,
            &NewJob {
                id,
                request_id: j.request_id.as_deref(),
                school_site_id: site.id,
                name: &j.name,
                spec: &j.spec,
                workload: &j.workload,
                priority: j.priority,
                preemptible: j.preemptible,
                grace_s: j.grace.num_seconds() as i32,
                max_runtime_s: j.max_runtime.num_seconds() as i32,
            },
        )
        .await;
        if let Err(e) = inserted {
            if let (Some(rid), sqlx::Error::Database(d)) = (&j.request_id, &e) {
                if d.code().as_deref() == Some("23505") {
                    drop(tx);
                    if let Some(existing) = self.store.job_by_request_id(rid).await? {
                        return self.job(existing).await;
                    }
                }
            }
            return Err(e.into());
        }
        tx.commit().await?;
        let job = self.job(id).await?;
        self.try_start_job(&job, true).await?;
        self.job(id).await
    }

    pub async fn job(&self, id: Uuid) -> Result<JobRow, ServiceError> {
        self.store
            .get_job(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("job {id}")))
    }

    pub async fn cancel_job(&self, id: Uuid) -> Result<JobRow, ServiceError> {
        let job = self.job(id).await?;
        if js::is_final(&job.state) {
            return Err(ServiceError::Conflict(format!(
                "job {id} is already {}",
                job.state
            )));
        }
        let mut tx = self.store.begin().await?;
        self.fence(&mut tx).await?;
        if !job_store::set_state(
            &mut *tx,
            id,
            &[js::QUEUED, js::RUNNING],
            js::CANCELLED,
            Some("cancelled"),
        )
        .await?
        {
            return Err(ServiceError::Conflict(format!(
                "job {id} changed state; read it again"
            )));
        }
        let released = assignments::release_for(&mut tx, None, Some(id)).await?;
        reservations::delete_owner(&mut tx, Owner::Job(id)).await?;
        self.settle_vouchers(&mut tx, Owner::Job(id), false).await?;
        tx.commit().await?;
        self.reserver.refresh_owners(&[Owner::Job(id)]).await?;
        self.send_releases(&released, "job cancelled");
        self.job(id).await
    }

    /// Places a queued job now, if capacity allows; otherwise it stays queued
    /// with the refusal as its message.
    async fn try_start_job(
        &self,
        job: &JobRow,
        reload_on_refusal: bool,
    ) -> Result<bool, ServiceError> {
        let now = Utc::now();
        let end = now + chrono::Duration::seconds(job.max_runtime_s as i64);
        let req = Request {
            school_site: job.school_site_id,
            window: window_ms(now, end),
            seats: 1,
            min_seats: 1,
            seat: job.spec.0.to_placement(),
            max_rtt_ms: 10_000.0,
            datasets: Vec::new(),
            staging_lead_ms: 0,
            may_preempt: false,
            residency: Default::default(),
        };
        let fleet = self.fleet.snapshot();
        let req = &req;
        let plan = Plan {
            reload_on_refusal,
            ..Plan::single(&fleet, self.rtt_table(), req, Owner::Job(job.id))
        };
        // The held rows assumed every job preemptible; the owner's rows are
        // read back after the commit.
        let reserved = self
            .reserver
            .reserve(plan, true, |a| async move {
                let p = match only_seat(&a) {
                    Ok(p) => p,
                    Err(e) => return Ok(Err(e)),
                };
                Ok(match self.write_job_start(job, req, p, end).await? {
                    Some(aid) => Ok((aid, p.node_id)),
                    None => Err(ServiceError::Conflict("vouchers or quota refused".into())),
                })
            })
            .await?;
        match reserved {
            Reserved::Done((aid, node)) => {
                info!(job = %job.id, %node, "job started");
                self.send_assignment(aid).await?;
                Ok(true)
            }
            Reserved::Refused(e) => {
                self.store
                    .set_job_message(job.id, &format!("queued: {}", e.summary))
                    .await?;
                Ok(false)
            }
            Reserved::Declined(_) | Reserved::Exhausted => Ok(false),
            Reserved::Failed(e) => Err(e.into()),
        }
    }

    /// Reserves the job's capacity, marks it running and writes its
    /// assignment, in one transaction; the caller sends the assignment.
    /// `None` when vouchers or quota refused (the job's message says why).
    async fn write_job_start(
        &self,
        job: &JobRow,
        req: &Request,
        p: &SeatPlacement,
        end: chrono::DateTime<Utc>,
    ) -> sqlx::Result<Option<Uuid>> {
        let rows: Vec<Reservation> = p
            .reservations(req, Owner::Job(job.id))
            .into_iter()
            .map(|r| Reservation {
                preemptible: job.preemptible,
                ..r
            })
            .collect();
        let mut tx = self.store.begin().await?;
        self.fence(&mut tx).await?;
        // The school's vouchers before the nodes, in the order bookings lock
        // them: a job holding a node while it waited for a school that a
        // booking batch held (waiting for that node) would deadlock.
        let start = end - chrono::Duration::seconds(i64::from(job.max_runtime_s));
        if !self.hold_for_job(&mut tx, job, (start, end), p).await? {
            return Ok(None);
        }
        reservations::insert(&mut tx, &rows, None).await?;
        let devices: Vec<i32> = p.devices.iter().map(|d| d.index as i32).collect();
        let first = p.devices.first();
        let payload = Payload {
            kind: "job".into(),
            owner_id: job.id,
            workload: job.workload.0.clone(),
            runtime: job.spec.0.runtime.clone(),
            cpu_millis: job.spec.0.cpu_millis,
            memory_mib: job.spec.0.memory_mib,
            gpus: grants(
                &devices,
                first.map(|d| d.memory_mib as i64).unwrap_or(0),
                first.map(|d| d.compute_percent as i32).unwrap_or(0),
            ),
            grace_seconds: job.grace_s.max(0) as u32,
        };
        job_store::set_placed(&mut tx, job.id, p.node_id, &devices).await?;
        let aid = self
            .create_assignment(&mut tx, p.node_id, None, Some(job.id), &payload, end)
            .await?;
        tx.commit().await?;
        Ok(Some(aid))
    }

    /// One pass of the job queue: stop jobs whose capacity a lesson claimed
    /// (they go back to the queue), then start queued jobs that now fit.
    pub async fn job_tick(&self) -> anyhow::Result<()> {
        let due = self.store.jobs_due_for_preemption().await?;
        for id in due {
            let mut tx = self.store.begin().await?;
            self.fence(&mut tx).await?;
            let released = assignments::release_for(&mut tx, None, Some(id)).await?;
            reservations::delete_owner(&mut tx, Owner::Job(id)).await?;
            job_store::requeue_preempted(&mut tx, id).await?;
            self.settle_vouchers(&mut tx, Owner::Job(id), false).await?;
            tx.commit().await?;
            self.reserver.refresh_owners(&[Owner::Job(id)]).await?;
            info!(job = %id, "job preempted");
            self.send_releases(&released, "preempted by a lesson");
        }
        let queue = self.job_queue().await?;
        if !queue.is_empty() {
            // One fresh read of the calendar for the whole pass.
            self.reserver.reload_calendar().await?;
        }
        for job in queue {
            if let Err(e) = self.try_start_job(&job, false).await {
                tracing::warn!(job = %job.id, error = %e, "starting queued job failed");
            }
        }
        Ok(())
    }

    /// Queued jobs in the order they may start: by the configured weighted
    /// sum of named factors (`[job_priority]`), oldest first on a tie.
    pub async fn job_queue(&self) -> anyhow::Result<Vec<JobRow>> {
        let queued = self.store.queued_jobs(QUEUE_WINDOW).await?;
        if queued.is_empty() {
            return Ok(queued);
        }
        let running = self.store.running_jobs_per_school().await?;
        let now = Utc::now();
        let mut ranked: Vec<(f64, JobRow)> = queued
            .into_iter()
            .map(|j| {
                let f = priority_factors(&j, now, &running);
                (job_priority(&self.cfg.job_priority, &f), j)
            })
            .collect();
        ranked.sort_by(|(pa, a), (pb, b)| {
            pb.total_cmp(pa)
                .then(a.created_at.cmp(&b.created_at))
                .then(a.id.cmp(&b.id))
        });
        Ok(ranked.into_iter().map(|(_, j)| j).collect())
    }
}

/// How many queued jobs one pass considers; the store hands them out by
/// their own priority, then age.
const QUEUE_WINDOW: i64 = 200;

/// The named factors of a queued job's priority: its own `priority`, the
/// minutes it has waited, and its school's share of the jobs running now.
pub fn priority_factors(
    job: &JobRow,
    now: chrono::DateTime<Utc>,
    running_by_school: &[(Uuid, i64)],
) -> Vec<(String, f64)> {
    let total: i64 = running_by_school.iter().map(|(_, n)| n).sum();
    let mine = running_by_school
        .iter()
        .find(|(s, _)| *s == job.school_site_id)
        .map_or(0, |(_, n)| *n);
    let share = if total == 0 {
        0.0
    } else {
        mine as f64 / total as f64
    };
    vec![
        ("priority".into(), job.priority as f64),
        (
            "wait_minutes".into(),
            (now - job.created_at).num_milliseconds().max(0) as f64 / 60_000.0,
        ),
        ("school_share".into(), share),
    ]
}
