use chrono::{DateTime, SubsecRound, Utc};
use serde_json::value::RawValue;
use sqlx::{FromRow, Postgres, Transaction, types::Json};
use uuid::Uuid;

use super::{Store, borrowed::BORROWED_AS_LESSONS};
use crate::domain::spec::{Dataset, SeatSpec, Workload};

#[derive(Debug, Clone, FromRow)]
pub struct LessonRow {
    pub id: Uuid,
    pub request_id: Option<String>,
    pub school_site_id: Uuid,
    pub school_site: String,
    pub title: String,
    pub start_at: DateTime<Utc>,
    pub duration_s: i32,
    pub state: String,
    pub seat_count: i32,
    pub min_seats: i32,
    pub seat_spec: Json<SeatSpec>,
    pub workload: Json<Workload>,
    pub datasets: Json<Vec<Dataset>>,
    pub max_rtt_ms: i32,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    /// As stored: read whole and only by the explain views, so it is kept
    /// as text and parsed there (`explanation()`).
    pub explanation: Json<Box<RawValue>>,
    pub message: String,
    pub created_at: DateTime<Utc>,
    /// Where its data must stay ("" anywhere; see `Residency`). Defaulted
    /// for reads that do not select it.
    #[sqlx(default)]
    pub residency: String,
    /// The series it is an occurrence of (migration 0018), if any.
    pub series_id: Option<Uuid>,
}

impl LessonRow {
    /// The placement explanation, parsed, every seat whole (see
    /// `explanations`); null if it cannot be.
    pub fn explanation(&self) -> serde_json::Value {
        super::explanations::read(self.explanation.0.get())
    }

    pub fn end_at(&self) -> DateTime<Utc> {
        self.start_at + chrono::Duration::seconds(self.duration_s as i64)
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct SeatRow {
    pub id: Uuid,
    pub lesson_id: Uuid,
    pub number: i32,
    pub state: String,
    pub node_id: Option<Uuid>,
    pub node_name: Option<String>,
    pub device_indexes: Vec<i32>,
    pub gpu_memory_mib: i64,
    pub gpu_compute_pct: i32,
    pub rtt_ms: Option<f64>,
    pub rtt_source: Option<String>,
    /// ± ms of an estimated RTT; NULL for measured and configured ones.
    pub rtt_error_ms: Option<f64>,
    pub endpoint: String,
    pub message: String,
    pub assignment_id: Option<Uuid>,
    pub generation: Option<i64>,
    /// When the student first opened the seat's link (migration 0019).
    pub link_opened_at: Option<DateTime<Utc>>,
    /// The student's link, filled by the reads that show seats
    /// (`service::lessons`); never stored (decision 089).
    #[sqlx(skip)]
    pub link: String,
    /// The peer region whose node runs the seat; empty for this region's
    /// own seats, which is all the `seats` table holds (a borrowed lesson's
    /// seats are read from its lender, `federation::borrow`).
    #[sqlx(default)]
    pub region: String,
}

pub(crate) const LESSON_COLS: &str = "l.id, l.request_id, l.school_site_id, s.name AS school_site, l.title, l.start_at, l.duration_s,
    l.state, l.seat_count, l.min_seats, l.seat_spec, l.workload, l.datasets, l.max_rtt_ms, l.window_start,
    l.window_end, l.explanation, l.message, l.created_at, l.residency,
    (SELECT o.series_id FROM series_occurrences o WHERE o.lesson_id = l.id) AS series_id";

const SEAT_SELECT: &str = "SELECT st.id, st.lesson_id, st.number, st.state, st.node_id, n.name AS node_name,
    st.device_indexes, st.gpu_memory_mib, st.gpu_compute_pct, st.rtt_ms, st.rtt_source, st.rtt_error_ms, st.endpoint, st.message,
    a.id AS assignment_id, a.generation, o.opened_at AS link_opened_at
    FROM seats st LEFT JOIN nodes n ON n.id = st.node_id
    LEFT JOIN seat_link_opens o ON o.seat_id = st.id
    LEFT JOIN LATERAL (SELECT id, generation FROM assignments WHERE seat_id = st.id ORDER BY created_at DESC LIMIT 1) a ON true";

/// A planned seat, as written at booking or re-planning.
pub struct NewSeat {
    pub id: Uuid,
    pub number: i32,
    pub node_id: Uuid,
    pub device_indexes: Vec<i32>,
    pub gpu_memory_mib: i64,
    pub gpu_compute_pct: i32,
    pub rtt_ms: f64,
    pub rtt_source: &'static str,
    pub rtt_error_ms: Option<f64>,
}

pub struct NewLesson<'a> {
    pub id: Uuid,
    pub request_id: Option<&'a str>,
    pub school_site_id: Uuid,
    pub title: &'a str,
    pub start_at: DateTime<Utc>,
    pub duration_s: i32,
    pub seat_count: i32,
    pub min_seats: i32,
    pub seat_spec: &'a SeatSpec,
    pub workload: &'a Workload,
    pub datasets: &'a [Dataset],
    pub max_rtt_ms: i32,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub explanation: Box<RawValue>,
    /// `booked`, or `live` for a lesson started as it is booked.
    pub state: &'a str,
    pub created_at: DateTime<Utc>,
    pub residency: &'a str,
}

/// A time as PostgreSQL keeps it: whole microseconds (sqlx truncates).
pub fn stored(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

impl NewLesson<'_> {
    /// The row as `insert_lesson` wrote it, for answering a booking without
    /// reading it back.
    pub fn into_written(self, school_site: &str) -> LessonRow {
        LessonRow {
            id: self.id,
            request_id: self.request_id.map(str::to_string),
            school_site_id: self.school_site_id,
            school_site: school_site.to_string(),
            title: self.title.to_string(),
            start_at: stored(self.start_at),
            duration_s: self.duration_s,
            state: self.state.to_string(),
            seat_count: self.seat_count,
            min_seats: self.min_seats,
            seat_spec: Json(self.seat_spec.clone()),
            workload: Json(self.workload.clone()),
            datasets: Json(self.datasets.to_vec()),
            max_rtt_ms: self.max_rtt_ms,
            window_start: stored(self.window_start),
            window_end: stored(self.window_end),
            explanation: Json(self.explanation),
            message: String::new(),
            created_at: stored(self.created_at),
            residency: self.residency.to_string(),
            series_id: None,
        }
    }
}

impl NewSeat {
    /// The row as `insert_seats` writes it, with its node's name and, for a
    /// seat started as booked, its assignment.
    pub fn as_written(
        &self,
        lesson_id: Uuid,
        state: &str,
        node_name: Option<String>,
        assignment: Option<(Uuid, i64)>,
    ) -> SeatRow {
        SeatRow {
            id: self.id,
            lesson_id,
            number: self.number,
            state: state.to_string(),
            node_id: Some(self.node_id),
            node_name,
            device_indexes: self.device_indexes.clone(),
            gpu_memory_mib: self.gpu_memory_mib,
            gpu_compute_pct: self.gpu_compute_pct,
            rtt_ms: Some(self.rtt_ms),
            rtt_source: Some(self.rtt_source.to_string()),
            rtt_error_ms: self.rtt_error_ms,
            endpoint: String::new(),
            message: String::new(),
            assignment_id: assignment.map(|a| a.0),
            generation: assignment.map(|a| a.1),
            link_opened_at: None,
            link: String::new(),
            region: String::new(),
        }
    }
}

impl Store {
    pub async fn update_seat(
        &self,
        seat_id: Uuid,
        state: &str,
        endpoint: Option<&str>,
        message: Option<&str>,
    ) -> sqlx::Result<()> {
        update_seat(&self.pool, seat_id, state, endpoint, message).await
    }

    pub async fn get_lesson(&self, id: Uuid) -> sqlx::Result<Option<LessonRow>> {
        sqlx::query_as(sql!(
            "SELECT {LESSON_COLS} FROM lessons l JOIN sites s ON s.id = l.school_site_id WHERE l.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn lesson_by_request_id(&self, request_id: &str) -> sqlx::Result<Option<Uuid>> {
        sqlx::query_scalar("SELECT id FROM lessons WHERE request_id = $1")
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn seats_of(&self, lesson_id: Uuid) -> sqlx::Result<Vec<SeatRow>> {
        sqlx::query_as(sql!(
            "{SEAT_SELECT} WHERE st.lesson_id = $1 ORDER BY st.number"
        ))
        .bind(lesson_id)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn get_seat(&self, seat_id: Uuid) -> sqlx::Result<Option<SeatRow>> {
        sqlx::query_as(sql!("{SEAT_SELECT} WHERE st.id = $1"))
            .bind(seat_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Lessons of a school (optional) whose start lies in `[from, to)`, by start, paged by offset.
    pub async fn list_lessons(
        &self,
        school_site_id: Option<Uuid>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        limit: i64,
        offset: i64,
    ) -> sqlx::Result<Vec<LessonRow>> {
        // With the lessons a peer region hosts for this region's schools.
        sqlx::query_as(sql!(
            "SELECT * FROM (SELECT {LESSON_COLS} FROM lessons l JOIN sites s ON s.id = l.school_site_id
                UNION ALL {BORROWED_AS_LESSONS}) l
             WHERE ($1::uuid IS NULL OR l.school_site_id = $1)
               AND ($2::timestamptz IS NULL OR l.start_at >= $2)
               AND ($3::timestamptz IS NULL OR l.start_at < $3)
             ORDER BY l.start_at, l.id LIMIT $4 OFFSET $5"
        ))
        .bind(school_site_id)
        .bind(from)
        .bind(to)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await
    }

    /// Active lessons whose next lifecycle step is due at `now`: one to
    /// stage, start or end, and a live one with a seat still `staged`, which
    /// a bell cut short (a crash, a lost connection) left unbound. Every step
    /// picks it up again until each seat is bound or failed with a reason.
    pub async fn lessons_due(&self, now: DateTime<Utc>) -> sqlx::Result<Vec<LessonRow>> {
        sqlx::query_as(sql!(
            "SELECT {LESSON_COLS} FROM lessons l JOIN sites s ON s.id = l.school_site_id
             WHERE (l.state IN ('booked', 'staging', 'ready') AND l.window_start <= $1)
                OR (l.state = 'live' AND l.start_at + make_interval(secs => l.duration_s) <= $1)
                OR (l.state = 'live' AND EXISTS (SELECT 1 FROM seats st WHERE st.lesson_id = l.id AND st.staged))
             ORDER BY l.start_at"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn live_lessons(&self) -> sqlx::Result<Vec<Uuid>> {
        sqlx::query_scalar("SELECT id FROM lessons WHERE state = 'live'")
            .fetch_all(&self.pool)
            .await
    }
}

/// Writes many lessons in one statement (a batch of bookings).
pub async fn insert_lessons(
    tx: &mut Transaction<'_, Postgres>,
    ls: &[&NewLesson<'_>],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO lessons (id, request_id, school_site_id, title, start_at, duration_s, state, seat_count, min_seats,
            seat_spec, workload, datasets, max_rtt_ms, window_start, window_end, explanation, created_at, residency)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::timestamptz[], $6::int[], $7::text[],
            $8::int[], $9::int[], $10::jsonb[], $11::jsonb[], $12::jsonb[], $13::int[], $14::timestamptz[],
            $15::timestamptz[], $16::text[]::json[], $17::timestamptz[], $18::text[])",
    )
    .bind(ls.iter().map(|l| l.id).collect::<Vec<_>>())
    .bind(ls.iter().map(|l| l.request_id).collect::<Vec<_>>())
    .bind(ls.iter().map(|l| l.school_site_id).collect::<Vec<_>>())
    .bind(ls.iter().map(|l| l.title).collect::<Vec<_>>())
    .bind(ls.iter().map(|l| l.start_at).collect::<Vec<_>>())
    .bind(ls.iter().map(|l| l.duration_s).collect::<Vec<_>>())
    .bind(ls.iter().map(|l| l.state).collect::<Vec<_>>())
    .bind(ls.iter().map(|l| l.seat_count).collect::<Vec<_>>())
    .bind(ls.iter().map(|l| l.min_seats).collect::<Vec<_>>())
    .bind(ls.iter().map(|l| Json(l.seat_spec)).collect::<Vec<_>>())
    .bind(ls.iter().map(|l| Json(l.workload)).collect::<Vec<_>>())
    .bind(ls.iter().map(|l| Json(l.datasets)).collect::<Vec<_>>())
    .bind(ls.iter().map(|l| l.max_rtt_ms).collect::<Vec<_>>())
    .bind(ls.iter().map(|l| l.window_start).collect::<Vec<_>>())
    .bind(ls.iter().map(|l| l.window_end).collect::<Vec<_>>())
    // Text, stored as json: see migration 0012.
    .bind(
        ls.iter()
            .map(|l| l.explanation.get())
            .collect::<Vec<_>>(),
    )
    .bind(ls.iter().map(|l| l.created_at).collect::<Vec<_>>())
    .bind(ls.iter().map(|l| l.residency).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A seat to write: its lesson, its state (`planned`, or `starting` when
/// started as booked) and the seat.
pub struct SeatInsert<'a> {
    pub lesson_id: Uuid,
    pub state: &'a str,
    pub seat: &'a NewSeat,
}

/// Writes seats, of one lesson or of a batch of bookings, in one statement.
pub async fn insert_seats(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[SeatInsert<'_>],
) -> sqlx::Result<()> {
    // Device lists differ in length, which a 2-D array cannot hold; they
    // travel as array literals (`{0,1}`), which the statement casts: a JSON
    // array per seat, unpacked by a subquery per row, cost several times
    // more at a bell of 10,000 seats.
    let devices: Vec<String> = rows
        .iter()
        .map(|r| int_array_literal(&r.seat.device_indexes))
        .collect();
    sqlx::query(
        "INSERT INTO seats (id, lesson_id, number, state, node_id, device_indexes, gpu_memory_mib, gpu_compute_pct, rtt_ms, rtt_source, rtt_error_ms)
         SELECT id, lesson_id, number, state, node_id,
                devices::int[], gmem, gpct, rtt, src, err
         FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::uuid[], $6::text[], $7::int8[], $8::int[], $9::float8[], $10::text[], $11::float8[])
              AS t(id, lesson_id, number, state, node_id, devices, gmem, gpct, rtt, src, err)",
    )
    .bind(rows.iter().map(|r| r.seat.id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.lesson_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.seat.number).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.state).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.seat.node_id).collect::<Vec<_>>())
    .bind(devices)
    .bind(rows.iter().map(|r| r.seat.gpu_memory_mib).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.seat.gpu_compute_pct).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.seat.rtt_ms).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.seat.rtt_source).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.seat.rtt_error_ms).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// `{1,2,3}`: PostgreSQL's text form of an integer array.
fn int_array_literal(xs: &[i32]) -> String {
    let items: Vec<String> = xs.iter().map(i32::to_string).collect();
    format!("{{{}}}", items.join(","))
}

/// Moves a planned seat to another node (re-planning at start).
pub async fn move_seat(tx: &mut Transaction<'_, Postgres>, s: &NewSeat) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE seats SET node_id = $2, device_indexes = $3, gpu_memory_mib = $4, gpu_compute_pct = $5,
            rtt_ms = $6, rtt_source = $7, rtt_error_ms = $8,
            message = 're-planned: its node was not connected at start'
         WHERE id = $1",
    )
    .bind(s.id)
    .bind(s.node_id)
    .bind(&s.device_indexes)
    .bind(s.gpu_memory_mib)
    .bind(s.gpu_compute_pct)
    .bind(s.rtt_ms)
    .bind(s.rtt_source)
    .bind(s.rtt_error_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn set_lesson_state(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    from: &[&str],
    to: &str,
    message: Option<&str>,
) -> sqlx::Result<bool> {
    let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
    let r = sqlx::query(
        "UPDATE lessons SET state = $3, message = COALESCE($4, message) WHERE id = $1 AND state = ANY($2)",
    )
    .bind(id)
    .bind(&from)
    .bind(to)
    .bind(message)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn set_seats_state(
    tx: &mut Transaction<'_, Postgres>,
    lesson_id: Uuid,
    from: &[&str],
    to: &str,
) -> sqlx::Result<()> {
    let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
    sqlx::query("UPDATE seats SET state = $3 WHERE lesson_id = $1 AND state = ANY($2)")
        .bind(lesson_id)
        .bind(&from)
        .bind(to)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Moves the seats among `seat_ids` that are still `staged` to `starting`
/// and returns their ids: binding is a claim, so two clock steps (a resumed
/// bell, another replica) never give one seat two assignments.
pub async fn claim_staged_seats(
    tx: &mut Transaction<'_, Postgres>,
    seat_ids: &[Uuid],
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "UPDATE seats SET state = 'starting' WHERE id = ANY($1) AND state = 'staged' RETURNING id",
    )
    .bind(seat_ids)
    .fetch_all(&mut **tx)
    .await
}

/// Moves seats to `state` in one statement.
pub async fn set_seats(
    tx: &mut Transaction<'_, Postgres>,
    seat_ids: &[Uuid],
    state: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE seats SET state = $2 WHERE id = ANY($1)")
        .bind(seat_ids)
        .bind(state)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn update_seat(
    exec: impl sqlx::PgExecutor<'_>,
    seat_id: Uuid,
    state: &str,
    endpoint: Option<&str>,
    message: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE seats SET state = $2, endpoint = COALESCE($3, endpoint), message = COALESCE($4, message) WHERE id = $1",
    )
    .bind(seat_id)
    .bind(state)
    .bind(endpoint)
    .bind(message)
    .execute(exec)
    .await?;
    Ok(())
}

/// A lesson with its seats, as every transport shows it.
#[derive(Debug, Clone)]
pub struct LessonView {
    pub lesson: LessonRow,
    pub seats: Vec<SeatRow>,
}
