use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgConnection, Postgres, Transaction, types::Json};
use uuid::Uuid;

use super::Store;
use crate::domain::spec::Workload;

/// What the agent is told to run; stored with the assignment so that it can
/// be re-sent verbatim on reconnect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payload {
    pub kind: String,
    pub owner_id: Uuid,
    pub workload: Workload,
    pub runtime: String,
    pub cpu_millis: u32,
    pub memory_mib: u64,
    pub gpus: Vec<GpuGrant>,
    pub grace_seconds: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GpuGrant {
    pub device_index: u32,
    pub memory_mib: u64,
    pub compute_percent: u32,
}

#[derive(Debug, Clone, FromRow)]
pub struct AssignmentRow {
    pub id: Uuid,
    pub generation: i64,
    pub kind: String,
    pub seat_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub node_id: Uuid,
    pub state: String,
    pub payload: Json<Payload>,
    pub endpoint: String,
    pub ends_at: DateTime<Utc>,
}

/// States in which the broker expects the work to be running on its node.
pub const ACTIVE: &[&str] = &["pending", "starting", "running"];

const COLS: &str =
    "id, generation, kind, seat_id, job_id, node_id, state, payload, endpoint, ends_at";

impl Store {
    /// The generation an agent runs an assignment under, as it reported.
    pub async fn set_assignment_generation(&self, id: Uuid, generation: i64) -> sqlx::Result<()> {
        sqlx::query("UPDATE assignments SET generation = $2 WHERE id = $1")
            .bind(id)
            .bind(generation)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Assignments pending, starting or running, per node.
    pub async fn live_assignments_per_node(&self) -> sqlx::Result<Vec<(Uuid, i64)>> {
        sqlx::query_as("SELECT node_id, count(*) FROM assignments WHERE live GROUP BY node_id")
            .fetch_all(&self.pool)
            .await
    }

    /// Assignments pending, starting or running on one node.
    pub async fn live_assignments_on(&self, node: Uuid) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT count(*) FROM assignments WHERE node_id = $1 AND live")
            .bind(node)
            .fetch_one(&self.pool)
            .await
    }

    pub async fn get_assignment(&self, id: Uuid) -> sqlx::Result<Option<AssignmentRow>> {
        sqlx::query_as(sql!("SELECT {COLS} FROM assignments WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Work released on `node_id` whose agent has not yet sent its final
    /// report, within `since`: the agent is asked again (it answers a release
    /// of work it does not run with `stopped`), so settlement is never left
    /// waiting for a report that nobody will send.
    pub async fn released_unreported(
        &self,
        node_id: Uuid,
        since: DateTime<Utc>,
    ) -> sqlx::Result<Vec<(Uuid, i64)>> {
        sqlx::query_as(
            "SELECT id, generation FROM assignments
              WHERE node_id = $1 AND unreported AND ends_at >= $2",
        )
        .bind(node_id)
        .bind(since)
        .fetch_all(&self.pool)
        .await
    }

    /// Work the broker believes should be running on `node_id`.
    pub async fn active_assignments(&self, node_id: Uuid) -> sqlx::Result<Vec<AssignmentRow>> {
        sqlx::query_as(sql!(
            "SELECT {COLS} FROM assignments WHERE node_id = $1 AND live"
        ))
        .bind(node_id)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn bump_generation(&self, id: Uuid) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "UPDATE assignments SET generation = generation + 1, updated_at = now() WHERE id = $1 RETURNING generation",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
    }

    /// Records what the agent reported, unless the report is for an older
    /// generation. A stopped, exited or failed report is the agent's last
    /// word on the work's usage (`final_report_at`, which settlement waits
    /// for); a released assignment stays released.
    pub async fn record_status(
        &self,
        id: Uuid,
        generation: i64,
        state: &str,
        endpoint: &str,
        exit_code: Option<i32>,
        output_tail: &str,
        slice_seconds: f64,
    ) -> sqlx::Result<Option<AssignmentRow>> {
        sqlx::query_as(sql!(
            "UPDATE assignments SET state = CASE WHEN state = 'released' THEN state ELSE $3 END,
                endpoint = CASE WHEN $4 = '' THEN endpoint ELSE $4 END,
                exit_code = COALESCE($5, exit_code),
                output_tail = CASE WHEN $6 = '' THEN output_tail ELSE $6 END,
                slice_seconds = GREATEST(slice_seconds, $7), updated_at = now(),
                final_report_at = CASE WHEN $3 IN ('stopped', 'exited', 'failed') THEN now() END
             WHERE id = $1 AND generation = $2 RETURNING {COLS}"
        ))
        .bind(id)
        .bind(generation)
        .bind(state)
        .bind(endpoint)
        .bind(exit_code)
        .bind(output_tail)
        .bind(slice_seconds)
        .fetch_optional(&self.pool)
        .await
    }
}

/// One progress report (starting or running, no exit) from an agent, for
/// [`record_progress`].
pub struct Progress {
    /// The reporting node: only its own assignments change.
    pub node_id: Uuid,
    pub id: Uuid,
    pub generation: i64,
    pub state: &'static str,
    pub endpoint: String,
    pub output_tail: String,
    pub slice_seconds: f64,
}

/// What [`record_progress`] changed: an assignment of the reporting
/// node at the reported generation.
#[derive(Debug, FromRow)]
pub struct ProgressRow {
    pub id: Uuid,
    pub node_id: Uuid,
    pub job_id: Option<Uuid>,
    pub released: bool,
    pub lesson_id: Option<Uuid>,
}

/// Applies many progress reports, from one node or many, in one
/// statement: each assignment's status and, for a running lesson seat,
/// the seat itself. A storm of seats starting at the bell arrives as
/// bursts of these, and one round trip per report was most of the time
/// to "all running". A report on another node's assignment or an older
/// generation changes nothing and is absent from the result. At most one
/// report per assignment.
pub async fn record_progress(
    conn: &mut PgConnection,
    reports: &[&Progress],
) -> sqlx::Result<Vec<ProgressRow>> {
    // Rows are updated in id order, so two statements never lock the
    // same rows in opposite orders.
    let mut order: Vec<&Progress> = reports.to_vec();
    order.sort_by_key(|r| r.id);
    // Planned for each batch, never from a cached generic plan. After a
    // prepared statement's fifth use PostgreSQL may keep one generic plan
    // for the connection's life; made while `assignments` was still small
    // (a region's first bell, a fresh database) it hash-joins a sequential
    // scan of the whole table, and then read every assignment for each
    // batch of reports as the table grew: in one 100,000-seat storm this
    // statement took 40.7 s in all, in another 11.3 s. Planned with the
    // batch's own arrays it looks each row up by its key.
    sqlx::query_as(
            "WITH input AS (
                SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::float8[])
                    AS t(node_id, id, generation, state, endpoint, output_tail, slice_seconds)
                 ORDER BY id
             ), a AS (
                UPDATE assignments x SET
                    state = CASE WHEN x.state = 'released' THEN x.state ELSE i.state END,
                    endpoint = CASE WHEN i.endpoint = '' THEN x.endpoint ELSE i.endpoint END,
                    output_tail = CASE WHEN i.output_tail = '' THEN x.output_tail ELSE i.output_tail END,
                    slice_seconds = GREATEST(x.slice_seconds, i.slice_seconds),
                    updated_at = now(), final_report_at = NULL
                  FROM input i
                 WHERE x.id = i.id AND x.generation = i.generation AND x.node_id = i.node_id
                RETURNING x.id, x.node_id, x.seat_id, x.job_id, x.state, i.state AS reported, i.endpoint AS reported_endpoint
             ), s AS (
                UPDATE seats SET state = 'running',
                    endpoint = COALESCE(NULLIF(a.reported_endpoint, ''), seats.endpoint)
                  FROM a
                 WHERE seats.id = a.seat_id AND a.state <> 'released' AND a.reported = 'running'
                RETURNING seats.id
             )
             SELECT a.id, a.node_id, a.job_id, a.state = 'released' AS released, seats.lesson_id
               FROM a LEFT JOIN seats ON seats.id = a.seat_id",
        )
        .persistent(false)
        .bind(order.iter().map(|r| r.node_id).collect::<Vec<_>>())
        .bind(order.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(order.iter().map(|r| r.generation).collect::<Vec<_>>())
        .bind(order.iter().map(|r| r.state).collect::<Vec<_>>())
        .bind(order.iter().map(|r| r.endpoint.as_str()).collect::<Vec<_>>())
        .bind(order.iter().map(|r| r.output_tail.as_str()).collect::<Vec<_>>())
        .bind(order.iter().map(|r| r.slice_seconds).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await
}

pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    node_id: Uuid,
    seat_id: Option<Uuid>,
    job_id: Option<Uuid>,
    payload: &Payload,
    ends_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO assignments (id, kind, seat_id, job_id, node_id, state, payload, ends_at)
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7)",
    )
    .bind(id)
    .bind(&payload.kind)
    .bind(seat_id)
    .bind(job_id)
    .bind(node_id)
    .bind(Json(payload))
    .bind(ends_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes many seat assignments, generation 1, in one statement.
pub async fn insert_seats(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[AssignmentRow],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO assignments (id, kind, seat_id, node_id, state, payload, ends_at)
         SELECT id, 'seat', seat_id, node_id, 'pending', payload, ends_at
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::jsonb[], $5::timestamptz[])
              AS t(id, seat_id, node_id, payload, ends_at)",
    )
    .bind(rows.iter().map(|a| a.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|a| a.seat_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|a| a.node_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|a| Json(&a.payload.0)).collect::<Vec<_>>())
    .bind(rows.iter().map(|a| a.ends_at).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Marks the active assignments of a seat or job released; returns them so the
/// caller can tell their agents.
pub async fn release_for(
    tx: &mut Transaction<'_, Postgres>,
    seat_id: Option<Uuid>,
    job_id: Option<Uuid>,
) -> sqlx::Result<Vec<AssignmentRow>> {
    sqlx::query_as(sql!(
        "UPDATE assignments SET state = 'released', updated_at = now()
         WHERE (seat_id = $1 OR job_id = $2) AND live
         RETURNING {COLS}"
    ))
    .bind(seat_id)
    .bind(job_id)
    .fetch_all(&mut **tx)
    .await
}

/// Releases every active assignment of a lesson's seats.
pub async fn release_lesson(
    tx: &mut Transaction<'_, Postgres>,
    lesson_id: Uuid,
) -> sqlx::Result<Vec<AssignmentRow>> {
    sqlx::query_as(sql!(
        "UPDATE assignments SET state = 'released', updated_at = now()
         WHERE seat_id IN (SELECT id FROM seats WHERE lesson_id = $1) AND live
         RETURNING {COLS}"
    ))
    .bind(lesson_id)
    .fetch_all(&mut **tx)
    .await
}

/// An assignment's final state as its agent reported it, unless it was
/// released meanwhile.
pub async fn set_final_state(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    id: Uuid,
    state: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE assignments SET state = $2 WHERE id = $1 AND state <> 'released'")
        .bind(id)
        .bind(state)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
