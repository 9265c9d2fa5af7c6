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
    /// Bookings in the batches being written.
    writing: usize,
}

impl BatchQueue for BookingWriters {
    type Item = Queued;

    fn wake(&self) -> &Notify {
        &self.wake
    }

    /// The oldest waiting bookings whose schools are free, every waiting
    /// booking of such a school included (decision 123); their schools are
    /// now busy.
    fn take_batch(&self) -> Vec<Queued> {
        let mut g = self.lock();
        let Waiting {
            queue,
            busy,
            writing,
        } = &mut *g;
        let schools: Vec<Uuid> = queue.iter().map(|q| q.write.input.site_id).collect();
        let taken = pick(&schools, busy, MAX_BATCH);
        let mut batch = Vec::with_capacity(taken.len());
        let mut rest = VecDeque::with_capacity(queue.len() - taken.len());
        let mut next = taken.iter().peekable();
        for (i, q) in queue.drain(..).enumerate() {
            if next.next_if_eq(&&i).is_some() {
                batch.push(q);
            } else {
                rest.push_back(q);
            }
        }
        *queue = rest;
        *writing += batch.len();
        batch
    }
}

/// Which of the waiting bookings (by school, oldest first) go into the
/// next batch: in order, at most `max`, each of a school no other batch
/// holds. Several bookings of one school may go together: the batch
/// decides them one after another from its lock on the school, each
/// booking's quota check counting the seats of those decided before it
/// (`SchoolLock`). At a bell of 44 classes a school, one booking a school
/// a batch made each school's classes wait for 44 batches in a row.
/// Marks the schools taken as busy; the positions come back in order.
fn pick(schools: &[Uuid], busy: &mut HashSet<Uuid>, max: usize) -> Vec<usize> {
    let mut mine = HashSet::new();
    let mut taken = Vec::new();
    for (i, s) in schools.iter().enumerate() {
        if taken.len() == max {
            break;
        }
        if mine.contains(s) || busy.insert(*s) {
            mine.insert(*s);
            taken.push(i);
        }
    }
    taken
}

impl BookingWriters {
    pub(crate) fn push(&self, q: Queued) {
        self.lock().queue.push_back(q);
        self.wake.notify_waiters();
    }

    /// Bookings planned and not yet written: waiting, or in a batch being
    /// written.
    pub fn held(&self) -> usize {
        let g = self.lock();
        g.queue.len() + g.writing
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn release(&self, batch: &[Queued]) {
        let mut g = self.lock();
        for q in batch {
            g.busy.remove(&q.write.input.site_id);
        }
        g.writing -= batch.len().min(g.writing);
        drop(g);
        self.wake.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn school(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn a_batch_takes_every_waiting_booking_of_its_free_schools_in_order() {
        let (a, b, c) = (school(1), school(2), school(3));
        let mut busy = HashSet::from([b]);
        // b is being written by another batch: its bookings wait.
        let taken = pick(&[a, b, a, c, b, a], &mut busy, 16);
        assert_eq!(taken, vec![0, 2, 3, 5]);
        assert_eq!(busy, HashSet::from([a, b, c]));
    }

    #[test]
    fn a_batch_stops_at_its_size_and_leaves_the_rest_waiting() {
        let (a, b) = (school(1), school(2));
        let mut busy = HashSet::new();
        assert_eq!(pick(&[a, a, b, a], &mut busy, 2), vec![0, 1]);
        assert_eq!(busy, HashSet::from([a]), "b was not taken");
        // The next batch: a is busy until the first one is written.
        assert_eq!(pick(&[b, a], &mut busy, 2), vec![0]);
    }
}
