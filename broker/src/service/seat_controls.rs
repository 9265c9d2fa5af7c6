//! A teacher's control of one student's seat during a lesson (issue 22):
//! reset it — a fresh server, keeping the student's work folder or wiping
//! it — or stop it. Scoped to the lesson's school and audited by the caller
//! (`tenancy`); here the effect.
//!
//! A reset is a new assignment of the same seat on the same node, so that
//! the agent starts a new server as it would any seat; the old assignment
//! is released. The seat's link stays the same (it is derived from the seat
//! id), so the student reloads the page. To keep the work, the new
//! assignment names the old one in `CLASSGRID_SEAT_KEEP_WORK_FROM`: the
//! agent moves the old folder to the new seat before it starts the server.
//! The new assignment is sent before the release, so that the move happens
//! before the old assignment's folder is removed.
//!
//! A stop releases the assignment and records the stop (`seat_stops`,
//! decision 103): the school's edge keeps the seat's link and shows
//! "stopped by your teacher" until the lesson is over. A reset of a
//! stopped seat starts it again and forgets the stop.

use uuid::Uuid;

use crate::{
    bind::bind_in,
    domain::{
        ServiceError,
        states::{lesson as ls, seat as ss},
    },
    state::Broker,
    store::{
        assignments,
        lessons::{self as lesson_store, LessonRow, SeatRow},
        seat_links as seat_link_store,
    },
};

/// The variable that tells the agent whose work folder a reset seat keeps.
pub const KEEP_WORK_FROM_ENV: &str = "CLASSGRID_SEAT_KEEP_WORK_FROM";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatAction {
    Reset { wipe_work: bool },
    Stop,
}

impl SeatAction {
    pub fn parse(action: &str, wipe_work: bool) -> Result<Self, ServiceError> {
        match action {
            "reset" => Ok(Self::Reset { wipe_work }),
            "stop" if !wipe_work => Ok(Self::Stop),
            "stop" => Err(ServiceError::field(
                "wipe_work",
                "applies to reset only; a stopped seat keeps its folder until the lesson ends",
            )),
            _ => Err(ServiceError::field("action", "must be reset or stop")),
        }
    }

    pub fn audit_name(self) -> &'static str {
        match self {
            Self::Reset { wipe_work: false } => "seat.reset",
            Self::Reset { wipe_work: true } => "seat.reset_wiped",
            Self::Stop => "seat.stop",
        }
    }
}

impl Broker {
    /// Resets or stops seat `number` of lesson `lesson_id`, as `by` asks.
    pub async fn control_seat(
        &self,
        lesson_id: Uuid,
        number: i32,
        action: SeatAction,
        by: &str,
    ) -> Result<(), ServiceError> {
        let l = self
            .store
            .get_lesson(lesson_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("lesson {lesson_id}")))?;
        if l.state != ls::READY && l.state != ls::LIVE {
            return Err(ServiceError::Conflict(format!(
                "lesson {lesson_id} is {}: only the seats of a ready or live lesson can be reset or stopped",
                l.state
            )));
        }
        let seat = self
            .store
            .seats_of(lesson_id)
            .await?
            .into_iter()
            .find(|s| s.number == number)
            .ok_or_else(|| {
                ServiceError::field("seat", format!("lesson {lesson_id} has no seat {number}"))
            })?;
        match action {
            SeatAction::Stop => self.stop_seat(&l, &seat, by).await,
            SeatAction::Reset { wipe_work } => self.reset_seat(&l, &seat, wipe_work).await,
        }
    }

    async fn stop_seat(&self, l: &LessonRow, seat: &SeatRow, by: &str) -> Result<(), ServiceError> {
        let mut tx = self.store.begin().await?;
        self.fence(&mut tx).await?;
        let released = assignments::release_for(&mut tx, Some(seat.id), None).await?;
        seat_link_store::record_stop(&mut *tx, seat.id, by).await?;
        lesson_store::update_seat(
            &mut *tx,
            seat.id,
            ss::RELEASED,
            Some(""),
            Some("stopped by the teacher"),
        )
        .await?;
        tx.commit().await?;
        self.send_releases(&released, "stopped by the teacher");
        self.lesson_changed(l.id);
        Ok(())
    }

    async fn reset_seat(
        &self,
        l: &LessonRow,
        seat: &SeatRow,
        wipe_work: bool,
    ) -> Result<(), ServiceError> {
        let Some(node) = seat.node_id.filter(|n| self.fleet.is_connected(*n)) else {
            return Err(ServiceError::Conflict(format!(
                "seat {}'s node is not connected: it cannot start a fresh server now",
                seat.number
            )));
        };
        let mut rows = self.binding_rows(l, std::slice::from_ref(seat));
        let Some(row) = rows.first_mut() else {
            return Err(ServiceError::Conflict(format!(
                "seat {} has no node to start on",
                seat.number
            )));
        };
        row.node_id = node;
        if !wipe_work && let Some(old) = seat.assignment_id {
            row.payload
                .0
                .workload
                .env
                .insert(KEEP_WORK_FROM_ENV.to_string(), old.to_string());
        }
        let mut tx = self.store.begin().await?;
        self.fence(&mut tx).await?;
        let released = assignments::release_for(&mut tx, Some(seat.id), None).await?;
        seat_link_store::forget_stop(&mut *tx, seat.id).await?;
        lesson_store::update_seat(&mut *tx, seat.id, ss::STAGED, Some(""), Some("")).await?;
        let bound = bind_in(&mut tx, rows).await?;
        tx.commit().await?;
        // New first: the agent moves the kept folder as it starts the new
        // server, before the released one's folder is removed.
        self.send_seat_assignments(&bound, &l.datasets.0);
        self.send_releases(&released, "reset by the teacher");
        self.lesson_changed(l.id);
        Ok(())
    }
}
