//! Bind: turns planned seats and placed jobs into assignments on agents.
//! The assignment is written before it is sent, so a crash between the two
//! loses nothing: the agent receives it when it next reconciles.

use chrono::{DateTime, Utc};
use classgrid_proto::v1::{self as pb, BrokerMessage, broker_message::Msg};
use uuid::Uuid;

use crate::{
    app::Broker,
    store::assignments::{self, AssignmentRow, Payload},
};

pub fn assign_message(a: &AssignmentRow) -> BrokerMessage {
    let p = &a.payload.0;
    BrokerMessage {
        msg: Some(Msg::Assign(pb::Assign {
            assignment_id: a.id.to_string(),
            generation: a.generation,
            kind: p.kind.clone(),
            owner_id: p.owner_id.to_string(),
            workload: Some(pb::Workload {
                command: p.workload.command.clone(),
                args: p.workload.args.clone(),
                env: p.workload.env.clone().into_iter().collect(),
                image: p.workload.image.clone(),
            }),
            cpu_millis: p.cpu_millis as i32,
            memory_mib: p.memory_mib as i64,
            gpus: p
                .gpus
                .iter()
                .map(|g| pb::GpuGrant {
                    device_index: g.device_index as i32,
                    memory_mib: g.memory_mib as i64,
                    compute_percent: g.compute_percent as i32,
                })
                .collect(),
            ends_unix_ms: a.ends_at.timestamp_millis(),
            runtime: p.runtime.clone(),
            grace_seconds: p.grace_seconds as i32,
        })),
    }
}

impl Broker {
    /// Writes a new assignment inside `tx`; the caller sends it after commit.
    pub async fn create_assignment(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        node_id: Uuid,
        seat_id: Option<Uuid>,
        job_id: Option<Uuid>,
        payload: &Payload,
        ends_at: DateTime<Utc>,
    ) -> sqlx::Result<Uuid> {
        let id = Uuid::now_v7();
        assignments::insert(tx, id, node_id, seat_id, job_id, payload, ends_at).await?;
        Ok(id)
    }

    /// Sends a committed assignment to its node's agent.
    pub async fn send_assignment(&self, id: Uuid) -> anyhow::Result<()> {
        let Some(a) = self.store.get_assignment(id).await? else {
            return Ok(());
        };
        self.metrics.seats_dispatched.inc();
        self.fleet.send(a.node_id, assign_message(&a));
        Ok(())
    }
}
