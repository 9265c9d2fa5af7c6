//! What site edges and agents report about the network and the content
//! near each site: probe responders, measured RTTs (site → node and
//! node → peer), each edge's cache and staging progress.

use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

use super::{
    Store,
    lessons::{LESSON_COLS, LessonRow},
};

#[derive(Debug, Clone, FromRow)]
pub struct ProbeTargetRow {
    pub node_id: Uuid,
    pub site: String,
    pub name: String,
    pub addr: String,
}

#[derive(Debug, Clone, Copy)]
pub struct RttRow {
    pub node_id: Uuid,
    pub median_ms: f64,
    pub variance_ms2: f64,
    pub samples: i32,
}

#[derive(Debug, Clone, FromRow)]
pub struct EdgeContentRow {
    pub edge_id: Uuid,
    pub site_id: Uuid,
    pub content_url: String,
    pub bytes_per_sec: f64,
    pub cached: Vec<String>,
    pub last_seen: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct StagingRow {
    pub sha256: String,
    pub bytes_done: i64,
    pub size_bytes: i64,
    pub state: String,
    pub message: String,
}

impl Store {
    pub async fn set_probe_addr(&self, node_id: Uuid, addr: &str) -> sqlx::Result<()> {
        if addr.is_empty() {
            sqlx::query("DELETE FROM node_probes WHERE node_id = $1")
                .bind(node_id)
                .execute(&self.pool)
                .await?;
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO node_probes (node_id, addr, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (node_id) DO UPDATE SET addr = excluded.addr, updated_at = now()",
        )
        .bind(node_id)
        .bind(addr)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every node with a probe responder that is not lost.
    pub async fn probe_targets(&self) -> sqlx::Result<Vec<ProbeTargetRow>> {
        sqlx::query_as(
            "SELECT n.id AS node_id, s.name AS site, n.name, p.addr
               FROM node_probes p JOIN nodes n ON n.id = p.node_id JOIN sites s ON s.id = n.site_id
              WHERE n.state <> 'lost' ORDER BY s.name, n.name",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Stores one edge's table for its site; rows for unknown nodes are
    /// skipped by the join rather than failing the whole report.
    pub async fn save_site_rtts(&self, site_id: Uuid, rows: &[RttRow]) -> sqlx::Result<u64> {
        let ids: Vec<Uuid> = rows.iter().map(|r| r.node_id).collect();
        let med: Vec<f64> = rows.iter().map(|r| r.median_ms).collect();
        let var: Vec<f64> = rows.iter().map(|r| r.variance_ms2).collect();
        let n: Vec<i32> = rows.iter().map(|r| r.samples).collect();
        let r = sqlx::query(
            "INSERT INTO rtt_measurements (site_id, node_id, median_ms, variance_ms2, samples, measured_at)
             SELECT $1, r.node_id, r.median_ms, r.variance_ms2, r.samples, now()
               FROM unnest($2::uuid[], $3::float8[], $4::float8[], $5::int4[]) AS r(node_id, median_ms, variance_ms2, samples)
               JOIN nodes n ON n.id = r.node_id
             ON CONFLICT (site_id, node_id) DO UPDATE SET median_ms = excluded.median_ms,
                 variance_ms2 = excluded.variance_ms2, samples = excluded.samples, measured_at = now()",
        )
        .bind(site_id)
        .bind(&ids)
        .bind(&med)
        .bind(&var)
        .bind(&n)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    pub async fn save_peer_rtts(&self, node_id: Uuid, peers: &[(Uuid, f64)]) -> sqlx::Result<()> {
        let ids: Vec<Uuid> = peers.iter().map(|p| p.0).collect();
        let med: Vec<f64> = peers.iter().map(|p| p.1).collect();
        sqlx::query(
            "INSERT INTO node_peer_rtt (node_id, peer_id, median_ms, measured_at)
             SELECT $1, r.peer_id, r.median_ms, now()
               FROM unnest($2::uuid[], $3::float8[]) AS r(peer_id, median_ms)
               JOIN nodes n ON n.id = r.peer_id
              WHERE r.peer_id <> $1
             ON CONFLICT (node_id, peer_id) DO UPDATE SET median_ms = excluded.median_ms, measured_at = now()",
        )
        .bind(node_id)
        .bind(&ids)
        .bind(&med)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every stored measurement, to rebuild coordinates after a restart:
    /// (site, node, ms) and (node, peer, ms).
    pub async fn all_rtts(&self) -> sqlx::Result<(Vec<(Uuid, Uuid, f64)>, Vec<(Uuid, Uuid, f64)>)> {
        let site = sqlx::query_as("SELECT site_id, node_id, median_ms FROM rtt_measurements")
            .fetch_all(&self.pool)
            .await?;
        let peer = sqlx::query_as("SELECT node_id, peer_id, median_ms FROM node_peer_rtt")
            .fetch_all(&self.pool)
            .await?;
        Ok((site, peer))
    }

    /// Records an edge's cache, staging progress and link in one transaction.
    pub async fn save_edge_content(
        &self,
        edge_id: Uuid,
        content_url: &str,
        bytes_per_sec: f64,
        cached: &[(String, i64)],
        staging: &[StagingRow],
    ) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO edge_status (edge_id, content_url, bytes_per_sec, updated_at) VALUES ($1, $2, $3, now())
             ON CONFLICT (edge_id) DO UPDATE SET content_url = excluded.content_url,
                 bytes_per_sec = excluded.bytes_per_sec, updated_at = now()",
        )
        .bind(edge_id)
        .bind(content_url)
        .bind(bytes_per_sec)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM edge_cache WHERE edge_id = $1")
            .bind(edge_id)
            .execute(&mut *tx)
            .await?;
        let shas: Vec<String> = cached.iter().map(|c| c.0.clone()).collect();
        let sizes: Vec<i64> = cached.iter().map(|c| c.1).collect();
        sqlx::query(
            "INSERT INTO edge_cache (edge_id, sha256, size_bytes)
             SELECT $1, c.sha, c.size FROM unnest($2::text[], $3::int8[]) AS c(sha, size)
             ON CONFLICT DO NOTHING",
        )
        .bind(edge_id)
        .bind(&shas)
        .bind(&sizes)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM edge_staging WHERE edge_id = $1")
            .bind(edge_id)
            .execute(&mut *tx)
            .await?;
        for s in staging {
            sqlx::query(
                "INSERT INTO edge_staging (edge_id, sha256, bytes_done, size_bytes, state, message, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, now()) ON CONFLICT DO NOTHING",
            )
            .bind(edge_id)
            .bind(&s.sha256)
            .bind(s.bytes_done)
            .bind(s.size_bytes)
            .bind(&s.state)
            .bind(&s.message)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// Per edge: its site, content URL, link rate and cached digests.
    pub async fn edge_contents(&self) -> sqlx::Result<Vec<EdgeContentRow>> {
        sqlx::query_as(
            "SELECT e.id AS edge_id, e.site_id, st.content_url, st.bytes_per_sec, e.last_seen,
                    COALESCE(array_agg(c.sha256) FILTER (WHERE c.sha256 IS NOT NULL), '{}') AS cached
               FROM edges e JOIN edge_status st ON st.edge_id = e.id
               LEFT JOIN edge_cache c ON c.edge_id = e.id
              GROUP BY e.id, e.site_id, st.content_url, st.bytes_per_sec, e.last_seen",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Lessons not yet live or ended that carry datasets and have a seat on
    /// a node at `site_id`.
    pub async fn lessons_needing_content_at(&self, site_id: Uuid) -> sqlx::Result<Vec<LessonRow>> {
        sqlx::query_as(sql!(
            "SELECT {LESSON_COLS} FROM lessons l JOIN sites s ON s.id = l.school_site_id
              WHERE l.state IN ('booked', 'staging', 'ready', 'live') AND jsonb_array_length(l.datasets) > 0
                AND EXISTS (SELECT 1 FROM seats st JOIN nodes n ON n.id = st.node_id
                             WHERE st.lesson_id = l.id AND n.site_id = $1)
              ORDER BY l.start_at"
        ))
        .bind(site_id)
        .fetch_all(&self.pool)
        .await
    }

    /// The running or starting seat assignments on nodes at `site_id`.
    pub async fn site_seat_intents(
        &self,
        site_id: Uuid,
    ) -> sqlx::Result<Vec<(Uuid, i64, Uuid, Uuid, DateTime<Utc>, String)>> {
        sqlx::query_as(
            "SELECT a.id, a.generation, a.node_id, st.lesson_id, a.ends_at, a.state
               FROM assignments a JOIN seats st ON st.id = a.seat_id JOIN nodes n ON n.id = a.node_id
              WHERE n.site_id = $1 AND a.kind = 'seat' AND a.live",
        )
        .bind(site_id)
        .fetch_all(&self.pool)
        .await
    }
}
