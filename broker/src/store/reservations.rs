use chrono::{DateTime, TimeZone, Utc};
use classgrid_placement::{Owner, Reservation, Window};
use sqlx::{FromRow, Postgres, Transaction, postgres::types::PgRange};
use uuid::Uuid;

use super::Store;

pub fn to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

fn range(w: Window) -> PgRange<DateTime<Utc>> {
    PgRange::from(to_time(w.start)..to_time(w.end))
}

#[derive(FromRow)]
struct ReservationRow {
    owner_kind: String,
    owner_id: Uuid,
    node_id: Uuid,
    device_idx: Option<i32>,
    start_at: DateTime<Utc>,
    end_at: DateTime<Utc>,
    cpu_millis: i32,
    memory_mib: i64,
    gpu_memory_mib: i64,
    gpu_compute_pct: i32,
    preemptible: bool,
}

const COLS: &str =
    "owner_kind, owner_id, node_id, device_idx, lower(during) AS start_at, upper(during) AS end_at,
    cpu_millis, memory_mib, gpu_memory_mib, gpu_compute_pct, preemptible";

fn owner_parts(owners: &[Owner]) -> (Vec<&'static str>, Vec<Uuid>) {
    owners
        .iter()
        .map(|o| match o {
            Owner::Lesson(id) => ("lesson", *id),
            Owner::Job(id) => ("job", *id),
        })
        .unzip()
}

impl Store {
    /// Every reservation that overlaps `window`: what placement must respect.
    pub async fn reservations_overlapping(&self, window: Window) -> sqlx::Result<Vec<Reservation>> {
        let rows: Vec<ReservationRow> =
            sqlx::query_as(sql!("SELECT {COLS} FROM reservations WHERE during && $1"))
                .bind(range(window))
                .fetch_all(&self.pool)
                .await?;
        Ok(to_model(rows))
    }

    /// Every reservation that has not ended yet: the broker's calendar.
    pub async fn reservations_current(&self) -> sqlx::Result<Vec<Reservation>> {
        let rows: Vec<ReservationRow> = sqlx::query_as(sql!(
            "SELECT {COLS} FROM reservations WHERE upper(during) > now()"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(to_model(rows))
    }

    /// Every reservation of `owners`.
    pub async fn reservations_of(&self, owners: &[Owner]) -> sqlx::Result<Vec<Reservation>> {
        let (kinds, ids) = owner_parts(owners);
        let rows: Vec<ReservationRow> = sqlx::query_as(sql!(
            "SELECT {COLS} FROM reservations
             WHERE (owner_kind, owner_id) IN (SELECT * FROM UNNEST($1::text[], $2::uuid[]))"
        ))
        .bind(&kinds)
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(to_model(rows))
    }
}

fn to_model(rows: Vec<ReservationRow>) -> Vec<Reservation> {
    rows.into_iter()
        .map(|r| Reservation {
            owner: if r.owner_kind == "job" {
                Owner::Job(r.owner_id)
            } else {
                Owner::Lesson(r.owner_id)
            },
            node_id: r.node_id,
            device_index: r.device_idx.map(|i| i as u32),
            window: Window::new(r.start_at.timestamp_millis(), r.end_at.timestamp_millis()),
            cpu_millis: r.cpu_millis as u32,
            memory_mib: r.memory_mib as u64,
            gpu_memory_mib: r.gpu_memory_mib as u64,
            gpu_compute_percent: r.gpu_compute_pct as u32,
            preemptible: r.preemptible,
        })
        .collect()
}

/// Writes reservation rows; the capacity trigger refuses any over-commit
/// (see `is_capacity_conflict`).
/// Writes many seats' rows in one statement; `seat_ids[i]` is the seat of
/// `rows[i]`. The trigger still checks every row.
pub async fn insert_many(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[Reservation],
    seat_ids: &[Option<Uuid>],
) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let owners: Vec<Owner> = rows.iter().map(|r| r.owner).collect();
    let (kinds, ids) = owner_parts(&owners);
    let col = |f: &dyn Fn(&Reservation) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
    sqlx::query(
        "INSERT INTO reservations (owner_kind, owner_id, seat_id, node_id, device_idx, during,
            cpu_millis, memory_mib, gpu_memory_mib, gpu_compute_pct, preemptible)
         SELECT k, o, s, n, d, tstzrange(a, b), c, m, gm, gc, p
         FROM UNNEST($1::text[], $2::uuid[], $3::uuid[], $4::uuid[], $5::int[], $6::timestamptz[], $7::timestamptz[],
                     $8::int[], $9::int8[], $10::int8[], $11::int[], $12::bool[])
              AS t(k, o, s, n, d, a, b, c, m, gm, gc, p)",
    )
    .bind(&kinds)
    .bind(&ids)
    .bind(seat_ids)
    .bind(rows.iter().map(|r| r.node_id).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.device_index.map(|i| i as i32))
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| to_time(r.window.start)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| to_time(r.window.end)).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.cpu_millis as i32).collect::<Vec<_>>())
    .bind(col(&|r| r.memory_mib as i64))
    .bind(col(&|r| r.gpu_memory_mib as i64))
    .bind(
        rows.iter()
            .map(|r| r.gpu_compute_percent as i32)
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.preemptible).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[Reservation],
    seat_id: Option<Uuid>,
) -> sqlx::Result<()> {
    for r in rows {
        let (kind, id) = match r.owner {
            Owner::Lesson(id) => ("lesson", id),
            Owner::Job(id) => ("job", id),
        };
        sqlx::query(
            "INSERT INTO reservations (owner_kind, owner_id, seat_id, node_id, device_idx, during,
                cpu_millis, memory_mib, gpu_memory_mib, gpu_compute_pct, preemptible)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(kind)
        .bind(id)
        .bind(seat_id)
        .bind(r.node_id)
        .bind(r.device_index.map(|i| i as i32))
        .bind(range(r.window))
        .bind(r.cpu_millis as i32)
        .bind(r.memory_mib as i64)
        .bind(r.gpu_memory_mib as i64)
        .bind(r.gpu_compute_percent as i32)
        .bind(r.preemptible)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

pub async fn delete_owner(tx: &mut Transaction<'_, Postgres>, owner: Owner) -> sqlx::Result<()> {
    let (kind, id) = match owner {
        Owner::Lesson(id) => ("lesson", id),
        Owner::Job(id) => ("job", id),
    };
    sqlx::query("DELETE FROM reservations WHERE owner_kind = $1 AND owner_id = $2")
        .bind(kind)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Deletes the rows of one seat of `lesson_id`: found through the owner's
/// index (a lesson has a few dozen rows), which spares every reservation an
/// index entry of its seat (migration 0026).
pub async fn delete_seat(
    tx: &mut Transaction<'_, Postgres>,
    lesson_id: Uuid,
    seat_id: Uuid,
) -> sqlx::Result<()> {
    sqlx::query(
        "DELETE FROM reservations WHERE owner_kind = 'lesson' AND owner_id = $1 AND seat_id = $2",
    )
    .bind(lesson_id)
    .bind(seat_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Shortens the reservations of jobs a lesson needs so that they end when
/// the lesson's window begins, and schedules their stop with their grace.
pub async fn preempt_jobs(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    owners: &[Owner],
    window_start: DateTime<Utc>,
    lesson_id: Uuid,
) -> sqlx::Result<()> {
    for o in owners {
        let Owner::Job(job_id) = o else { continue };
        sqlx::query(
            "DELETE FROM reservations WHERE owner_kind = 'job' AND owner_id = $1 AND lower(during) >= $2",
        )
        .bind(job_id)
        .bind(window_start)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE reservations SET during = tstzrange(lower(during), $2)
             WHERE owner_kind = 'job' AND owner_id = $1 AND upper(during) > $2",
        )
        .bind(job_id)
        .bind(window_start)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET preempt_at = LEAST(COALESCE(preempt_at, 'infinity'), $2 - make_interval(secs => grace_s)),
                message = $3 WHERE id = $1",
        )
        .bind(job_id)
        .bind(window_start)
        .bind(format!("will be preempted for lesson {lesson_id}"))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
