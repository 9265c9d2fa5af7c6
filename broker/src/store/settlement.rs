//! The inter-region settlement ledger, append-only on both sides: one line
//! per lesson and direction (migrations/0017_federation.sql).

use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

use super::Store;

#[derive(Debug, Clone, FromRow)]
pub struct SettlementRow {
    pub peer: String,
    pub direction: String,
    pub home_lesson_id: Uuid,
    pub seats: i32,
    pub amount_uah: i64,
    pub slice_seconds: f64,
    pub recorded_at: DateTime<Utc>,
}

/// One lesson's line of the ledger, as both sides record it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settled {
    pub seats: i32,
    pub amount_uah: i64,
    pub slice_seconds: f64,
}

/// A lent lesson that is over and whose usage is all in.
#[derive(Debug, Clone, FromRow)]
pub struct ToSettle {
    pub peering_id: Uuid,
    pub home_lesson_id: Uuid,
    pub lesson_id: Uuid,
    pub seats: i32,
    /// The lending weight the lesson was lent at (decision 108).
    pub weight: f64,
}

impl Store {
    /// Appends one settlement line; a line already there for the lesson and
    /// direction is kept as it is (recorded once).
    pub async fn record_settlement(
        &self,
        peering: Uuid,
        direction: &str,
        home_lesson: Uuid,
        s: Settled,
    ) -> sqlx::Result<()> {
        record(&self.pool, peering, direction, home_lesson, s).await?;
        Ok(())
    }

    /// The line recorded for a lesson and direction, if any.
    pub async fn settled(
        &self,
        peering: Uuid,
        direction: &str,
        home_lesson: Uuid,
    ) -> sqlx::Result<Option<Settled>> {
        let row: Option<(i32, i64, f64)> = sqlx::query_as(
            "SELECT seats, amount_uah, slice_seconds FROM settlement_entries
             WHERE peering_id = $1 AND direction = $2 AND home_lesson_id = $3",
        )
        .bind(peering)
        .bind(direction)
        .bind(home_lesson)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(seats, amount_uah, slice_seconds)| Settled {
            seats,
            amount_uah,
            slice_seconds,
        }))
    }

    /// Lent lessons that are over, not yet settled, and whose usage is in:
    /// every assignment made its final report, or `usage_wait` passed since
    /// the lesson's end (as voucher settlement waits).
    pub async fn lent_to_settle(&self, usage_wait_s: f64) -> sqlx::Result<Vec<ToSettle>> {
        sqlx::query_as(
            "SELECT ll.peering_id, ll.home_lesson_id, ll.lesson_id, ll.seats, ll.weight
             FROM lent_lessons ll JOIN lessons l ON l.id = ll.lesson_id
             WHERE l.state IN ('ended', 'cancelled')
               AND NOT EXISTS (SELECT 1 FROM settlement_entries e WHERE e.peering_id = ll.peering_id
                    AND e.direction = 'lent' AND e.home_lesson_id = ll.home_lesson_id)
               AND (NOT EXISTS (SELECT 1 FROM assignments a JOIN seats s ON s.id = a.seat_id
                        WHERE s.lesson_id = l.id AND a.final_report_at IS NULL)
                    OR l.start_at + make_interval(secs => l.duration_s + $1) < now())
             LIMIT 100",
        )
        .bind(usage_wait_s)
        .fetch_all(&self.pool)
        .await
    }

    /// Settlement lines recorded in `[from, to)`, for one peering or all.
    pub async fn settlement_lines(
        &self,
        peering: Option<Uuid>,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
    ) -> sqlx::Result<Vec<SettlementRow>> {
        sqlx::query_as(
            "SELECT p.name AS peer, e.direction, e.home_lesson_id, e.seats, e.amount_uah, e.slice_seconds,
                e.recorded_at
             FROM settlement_entries e JOIN peerings p ON p.id = e.peering_id
             WHERE ($1::uuid IS NULL OR e.peering_id = $1) AND e.recorded_at >= $2 AND e.recorded_at < $3
             ORDER BY e.recorded_at, e.id",
        )
        .bind(peering)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
    }
}

/// `Store::record_settlement` on any executor (the home region writes its
/// `borrowed` line in the transaction that charges the school's vouchers);
/// true when this call wrote the line.
pub async fn record<'e>(
    ex: impl sqlx::PgExecutor<'e>,
    peering: Uuid,
    direction: &str,
    home_lesson: Uuid,
    s: Settled,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "INSERT INTO settlement_entries (peering_id, direction, home_lesson_id, seats, amount_uah, slice_seconds)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(peering)
    .bind(direction)
    .bind(home_lesson)
    .bind(s.seats)
    .bind(s.amount_uah)
    .bind(s.slice_seconds)
    .execute(ex)
    .await?;
    Ok(r.rows_affected() > 0)
}
