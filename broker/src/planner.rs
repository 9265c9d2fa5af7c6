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
        Arc, Mutex,
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
///
/// A hold dropped without being committed or aborted (its booking's caller
/// went away mid-booking) takes its rows out and has the next plan re-read
/// the calendar: the booking may or may not have been written, and only the
/// database knows. Kept, its rows would be re-applied on every reload.
#[must_use = "a hold must be committed or aborted"]
pub struct Hold {
    id: u64,
    owner: Owner,
    cal: Arc<LiveCalendar>,
    settled: bool,
}

impl Hold {
    /// Committed or aborted by the caller: nothing for `drop` to undo.
    fn settle(mut self) -> (u64, Owner) {
        self.settled = true;
        (self.id, self.owner)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut g = self.cal.lock();
        if g.pending.remove(&self.id).is_some() {
            g.cal.remove_owner(self.owner);
            g.loaded = false;
            g.version += 1;
        }
    }
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
    /// Plans take their turn here first, then run on a blocking thread (see
    /// `plan_with`), one at a time.
    plan_turn: tokio::sync::Mutex<()>,
}

impl LiveCalendar {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a calendar that is at worst
        // stale, which the database corrects; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Places `req` against this calendar; an admission with `hold` is
    /// held at once, so the next plan sees it.
    fn place_and_hold(
        self: &Arc<Self>,
        fleet: &placement::Fleet,
        rtt: &RttTable,
        req: &Request,
        policy: &Policy,
        hold: Option<Owner>,
    ) -> (Decision, Option<Hold>) {
        let mut g = self.lock();
        let decision = placement::place(fleet, &g.cal, rtt, req, policy);
        match (&decision, hold) {
            (Decision::Admitted(a), Some(owner)) => {
                let rows = a.reservations(req, owner);
                // Held before the calendar lock is let go, so the next plan
                // sees them.
                let hold = self.hold(&mut g, rows, owner);
                (decision, Some(hold))
            }
            _ => (decision, None),
        }
    }

    fn hold(self: &Arc<Self>, g: &mut Inner, rows: Vec<Reservation>, owner: Owner) -> Hold {
        for r in &rows {
            g.cal.insert(r.clone());
        }
        let id = self.next_hold.fetch_add(1, Ordering::Relaxed);
        g.pending.insert(id, rows);
        g.version += 1;
        Hold {
            id,
            owner,
            cal: self.clone(),
            settled: false,
        }
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
        fleet: &Arc<placement::Fleet>,
        req: &Request,
        hold: Option<Owner>,
    ) -> Result<(Decision, Option<Hold>), ServiceError> {
        self.plan_with(fleet, req, hold, true).await
    }

    /// `plan`, where the caller says whether a refusal is worth a reload: a
    /// pass over the job queue reloads once up front instead of once per job.
    pub async fn plan_with(
        &self,
        fleet: &Arc<placement::Fleet>,
        req: &Request,
        hold: Option<Owner>,
        reload_on_refusal: bool,
    ) -> Result<(Decision, Option<Hold>), ServiceError> {
        let rtt = Arc::new(self.rtt_table());
        let policy = Arc::new(self.policy());
        let req = Arc::new(req.clone());
        let mut reloaded = !reload_on_refusal;
        if !self.calendar.lock().loaded {
            self.reload_calendar().await?;
            reloaded = true;
        }
        loop {
            {
                // Planning is the one long stretch of CPU in a booking. On a
                // runtime thread it starved the tasks driving the database:
                // at a bell, while the classes were planned one after another,
                // each writer statement waited tens of milliseconds to be
                // polled and PostgreSQL sat idle.
                let _turn = self.calendar.plan_turn.lock().await;
                let (cal, fleet, req, rtt, policy) = (
                    self.calendar.clone(),
                    fleet.clone(),
                    req.clone(),
                    rtt.clone(),
                    policy.clone(),
                );
                let placed = tokio::task::spawn_blocking(move || {
                    cal.place_and_hold(&fleet, &rtt, &req, &policy, hold)
                })
                .await
                .map_err(|e| ServiceError::Internal(anyhow::anyhow!("planning stopped: {e}")))?;
                match placed {
                    (Decision::Refused(_), _) if !reloaded => {}
                    done => return Ok(done),
                }
            }
            self.reload_calendar().await?;
            reloaded = true;
        }
    }

    /// The held rows are now committed in the database.
    pub fn commit_hold(&self, hold: Hold) {
        let (id, _) = hold.settle();
        let mut g = self.calendar.lock();
        g.pending.remove(&id);
        g.version += 1;
    }

    /// The held rows were not written: drop them, and re-read what the
    /// database holds for their owner (a re-planned seat's lesson keeps its
    /// other seats).
    pub async fn abort_hold(&self, hold: Hold) -> Result<(), ServiceError> {
        let (id, owner) = hold.settle();
        {
            let mut g = self.calendar.lock();
            g.pending.remove(&id);
            g.cal.remove_owner(owner);
            g.version += 1;
        }
        self.refresh_owners(&[owner]).await
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

#[cfg(test)]
mod tests {
    use classgrid_placement::Window;
    use uuid::Uuid;

    use super::*;

    fn held(cal: &Arc<LiveCalendar>, owner: Owner) -> Hold {
        let row = Reservation {
            owner,
            node_id: Uuid::now_v7(),
            device_index: Some(0),
            window: Window {
                start: 0,
                end: 60_000,
            },
            cpu_millis: 500,
            memory_mib: 1024,
            gpu_memory_mib: 4096,
            gpu_compute_percent: 25,
            preemptible: false,
        };
        let mut g = cal.lock();
        g.loaded = true;
        cal.hold(&mut g, vec![row], owner)
    }

    #[test]
    fn a_hold_dropped_mid_booking_leaves_no_phantom_capacity() {
        let cal = Arc::new(LiveCalendar::default());
        let hold = held(&cal, Owner::Lesson(Uuid::now_v7()));
        assert_eq!(cal.len(), 1, "other plans see a held row at once");
        drop(hold);
        assert_eq!(cal.len(), 0, "the dropped hold's row is gone");
        let g = cal.lock();
        assert!(g.pending.is_empty(), "a reload would not re-apply it");
        assert!(!g.loaded, "the next plan re-reads what the database holds");
    }

    #[test]
    fn a_settled_hold_is_left_alone_when_dropped() {
        let cal = Arc::new(LiveCalendar::default());
        let hold = held(&cal, Owner::Lesson(Uuid::now_v7()));
        let (id, _) = hold.settle();
        cal.lock().pending.remove(&id);
        assert_eq!(cal.len(), 1, "a committed row stays in the calendar");
        assert!(cal.lock().loaded);
    }
}
