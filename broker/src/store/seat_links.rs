//! Seat links' rows (migration 0016): each school site's edge address for
//! links, paused classes, and the seats a site's edge proxies.

use uuid::Uuid;

use super::Store;
use crate::seats::links::LinkedSeat;

impl Store {
    /// The seats whose links the edge of school site `site_id` serves: the
    /// active seat assignments of its lessons, wherever their nodes are
    /// (students sit at the school; their seats may be at the district),
    /// and the seats a teacher stopped (decision 103), whose links say so.
    /// A link opens until the lesson's window ends (its end plus grace).
    pub async fn site_linked_seats(&self, site_id: Uuid) -> sqlx::Result<Vec<LinkedSeat>> {
        sqlx::query_as(
            "SELECT st.id AS seat_id, a.id AS assignment_id, l.id AS lesson_id,
                    coalesce(a.endpoint, '') AS endpoint,
                    (extract(epoch FROM l.window_end) * 1000)::bigint AS open_until_unix_ms,
                    coalesce(l.seat_spec->>'runtime', 'process') AS runtime,
                    p.lesson_id IS NOT NULL AS paused,
                    a.id IS NULL AS stopped
               FROM lessons l
               JOIN seats st ON st.lesson_id = l.id
               LEFT JOIN assignments a ON a.seat_id = st.id
                AND a.live
               LEFT JOIN seat_stops s ON s.seat_id = st.id
               LEFT JOIN seat_link_pauses p ON p.lesson_id = l.id
              WHERE l.school_site_id = $1 AND l.state NOT IN ('ended', 'cancelled')
                AND (a.id IS NOT NULL OR s.seat_id IS NOT NULL)",
        )
        .bind(site_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Where site `site_id`'s edge serves seat links, if it said.
    pub async fn seat_link_base(&self, site_id: Uuid) -> sqlx::Result<Option<String>> {
        sqlx::query_scalar("SELECT base_url FROM seat_link_bases WHERE site_id = $1")
            .bind(site_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Records the address the site's edge serves seat links at.
    pub async fn set_seat_link_base(&self, site_id: Uuid, base_url: &str) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO seat_link_bases (site_id, base_url) VALUES ($1, $2)
             ON CONFLICT (site_id) DO UPDATE SET base_url = EXCLUDED.base_url, updated_at = now()
             WHERE seat_link_bases.base_url <> EXCLUDED.base_url",
        )
        .bind(site_id)
        .bind(base_url)
        .execute(&self.pool)
        .await
        .map(|_| ())
    }

    /// Records seats' first link openings (seat id, when); returns the
    /// lessons of the seats not recorded before, whose views changed.
    pub async fn record_link_opens(
        &self,
        opens: &[(Uuid, Uuid, chrono::DateTime<chrono::Utc>)],
    ) -> sqlx::Result<Vec<Uuid>> {
        if opens.is_empty() {
            return Ok(Vec::new());
        }
        let seats: Vec<Uuid> = opens.iter().map(|o| o.0).collect();
        let lessons: Vec<Uuid> = opens.iter().map(|o| o.1).collect();
        let at: Vec<chrono::DateTime<chrono::Utc>> = opens.iter().map(|o| o.2).collect();
        sqlx::query_scalar(
            "WITH new AS (
               INSERT INTO seat_link_opens (seat_id, opened_at)
               SELECT seat_id, opened_at FROM UNNEST($1::uuid[], $2::timestamptz[]) AS x(seat_id, opened_at)
               ON CONFLICT (seat_id) DO NOTHING RETURNING seat_id)
             SELECT DISTINCT x.lesson_id FROM new
               JOIN UNNEST($1::uuid[], $3::uuid[]) AS x(seat_id, lesson_id) ON x.seat_id = new.seat_id",
        )
        .bind(&seats)
        .bind(&at)
        .bind(&lessons)
        .fetch_all(&self.pool)
        .await
    }

    /// Whether the teacher paused the class's links.
    pub async fn links_paused(&self, lesson_id: Uuid) -> sqlx::Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM seat_link_pauses WHERE lesson_id = $1)")
            .bind(lesson_id)
            .fetch_one(&self.pool)
            .await
    }

    /// Pauses (or resumes) a class's links; true when it changed.
    pub async fn set_links_paused(
        &self,
        lesson_id: Uuid,
        paused: bool,
        by: &str,
    ) -> sqlx::Result<bool> {
        let r = if paused {
            sqlx::query(
                "INSERT INTO seat_link_pauses (lesson_id, paused_by) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(lesson_id)
            .bind(by)
            .execute(&self.pool)
            .await?
        } else {
            sqlx::query("DELETE FROM seat_link_pauses WHERE lesson_id = $1")
                .bind(lesson_id)
                .execute(&self.pool)
                .await?
        };
        Ok(r.rows_affected() > 0)
    }
}

/// Records that `by` stopped seat `seat_id` (decision 103); its link says
/// so until the lesson is over.
pub async fn record_stop(
    exec: impl sqlx::PgExecutor<'_>,
    seat_id: Uuid,
    by: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO seat_stops (seat_id, stopped_by) VALUES ($1, $2)
         ON CONFLICT (seat_id) DO UPDATE SET stopped_at = now(), stopped_by = EXCLUDED.stopped_by",
    )
    .bind(seat_id)
    .bind(by)
    .execute(exec)
    .await
    .map(|_| ())
}

/// Forgets a stop: the seat runs again (a teacher's reset).
pub async fn forget_stop(exec: impl sqlx::PgExecutor<'_>, seat_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM seat_stops WHERE seat_id = $1")
        .bind(seat_id)
        .execute(exec)
        .await
        .map(|_| ())
}
