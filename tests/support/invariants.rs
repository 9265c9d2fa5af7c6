//! The contract, checked by SQL against the broker's database after a fault:
//! what was acknowledged is there, no device or node is over-committed at any
//! instant, no seat has two live assignments, and no seat of a live lesson is
//! left neither running nor failed with a reason.

use sqlx::PgPool;

/// One acknowledged booking: the lesson id the broker answered, and its
/// seats.
#[derive(Debug, Clone)]
pub struct Acked {
    pub lesson_id: uuid::Uuid,
    pub request_id: String,
    pub seats: i64,
}

/// Acknowledged lessons that are missing or lack seats, or whose request id
/// made more than one lesson, each with what is wrong.
pub async fn lost(pool: &PgPool, acked: &[Acked]) -> sqlx::Result<Vec<String>> {
    let mut lost = Vec::new();
    for a in acked {
        let (lessons, seats): (i64, i64) = sqlx::query_as(
            "SELECT count(DISTINCT l.id), count(s.id)
               FROM lessons l LEFT JOIN seats s ON s.lesson_id = l.id
              WHERE l.request_id = $1",
        )
        .bind(&a.request_id)
        .fetch_one(pool)
        .await?;
        let present: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM lessons WHERE id = $1)")
                .bind(a.lesson_id)
                .fetch_one(pool)
                .await?;
        if !present || lessons != 1 || seats != a.seats {
            lost.push(format!(
                "{} ({}): present {present}, lessons {lessons}, seats {seats} of {}",
                a.lesson_id, a.request_id, a.seats
            ));
        }
    }
    Ok(lost)
}

/// Nodes and devices whose reservations exceed their capacity at some
/// instant. The load only rises where a reservation starts, so each start
/// is a point to check.
pub async fn over_committed(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    let nodes: Vec<(String,)> = sqlx::query_as(
        "SELECT format('node %s at %s: cpu %s/%s, memory %s/%s', n.id, p.t, sum(r.cpu_millis), n.cpu_millis,
                       sum(r.memory_mib), n.memory_mib)
           FROM nodes n
           JOIN (SELECT DISTINCT node_id, lower(during) AS t FROM reservations) p ON p.node_id = n.id
           JOIN reservations r ON r.node_id = n.id AND r.during @> p.t
          GROUP BY n.id, p.t, n.cpu_millis, n.memory_mib
         HAVING sum(r.cpu_millis) > n.cpu_millis OR sum(r.memory_mib) > n.memory_mib",
    )
    .fetch_all(pool)
    .await?;
    let devices: Vec<(String,)> = sqlx::query_as(
        "SELECT format('device %s/%s at %s: memory %s/%s, compute %s %%, slices %s/%s', d.node_id, d.idx, p.t,
                       sum(r.gpu_memory_mib), d.memory_mib, sum(r.gpu_compute_pct), count(*), d.max_slices)
           FROM devices d
           JOIN (SELECT DISTINCT node_id, device_idx, lower(during) AS t FROM reservations
                  WHERE device_idx IS NOT NULL) p ON p.node_id = d.node_id AND p.device_idx = d.idx
           JOIN reservations r ON r.node_id = d.node_id AND r.device_idx = d.idx AND r.during @> p.t
          GROUP BY d.node_id, d.idx, p.t, d.memory_mib, d.max_slices
         HAVING sum(r.gpu_memory_mib) > d.memory_mib OR sum(r.gpu_compute_pct) > 100 OR count(*) > d.max_slices",
    )
    .fetch_all(pool)
    .await?;
    Ok(nodes.into_iter().chain(devices).map(|r| r.0).collect())
}

/// Seats with more than one live (pending, starting, running) assignment.
pub async fn double_assigned(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT format('seat %s: %s live assignments', seat_id, count(*)) FROM assignments
          WHERE seat_id IS NOT NULL AND state IN ('pending', 'starting', 'running')
          GROUP BY seat_id HAVING count(*) > 1",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Seats of live lessons that are neither running nor failed with a
/// reason, each with its state and whether it has a live assignment.
pub async fn stranded(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT format('lesson %s seat %s: %s%s', s.lesson_id, s.number, s.state,
                       CASE WHEN EXISTS (SELECT 1 FROM assignments a WHERE a.seat_id = s.id
                                           AND a.state IN ('pending', 'starting', 'running'))
                            THEN ' (assigned)' ELSE ' (no assignment)' END)
           FROM seats s JOIN lessons l ON l.id = s.lesson_id
          WHERE l.state = 'live' AND s.state <> 'running'
            AND NOT (s.state = 'failed' AND s.message <> '')
          ORDER BY s.lesson_id, s.number",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}
