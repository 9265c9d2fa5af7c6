//! Writing admitted bookings to PostgreSQL, several in one transaction.
//!
//! At a district's bell hundreds of classes are booked within a second. Each
//! booking's own transaction cost a few milliseconds beyond its seats: its
//! statements planned and run, the capacity trigger started, a commit. So a
//! planned booking queues for one of a few writers, and a writer takes every
//! booking waiting (of schools no other batch holds, at most `MAX_BATCH`)
//! into one transaction with one statement per table. Under light load a
//! batch is one booking, written at once.
//!
//! A batch is atomic in the database but not for its bookings: a voucher or
//! quota refusal drops that booking before anything of it is written. Any
//! database error rolls the whole batch back, and each of its bookings is
//! then written alone, where the booking's own retry rules (re-plan after a
//! capacity conflict, answer an earlier request_id) apply.

use std::{collections::HashMap, sync::Arc};

use chrono::Utc;
use classgrid_placement::Owner;
use serde_json::value::RawValue;
use sqlx::{Connection, PgConnection, Postgres, Transaction};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::vouchers::admission::{HoldPlan, SchoolLock, write_holds};
use crate::{
    bind::{SeatBinding, new_seat},
    domain::{
        lesson::Booking,
        states::{lesson as ls, seat as ss},
    },
    reserve::queue::{Booked, BookingWrite, Outcome, Queued, Written},
    state::Broker,
    store::{
        assignments::{self, AssignmentRow},
        batch::{self, Conn},
        explanations,
        lessons::{self as lesson_store, LessonView, NewLesson, NewSeat, SeatInsert, SeatRow},
        reservations,
    },
    vouchers::Held,
};

/// Batches written at the same time. Each writer keeps one connection of
/// the pool (see `store::batch`); the rest serves reads, agents and the clock.
const WRITERS: usize = 4;

/// Starts the booking writers (see `store::batch`).
pub fn start(broker: &Arc<Broker>) {
    let queue = broker.booking_writes.clone();
    batch::spawn(broker, queue, WRITERS, |b, conn, batch| async move {
        b.write_batch(conn, batch).await
    });
}

impl Broker {
    /// Writes one booking, batched with whatever else is waiting.
    pub(crate) async fn write_booking(&self, w: Arc<BookingWrite>) -> sqlx::Result<Written> {
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            write: w.clone(),
            reply,
        };
        self.booking_writes.push(queued);
        if let Ok(Outcome::Done(r)) = answer.await {
            return r;
        }
        // Its batch failed: write it by itself.
        let mut conn = self.store.acquire().await?;
        let mut alone = self.write_bookings(&mut conn, &[&w]).await?;
        Ok(alone.remove(0))
    }

    /// Writes a batch on the writer's connection; gives the connection back
    /// unless it may be broken.
    async fn write_batch(&self, conn: Option<Conn>, batch: Vec<Queued>) -> Option<Conn> {
        let writes: Vec<&BookingWrite> = batch.iter().map(|q| &*q.write).collect();
        self.metrics.booking_batch_size.observe(writes.len() as f64);
        let (conn, result) = batch::on_connection(&self.store, conn, async |c| {
            self.write_bookings(c, &writes).await
        })
        .await;
        self.booking_writes.release(&batch);
        match result {
            Ok(written) => {
                for (q, w) in batch.into_iter().zip(written) {
                    let _ = q.reply.send(Outcome::Done(Ok(w)));
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(q) = batch.into_iter().next() {
                    let _ = q.reply.send(Outcome::Done(Err(e)));
                }
            }
            Err(e) => {
                tracing::debug!(bookings = batch.len(), error = %e, "booking batch failed; writing each alone");
                for q in batch {
                    let _ = q.reply.send(Outcome::Alone);
                }
            }
        }
        conn
    }

    /// Writes the bookings' lessons, seats, reservations, voucher holds and
    /// any preemption in one transaction of a few statements, whatever the
    /// classes' sizes. Several bookings of one school are decided one after
    /// another, each counting the seats of those before it (decision 123).
    ///
    /// A lesson whose bell has already rung and that has nothing to stage is
    /// started in the same transaction: it is written live, with its seats'
    /// assignments, which come back for the caller to send after commit. At a
    /// district's bell this is most of the classes, and going through the
    /// clock cost each one two more transactions and a read.
    pub(crate) async fn write_bookings(
        &self,
        conn: &mut PgConnection,
        ws: &[&BookingWrite],
    ) -> sqlx::Result<Vec<Written>> {
        self.write_bookings_as(conn, ws, WriteMode::Each).await
    }

    /// `write_bookings`, or its dry run, or all of `ws` or none. Several
    /// bookings of one school share its voucher read, each hold taken off
    /// the balances before the next is decided, and each quota check counts
    /// the seats of those decided before it (`SchoolLock`).
    pub(crate) async fn write_bookings_as(
        &self,
        conn: &mut PgConnection,
        ws: &[&BookingWrite],
        mode: WriteMode,
    ) -> sqlx::Result<Vec<Written>> {
        let mut tx = conn.begin().await?;
        let (written, wrote) = self.write_bookings_in(&mut tx, ws, mode).await?;
        if wrote {
            tx.commit().await?;
        } else {
            // Nothing written: the locks go, and with them any hold decided.
            tx.rollback().await?;
        }
        Ok(written)
    }

    /// `write_bookings_as` inside the caller's transaction, which the
    /// caller commits when the second value says something was written (a
    /// series writes its own rows beside its lessons').
    pub(crate) async fn write_bookings_in(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        ws: &[&BookingWrite],
        mode: WriteMode,
    ) -> sqlx::Result<(Vec<Written>, bool)> {
        let schools: Vec<Uuid> = ws.iter().map(|w| w.input.site_id).collect();
        let mut locks = self.begin_bookings(tx, &schools, mode).await?;
        self.write_chunk(tx, &mut locks, ws, Vec::new(), mode).await
    }

    /// The start of a transaction that writes bookings of `schools`: the
    /// leader's fence (unless nothing will be written) and the schools'
    /// quota and voucher locks, which every chunk of bookings written in it
    /// then decides from (`write_chunk`).
    pub(crate) async fn begin_bookings(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        schools: &[Uuid],
        mode: WriteMode,
    ) -> sqlx::Result<SchoolLocks> {
        let mut schools = schools.to_vec();
        schools.sort();
        schools.dedup();
        if !mode.rolls_back() {
            self.fence(tx).await?;
        }
        // Schools first, in one order: bookings queue here, before they lock
        // any node.
        self.lock_schools(tx, &schools).await
    }

    /// Decides and writes bookings as `write_bookings_in` does, in a
    /// transaction begun with `begin_bookings`, whose locks carry the holds
    /// decided so far: a set written a chunk at a time is decided exactly as
    /// if it were one chunk. `built`: each booking's `Rows`, built ahead,
    /// or empty to build them here.
    pub(crate) async fn write_chunk(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        locks: &mut SchoolLocks,
        ws: &[&BookingWrite],
        built: Vec<Rows>,
        mode: WriteMode,
    ) -> sqlx::Result<(Vec<Written>, bool)> {
        let mut built = built.into_iter();
        let marks: Vec<(Uuid, usize)> = locks.iter().map(|(s, l)| (*s, l.decided_len())).collect();
        let mut verdicts = Vec::with_capacity(ws.len());
        for w in ws {
            let input = &w.input;
            if input.hosted {
                verdicts.push(Ok(HoldPlan::nothing(
                    Owner::Lesson(input.id),
                    input.site_id,
                )));
                continue;
            }
            let school = locks.entry(input.site_id).or_default();
            let verdict = self
                .check_lesson_hold(
                    tx,
                    school,
                    input.id,
                    input.site_id,
                    (input.b.start, input.b.end()),
                    &w.admission.seats,
                )
                .await?;
            verdicts.push(verdict);
        }
        // All or none, and one is refused: the others are answered as
        // decided, as in a dry run, and nothing is written.
        let whole_refused = mode == WriteMode::Whole && verdicts.iter().any(Result::is_err);
        let mut admitted = Vec::new();
        let mut results: Vec<Option<Written>> = Vec::with_capacity(ws.len());
        for (w, verdict) in ws.iter().zip(verdicts) {
            let rows = built.next();
            match verdict {
                Ok(hold) => {
                    admitted.push(self.prepare(w, hold, mode == WriteMode::Preview, rows));
                    results.push(None);
                }
                Err(refused) => results.push(Some(Err(refused))),
            }
        }
        if admitted.is_empty() || mode.rolls_back() || whole_refused {
            return Ok((merge(results, admitted), false));
        }

        let lessons: Vec<&NewLesson> = admitted.iter().map(|p| &p.lesson).collect();
        lesson_store::insert_lessons(tx, &lessons).await?;
        let holds: Vec<&HoldPlan> = admitted.iter().map(|p| &p.hold).collect();
        write_holds(tx, &holds).await?;
        // Jobs in the way give up their capacity first, or the trigger
        // would count it against the new seats. The rows' windows are whole
        // milliseconds; cut the jobs there.
        for p in &admitted {
            let cut = reservations::to_time(p.w.input.req.window.start);
            reservations::preempt_jobs(tx, &p.w.admission.preempted, cut, p.w.input.id).await?;
        }
        let seats: Vec<SeatInsert> = admitted
            .iter()
            .flat_map(|p| {
                p.seats.iter().map(|seat| SeatInsert {
                    lesson_id: p.w.input.id,
                    state: p.seat_state,
                    seat,
                })
            })
            .collect();
        lesson_store::insert_seats(tx, &seats).await?;
        let started: Vec<AssignmentRow> = admitted
            .iter()
            .flat_map(|p| p.started.iter().cloned())
            .collect();
        if !started.is_empty() {
            assignments::insert_seats(tx, &started).await?;
        }
        // Reservations last, node by node in one order: the capacity
        // trigger locks each node row until commit, so other batches on
        // those nodes wait only for the trigger and the commit. (Neither
        // seats nor assignments have a key on the node any more, decision
        // 121: their KEY SHARE locks made a MultiXact of most node rows.)
        let mut rows = Vec::new();
        for p in &admitted {
            let owner = Owner::Lesson(p.w.input.id);
            for (s, placed) in p.seats.iter().zip(&p.w.admission.seats) {
                for r in placed.reservations(&p.w.input.req, owner) {
                    rows.push((r, Some(s.id)));
                }
            }
        }
        rows.sort_by_key(|(r, _)| r.node_id);
        let (rows, row_seats): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
        reservations::insert_many(tx, &rows, &row_seats).await?;
        // What this chunk decided is now in the database, where the next
        // chunk's quota check reads it.
        for (school, mark) in marks {
            if let Some(l) = locks.get_mut(&school) {
                l.written_since(mark);
            }
        }
        Ok((merge(results, admitted), true))
    }

    /// A booking's rows, ready to write.
    /// `brief`: for a preview, without the seats and the explanation.
    /// `rows`: its `Rows` if built ahead.
    fn prepare<'a>(
        &self,
        w: &'a BookingWrite,
        hold: HoldPlan,
        brief: bool,
        rows: Option<Rows>,
    ) -> Prepared<'a> {
        let input = &w.input;
        let b = &input.b;
        let starts_now = b.datasets.is_empty() && b.start <= Utc::now();
        let (window_start, window_end) = input.window;
        let Rows { seats, explanation } = match (brief, rows) {
            (true, _) => Rows {
                seats: Vec::new(),
                explanation: RawValue::from_string("null".into()).unwrap_or_default(),
            },
            (false, Some(rows)) => rows,
            (false, None) => Rows::of(w),
        };
        let lesson = NewLesson {
            id: input.id,
            request_id: b.request_id.as_deref(),
            school_site_id: input.site_id,
            title: &b.title,
            start_at: b.start,
            duration_s: b.duration.num_seconds() as i32,
            seat_count: b.seats as i32,
            min_seats: b.min_seats as i32,
            seat_spec: &b.seat,
            workload: &b.workload,
            datasets: &b.datasets,
            max_rtt_ms: b.max_rtt_ms as i32,
            window_start,
            window_end,
            explanation,
            state: if starts_now { ls::LIVE } else { ls::BOOKED },
            created_at: Utc::now(),
            residency: b.residency.as_str(),
        };
        let started = if starts_now && !brief {
            self.seat_assignments(input.id, b, &seats)
        } else {
            Vec::new()
        };
        let names = self.fleet.names_of(seats.iter().map(|s| s.node_id));
        Prepared {
            w,
            lesson,
            seats,
            names,
            seat_state: if starts_now {
                ss::STARTING
            } else {
                ss::PLANNED
            },
            started,
            hold,
        }
    }

    /// The assignments (generation 1) of a lesson started as it is booked.
    fn seat_assignments(&self, id: Uuid, b: &Booking, seats: &[NewSeat]) -> Vec<AssignmentRow> {
        let bind = SeatBinding {
            lesson_id: id,
            spec: &b.seat,
            workload: &b.workload,
            ends_at: b.end(),
            grace_seconds: self.grace_seconds(),
        };
        seats
            .iter()
            .map(|s| {
                bind.assignment(
                    s.id,
                    s.node_id,
                    &s.device_indexes,
                    s.gpu_memory_mib,
                    s.gpu_compute_pct,
                )
            })
            .collect()
    }
}

/// A booking's rows that its voucher hold does not change: its seats and
/// its explanation. A set written a chunk at a time builds them on a
/// blocking thread while the chunk before is written (decision 117): for
/// a term, 137 MB of explanation and 486,000 seats that kept PostgreSQL
/// waiting between chunks.
pub(crate) struct Rows {
    seats: Vec<NewSeat>,
    explanation: Box<RawValue>,
}

impl Rows {
    pub(crate) fn of(w: &BookingWrite) -> Self {
        Rows {
            seats: w
                .admission
                .seats
                .iter()
                .map(|p| new_seat(Uuid::now_v7(), p))
                .collect(),
            explanation: explanations::write(&w.admission),
        }
    }
}

/// The schools' quota and voucher locks of a bookings transaction.
pub(crate) type SchoolLocks = HashMap<Uuid, SchoolLock>;

/// How a set of bookings is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Each on its own: a booking that vouchers or quota refuse is left
    /// out, the others are written (a batch at the bell).
    Each,
    /// All or none: one refusal and nothing is written, the others
    /// answered as decided, as in a dry run (a series booked whole).
    Whole,
    /// Decided exactly as `Each` decides, in a transaction that is then
    /// rolled back: nothing is written and nothing stays held.
    DryRun,
    /// `DryRun` whose answers carry what each booking would hold, not its
    /// lesson's seats and explanation: a set's preview answers per
    /// occurrence, and building 10,800 lessons' seat rows and explanation
    /// JSON (300 MB for a term) was a quarter of its time.
    Preview,
}

impl WriteMode {
    /// Decided, then rolled back.
    fn rolls_back(self) -> bool {
        matches!(self, WriteMode::DryRun | WriteMode::Preview)
    }
}

/// The answers in booking order: the refusals already in `results`, the
/// admitted (written, or decided in a dry run) filling the gaps in order.
fn merge(results: Vec<Option<Written>>, admitted: Vec<Prepared<'_>>) -> Vec<Written> {
    let mut admitted = admitted.into_iter();
    results
        .into_iter()
        .filter_map(|r| r.or_else(|| admitted.next().map(|p| Ok(p.into_booked()))))
        .collect()
}

struct Prepared<'a> {
    w: &'a BookingWrite,
    lesson: NewLesson<'a>,
    seats: Vec<NewSeat>,
    /// Its seats' nodes' names, looked up by id in the live fleet: a scan
    /// of the whole placement snapshot for every booking was 4 % of a
    /// 100,000-seat storm's CPU at 20,000 nodes.
    names: HashMap<Uuid, String>,
    seat_state: &'static str,
    started: Vec<AssignmentRow>,
    hold: HoldPlan,
}

impl Prepared<'_> {
    fn into_booked(self) -> Booked {
        let id = self.w.input.id;
        let seats = seats_as_written(id, &self.seats, self.seat_state, &self.started, &self.names);
        Booked {
            view: LessonView {
                lesson: self.lesson.into_written(&self.w.input.b.school_site),
                seats,
            },
            started: self.started,
            held: Held {
                amount_uah: self.hold.amount(),
                takes: self.hold.takes().to_vec(),
                note: self.hold.note().to_string(),
            },
        }
    }
}

/// The seats as written, in seat order, named by node.
fn seats_as_written(
    lesson_id: Uuid,
    seats: &[NewSeat],
    state: &str,
    started: &[AssignmentRow],
    names: &HashMap<Uuid, String>,
) -> Vec<SeatRow> {
    let assigned: HashMap<Uuid, (Uuid, i64)> = started
        .iter()
        .filter_map(|a| Some((a.seat_id?, (a.id, a.generation))))
        .collect();
    let mut rows: Vec<SeatRow> = seats
        .iter()
        .map(|s| {
            let name = names.get(&s.node_id).cloned();
            s.as_written(lesson_id, state, name, assigned.get(&s.id).copied())
        })
        .collect();
    rows.sort_by_key(|s| s.number);
    rows
}
