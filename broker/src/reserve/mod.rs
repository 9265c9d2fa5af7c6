//! Reserve: the one plan applier. It owns the live calendar, calls the pure
//! placement core, holds what a plan admits so that the next plan sees it,
//! and turns a write's outcome into a commit or an abort of that hold, with
//! the retries every caller needs (a capacity conflict, a deadlock, a
//! database that went away). Lessons, jobs and the lifecycle clock hand it
//! a request and the write that commits it, and get the result back.
//!
//! Only the leader has one (decision 078): a standby builds no `Reserver`,
//! so it cannot plan, and the epoch fence in every write it is handed keeps a
//! deposed leader's plans out of the database.
//!
//! Stages, in the words of DESIGN.md: filter → score (the placement core) →
//! reserve (here) → admit (the write: vouchers, quota, the whole class in one
//! transaction, `service::booking_writes`) → bind (`dispatch`).

mod calendar;
pub mod many;
pub mod queue;
mod turn;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use classgrid_placement::{
    Admission, Decision, Explanation, Fleet, Owner, Policy, Request, RttTable, SeatPlacement,
    Window,
};
use tracing::Instrument;

pub use self::calendar::{Hold, LiveCalendar};
use crate::{
    domain::ServiceError,
    store::{self, Store},
};

/// A placement window in the core's milliseconds.
pub fn window_ms(start: DateTime<Utc>, end: DateTime<Utc>) -> Window {
    Window::new(start.timestamp_millis(), end.timestamp_millis())
}

pub struct Reserver {
    calendar: Arc<LiveCalendar>,
    /// Bookings' plans waiting for the calendar's planning turn.
    waiting: turn::Waiting,
    store: Store,
    policy: Policy,
}

/// What to reserve, and how hard to try.
pub struct Plan<'a> {
    pub fleet: &'a Arc<Fleet>,
    pub rtt: Arc<RttTable>,
    pub req: &'a Request,
    pub owner: Owner,
    /// Plans tried after a capacity conflict or a deadlock, at most.
    pub attempts: usize,
    /// Whether a refusal re-reads the calendar and plans once more; a pass
    /// over the job queue reloads once up front instead of once per job.
    pub reload_on_refusal: bool,
    /// Whether a write that failed because the database went away is tried
    /// again on a fresh connection (for up to `TransientRetry`'s budget), or
    /// handed back as an error for the caller's next pass to retry.
    pub wait_out_outages: bool,
}

impl<'a> Plan<'a> {
    /// One seat or one job: a few attempts, a refusal re-read once, and an
    /// outage handed back to the caller's next pass.
    pub fn single(
        fleet: &'a Arc<Fleet>,
        rtt: Arc<RttTable>,
        req: &'a Request,
        owner: Owner,
    ) -> Self {
        Plan {
            fleet,
            rtt,
            req,
            owner,
            attempts: 4,
            reload_on_refusal: true,
            wait_out_outages: false,
        }
    }
}

/// The one seat a single-seat admission placed.
pub fn only_seat(a: &Admission) -> Result<&SeatPlacement, ServiceError> {
    a.seats
        .first()
        .ok_or_else(|| ServiceError::Conflict("the placement placed no seat".into()))
}

/// What a write made of an admission: written and committed, or declined
/// (vouchers or quota said no) with nothing written.
pub type Applied<T> = Result<T, ServiceError>;

/// How a reservation ended.
pub enum Reserved<T> {
    /// Written and committed; the calendar holds it.
    Done(T),
    /// The placement core found no room; its explanation says why.
    Refused(Box<Explanation>),
    /// The write declined it; nothing was written.
    Declined(ServiceError),
    /// The write failed for a reason that retrying cannot fix (for the
    /// caller to interpret, e.g. a unique violation on a request id).
    Failed(sqlx::Error),
    /// Capacity kept changing under concurrent plans.
    Exhausted,
}

impl Reserver {
    pub fn new(store: Store, policy: Policy) -> Self {
        Self {
            calendar: Default::default(),
            waiting: Default::default(),
            store,
            policy,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Reservations in the live calendar.
    pub fn len(&self) -> usize {
        self.calendar.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Plans `plan`, holds the admission, hands it to `write`, and commits
    /// the hold if the write committed or aborts it otherwise; after a
    /// capacity conflict (someone else took the capacity since the
    /// calendar was read) or a deadlock it re-reads and plans again.
    /// After a commit, the rows of the jobs the admission preempted (and,
    /// with `refresh_owner`, the owner's own, when `write` changed more than
    /// the admission says) are read back from the database.
    pub async fn reserve<T, W, F>(
        &self,
        plan: Plan<'_>,
        refresh_owner: bool,
        mut write: W,
    ) -> Result<Reserved<T>, ServiceError>
    where
        // A closure returning a future, not an async closure: the futures of
        // async closures cannot be shown `Send` to tonic and axum yet.
        W: FnMut(Admission) -> F,
        F: Future<Output = sqlx::Result<Applied<T>>>,
    {
        let mut transient = store::TransientRetry::default();
        let mut attempts = 0;
        while attempts < plan.attempts {
            attempts += 1;
            let (decision, hold) = self
                .plan(
                    plan.fleet,
                    &plan.rtt,
                    plan.req,
                    Some(plan.owner),
                    plan.reload_on_refusal,
                    None,
                )
                .instrument(classgrid_common::traced_span!("plan", attempt = attempts))
                .await?;
            let (admission, hold) = match (decision, hold) {
                (Decision::Admitted(a), Some(hold)) => (a, hold),
                (Decision::Refused(e), _) => return Ok(Reserved::Refused(Box::new(e))),
                (Decision::Admitted(_), None) => {
                    return Err(ServiceError::Conflict(
                        "placement held nothing; retry".into(),
                    ));
                }
            };
            let mut refresh = admission.preempted.clone();
            if refresh_owner {
                refresh.push(plan.owner);
            }
            let seats = admission.seats.len();
            match write(admission)
                .instrument(classgrid_common::traced_span!("write", seats))
                .await
            {
                Ok(Ok(done)) => {
                    self.commit_hold(hold);
                    self.refresh_owners(&refresh).await?;
                    return Ok(Reserved::Done(done));
                }
                Ok(Err(declined)) => {
                    self.abort_hold(hold).await?;
                    return Ok(Reserved::Declined(declined));
                }
                Err(e) if plan.wait_out_outages && store::is_transient(&e) => {
                    // The database restarted or could not be reached, and
                    // the write wrote nothing (or, if the link broke during
                    // COMMIT, the caller's retry finds what it wrote). Try
                    // again on a fresh connection, without counting it as a
                    // capacity conflict, until the budget is spent.
                    attempts -= 1;
                    tolerate_transient(self.abort_hold(hold).await)?;
                    tracing::warn!(error = %e, "plan write failed; retrying");
                    loop {
                        if !transient.pause().await {
                            return Err(ServiceError::Unavailable(
                                crate::domain::error::DATABASE_UNAVAILABLE.into(),
                            ));
                        }
                        if tolerate_transient(self.reload_calendar().await)?.is_some() {
                            break;
                        }
                    }
                }
                Err(e) => {
                    self.abort_hold(hold).await?;
                    if store::is_capacity_conflict(&e) {
                        self.reload_calendar().await?;
                        continue;
                    }
                    // PostgreSQL broke a lock cycle by aborting this
                    // transaction; nothing was written.
                    if store::is_deadlock(&e) {
                        continue;
                    }
                    return Ok(Reserved::Failed(e));
                }
            }
        }
        Ok(Reserved::Exhausted)
    }

    /// Places `req` against `fleet` and the in-memory calendar. With `hold`,
    /// an admission's rows are held for `hold` until committed or aborted.
    /// A refusal is only final after the calendar was re-read from the
    /// database (unless `reload_on_refusal` is false), so a stale memory
    /// copy never turns a class away.
    pub async fn plan(
        &self,
        fleet: &Arc<Fleet>,
        rtt: &Arc<RttTable>,
        req: &Request,
        hold: Option<Owner>,
        reload_on_refusal: bool,
        again: Option<Arc<Admission>>,
    ) -> Result<(Decision, Option<Hold>), ServiceError> {
        let policy = Arc::new(self.policy.clone());
        let req = Arc::new(req.clone());
        let mut reloaded = !reload_on_refusal;
        if !self.calendar.lock().loaded {
            self.reload_calendar().await?;
            reloaded = true;
        }
        loop {
            let placed = turn::place(&self.calendar, &self.waiting, |answer| turn::Job {
                fleet: fleet.clone(),
                rtt: rtt.clone(),
                req: req.clone(),
                policy: policy.clone(),
                hold,
                again: again.clone(),
                answer,
            })
            .await?;
            match placed {
                (Decision::Refused(_), _) if !reloaded => {}
                done => return Ok(done),
            }
            self.reload_calendar().await?;
            reloaded = true;
        }
    }

    /// The held rows are now committed in the database.
    pub fn commit_hold(&self, hold: Hold) {
        let (id, owner) = hold.settle();
        let mut g = self.calendar.lock();
        g.pending.remove(&id);
        g.changed([owner]);
    }

    /// The held rows were not written: drop them, and re-read what the
    /// database holds for their owner (a re-planned seat's lesson keeps its
    /// other seats).
    pub async fn abort_hold(&self, hold: Hold) -> Result<(), ServiceError> {
        let (id, owner) = hold.settle();
        // Read first, then swapped for the held rows in one step: a resync
        // merged in between (decision 119) would keep the owner with no
        // rows at all.
        match self.store.reservations_of(&[owner]).await {
            Ok(rows) => {
                self.calendar.abort(id, owner, Some(rows));
                Ok(())
            }
            Err(e) => {
                self.calendar.abort(id, owner, None);
                Err(e.into())
            }
        }
    }

    /// Makes the memory copy of `owners` equal to the database's, after a
    /// committed change to their reservations (cancel, end, preemption).
    pub async fn refresh_owners(&self, owners: &[Owner]) -> Result<(), ServiceError> {
        if owners.is_empty() {
            return Ok(());
        }
        let rows = self.store.reservations_of(owners).await?;
        self.calendar.set_owners(owners, rows);
        Ok(())
    }

    /// Re-reads every current and future reservation. Cheap enough to run on
    /// a timer; it also drops rows whose window has passed.
    pub async fn reload_calendar(&self) -> Result<(), ServiceError> {
        for _ in 0..3 {
            let seen = self.calendar.version();
            let rows = self.store.reservations_current().await?;
            if self.calendar.replace(rows, seen) {
                return Ok(());
            }
        }
        // Local changes kept racing the read; the next reload or a capacity
        // conflict corrects whatever this one missed.
        Ok(())
    }
}

/// Passes a transient failure as `None`, for a step that is tried again.
fn tolerate_transient<T>(r: Result<T, ServiceError>) -> Result<Option<T>, ServiceError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ServiceError::Unavailable(_)) => Ok(None),
        Err(e) => Err(e),
    }
}
