//! The thin adapter between the live state and the pure placement core:
//! gather a snapshot, call `place`, hand back the decision.
//!
//! The capacity calendar is kept in memory (`LiveCalendar`) so that a booking
//! costs no query before its write. PostgreSQL stays the authority: its
//! trigger refuses any over-commit, and the memory copy is corrected from it
//! whenever they could disagree — after a capacity conflict, before a refusal
//! is final, and on a periodic resync for writers this broker does not see.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use classgrid_placement::{
    self as placement, Calendar, Decision, Owner, Policy, Request, Reservation, RttTable,
};

use crate::{app::Broker, domain::ServiceError};

/// Capacity written by a plan that is not committed yet. Other plans see it
/// at once, so concurrent bookings in this broker do not pick the same slice
/// and then collide in the database.
#[must_use = "a hold must be committed or aborted"]
pub struct Hold {
    id: u64,
    owner: Owner,
}

#[derive(Default)]
struct Inner {
    cal: Calendar,
    /// Uncommitted holds by id, re-applied when the calendar is reloaded.
    pending: HashMap<u64, Vec<Reservation>>,
    /// Bumped by every local change, so a reload that raced one can tell.
    version: u64,
    /// Read from the database at least once; the first plan loads it.
    loaded: bool,
}

#[derive(Default)]
pub struct LiveCalendar {
    inner: Mutex<Inner>,
    next_hold: AtomicU64,
    /// Plans take their turn here first. A plan holds `inner` for a few
    /// milliseconds; a second plan waiting on that (blocking) lock would
    /// stall its runtime thread, and on a two-core machine that left no
    /// thread to drive the database while a bell's classes were planned.
    plan_turn: tokio::sync::Mutex<()>,
}

impl LiveCalendar {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a calendar that is at worst
        // stale, which the database corrects; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().cal.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn version(&self) -> u64 {
        self.lock().version
    }

    /// Replaces the calendar with `rows` read from the database when no local
    /// change happened since `seen`; false when one did (read again).
    fn replace(&self, rows: Vec<Reservation>, seen: u64) -> bool {
        let mut g = self.lock();
        if g.version != seen {
            return false;
        }
        let mut cal = Calendar::new(rows);
        for rows in g.pending.values() {
            for r in rows {
                cal.insert(r.clone());
            }
        }
        g.cal = cal;
        g.loaded = true;
        true
    }

    /// Drops `owners` and puts back the rows the database holds for them.
    fn set_owners(&self, owners: &[Owner], rows: Vec<Reservation>) {
        let mut g = self.lock();
        for o in owners {
            g.cal.remove_owner(*o);
        }
        for r in rows {
            g.cal.insert(r);
        }
        g.version += 1;
    }
}

impl Broker {
    pub fn policy(&self) -> Policy {
        Policy {
            weights: self.cfg.weights,
            max_window_ms: self.cfg.max_window.as_millis() as i64,
            ..Policy::default()
        }
    }

    /// Configured topology, overlaid with what edges measured and what
    /// network coordinates estimate.
    pub fn rtt_table(&self) -> RttTable {
        let mut t = RttTable::new(self.cfg.topology);
        self.edge.fill(&mut t);
        t
    }

    /// Places `req` against `fleet` and the in-memory calendar. With `hold`,
    /// an admission's rows are held for `hold` until committed or aborted.
    /// A refusal is only final after the calendar was re-read from the
    /// database, so a stale memory copy never turns a class away.
    pub async fn plan(
        &self,
        fleet: &placement::Fleet,
        req: &Request,
        hold: Option<Owner>,
    ) -> Result<(Decision, Option<Hold>), ServiceError> {
        self.plan_with(fleet, req, hold, true).await
    }

    /// `plan`, where the caller says whether a refusal is worth a reload: a
    /// pass over the job queue reloads once up front instead of once per job.
    pub async fn plan_with(
        &self,
        fleet: &placement::Fleet,
        req: &Request,
        hold: Option<Owner>,
        reload_on_refusal: bool,
    ) -> Result<(Decision, Option<Hold>), ServiceError> {
        let rtt = self.rtt_table();
        let policy = self.policy();
        let mut reloaded = !reload_on_refusal;
        if !self.calendar.lock().loaded {
            self.reload_calendar().await?;
            reloaded = true;
        }
        loop {
            {
                let _turn = self.calendar.plan_turn.lock().await;
                let mut g = self.calendar.lock();
                let decision = placement::place(fleet, &g.cal, &rtt, req, &policy);
                match (&decision, hold) {
                    (Decision::Admitted(a), Some(owner)) => {
                        let rows = a.reservations(req, owner);
                        for r in &rows {
                            g.cal.insert(r.clone());
                        }
                        let id = self.calendar.next_hold.fetch_add(1, Ordering::Relaxed);
                        g.pending.insert(id, rows);
                        g.version += 1;
                        return Ok((decision, Some(Hold { id, owner })));
                    }
                    (Decision::Refused(_), _) if !reloaded => {}
                    _ => return Ok((decision, None)),
                }
            }
            self.reload_calendar().await?;
            reloaded = true;
        }
    }

    /// The held rows are now committed in the database.
    pub fn commit_hold(&self, hold: Hold) {
        let mut g = self.calendar.lock();
        g.pending.remove(&hold.id);
        g.version += 1;
    }

    /// The held rows were not written: drop them, and re-read what the
    /// database holds for their owner (a re-planned seat's lesson keeps its
    /// other seats).
    pub async fn abort_hold(&self, hold: Hold) -> Result<(), ServiceError> {
        {
            let mut g = self.calendar.lock();
            g.pending.remove(&hold.id);
            g.cal.remove_owner(hold.owner);
            g.version += 1;
        }
        self.refresh_owners(&[hold.owner]).await
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
