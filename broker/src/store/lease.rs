//! The leader lease and the replicas' roll call (decision 078): one row that
//! the leader renews, an epoch that grows with each new leader, and the
//! fence every plan-committing transaction passes first.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, Postgres, Transaction};

use super::Store;
use uuid::Uuid;

/// The advisory lock the fence holds shared and a takeover exclusive
/// (`classgrid_fence` in migrations/0014_leader_lease.sql).
const LEASE_LOCK: i64 = 7_166_740_466_735_476_836;

/// Who a replica is, as the others and the operator see it.
#[derive(Debug, Clone)]
pub struct Replica {
    pub id: Uuid,
    pub name: String,
    pub grpc_addr: String,
    pub http_addr: String,
}

/// The lease as it stands.
#[derive(Debug, Clone, FromRow, serde::Serialize)]
pub struct LeaseRow {
    pub holder: Option<Uuid>,
    pub holder_name: String,
    pub grpc_addr: String,
    pub http_addr: String,
    pub epoch: i64,
    pub since: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
}

/// A replica in the roll call.
#[derive(Debug, Clone, FromRow, serde::Serialize)]
pub struct ReplicaRow {
    pub id: Uuid,
    pub name: String,
    pub grpc_addr: String,
    pub http_addr: String,
    pub started_at: DateTime<Utc>,
    pub seen_at: DateTime<Utc>,
}

/// Takes the lease if it has expired (or was given up), raising the epoch;
/// returns the new epoch, or None while another replica holds it. Waits for
/// the old leader's fenced transactions in flight to end first.
pub async fn try_acquire(
    store: &Store,
    me: &Replica,
    lease: std::time::Duration,
) -> sqlx::Result<Option<i64>> {
    // Look before locking: a standby polls several times a second, and a
    // waiting exclusive request would queue the leader's fenced commits
    // behind it each time.
    let expired: bool = sqlx::query_scalar("SELECT expires_at < now() FROM broker_lease")
        .fetch_one(&store.pool)
        .await?;
    if !expired {
        return Ok(None);
    }
    let mut tx = store.pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LEASE_LOCK)
        .execute(&mut *tx)
        .await?;
    let epoch: Option<i64> = sqlx::query_scalar(
        "UPDATE broker_lease SET holder = $1, holder_name = $2, grpc_addr = $3, http_addr = $4,
                epoch = epoch + 1, since = now(), renewed_at = now(),
                expires_at = now() + make_interval(secs => $5)
          WHERE expires_at < now() RETURNING epoch",
    )
    .bind(me.id)
    .bind(&me.name)
    .bind(&me.grpc_addr)
    .bind(&me.http_addr)
    .bind(lease.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(epoch)
}

/// Extends the lease of `me` at `epoch`; false when another replica has
/// taken it since (the epoch moved on). A lease that expired while nobody
/// could take it (the database itself was down) is still ours: the row
/// lock orders this renewal and a standby's takeover, and whichever comes
/// second sees the other's write.
pub async fn renew(
    store: &Store,
    me: Uuid,
    epoch: i64,
    lease: std::time::Duration,
) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE broker_lease SET renewed_at = now(), expires_at = now() + make_interval(secs => $3)
          WHERE holder = $1 AND epoch = $2",
    )
    .bind(me)
    .bind(epoch)
    .bind(lease.as_secs_f64())
    .execute(&store.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Gives the lease up at once (a clean stop), so a standby need not wait
/// for it to expire.
pub async fn give_up(store: &Store, me: Uuid, epoch: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE broker_lease SET expires_at = now() WHERE holder = $1 AND epoch = $2")
        .bind(me)
        .bind(epoch)
        .execute(&store.pool)
        .await?;
    Ok(())
}

pub async fn current(store: &Store) -> sqlx::Result<LeaseRow> {
    sqlx::query_as(
        "SELECT holder, holder_name, grpc_addr, http_addr, epoch, since, expires_at FROM broker_lease",
    )
    .fetch_one(&store.pool)
    .await
}

/// The leader a standby forwards to: the lease's holder while its lease
/// runs, in the database's own time (no clock of ours is compared).
pub async fn live_leader(store: &Store) -> sqlx::Result<Option<LeaseRow>> {
    sqlx::query_as(
        "SELECT holder, holder_name, grpc_addr, http_addr, epoch, since, expires_at FROM broker_lease
          WHERE holder IS NOT NULL AND expires_at > now()",
    )
    .fetch_optional(&store.pool)
    .await
}

/// Says that `me` is alive (once at start, then with every lease step), and
/// forgets replicas silent for an hour: a write path, so that listing the
/// replicas stays a plain read.
pub async fn seen(store: &Store, me: &Replica) -> sqlx::Result<()> {
    sqlx::query(
        "WITH gone AS (DELETE FROM broker_replicas WHERE seen_at < now() - interval '1 hour' AND id <> $1)
         INSERT INTO broker_replicas (id, name, grpc_addr, http_addr) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET seen_at = now()",
    )
    .bind(me.id)
    .bind(&me.name)
    .bind(&me.grpc_addr)
    .bind(&me.http_addr)
    .execute(&store.pool)
    .await?;
    Ok(())
}

/// Replicas heard from within `within`, newest first.
pub async fn replicas(store: &Store, within: std::time::Duration) -> sqlx::Result<Vec<ReplicaRow>> {
    sqlx::query_as(
        "SELECT id, name, grpc_addr, http_addr, started_at, seen_at FROM broker_replicas
          WHERE seen_at >= now() - make_interval(secs => $1) ORDER BY started_at DESC",
    )
    .bind(within.as_secs_f64())
    .fetch_all(&store.pool)
    .await
}

/// The fence: refuses the transaction unless `epoch` still leads.
pub async fn fence(tx: &mut Transaction<'_, Postgres>, epoch: i64) -> sqlx::Result<()> {
    sqlx::query("SELECT classgrid_fence($1)")
        .bind(epoch)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The same on a plain connection inside an open transaction (the batch
/// writers' own connections).
pub async fn fence_conn(conn: &mut sqlx::PgConnection, epoch: i64) -> sqlx::Result<()> {
    sqlx::query("SELECT classgrid_fence($1)")
        .bind(epoch)
        .execute(conn)
        .await?;
    Ok(())
}

/// True when the database refused a transaction because its epoch no longer
/// leads.
pub fn is_fenced(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("CG002"))
}
