use chrono::{DateTime, Utc};
use sqlx::{FromRow, Postgres, Transaction, types::Json};
use uuid::Uuid;

use super::Store;
use crate::domain::spec::{SeatSpec, Workload};

#[derive(Debug, Clone, FromRow)]
pub struct JobRow {
    pub id: Uuid,
    pub request_id: Option<String>,
    pub school_site_id: Uuid,
    pub school_site: String,
    pub name: String,
    pub state: String,
    pub spec: Json<SeatSpec>,
    pub workload: Json<Workload>,
    pub priority: i32,
    pub preemptible: bool,
    pub grace_s: i32,
    pub max_runtime_s: i32,
    pub node_id: Option<Uuid>,
    pub node_name: Option<String>,
    pub endpoint: String,
    pub exit_code: Option<i32>,
    pub output_tail: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
}

const SELECT: &str = "SELECT j.id, j.request_id, j.school_site_id, s.name AS school_site, j.name, j.state, j.spec, j.workload,
    j.priority, j.preemptible, j.grace_s, j.max_runtime_s, j.node_id, n.name AS node_name, j.endpoint, j.exit_code,
    j.output_tail, j.message, j.created_at
    FROM jobs j JOIN sites s ON s.id = j.school_site_id LEFT JOIN nodes n ON n.id = j.node_id";

pub struct NewJob<'a> {
    pub id: Uuid,
    pub request_id: Option<&'a str>,
    pub school_site_id: Uuid,
    pub name: &'a str,
    pub spec: &'a SeatSpec,
    pub workload: &'a Workload,
    pub priority: i32,
    pub preemptible: bool,
    pub grace_s: i32,
    pub max_runtime_s: i32,
}

impl Store {
    pub async fn record_job_result(
        &self,
        id: Uuid,
        endpoint: &str,
        exit_code: Option<i32>,
        output_tail: &str,
    ) -> sqlx::Result<()> {
        record_result(&self.pool, id, endpoint, exit_code, output_tail).await
    }

    pub async fn get_job(&self, id: Uuid) -> sqlx::Result<Option<JobRow>> {
        sqlx::query_as(sql!("{SELECT} WHERE j.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn job_by_request_id(&self, request_id: &str) -> sqlx::Result<Option<Uuid>> {
        sqlx::query_scalar("SELECT id FROM jobs WHERE request_id = $1")
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Queued jobs, highest priority first, oldest first within a priority.
    /// Running jobs whose stop for a lesson is due.
    pub async fn jobs_due_for_preemption(&self) -> sqlx::Result<Vec<Uuid>> {
        sqlx::query_scalar(
            "SELECT id FROM jobs WHERE state = 'running' AND preempt_at IS NOT NULL AND preempt_at <= now()",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Running jobs per school, for the queue's `school_share` factor.
    pub async fn running_jobs_per_school(&self) -> sqlx::Result<Vec<(Uuid, i64)>> {
        sqlx::query_as(
            "SELECT school_site_id, count(*) FROM jobs WHERE state = 'running' GROUP BY school_site_id",
        )
        .fetch_all(&self.pool)
        .await
    }

    pub async fn set_job_message(&self, id: Uuid, message: &str) -> sqlx::Result<()> {
        set_message(&self.pool, id, message).await
    }

    pub async fn queued_jobs(&self, limit: i64) -> sqlx::Result<Vec<JobRow>> {
        sqlx::query_as(sql!(
            "{SELECT} WHERE j.state = 'queued' ORDER BY j.priority DESC, j.created_at LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }
}

pub async fn insert(tx: &mut Transaction<'_, Postgres>, j: &NewJob<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO jobs (id, request_id, school_site_id, name, state, spec, workload, priority, preemptible, grace_s, max_runtime_s)
         VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10)",
    )
    .bind(j.id)
    .bind(j.request_id)
    .bind(j.school_site_id)
    .bind(j.name)
    .bind(Json(j.spec))
    .bind(Json(j.workload))
    .bind(j.priority)
    .bind(j.preemptible)
    .bind(j.grace_s)
    .bind(j.max_runtime_s)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn set_placed(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    node_id: Uuid,
    device_indexes: &[i32],
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE jobs SET state = 'running', node_id = $2, device_indexes = $3, started_at = now(), message = '' WHERE id = $1",
    )
    .bind(id)
    .bind(node_id)
    .bind(device_indexes)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn set_state(
    exec: impl sqlx::PgExecutor<'_>,
    id: Uuid,
    from: &[&str],
    to: &str,
    message: Option<&str>,
) -> sqlx::Result<bool> {
    let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
    let r = sqlx::query(
        "UPDATE jobs SET state = $3, message = COALESCE($4, message),
            finished_at = CASE WHEN $3 IN ('succeeded', 'failed', 'cancelled') THEN now() ELSE finished_at END
         WHERE id = $1 AND state = ANY($2)",
    )
    .bind(id)
    .bind(&from)
    .bind(to)
    .bind(message)
    .execute(exec)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn set_message(
    exec: impl sqlx::PgExecutor<'_>,
    id: Uuid,
    message: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE jobs SET message = $2 WHERE id = $1")
        .bind(id)
        .bind(message)
        .execute(exec)
        .await?;
    Ok(())
}

pub async fn record_result(
    exec: impl sqlx::PgExecutor<'_>,
    id: Uuid,
    endpoint: &str,
    exit_code: Option<i32>,
    output_tail: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE jobs SET endpoint = CASE WHEN $2 = '' THEN endpoint ELSE $2 END, exit_code = COALESCE($3, exit_code),
            output_tail = CASE WHEN $4 = '' THEN output_tail ELSE $4 END WHERE id = $1",
    )
    .bind(id)
    .bind(endpoint)
    .bind(exit_code)
    .bind(output_tail)
    .execute(exec)
    .await?;
    Ok(())
}

/// A preempted job goes back to the queue, placed nowhere.
pub async fn requeue_preempted(tx: &mut Transaction<'_, Postgres>, id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE jobs SET state = 'queued', preempt_at = NULL, node_id = NULL, endpoint = '',
            message = 'preempted by a lesson; back in the queue' WHERE id = $1",
    )
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
