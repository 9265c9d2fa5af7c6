//! Bind: turns planned seats and placed jobs into assignments on agents.
//! The assignment is written before it is sent, so a crash between the two
//! loses nothing: the agent receives it when it next reconciles.

use chrono::{DateTime, Utc};
use classgrid_proto::v1::{self as pb, BrokerMessage, broker_message::Msg};
use uuid::Uuid;

use crate::{
    app::Broker,
    domain::states::seat as ss,
    service::grants,
    store::{
        assignments::{self, AssignmentRow, Payload},
        lessons::{self as lesson_store, LessonRow, SeatRow},
    },
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
            datasets: Vec::new(),
        })),
    }
}

/// Names the lesson's content in an Assign, resolved at send time so that a
/// re-sent assignment points at where the content is now.
fn add_datasets(msg: &mut BrokerMessage, datasets: Vec<pb::StagedContent>) {
    if let Some(Msg::Assign(a)) = &mut msg.msg {
        a.datasets = datasets;
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
        let mut msg = assign_message(&a);
        if a.kind == "seat"
            && let Some(l) = self.store.get_lesson(a.payload.0.owner_id).await?
        {
            add_datasets(&mut msg, self.staged_content(a.node_id, &l.datasets.0));
        }
        self.fleet.send(a.node_id, msg);
        Ok(())
    }

    /// Binds a lesson's seats to their nodes: every assignment is written in
    /// one transaction and then sent, so a class of 45 costs two statements,
    /// not 45 transactions.
    pub async fn bind_seats(&self, l: &LessonRow, seats: &[SeatRow]) -> anyhow::Result<()> {
        let spec = &l.seat_spec.0;
        let rows: Vec<AssignmentRow> = seats
            .iter()
            .filter_map(|seat| {
                let node_id = seat.node_id?;
                let payload = Payload {
                    kind: "seat".into(),
                    owner_id: l.id,
                    workload: l.workload.0.clone(),
                    runtime: spec.runtime.clone(),
                    cpu_millis: spec.cpu_millis,
                    memory_mib: spec.memory_mib,
                    gpus: grants(
                        &seat.device_indexes,
                        seat.gpu_memory_mib,
                        seat.gpu_compute_pct,
                    ),
                    grace_seconds: self.cfg.grace.as_secs().min(600) as u32,
                };
                Some(AssignmentRow {
                    id: Uuid::now_v7(),
                    generation: 1,
                    kind: "seat".into(),
                    seat_id: Some(seat.id),
                    job_id: None,
                    node_id,
                    state: "pending".into(),
                    payload: sqlx::types::Json(payload),
                    endpoint: String::new(),
                    ends_at: l.end_at(),
                })
            })
            .collect();
        if rows.is_empty() {
            return Ok(());
        }
        let seat_ids: Vec<Uuid> = rows.iter().filter_map(|a| a.seat_id).collect();
        let mut tx = self.store.pool.begin().await?;
        assignments::insert_seats(&mut tx, &rows).await?;
        lesson_store::set_seats(&mut tx, &seat_ids, ss::STARTING).await?;
        tx.commit().await?;
        for a in &rows {
            self.metrics.seats_dispatched.inc();
            let mut msg = assign_message(a);
            add_datasets(&mut msg, self.staged_content(a.node_id, &l.datasets.0));
            self.fleet.send(a.node_id, msg);
        }
        Ok(())
    }
}
