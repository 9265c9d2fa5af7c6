//! The home side of federation: lessons of this region's schools that a
//! peer region hosts (migrations/0017_federation.sql).

use chrono::{DateTime, Utc};
use sqlx::{FromRow, Postgres, Transaction, types::Json};
use uuid::Uuid;

use super::Store;

type Tx<'a> = Transaction<'a, Postgres>;

#[derive(Debug, Clone, FromRow)]
pub struct BorrowedRow {
    pub lesson_id: Uuid,
    pub request_id: Option<String>,
    pub peering_id: Uuid,
    pub school_site_id: Uuid,
    pub seats: i32,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub rtt_offset_ms: f64,
    pub booking: Json<serde_json::Value>,
    pub state: String,
    pub last_seen: Option<Json<serde_json::Value>>,
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// Committed borrowed lessons in the columns of `lessons::LESSON_COLS`, as
/// last seen, so lists and timetables show them beside the region's own.
pub(crate) const BORROWED_AS_LESSONS: &str = "SELECT b.lesson_id AS id, b.request_id, b.school_site_id,
    bs.name AS school_site, COALESCE(b.booking->>'title', '') AS title, b.start_at,
    EXTRACT(EPOCH FROM b.end_at - b.start_at)::int AS duration_s,
    COALESCE(NULLIF(b.last_seen->>'state', ''), 'booked') AS state, b.seats AS seat_count,
    COALESCE((b.booking->>'min_seats')::int, 0) AS min_seats, b.booking->'seat' AS seat_spec,
    b.booking->'workload' AS workload, b.booking->'datasets' AS datasets,
    COALESCE((b.booking->>'max_rtt_ms')::int, 0) AS max_rtt_ms, b.start_at AS window_start,
    b.end_at AS window_end, '{}'::json AS explanation, 'hosted by region ' || bp.name AS message,
    b.created_at, COALESCE(b.booking->>'residency', '') AS residency,
    NULL::uuid AS series_id
    FROM borrowed_lessons b JOIN sites bs ON bs.id = b.school_site_id JOIN peerings bp ON bp.id = b.peering_id
    WHERE b.state = 'committed'";

pub(super) const BORROWED_COLS: &str =
    "lesson_id, request_id, peering_id, school_site_id, seats, start_at, end_at,
    rtt_offset_ms, booking, state, last_seen, last_seen_at";

impl Store {
    pub async fn borrowed(&self, id: Uuid) -> sqlx::Result<Option<BorrowedRow>> {
        sqlx::query_as(sql!(
            "SELECT {BORROWED_COLS} FROM borrowed_lessons WHERE lesson_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn borrowed_by_request_id(&self, rid: &str) -> sqlx::Result<Option<Uuid>> {
        sqlx::query_scalar("SELECT lesson_id FROM borrowed_lessons WHERE request_id = $1")
            .bind(rid)
            .fetch_optional(&self.pool)
            .await
    }

    /// Borrowed lessons still `held` since before `cutoff`: their booking
    /// stopped between hold and commit (the broker died).
    pub async fn borrowed_held_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> sqlx::Result<Vec<BorrowedRow>> {
        sqlx::query_as(sql!(
            "SELECT {BORROWED_COLS} FROM borrowed_lessons WHERE state = 'held' AND created_at < $1 LIMIT 100"
        ))
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn set_borrowed_state(&self, id: Uuid, state: &str) -> sqlx::Result<()> {
        sqlx::query("UPDATE borrowed_lessons SET state = $2 WHERE lesson_id = $1")
            .bind(id)
            .bind(state)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A held borrowed lesson is committed, with the booking's final form
    /// and the lender's answer.
    pub async fn commit_borrowed(
        &self,
        id: Uuid,
        booking: &serde_json::Value,
        seen: &serde_json::Value,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE borrowed_lessons SET state = 'committed', booking = $2, last_seen = $3, last_seen_at = now()
             WHERE lesson_id = $1",
        )
        .bind(id)
        .bind(Json(booking))
        .bind(Json(seen))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The lender's last answer about a borrowed lesson.
    pub async fn save_borrowed_seen(&self, id: Uuid, seen: &serde_json::Value) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE borrowed_lessons SET last_seen = $2, last_seen_at = now() WHERE lesson_id = $1",
        )
        .bind(id)
        .bind(Json(seen))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Borrowed lessons not over yet, as last seen: the ones whose seats
    /// Watch and the console follow.
    pub async fn borrowed_live(&self) -> sqlx::Result<Vec<BorrowedRow>> {
        sqlx::query_as(sql!(
            "SELECT {BORROWED_COLS} FROM borrowed_lessons
             WHERE state = 'committed' AND end_at > now() - interval '10 minutes'
               AND COALESCE(last_seen->>'state', '') NOT IN ('ended', 'cancelled')
             LIMIT 500"
        ))
        .fetch_all(&self.pool)
        .await
    }

    /// A school site's borrowed lessons whose seat links are open: committed,
    /// and not past their end plus `grace_s` (decision 110).
    pub async fn site_borrowed_open(
        &self,
        site_id: Uuid,
        grace_s: f64,
    ) -> sqlx::Result<Vec<BorrowedRow>> {
        sqlx::query_as(sql!(
            "SELECT {BORROWED_COLS} FROM borrowed_lessons
             WHERE school_site_id = $1 AND state = 'committed'
               AND end_at + make_interval(secs => $2) > now()
               AND COALESCE(last_seen->>'state', '') <> 'cancelled'
             LIMIT 500"
        ))
        .bind(site_id)
        .bind(grace_s)
        .fetch_all(&self.pool)
        .await
    }

    /// Borrowed lessons past their end that this region has not settled.
    pub async fn borrowed_to_settle(&self) -> sqlx::Result<Vec<BorrowedRow>> {
        sqlx::query_as(sql!(
            "SELECT {BORROWED_COLS} FROM borrowed_lessons b
             WHERE state = 'committed' AND end_at < now()
               AND NOT EXISTS (SELECT 1 FROM settlement_entries e WHERE e.peering_id = b.peering_id
                    AND e.direction = 'borrowed' AND e.home_lesson_id = b.lesson_id)
             LIMIT 100"
        ))
        .fetch_all(&self.pool)
        .await
    }
}

/// Writes a borrowed lesson `held`, before its lender commits.
pub async fn insert(tx: &mut Tx<'_>, b: &BorrowedRow) -> sqlx::Result<()> {
    sqlx::query(sql!(
        "INSERT INTO borrowed_lessons ({BORROWED_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    ))
    .bind(b.lesson_id)
    .bind(&b.request_id)
    .bind(b.peering_id)
    .bind(b.school_site_id)
    .bind(b.seats)
    .bind(b.start_at)
    .bind(b.end_at)
    .bind(b.rtt_offset_ms)
    .bind(&b.booking)
    .bind(&b.state)
    .bind(&b.last_seen)
    .bind(b.last_seen_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Forgets a borrowed lesson still `held` (no lender committed it); true
/// when there was one. A committed one is kept.
pub async fn delete_held(tx: &mut Tx<'_>, id: Uuid) -> sqlx::Result<bool> {
    let r = sqlx::query("DELETE FROM borrowed_lessons WHERE lesson_id = $1 AND state = 'held'")
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(r.rows_affected() > 0)
}
