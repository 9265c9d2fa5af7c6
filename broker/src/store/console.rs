//! The console's own queries: sessions, device samples, and the read-only
//! aggregates its pages show. Every read here takes the caller's site scope
//! (None = the whole region) from `Scoped`; nothing here decides scope.

use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

use super::{Store, jobs::JobRow, security::UserRow};

#[derive(Debug, Clone, FromRow)]
pub struct SessionRow {
    pub csrf: String,
    pub expires_at: DateTime<Utc>,
    #[sqlx(flatten)]
    pub user: UserRow,
}

#[derive(Debug, Clone, FromRow)]
pub struct SampleRow {
    pub idx: i32,
    pub at: DateTime<Utc>,
    pub utilization_percent: i32,
    pub memory_used_mib: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct RttRow {
    pub site: String,
    pub median_ms: f64,
    pub samples: i32,
    pub measured_at: DateTime<Utc>,
}

/// GPU memory and compute held now on one device by live reservations.
#[derive(Debug, Clone, FromRow)]
pub struct HeldRow {
    pub node_id: Uuid,
    pub device_idx: i32,
    pub slices: i64,
    pub gpu_memory_mib: i64,
    pub gpu_compute_pct: i64,
}

#[derive(Debug, Clone, FromRow)]
pub struct NodeAssignmentRow {
    pub id: Uuid,
    pub kind: String,
    pub state: String,
    pub lesson_id: Option<Uuid>,
    pub seat_number: Option<i32>,
    pub job_id: Option<Uuid>,
    pub device_indexes: Vec<i32>,
    pub gpu_memory_mib: i64,
    pub gpu_compute_pct: i32,
    pub endpoint: String,
    pub ends_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct SeatCounts {
    pub running: i64,
    pub failed_today: i64,
}

impl Store {
    pub async fn insert_console_session(
        &self,
        digest: &[u8],
        user: Uuid,
        csrf: &str,
        expires: DateTime<Utc>,
        source: &str,
    ) -> sqlx::Result<()> {
        // Expired sessions go on each login, so the table stays small
        // without a separate sweeper.
        sqlx::query("DELETE FROM console_sessions WHERE expires_at < now()")
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO console_sessions (id_sha256, user_id, csrf, expires_at, source) VALUES ($1, $2, $3, $4, $5)")
            .bind(digest)
            .bind(user)
            .bind(csrf)
            .bind(expires)
            .bind(source.chars().take(200).collect::<String>())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A live session of an enabled user; expired or disabled is no session.
    pub async fn console_session(&self, digest: &[u8]) -> sqlx::Result<Option<SessionRow>> {
        sqlx::query_as(
            "SELECT s.csrf, s.expires_at, u.id, u.username, u.password_hash, u.role, u.sites, u.disabled
             FROM console_sessions s JOIN users u ON u.id = s.user_id
             WHERE s.id_sha256 = $1 AND s.expires_at > now() AND NOT u.disabled",
        )
        .bind(digest)
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn delete_console_session(&self, digest: &[u8]) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE id_sha256 = $1")
            .bind(digest)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records one sample per device of the given nodes and prunes old ones.
    pub async fn record_device_samples(
        &self,
        rows: &[(Uuid, i32, i32, i64)],
        keep: chrono::Duration,
    ) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        for (node, idx, util, mem) in rows {
            sqlx::query(
                "INSERT INTO device_samples (node_id, idx, utilization_percent, memory_used_mib)
                 SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM nodes WHERE id = $1) ON CONFLICT DO NOTHING",
            )
            .bind(node)
            .bind(idx)
            .bind((*util).clamp(0, 100))
            .bind((*mem).max(0))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM device_samples WHERE at < $1")
            .bind(Utc::now() - keep)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    pub async fn device_samples(
        &self,
        node: Uuid,
        since: DateTime<Utc>,
    ) -> sqlx::Result<Vec<SampleRow>> {
        sqlx::query_as("SELECT idx, at, utilization_percent, memory_used_mib FROM device_samples WHERE node_id = $1 AND at >= $2 ORDER BY at")
            .bind(node)
            .bind(since)
            .fetch_all(&self.pool)
            .await
    }

    pub async fn rtt_to_node(&self, node: Uuid) -> sqlx::Result<Vec<RttRow>> {
        sqlx::query_as(
            "SELECT s.name AS site, r.median_ms, r.samples, r.measured_at FROM rtt_measurements r
             JOIN sites s ON s.id = r.site_id WHERE r.node_id = $1 ORDER BY s.name",
        )
        .bind(node)
        .fetch_all(&self.pool)
        .await
    }

    /// What live reservations hold on each device right now.
    pub async fn held_now(&self) -> sqlx::Result<Vec<HeldRow>> {
        sqlx::query_as(
            "SELECT node_id, device_idx, count(*) AS slices, COALESCE(sum(gpu_memory_mib), 0)::bigint AS gpu_memory_mib,
                    COALESCE(sum(gpu_compute_pct), 0)::bigint AS gpu_compute_pct
             FROM reservations WHERE during @> now() AND device_idx IS NOT NULL GROUP BY node_id, device_idx",
        )
        .fetch_all(&self.pool)
        .await
    }

    pub async fn node_assignments(&self, node: Uuid) -> sqlx::Result<Vec<NodeAssignmentRow>> {
        sqlx::query_as(
            "SELECT a.id, a.kind, a.state, st.lesson_id, st.number AS seat_number, a.job_id,
                    COALESCE(st.device_indexes, j.device_indexes, '{}') AS device_indexes,
                    COALESCE(st.gpu_memory_mib, j.gpu_memory_mib, 0) AS gpu_memory_mib,
                    COALESCE(st.gpu_compute_pct, j.gpu_compute_pct, 0) AS gpu_compute_pct,
                    a.endpoint, a.ends_at
             FROM assignments a LEFT JOIN seats st ON st.id = a.seat_id LEFT JOIN jobs j ON j.id = a.job_id
             WHERE a.node_id = $1 AND a.live
             ORDER BY a.created_at",
        )
        .bind(node)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn seat_counts(
        &self,
        sites: Option<&[Uuid]>,
        day_start: DateTime<Utc>,
    ) -> sqlx::Result<SeatCounts> {
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE st.state = 'running') AS running,
                    count(*) FILTER (WHERE st.state = 'failed' AND l.start_at >= $2) AS failed_today
             FROM seats st JOIN lessons l ON l.id = st.lesson_id
             WHERE ($1::uuid[] IS NULL OR l.school_site_id = ANY($1)) AND l.state NOT IN ('ended', 'cancelled')",
        )
        .bind(sites)
        .bind(day_start)
        .fetch_one(&self.pool)
        .await
    }

    /// (lesson id, seat number, node name, message) of failed seats in open lessons.
    pub async fn failed_seats(
        &self,
        sites: Option<&[Uuid]>,
    ) -> sqlx::Result<Vec<(Uuid, i32, Option<String>, String)>> {
        sqlx::query_as(
            "SELECT st.lesson_id, st.number, n.name, st.message FROM seats st JOIN lessons l ON l.id = st.lesson_id
             LEFT JOIN nodes n ON n.id = st.node_id
             WHERE st.state = 'failed' AND l.state NOT IN ('ended', 'cancelled')
               AND ($1::uuid[] IS NULL OR l.school_site_id = ANY($1))
             ORDER BY l.start_at LIMIT 20",
        )
        .bind(sites)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn console_jobs(
        &self,
        sites: Option<&[Uuid]>,
        state: Option<&str>,
        limit: i64,
    ) -> sqlx::Result<Vec<JobRow>> {
        sqlx::query_as(
            "SELECT j.id, j.request_id, j.school_site_id, s.name AS school_site, j.name, j.state, j.spec, j.workload,
                    j.priority, j.preemptible, j.grace_s, j.max_runtime_s, j.node_id, n.name AS node_name, j.endpoint, j.exit_code,
                    j.output_tail, j.message, j.created_at
             FROM jobs j JOIN sites s ON s.id = j.school_site_id LEFT JOIN nodes n ON n.id = j.node_id
             WHERE ($1::uuid[] IS NULL OR j.school_site_id = ANY($1)) AND ($2::text IS NULL OR j.state = $2)
             ORDER BY j.created_at DESC LIMIT $3",
        )
        .bind(sites)
        .bind(state)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }
}

/// Seats of one lesson in each state that tells whether it works.
#[derive(Debug, Clone, Default, FromRow)]
pub struct SeatRollup {
    pub lesson_id: Uuid,
    pub failed: i64,
    pub running: i64,
}

impl Store {
    /// Failed and running seats of each of `lessons`; a lesson with neither
    /// has no row.
    pub async fn seat_rollups(&self, lessons: &[Uuid]) -> sqlx::Result<Vec<SeatRollup>> {
        sqlx::query_as(
            "SELECT lesson_id, count(*) FILTER (WHERE state = 'failed') AS failed,
                    count(*) FILTER (WHERE state = 'running') AS running
             FROM seats WHERE lesson_id = ANY($1) AND state IN ('failed', 'running') GROUP BY lesson_id",
        )
        .bind(lessons)
        .fetch_all(&self.pool)
        .await
    }

    /// Each seat's newest output tail (what its program printed last, kept
    /// on the assignment when it ended); seats without one have no row.
    pub async fn seat_output_tails(&self, lesson: Uuid) -> sqlx::Result<Vec<(Uuid, String)>> {
        sqlx::query_as(
            "SELECT DISTINCT ON (a.seat_id) a.seat_id, a.output_tail FROM assignments a
             JOIN seats st ON st.id = a.seat_id
             WHERE st.lesson_id = $1 AND a.output_tail <> ''
             ORDER BY a.seat_id, a.created_at DESC",
        )
        .bind(lesson)
        .fetch_all(&self.pool)
        .await
    }

    /// Seats of lessons not yet over, by state, for the metrics.
    pub async fn open_seat_states(&self) -> sqlx::Result<Vec<(String, i64)>> {
        sqlx::query_as(
            "SELECT st.state, count(*) FROM seats st JOIN lessons l ON l.id = st.lesson_id
             WHERE l.state NOT IN ('ended', 'cancelled') GROUP BY st.state",
        )
        .fetch_all(&self.pool)
        .await
    }
}

impl Store {
    /// Also ends the user's sessions: a new password signs everyone out.
    pub async fn set_user_password(&self, user: Uuid, hash: &str) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
            .bind(user)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM console_sessions WHERE user_id = $1")
            .bind(user)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
}
