//! Ad-hoc jobs: run now in the capacity lessons leave, queue otherwise, and
//! yield to lessons when one needs their capacity.

use chrono::Utc;
use classgrid_placement::{Decision, Owner, Request, Reservation};
use tracing::info;
use uuid::Uuid;

use super::{grants, window_ms};
use crate::{
    app::Broker,
    domain::{
        ServiceError,
        lesson::{RawJob, parse_job},
        states::job as js,
    },
    store::{
        self, assignments,
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
        let mut tx = self.store.pool.begin().await?;
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
        self.try_start_job(&job).await?;
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
        let mut tx = self.store.pool.begin().await?;
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
        tx.commit().await?;
        self.send_releases(&released, "job cancelled");
        self.job(id).await
    }

    /// Places a queued job now, if capacity allows; otherwise it stays queued
    /// with the refusal as its message.
    async fn try_start_job(&self, job: &JobRow) -> Result<bool, ServiceError> {
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
        };
        for _ in 0..4 {
            let (decision, _) = self.plan(&req).await?;
            let a = match decision {
                Decision::Refused(e) => {
                    job_store::set_message(
                        &self.store.pool,
                        job.id,
                        &format!("queued: {}", e.summary),
                    )
                    .await?;
                    return Ok(false);
                }
                Decision::Admitted(a) => a,
            };
            let Some(p) = a.seats.first() else {
                return Ok(false);
            };
            let rows: Vec<Reservation> = p
                .reservations(&req, Owner::Job(job.id))
                .into_iter()
                .map(|r| Reservation {
                    preemptible: job.preemptible,
                    ..r
                })
                .collect();
            let mut tx = self.store.pool.begin().await?;
            match reservations::insert(&mut tx, &rows, None).await {
                Ok(()) => {}
                Err(e) if store::is_capacity_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
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
            info!(job = %job.id, node = %p.node_id, "job started");
            self.send_assignment(aid).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// One pass of the job queue: stop jobs whose capacity a lesson claimed
    /// (they go back to the queue), then start queued jobs that now fit.
    pub async fn job_tick(&self) -> anyhow::Result<()> {
        let due: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE state = 'running' AND preempt_at IS NOT NULL AND preempt_at <= now()",
        )
        .fetch_all(&self.store.pool)
        .await?;
        for id in due {
            let mut tx = self.store.pool.begin().await?;
            let released = assignments::release_for(&mut tx, None, Some(id)).await?;
            reservations::delete_owner(&mut tx, Owner::Job(id)).await?;
            sqlx::query(
                "UPDATE jobs SET state = 'queued', preempt_at = NULL, node_id = NULL, endpoint = '',
                    message = 'preempted by a lesson; back in the queue' WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            info!(job = %id, "job preempted");
            self.send_releases(&released, "preempted by a lesson");
        }
        for job in self.store.queued_jobs(50).await? {
            if let Err(e) = self.try_start_job(&job).await {
                tracing::warn!(job = %job.id, error = %e, "starting queued job failed");
            }
        }
        Ok(())
    }
}
