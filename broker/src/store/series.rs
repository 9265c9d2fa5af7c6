//! Series and their occurrences (migration 0018). An occurrence's state is
//! its lesson's: read through the join, never copied, so cancelling a lesson
//! (and refunding its hold) is all that cancelling an occurrence takes.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use sqlx::{FromRow, Postgres, Transaction, types::Json};
use uuid::Uuid;

use super::Store;
use crate::series::request::Template;

type Tx<'a> = Transaction<'a, Postgres>;

#[derive(Debug, Clone, FromRow)]
pub struct SeriesRow {
    pub id: Uuid,
    pub request_id: Option<String>,
    pub school_site_id: Uuid,
    pub school_site: String,
    pub title: String,
    pub rrule: String,
    pub time_zone: String,
    pub start_time: NaiveTime,
    pub duration_s: i32,
    pub term_start: NaiveDate,
    pub term_end: NaiveDate,
    pub exception_dates: Vec<NaiveDate>,
    pub template: Json<Template>,
    pub policy: String,
    pub ended_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// One occurrence: where the rule put it, its lesson (with the lesson's
/// start and state) or why it was not booked.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct OccurrenceRow {
    pub rule_start: DateTime<Utc>,
    pub lesson_id: Option<Uuid>,
    pub lesson_start: Option<DateTime<Utc>>,
    pub lesson_state: Option<String>,
    pub reason: String,
}

/// An occurrence to write with its series.
pub struct NewOccurrence<'a> {
    pub rule_start: DateTime<Utc>,
    pub lesson_id: Option<Uuid>,
    pub reason: &'a str,
}

const SERIES_SELECT: &str = "SELECT r.id, r.request_id, r.school_site_id, s.name AS school_site, r.title, r.rrule,
    r.time_zone, r.start_time, r.duration_s, r.term_start, r.term_end, r.exception_dates, r.template, r.policy,
    r.ended_at, r.created_at FROM series r JOIN sites s ON s.id = r.school_site_id";

/// Writes a series row (its `school_site` name is not a column).
pub async fn insert_series(tx: &mut Tx<'_>, r: &SeriesRow) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO series (id, request_id, school_site_id, title, rrule, time_zone, start_time, duration_s,
            term_start, term_end, exception_dates, template, policy, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(r.id)
    .bind(&r.request_id)
    .bind(r.school_site_id)
    .bind(&r.title)
    .bind(&r.rrule)
    .bind(&r.time_zone)
    .bind(r.start_time)
    .bind(r.duration_s)
    .bind(r.term_start)
    .bind(r.term_end)
    .bind(&r.exception_dates)
    .bind(&r.template)
    .bind(&r.policy)
    .bind(r.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes a series' occurrences in one statement.
pub async fn insert_occurrences(
    tx: &mut Tx<'_>,
    series_id: Uuid,
    os: &[NewOccurrence<'_>],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO series_occurrences (series_id, rule_start, lesson_id, reason)
         SELECT $1, * FROM UNNEST($2::timestamptz[], $3::uuid[], $4::text[])",
    )
    .bind(series_id)
    .bind(os.iter().map(|o| o.rule_start).collect::<Vec<_>>())
    .bind(os.iter().map(|o| o.lesson_id).collect::<Vec<_>>())
    .bind(os.iter().map(|o| o.reason).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Points occurrences at the lessons that replaced theirs, and sets the
/// series' template, start time and duration to what they were booked
/// with (a change of all future occurrences), in the caller's transaction.
pub async fn replace_future(
    tx: &mut Tx<'_>,
    r: &SeriesRow,
    replaced: &[(uuid::Uuid, uuid::Uuid)],
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE series_occurrences o SET lesson_id = n.new
           FROM UNNEST($2::uuid[], $3::uuid[]) AS n(old, new)
          WHERE o.series_id = $1 AND o.lesson_id = n.old",
    )
    .bind(r.id)
    .bind(replaced.iter().map(|p| p.0).collect::<Vec<_>>())
    .bind(replaced.iter().map(|p| p.1).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE series SET template = $2, start_time = $3, duration_s = $4 WHERE id = $1")
        .bind(r.id)
        .bind(&r.template)
        .bind(r.start_time)
        .bind(r.duration_s)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    pub async fn get_series(&self, id: Uuid) -> sqlx::Result<Option<SeriesRow>> {
        sqlx::query_as(sql!("{SERIES_SELECT} WHERE r.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn series_by_request_id(&self, request_id: &str) -> sqlx::Result<Option<Uuid>> {
        sqlx::query_scalar("SELECT id FROM series WHERE request_id = $1")
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Series of the given schools (all, for None) whose term overlaps
    /// `[from, to]`, by term start.
    pub async fn list_series(
        &self,
        schools: Option<&[Uuid]>,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> sqlx::Result<Vec<SeriesRow>> {
        sqlx::query_as(sql!(
            "{SERIES_SELECT}
             WHERE ($1::uuid[] IS NULL OR r.school_site_id = ANY($1))
               AND ($2::date IS NULL OR r.term_end >= $2)
               AND ($3::date IS NULL OR r.term_start <= $3)
             ORDER BY r.term_start, r.id LIMIT 500"
        ))
        .bind(schools)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn occurrences_of(&self, series_id: Uuid) -> sqlx::Result<Vec<OccurrenceRow>> {
        sqlx::query_as(
            "SELECT o.rule_start, o.lesson_id, l.start_at AS lesson_start, l.state AS lesson_state, o.reason
               FROM series_occurrences o LEFT JOIN lessons l ON l.id = o.lesson_id
              WHERE o.series_id = $1 ORDER BY o.rule_start",
        )
        .bind(series_id)
        .fetch_all(&self.pool)
        .await
    }

    /// The series a lesson is an occurrence of, if any.
    pub async fn series_of_lesson(&self, lesson_id: Uuid) -> sqlx::Result<Option<Uuid>> {
        sqlx::query_scalar("SELECT series_id FROM series_occurrences WHERE lesson_id = $1")
            .bind(lesson_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Points an occurrence at the lesson that replaced its old one (a move).
    pub async fn repoint_occurrence(
        &self,
        series_id: Uuid,
        old_lesson: Uuid,
        new_lesson: Uuid,
    ) -> sqlx::Result<bool> {
        let r = sqlx::query(
            "UPDATE series_occurrences SET lesson_id = $3 WHERE series_id = $1 AND lesson_id = $2",
        )
        .bind(series_id)
        .bind(old_lesson)
        .bind(new_lesson)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Marks the series ended at `at` (no occurrence from then on).
    pub async fn end_series(&self, series_id: Uuid, at: DateTime<Utc>) -> sqlx::Result<()> {
        sqlx::query("UPDATE series SET ended_at = $2 WHERE id = $1 AND ended_at IS NULL")
            .bind(series_id)
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
