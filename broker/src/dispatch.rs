//! Dispatch: sends committed assignments and releases to the agents that
//! run them. The assignment is written before it is sent (`bind`), so a
//! crash between the two loses nothing: the agent receives it when it next
//! reconciles.

use chrono::{DateTime, Utc};
use classgrid_common::telemetry::traceparent_of;
use classgrid_proto::v1::{self as pb, BrokerMessage, broker_message::Msg};
use uuid::Uuid;

use crate::{
    bind::assign_message,
    domain::spec::Dataset,
    seats::links::TOKEN_ENV,
    state::Broker,
    store::assignments::{self, AssignmentRow, Payload},
};

/// Names the lesson's content in an Assign, resolved at send time so that a
/// re-sent assignment points at where the content is now, and hands a seat
/// its link's token (decision 089): derived, never stored, so it is added
/// here rather than kept in the assignment's payload.
fn complete(msg: &mut BrokerMessage, datasets: Vec<pb::StagedContent>, link_token: Option<String>) {
    if let Some(Msg::Assign(a)) = &mut msg.msg {
        a.datasets = datasets;
        if let (Some(t), Some(w)) = (link_token, a.workload.as_mut()) {
            w.env.insert(TOKEN_ENV.to_string(), t);
        }
    }
}

/// Puts the trace context of the step that sends an Assign on it (decision
/// 099), so the agent's spans for the work join the booking's or the bell's
/// trace; empty when tracing is off.
fn carry_trace(msg: &mut BrokerMessage, traceparent: &str) {
    if let Some(Msg::Assign(a)) = &mut msg.msg {
        a.traceparent = traceparent.to_string();
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
        carry_trace(&mut msg, &traceparent_of(&tracing::Span::current()));
        if a.kind == "seat"
            && let Some(l) = self.store.get_lesson(a.payload.0.owner_id).await?
        {
            let content = self.staged_content(a.node_id, &l.datasets.0);
            complete(&mut msg, content, self.link_token(&a));
        }
        self.fleet.send(a.node_id, msg);
        Ok(())
    }

    /// Sends committed seat assignments of one lesson to their agents.
    /// One span for the whole class, not one per seat: a bell sends
    /// thousands of seats, and every seat's Assign carries the same context.
    pub fn send_seat_assignments(&self, rows: &[AssignmentRow], datasets: &[Dataset]) {
        if rows.is_empty() {
            return;
        }
        let span = classgrid_common::traced_span!("dispatch", seats = rows.len());
        let _in = span.enter();
        let traceparent = traceparent_of(&span);
        for a in rows {
            self.metrics.seats_dispatched.inc();
            let mut msg = assign_message(a);
            let content = self.staged_content(a.node_id, datasets);
            complete(&mut msg, content, self.link_token(a));
            carry_trace(&mut msg, &traceparent);
            self.fleet.send(a.node_id, msg);
        }
    }

    /// A seat's link token, for its assignment.
    fn link_token(&self, a: &AssignmentRow) -> Option<String> {
        a.seat_id.map(|s| self.links.token(s))
    }

    /// The stop grace an assignment carries to its agent.
    pub fn grace_seconds(&self) -> u32 {
        self.cfg.grace.as_secs().min(600) as u32
    }

    /// Tells agents to stop released work. A node without a session learns it
    /// when it reconnects and reconciles.
    pub fn send_releases(&self, released: &[AssignmentRow], reason: &str) {
        for a in released {
            let msg = BrokerMessage {
                msg: Some(Msg::Release(pb::Release {
                    assignment_id: a.id.to_string(),
                    generation: a.generation,
                    reason: reason.to_string(),
                })),
            };
            self.fleet.send(a.node_id, msg);
        }
    }
}
