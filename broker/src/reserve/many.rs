//! Reserving several requests as one.
//!
//! A series' edit (`reserve_many`) replans its occurrences against a copy of
//! the calendar without their old rows; the write gets every admission at
//! once. A set of series booked together (`reserve_streamed`: a series, a
//! school's timetable, a district's term) is planned one occurrence after
//! another and handed to the write as it goes, so that the database writes
//! the first weeks while the broker plans the next (decision 117): a term's
//! 10,800 occurrences took seconds to plan and then seconds more to write,
//! each side idle while the other worked.
//!
//! Either way each admission is held in the live calendar until the write
//! says which it committed; those holds are committed, the others aborted.
//! A capacity conflict or a deadlock aborts them all, re-reads the calendar
//! and plans the whole set again.

use std::{collections::HashMap, sync::Arc};

use classgrid_placement::{
    Admission, Decision, Explanation, Fleet, FleetIndex, Owner, Request, RttTable,
};
use tokio::sync::mpsc;

use super::{Hold, Reserver, queue::BookingInput};
use crate::{domain::ServiceError, store};

/// One request of a set: what to place, on which fleet, for whom.
pub struct Item<'a> {
    pub fleet: &'a Arc<Fleet>,
    pub req: &'a Request,
    pub owner: Owner,
}

impl<'a> Item<'a> {
    /// A booking's request, for its lesson.
    pub fn of(i: &'a BookingInput) -> Self {
        Item {
            fleet: &i.fleet,
            req: &i.req,
            owner: Owner::Lesson(i.id),
        }
    }
}

/// What the write made of a set: its answer, and for each item whether its
/// rows were committed.
pub struct WroteMany<T> {
    pub answer: T,
    pub committed: Vec<bool>,
}

/// The decisions of `reserve_streamed`, in item order, as they are made. It
/// ends early when planning failed: the write must then write nothing.
pub type Decisions = mpsc::UnboundedReceiver<Result<Admission, Explanation>>;

/// For each item of a set, the earlier item that is the same series'
/// previous occurrence, whose nodes it tries first (decision 111).
pub type Previous = [Option<usize>];

impl Reserver {
    /// Plans and holds every item in place of `replacing`'s rows, hands the
    /// admissions (or refusals) to `write`, commits the holds of the items
    /// it committed and aborts the rest; `attempts` plans at most after
    /// capacity conflicts or deadlocks. None when capacity kept changing.
    pub async fn reserve_many<T, W, F>(
        &self,
        items: &[Item<'_>],
        replacing: &[Owner],
        rtt: &Arc<RttTable>,
        attempts: usize,
        mut write: W,
    ) -> Result<Option<T>, ServiceError>
    where
        W: FnMut(Vec<Result<Admission, Explanation>>) -> F,
        F: Future<Output = sqlx::Result<WroteMany<T>>>,
    {
        for _ in 0..attempts {
            let (decisions, holds, preempted) = self.plan_replacing(items, replacing, rtt).await?;
            match write(decisions).await {
                Ok(wrote) => {
                    self.settle(holds, &wrote.committed).await?;
                    let mut refresh = preempted;
                    refresh.extend_from_slice(replacing);
                    self.refresh_owners(&refresh).await?;
                    return Ok(Some(wrote.answer));
                }
                Err(e) => self.again_after(holds, e).await?,
            }
        }
        Ok(None)
    }

    /// Plans and holds every item in turn, as a booking is, and sends each
    /// decision to `write` as it is made; commits the holds of the items the
    /// write committed and aborts the rest. `prev` names each item's series'
    /// previous occurrence (decision 111). `write` answers None when the
    /// decisions ended early (planning failed), having written nothing.
    /// `attempts` plans at most after capacity conflicts or deadlocks; None
    /// when capacity kept changing.
    pub async fn reserve_streamed<T, W, F>(
        &self,
        items: &[Item<'_>],
        prev: &Previous,
        rtt: &Arc<RttTable>,
        attempts: usize,
        mut write: W,
    ) -> Result<Option<T>, ServiceError>
    where
        W: FnMut(Decisions) -> F,
        F: Future<Output = sqlx::Result<Option<WroteMany<T>>>>,
    {
        for _ in 0..attempts {
            let (send, decisions) = mpsc::unbounded_channel();
            // One task: the planning awaits a blocking thread per item and
            // the write awaits PostgreSQL, so each runs while the other
            // waits.
            let (planned, wrote) =
                tokio::join!(self.plan_streamed(items, prev, rtt, send), write(decisions));
            let Streamed {
                failed,
                holds,
                preempted,
            } = planned;
            match (failed, wrote) {
                (None, Ok(Some(wrote))) => {
                    self.settle(holds, &wrote.committed).await?;
                    self.refresh_owners(&preempted).await?;
                    return Ok(Some(wrote.answer));
                }
                (Some(e), _) => {
                    self.settle(holds, &[]).await?;
                    return Err(e);
                }
                (None, Ok(None)) => {
                    self.settle(holds, &[]).await?;
                    return Err(ServiceError::Internal(anyhow::anyhow!(
                        "the write of a set stopped before its last decision"
                    )));
                }
                (None, Err(e)) => self.again_after(holds, e).await?,
            }
        }
        Ok(None)
    }

    /// Commits the holds of the items the write committed (`committed[i]`
    /// for item `i`) and aborts the others.
    async fn settle(
        &self,
        holds: Vec<Option<Hold>>,
        committed: &[bool],
    ) -> Result<(), ServiceError> {
        for (i, hold) in holds.into_iter().enumerate() {
            match (hold, committed.get(i).copied().unwrap_or(false)) {
                (Some(h), true) => self.commit_hold(h),
                (Some(h), false) => self.abort_hold(h).await?,
                (None, _) => {}
            }
        }
        Ok(())
    }

    /// After a failed write: aborts every hold, and answers Ok when the set
    /// is to be planned again (a capacity conflict, once the calendar is
    /// re-read, or a deadlock), or the error.
    async fn again_after(
        &self,
        holds: Vec<Option<Hold>>,
        e: sqlx::Error,
    ) -> Result<(), ServiceError> {
        self.settle(holds, &[]).await?;
        if store::is_capacity_conflict(&e) {
            self.reload_calendar().await?;
            return Ok(());
        }
        if store::is_deadlock(&e) {
            return Ok(());
        }
        Err(e.into())
    }

    /// Each item planned and held in turn, each decision sent as it is
    /// made. Stops at the first error, or when the write stopped listening
    /// (it failed); either way with the holds taken so far.
    async fn plan_streamed(
        &self,
        items: &[Item<'_>],
        prev: &Previous,
        rtt: &Arc<RttTable>,
        send: mpsc::UnboundedSender<Result<Admission, Explanation>>,
    ) -> Streamed {
        let mut out = Streamed {
            failed: None,
            holds: Vec::with_capacity(items.len()),
            preempted: Vec::new(),
        };
        // A refusal re-reads the calendar once for the whole set, as a
        // single booking does before refusing.
        let mut reload = true;
        // The admissions a later item tries first (decision 111), kept
        // until it does; copied only for those.
        let wanted = wanted_later(prev, items.len());
        let mut kept: HashMap<usize, Arc<Admission>> = HashMap::new();
        for (k, it) in items.iter().enumerate() {
            let again = prev
                .get(k)
                .copied()
                .flatten()
                .filter(|&p| {
                    items
                        .get(p)
                        .is_some_and(|p| follows((p.fleet, p.req), (it.fleet, it.req)))
                })
                .and_then(|p| kept.remove(&p));
            let (decision, hold) = match self
                .plan(it.fleet, rtt, it.req, Some(it.owner), reload, again)
                .await
            {
                Ok(planned) => planned,
                Err(e) => {
                    out.failed = Some(e);
                    return out;
                }
            };
            out.holds.push(hold);
            let decision = match decision {
                Decision::Admitted(a) => {
                    out.preempted.extend(a.preempted.iter().copied());
                    if wanted[k] {
                        kept.insert(k, Arc::new(a.clone()));
                    }
                    Ok(a)
                }
                Decision::Refused(e) => {
                    reload = false;
                    Err(e)
                }
            };
            if send.send(decision).is_err() {
                // The write failed and went: its error is the answer.
                return out;
            }
        }
        out
    }

    /// Each item planned against a copy of the calendar without the
    /// `replacing` owners, each admission added to the copy before the next
    /// is planned, and held in the live calendar as any plan is (beside the
    /// rows it replaces until the write commits: other plans meanwhile see
    /// both, which errs on the side of refusing them). The copy is made on
    /// this thread: a series' edit replans tens of occurrences, not a bell's
    /// thousands of classes.
    async fn plan_replacing(
        &self,
        items: &[Item<'_>],
        replacing: &[Owner],
        rtt: &Arc<RttTable>,
    ) -> Result<Planned, ServiceError> {
        if !self.calendar.lock().loaded {
            self.reload_calendar().await?;
        }
        let _turn = self.calendar.plan_turn.lock().await;
        let mut g = self.calendar.lock();
        let mut without = g.cal.clone();
        for o in replacing {
            without.remove_owner(*o);
        }
        let mut holds = Vec::with_capacity(items.len());
        let mut decisions = Vec::with_capacity(items.len());
        let mut preempted = Vec::new();
        for it in items {
            match classgrid_placement::place(it.fleet, &without, rtt, it.req, &self.policy) {
                Decision::Admitted(a) => {
                    let rows = a.reservations(it.req, it.owner);
                    for r in &rows {
                        without.insert(r.clone());
                    }
                    holds.push(Some(self.calendar.hold(&mut g, rows, it.owner)));
                    preempted.extend(a.preempted.iter().copied());
                    decisions.push(Ok(a));
                }
                Decision::Refused(e) => {
                    holds.push(None);
                    decisions.push(Err(e));
                }
            }
        }
        Ok((decisions, holds, preempted))
    }
}

impl Reserver {
    /// Decisions for a dry run of several bookings: each planned against a
    /// scratch copy of the live calendar to which every earlier admission
    /// was added, so that bookings of the set that overlap in time (two
    /// classes of a timetable in one period) compete as they would when
    /// booked; nothing is held. The live calendar is re-read once if any is
    /// refused, as a booking's refusal is only final after a re-read. The
    /// whole set is planned on one blocking thread, in one turn, in the
    /// order `reserve_streamed` plans it, trying each series' previous
    /// occurrence's nodes first (`prev`), so that it predicts the booking.
    pub async fn plan_scratch(
        &self,
        inputs: &[Arc<BookingInput>],
        prev: &Previous,
        rtt: &Arc<RttTable>,
    ) -> Result<Vec<Decision>, ServiceError> {
        if !self.calendar.lock().loaded {
            self.reload_calendar().await?;
        }
        let mut reloaded = false;
        loop {
            let decisions = {
                let _turn = self.calendar.plan_turn.lock().await;
                let mut cal = self.calendar.lock().cal.clone();
                let (inputs, prev, rtt, policy) = (
                    inputs.to_vec(),
                    prev.to_vec(),
                    rtt.clone(),
                    self.policy.clone(),
                );
                tokio::task::spawn_blocking(move || {
                    // A term's occurrences share one fleet snapshot: one
                    // index of it for all of them (decision 101; the same
                    // decisions as the plain scan), not a scan per
                    // occurrence. A fleet planned once keeps the scan.
                    let mut index: Option<FleetIndex> = None;
                    let mut decisions: Vec<Decision> = Vec::with_capacity(inputs.len());
                    for (k, i) in inputs.iter().enumerate() {
                        let cached = index
                            .as_ref()
                            .is_some_and(|ix| Arc::ptr_eq(ix.fleet(), &i.fleet));
                        let shared = inputs
                            .get(k + 1)
                            .is_some_and(|next| Arc::ptr_eq(&next.fleet, &i.fleet));
                        if !cached && shared {
                            index = Some(FleetIndex::new(i.fleet.clone()));
                        }
                        // A series' next occurrence tries its previous
                        // one's nodes first (decision 111).
                        let again = prev
                            .get(k)
                            .copied()
                            .flatten()
                            .and_then(|p| again_of(inputs.get(p)?, i, decisions.get(p)))
                            .and_then(|prev| {
                                classgrid_placement::place_again(
                                    prev, &i.fleet, &cal, &rtt, &i.req, &policy,
                                )
                            });
                        let d = match (again, &index) {
                            (Some(d), _) => d,
                            (None, Some(ix)) if Arc::ptr_eq(ix.fleet(), &i.fleet) => {
                                classgrid_placement::place_indexed(ix, &cal, &rtt, &i.req, &policy)
                            }
                            (None, _) => {
                                classgrid_placement::place(&i.fleet, &cal, &rtt, &i.req, &policy)
                            }
                        };
                        if let Decision::Admitted(a) = &d {
                            for r in a.reservations(&i.req, Owner::Lesson(i.id)) {
                                cal.insert(r);
                            }
                        }
                        decisions.push(d);
                    }
                    decisions
                })
                .await
                .map_err(|e| ServiceError::Internal(anyhow::anyhow!("planning stopped: {e}")))?
            };
            let refused = decisions.iter().any(|d| matches!(d, Decision::Refused(_)));
            if !refused || reloaded {
                return Ok(decisions);
            }
            self.reload_calendar().await?;
            reloaded = true;
        }
    }
}

/// The admission of `prev`, an earlier input, when `next` is the same
/// request at another time on the same fleet (a series' next occurrence):
/// its nodes are tried first (decision 111).
fn again_of<'d>(
    prev: &BookingInput,
    next: &BookingInput,
    decided: Option<&'d Decision>,
) -> Option<&'d Admission> {
    match decided {
        Some(Decision::Admitted(a))
            if follows((&prev.fleet, &prev.req), (&next.fleet, &next.req)) =>
        {
            Some(a)
        }
        _ => None,
    }
}

/// Whether `next` is `prev` asked again at another time on the same fleet
/// snapshot (a series' next occurrence), whose nodes it tries first.
fn follows(prev: (&Arc<Fleet>, &Request), next: (&Arc<Fleet>, &Request)) -> bool {
    Arc::ptr_eq(prev.0, next.0) && classgrid_placement::same_shape(prev.1, next.1)
}

/// Which items some later item names as its previous occurrence.
fn wanted_later(prev: &Previous, n: usize) -> Vec<bool> {
    let mut wanted = vec![false; n];
    for &p in prev.iter().flatten() {
        if let Some(w) = wanted.get_mut(p) {
            *w = true;
        }
    }
    wanted
}

/// What `plan_streamed` did: the error that stopped it, if any; the hold
/// of each item planned (None when refused); the jobs the admissions
/// preempt.
struct Streamed {
    failed: Option<ServiceError>,
    holds: Vec<Option<Hold>>,
    preempted: Vec<Owner>,
}

/// Each item's decision, its hold when admitted, and the jobs the
/// admissions preempt.
type Planned = (
    Vec<Result<Admission, Explanation>>,
    Vec<Option<Hold>>,
    Vec<Owner>,
);
