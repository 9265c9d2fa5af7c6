//! Bind: turns planned seats and placed jobs into assignments on agents.
//! The assignment is written before it is sent, so a crash between the two
//! loses nothing: the agent receives it when it next reconciles.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use classgrid_proto::v1::{self as pb, BrokerMessage, broker_message::Msg};
use uuid::Uuid;

use crate::{
    app::Broker,
    domain::spec::{Dataset, SeatSpec, Workload},
    service::grants,
    store::{
        assignments::{self, AssignmentRow, Payload},
        lessons::{self as lesson_store, LessonRow},
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

    /// Sends committed seat assignments of one lesson to their agents.
    pub fn send_seat_assignments(&self, rows: &[AssignmentRow], datasets: &[Dataset]) {
        for a in rows {
            self.metrics.seats_dispatched.inc();
            let mut msg = assign_message(a);
            add_datasets(&mut msg, self.staged_content(a.node_id, datasets));
            self.fleet.send(a.node_id, msg);
        }
    }

    /// The stop grace an assignment carries to its agent.
    pub fn grace_seconds(&self) -> u32 {
        self.cfg.grace.as_secs().min(600) as u32
    }
}

/// Binds seats inside `tx`: each of `rows`' seats that is still `staged`
/// moves to `starting` and its assignment is written; a seat that another
/// step bound meanwhile is left alone. A class of 45 costs two statements.
/// Returns the assignments written, for the caller to send after commit.
pub async fn bind_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: Vec<AssignmentRow>,
) -> sqlx::Result<Vec<AssignmentRow>> {
    let seat_ids: Vec<Uuid> = rows.iter().filter_map(|a| a.seat_id).collect();
    if seat_ids.is_empty() {
        return Ok(Vec::new());
    }
    let claimed: HashSet<Uuid> = lesson_store::claim_staged_seats(tx, &seat_ids)
        .await?
        .into_iter()
        .collect();
    let rows: Vec<AssignmentRow> = rows
        .into_iter()
        .filter(|a| a.seat_id.is_some_and(|s| claimed.contains(&s)))
        .collect();
    if !rows.is_empty() {
        assignments::insert_seats(tx, &rows).await?;
    }
    Ok(rows)
}

/// What every seat assignment of one lesson shares.
pub struct SeatBinding<'a> {
    pub lesson_id: Uuid,
    pub spec: &'a SeatSpec,
    pub workload: &'a Workload,
    pub ends_at: DateTime<Utc>,
    pub grace_seconds: u32,
}

impl<'a> SeatBinding<'a> {
    pub fn of(l: &'a LessonRow, grace_seconds: u32) -> Self {
        SeatBinding {
            lesson_id: l.id,
            spec: &l.seat_spec.0,
            workload: &l.workload.0,
            ends_at: l.end_at(),
            grace_seconds,
        }
    }

    /// One seat's assignment, generation 1, not written yet.
    pub fn assignment(
        &self,
        seat_id: Uuid,
        node_id: Uuid,
        device_indexes: &[i32],
        gpu_memory_mib: i64,
        gpu_compute_pct: i32,
    ) -> AssignmentRow {
        let payload = Payload {
            kind: "seat".into(),
            owner_id: self.lesson_id,
            workload: self.workload.clone(),
            runtime: self.spec.runtime.clone(),
            cpu_millis: self.spec.cpu_millis,
            memory_mib: self.spec.memory_mib,
            gpus: grants(device_indexes, gpu_memory_mib, gpu_compute_pct),
            grace_seconds: self.grace_seconds,
        };
        AssignmentRow {
            id: Uuid::now_v7(),
            generation: 1,
            kind: "seat".into(),
            seat_id: Some(seat_id),
            job_id: None,
            node_id,
            state: "pending".into(),
            payload: sqlx::types::Json(payload),
            endpoint: String::new(),
            ends_at: self.ends_at,
        }
    }
}
