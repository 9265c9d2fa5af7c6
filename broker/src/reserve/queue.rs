//! Planned bookings waiting to be written, several per transaction (see
//! `service::booking_writes` for the write itself, and decision 069).

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};
use classgrid_placement::{self as placement, Admission, Request};
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use crate::{
    domain::{ServiceError, lesson::Booking},
    store::{assignments::AssignmentRow, batch::BatchQueue, lessons::LessonView},
    vouchers::Held,
};

/// Bookings in one transaction, at most.
const MAX_BATCH: usize = 16;

/// What a booking needs written: the validated booking and its request,
/// fixed for all its attempts, and this attempt's admission.
pub struct BookingWrite {
    pub input: Arc<BookingInput>,
    pub admission: Admission,
}

pub struct BookingInput {
    pub b: Booking,
    pub req: Request,
    pub id: Uuid,
    pub site_id: Uuid,
    /// The reservations' window: the start less the staging lead, the end
    /// plus grace.
    pub window: (DateTime<Utc>, DateTime<Utc>),
    /// The fleet the booking was planned on (it names the seats' nodes).
    pub fleet: Arc<placement::Fleet>,
    /// Hosted for a peer region, whose vouchers pay at home: no voucher or
    /// quota of this region is held for it.
    pub hosted: bool,
    /// The seat's command, checked against what agents report installed.
    pub command: Option<CommandCheck>,
}

/// Nodes left out of a booking's fleet because their agent reports the
/// seat's command is not installed (issue 23).
#[derive(Debug, Clone)]
pub struct CommandCheck {
    pub program: String,
    pub removed: u32,
}

impl CommandCheck {
    /// The explanation's line for it, with the per-filter count.
    pub fn count(&self) -> classgrid_placement::FilterCount {
        classgrid_placement::FilterCount {
            filter: "command",
            removed: self.removed,
            detail: format!(
                "{} node(s) lack the command `{}`: their agents report it is not installed",
                self.removed, self.program
            ),
        }
    }
}

/// A committed booking: the lesson as written, and the assignments to send
/// when it started as it was booked.
pub struct Booked {
    pub view: LessonView,
    pub started: Vec<AssignmentRow>,
    /// What it holds (or, in a dry run, would hold) on the vouchers.
    pub held: Held,
}

/// Written, or refused by vouchers or quota with nothing written.
pub type Written = Result<Booked, ServiceError>;

pub(crate) enum Outcome {
    Done(sqlx::Result<Written>),
    /// The batch failed in the database and nothing of it was written.
    Alone,
}

pub(crate) struct Queued {
    pub(crate) write: Arc<BookingWrite>,
    pub(crate) reply: oneshot::Sender<Outcome>,
}

/// Bookings waiting for a writer, and the schools of the batches being
/// written. A batch never takes a school that another batch in flight
/// holds: a batch keeps its schools' voucher rows locked until it commits,
/// and batches sharing schools queued behind each other in convoys.
#[derive(Default)]
pub struct BookingWriters {
    state: Mutex<Waiting>,
    wake: Notify,
}

#[derive(Default)]
struct Waiting {
    queue: VecDeque<Queued>,
    busy: HashSet<Uuid>,
}

impl BatchQueue for BookingWriters {
    type Item = Queued;

    fn wake(&self) -> &Notify {
        &self.wake
    }

    /// The oldest waiting bookings whose schools are free, one per school
    /// (a school's quota check reads its committed seats, so its second
    /// booking must see the first written); their schools are now busy.
    fn take_batch(&self) -> Vec<Queued> {
        let mut g = self.lock();
        let Waiting { queue, busy } = &mut *g;
        let mut batch = Vec::new();
        let mut rest = VecDeque::with_capacity(queue.len());
        for q in queue.drain(..) {
            if batch.len() < MAX_BATCH && busy.insert(q.write.input.site_id) {
                batch.push(q);
            } else {
                rest.push_back(q);
            }
        }
        *queue = rest;
        batch
    }
}

impl BookingWriters {
    pub(crate) fn push(&self, q: Queued) {
        self.lock().queue.push_back(q);
        self.wake.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn release(&self, batch: &[Queued]) {
        let mut g = self.lock();
        for q in batch {
            g.busy.remove(&q.write.input.site_id);
        }
        drop(g);
        self.wake.notify_waiters();
    }
}
