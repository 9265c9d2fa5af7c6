//! Queries filtered by a caller's sites, for the tenancy layer.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    Store,
    borrowed::BORROWED_AS_LESSONS,
    lessons::{LESSON_COLS, LessonRow},
};

impl Store {
    /// Lessons at any of `sites` (all sites when None) whose start lies in `[from, to)`.
    pub async fn list_lessons_in(
        &self,
        sites: Option<&[Uuid]>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        limit: i64,
        offset: i64,
    ) -> sqlx::Result<Vec<LessonRow>> {
        sqlx::query_as(sql!(
            "SELECT * FROM (SELECT {LESSON_COLS} FROM lessons l JOIN sites s ON s.id = l.school_site_id
                UNION ALL {BORROWED_AS_LESSONS}) l
             WHERE ($1::uuid[] IS NULL OR l.school_site_id = ANY($1))
               AND ($2::timestamptz IS NULL OR l.start_at >= $2)
               AND ($3::timestamptz IS NULL OR l.start_at < $3)
             ORDER BY l.start_at, l.id LIMIT $4 OFFSET $5"
        ))
        .bind(sites)
        .bind(from)
        .bind(to)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await
    }
}
