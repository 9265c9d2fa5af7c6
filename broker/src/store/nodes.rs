use sqlx::FromRow;
use uuid::Uuid;

use super::Store;

#[derive(Debug, Clone, FromRow)]
pub struct NodeRow {
    pub id: Uuid,
    pub site_id: Uuid,
    pub name: String,
    pub tier: String,
    pub state: String,
    pub cordoned: bool,
    /// False while the node waits for a district admin (decision 064).
    pub approved: bool,
    pub cpu_millis: i32,
    pub memory_mib: i64,
    pub runtimes: Vec<String>,
    pub warnings: Vec<String>,
    pub agent_version: String,
    pub last_seen: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, FromRow, PartialEq)]
pub struct DeviceRow {
    pub idx: i32,
    pub vendor: String,
    pub model: String,
    pub uuid: String,
    pub memory_mib: i64,
    pub memory_used_mib: i64,
    pub utilization_percent: i32,
    pub healthy: bool,
    pub max_slices: i32,
    pub isolation: String,
}

/// What an agent states about itself when it registers.
pub struct Registration<'a> {
    pub site_id: Uuid,
    pub name: &'a str,
    pub tier: &'a str,
    pub cpu_millis: i32,
    pub memory_mib: i64,
    pub runtimes: &'a [String],
    pub warnings: &'a [String],
    pub agent_version: &'a str,
    pub devices: &'a [DeviceRow],
}

const NODE_COLS: &str = "id, site_id, name, tier, state, cordoned, approved, cpu_millis, memory_mib, runtimes, warnings, agent_version, last_seen";

impl Store {
    /// The node's discovery and runtime warnings as its agent last sent them.
    pub async fn set_node_warnings(&self, node: Uuid, warnings: &[String]) -> sqlx::Result<()> {
        sqlx::query("UPDATE nodes SET warnings = $2 WHERE id = $1")
            .bind(node)
            .bind(warnings)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records a (re-)registration in one transaction: the node row and its
    /// full device list. Returns the node id, stable across reconnects, and
    /// whether the node is approved. A node registering for the first time
    /// inherits its approval from the join token of its newest join
    /// certificate; nodes without one (plain-text development brokers) are
    /// approved. Later registrations keep what an admin decided.
    pub async fn register_node(&self, r: &Registration<'_>) -> sqlx::Result<(Uuid, bool)> {
        let mut tx = self.pool.begin().await?;
        let (id, approved): (Uuid, bool) = sqlx::query_as(
            "INSERT INTO nodes (id, site_id, name, tier, state, cpu_millis, memory_mib, runtimes, warnings, agent_version, last_seen, approved)
             VALUES ($1, $2, $3, $4, 'connected', $5, $6, $7, $8, $9, now(),
                NOT COALESCE((SELECT jt.require_approval FROM node_certs c JOIN join_tokens jt ON jt.id = c.join_token_id
                              WHERE c.site_id = $2 AND c.kind = 'agent' AND c.name = $3
                              ORDER BY c.issued_at DESC LIMIT 1), false))
             ON CONFLICT (site_id, name) DO UPDATE SET tier = EXCLUDED.tier, state = 'connected',
                cpu_millis = EXCLUDED.cpu_millis, memory_mib = EXCLUDED.memory_mib, runtimes = EXCLUDED.runtimes,
                warnings = EXCLUDED.warnings, agent_version = EXCLUDED.agent_version, last_seen = now()
             RETURNING id, approved",
        )
        .bind(Uuid::now_v7())
        .bind(r.site_id)
        .bind(r.name)
        .bind(r.tier)
        .bind(r.cpu_millis)
        .bind(r.memory_mib)
        .bind(r.runtimes)
        .bind(r.warnings)
        .bind(r.agent_version)
        .fetch_one(&mut *tx)
        .await?;
        replace_devices(&mut tx, id, r.devices).await?;
        tx.commit().await?;
        Ok((id, approved))
    }

    pub async fn update_devices(&self, node_id: Uuid, devices: &[DeviceRow]) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        replace_devices(&mut tx, node_id, devices).await?;
        tx.commit().await
    }

    pub async fn set_node_state(&self, node_id: Uuid, state: &str) -> sqlx::Result<()> {
        sqlx::query("UPDATE nodes SET state = $2, last_seen = CASE WHEN $2 = 'connected' THEN now() ELSE last_seen END WHERE id = $1")
            .bind(node_id)
            .bind(state)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Cordons a node (no new work is placed on it) or lifts the cordon.
    pub async fn set_node_cordoned(&self, node_id: Uuid, cordoned: bool) -> sqlx::Result<bool> {
        let r = sqlx::query("UPDATE nodes SET cordoned = $2 WHERE id = $1")
            .bind(node_id)
            .bind(cordoned)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Approves a node: placement may use it from now on. Returns whether
    /// it was waiting (false: it was approved already, nothing changed).
    pub async fn approve_node(&self, node_id: Uuid) -> sqlx::Result<bool> {
        let r = sqlx::query("UPDATE nodes SET approved = true WHERE id = $1 AND NOT approved")
            .bind(node_id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// A node re-joining with a token that asks for approval waits again,
    /// whatever was decided for the machine that held its name before.
    /// Returns the node's id when such a node exists.
    pub async fn mark_awaiting_approval(
        &self,
        site_id: Uuid,
        name: &str,
    ) -> sqlx::Result<Option<Uuid>> {
        sqlx::query_scalar(
            "UPDATE nodes SET approved = false WHERE site_id = $1 AND name = $2 RETURNING id",
        )
        .bind(site_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn list_nodes(&self) -> sqlx::Result<Vec<(NodeRow, Vec<DeviceRow>)>> {
        let nodes: Vec<NodeRow> =
            sqlx::query_as(sql!("SELECT {NODE_COLS} FROM nodes ORDER BY name"))
                .fetch_all(&self.pool)
                .await?;
        let devs: Vec<(Uuid, DeviceRow)> = sqlx::query_as::<_, DeviceWithNode>(
            "SELECT node_id, idx, vendor, model, uuid, memory_mib, memory_used_mib, utilization_percent, healthy, max_slices, isolation
             FROM devices ORDER BY node_id, idx",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|d| (d.node_id, d.device))
        .collect();
        let mut by_node: std::collections::HashMap<Uuid, Vec<DeviceRow>> =
            std::collections::HashMap::new();
        for (n, d) in devs {
            by_node.entry(n).or_default().push(d);
        }
        Ok(nodes
            .into_iter()
            .map(|n| {
                let d = by_node.remove(&n.id).unwrap_or_default();
                (n, d)
            })
            .collect())
    }
}

#[derive(FromRow)]
struct DeviceWithNode {
    node_id: Uuid,
    #[sqlx(flatten)]
    device: DeviceRow,
}

async fn replace_devices(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    node_id: Uuid,
    devices: &[DeviceRow],
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM devices WHERE node_id = $1")
        .bind(node_id)
        .execute(&mut **tx)
        .await?;
    for d in devices {
        sqlx::query(
            "INSERT INTO devices (node_id, idx, vendor, model, uuid, memory_mib, memory_used_mib, utilization_percent, healthy, max_slices, isolation)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(node_id)
        .bind(d.idx)
        .bind(&d.vendor)
        .bind(&d.model)
        .bind(&d.uuid)
        .bind(d.memory_mib)
        .bind(d.memory_used_mib)
        .bind(d.utilization_percent)
        .bind(d.healthy)
        .bind(d.max_slices)
        .bind(&d.isolation)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
