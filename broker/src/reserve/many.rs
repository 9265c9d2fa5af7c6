//! Reserving several requests as one: a series' occurrences. Each is planned
//! and held in turn, so the next one's plan sees it; the write gets every
//! admission (or refusal) at once and says which it committed; those holds
//! are committed, the others aborted. A capacity conflict or a deadlock
//! aborts them all, re-reads the calendar and plans the whole set again.

use std::sync::Arc;

use classgrid_placement::{
    Admission, Decision, Explanation, Fleet, FleetIndex, Owner, Request, RttTable,
};

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

impl Reserver {
    /// Plans and holds every item, hands the admissions (or refusals) to
    /// `write`, commits the holds of the items it committed and aborts the
    /// rest; `attempts` plans at most after capacity conflicts or deadlocks.
    /// None when capacity kept changing.
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
            let (decisions, holds, preempted) = if replacing.is_empty() {
                self.plan_each(items, rtt).await?
            } else {
                self.plan_replacing(items, replacing, rtt).await?
            };
            match write(decisions).await {
                Ok(wrote) => {
                    for (hold, committed) in holds.into_iter().zip(&wrote.committed) {
                        match (hold, committed) {
                            (Some(h), true) => self.commit_hold(h),
                            (Some(h), false) => self.abort_hold(h).await?,
                            (None, _) => {}
                        }
                    }
                    let mut refresh = preempted;
                    refresh.extend_from_slice(replacing);
                    self.refresh_owners(&refresh).await?;
                    return Ok(Some(wrote.answer));
                }
                Err(e) => {
                    for h in holds.into_iter().flatten() {
                        self.abort_hold(h).await?;
                    }
                    if store::is_capacity_conflict(&e) {
                        self.reload_calendar().await?;
                        continue;
                    }
                    if store::is_deadlock(&e) {
                        continue;
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(None)
    }

    /// Each item planned and held in turn, as a booking is.
    async fn plan_each(
        &self,
        items: &[Item<'_>],
        rtt: &Arc<RttTable>,
    ) -> Result<Planned, ServiceError> {
        let mut holds: Vec<Option<Hold>> = Vec::with_capacity(items.len());
        let mut decisions = Vec::with_capacity(items.len());
        let mut preempted = Vec::new();
        // A refusal re-reads the calendar once for the whole set, as a
        // single booking does before refusing.
        let mut reload = true;
        // An admission kept for the next item when that is a series' next
        // occurrence (decision 111), as the dry run plans it
        // (`plan_scratch`); copied only then.
        let mut again: Option<Arc<Admission>> = None;
        for (k, it) in items.iter().enumerate() {
            let (decision, hold) = self
                .plan(it.fleet, rtt, it.req, Some(it.owner), reload, again.take())
                .await?;
            holds.push(hold);
            let next_follows = items
                .get(k + 1)
                .is_some_and(|next| follows((it.fleet, it.req), (next.fleet, next.req)));
            decisions.push(match decision {
                Decision::Admitted(a) => {
                    preempted.extend(a.preempted.iter().copied());
                    if next_follows {
                        again = Some(Arc::new(a.clone()));
                    }
                    Ok(a)
                }
                Decision::Refused(e) => {
                    reload = false;
                    Err(e)
                }
            });
        }
        Ok((decisions, holds, preempted))
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
    /// whole set is planned on one blocking thread, in one turn.
    pub async fn plan_scratch(
        &self,
        inputs: &[Arc<BookingInput>],
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
                let (inputs, rtt, policy) = (inputs.to_vec(), rtt.clone(), self.policy.clone());
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
                        let again = k
                            .checked_sub(1)
                            .and_then(|p| again_of(&inputs[p], i, decisions.get(p)))
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

/// The admission of `prev`, the input just before `next`, when `next` is
/// the same request at another time on the same fleet (a series' next
/// occurrence): its nodes are tried first (decision 111).
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

/// Each item's decision, its hold when admitted, and the jobs the
/// admissions preempt.
type Planned = (
    Vec<Result<Admission, Explanation>>,
    Vec<Option<Hold>>,
    Vec<Owner>,
);
