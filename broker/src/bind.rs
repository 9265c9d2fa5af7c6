//! Bind: turns planned seats and placed jobs into assignments, written in
//! the same transaction that moves their seat or job on (`dispatch` sends
//! them after commit).

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use classgrid_placement::{RttSource, SeatPlacement};
use classgrid_proto::v1::{self as pb, BrokerMessage, broker_message::Msg};
use uuid::Uuid;

use crate::{
    domain::spec::{SeatSpec, Workload},
    store::{
        assignments::{self, AssignmentRow, GpuGrant, Payload},
        lessons::{self as lesson_store, LessonRow, NewSeat},
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
            // Set by dispatch, from the span that sends it.
            traceparent: String::new(),
        })),
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

pub fn new_seat(id: Uuid, p: &SeatPlacement) -> NewSeat {
    NewSeat {
        id,
        number: p.seat as i32,
        node_id: p.node_id,
        device_indexes: p.devices.iter().map(|d| d.index as i32).collect(),
        gpu_memory_mib: p.devices.first().map(|d| d.memory_mib as i64).unwrap_or(0),
        gpu_compute_pct: p
            .devices
            .first()
            .map(|d| d.compute_percent as i32)
            .unwrap_or(0),
        rtt_ms: p.rtt.ms,
        rtt_source: rtt_source_str(p.rtt.source),
        rtt_error_ms: p.rtt.error_ms,
    }
}

pub fn rtt_source_str(s: RttSource) -> &'static str {
    match s {
        RttSource::Measured => "measured",
        RttSource::Estimated => "estimated",
        RttSource::Configured => "configured",
    }
}

pub fn grants(device_indexes: &[i32], memory_mib: i64, compute_pct: i32) -> Vec<GpuGrant> {
    device_indexes
        .iter()
        .map(|i| GpuGrant {
            device_index: *i as u32,
            memory_mib: memory_mib.max(0) as u64,
            compute_percent: compute_pct.max(0) as u32,
        })
        .collect()
}
