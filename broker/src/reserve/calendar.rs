//! The live calendar: every current reservation in memory, and the holds of
//! plans not committed yet.
//!
//! The capacity calendar is kept in memory (`LiveCalendar`) so that a booking
//! costs no query before its write. PostgreSQL stays the authority: its
//! trigger refuses any over-commit, and the memory copy is corrected from it
//! whenever they could disagree — after a capacity conflict, before a refusal
//! is final, and on a periodic resync for writers this broker does not see.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
};

use classgrid_placement::{
    self as placement, Calendar, Decision, FleetIndex, Owner, Policy, Request, Reservation,
    RttTable,
};

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
    pub(super) fn settle(mut self) -> (u64, Owner) {
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
            // Neither memory nor a read already under way knows this
            // owner's rows: a reload that raced the drop must read again.
            g.lost_track();
        }
    }
}

/// Changes remembered for reloads at most; past it a racing reload reads
/// again, as every one did before decision 119. A bell of 100,000 seats
/// (2,223 classes, a hold and a commit each) makes a few thousand.
const TOUCHED_KEPT: usize = 200_000;

#[derive(Default)]
pub(super) struct Inner {
    pub(super) cal: Calendar,
    /// Uncommitted holds by id, re-applied when the calendar is reloaded.
    pub(super) pending: HashMap<u64, Vec<Reservation>>,
    /// Bumped by every local change, so a reload that raced one can tell.
    pub(super) version: u64,
    /// The owners each local change touched, by the version it made, for
    /// every change after `log_from`. A reload that raced changes keeps
    /// memory's rows for the owners they touched and takes the database's
    /// for the rest (decision 119): under a bell, some booking always
    /// committed during the 100,000-row read, and each reload read the whole
    /// calendar three times and kept none of it.
    touched: Vec<(u64, Owner)>,
    log_from: u64,
    /// Read from the database at least once; the first plan loads it.
    pub(super) loaded: bool,
    /// The fleet snapshot plans are placed on, indexed (decision 101).
    index: SnapshotIndex,
}

impl Inner {
    /// A local change to `owners`' rows.
    pub(super) fn changed(&mut self, owners: impl IntoIterator<Item = Owner>) {
        self.version += 1;
        let v = self.version;
        self.touched.extend(owners.into_iter().map(|o| (v, o)));
        if self.touched.len() > TOUCHED_KEPT {
            self.lost_track();
        }
    }

    /// A local change no reload under way can merge.
    fn lost_track(&mut self) {
        self.version += 1;
        self.touched.clear();
        self.log_from = self.version;
    }
}

/// The index of the fleet snapshot that plans keep being handed.
///
/// Recognised by the snapshot's `Arc` address, which is sound here: the
/// index holds the snapshot (a strong reference) and `seen` its allocation
/// (a weak one), so neither address can be reused by another snapshot while
/// it is compared against. A snapshot is indexed the second time it is
/// handed in: the fleet view's shared snapshot is handed in by every booking
/// until the fleet changes, while a one-off fleet (a lender's filtered view)
/// is planned once with the plain scan and never costs an index.
#[derive(Default)]
struct SnapshotIndex {
    index: Option<Arc<FleetIndex>>,
    seen: Weak<placement::Fleet>,
}

impl SnapshotIndex {
    fn for_fleet(&mut self, fleet: &Arc<placement::Fleet>) -> Option<Arc<FleetIndex>> {
        if let Some(ix) = &self.index {
            if Arc::ptr_eq(ix.fleet(), fleet) {
                return Some(ix.clone());
            }
        }
        if std::ptr::eq(self.seen.as_ptr(), Arc::as_ptr(fleet)) {
            let ix = Arc::new(FleetIndex::new(fleet.clone()));
            self.index = Some(ix.clone());
            self.seen = Weak::new();
            return Some(ix);
        }
        self.seen = Arc::downgrade(fleet);
        None
    }
}

#[derive(Default)]
pub struct LiveCalendar {
    inner: Mutex<Inner>,
    next_hold: AtomicU64,
    /// Plans take their turn here, then run on a blocking thread one at a
    /// time: a booking's in the batch of whoever holds the turn (see
    /// `turn::place`), a dry run or a series' re-plan by itself.
    pub(super) plan_turn: tokio::sync::Mutex<()>,
}

impl LiveCalendar {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a calendar that is at worst
        // stale, which the database corrects; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Places `req` against this calendar; an admission with `hold` is
    /// held at once, so the next plan sees it.
    pub(super) fn place_and_hold(
        self: &Arc<Self>,
        fleet: &Arc<placement::Fleet>,
        rtt: &RttTable,
        req: &Request,
        policy: &Policy,
        hold: Option<Owner>,
        again: Option<&placement::Admission>,
    ) -> (Decision, Option<Hold>) {
        let mut g = self.lock();
        // A series' next occurrence on its previous one's nodes first
        // (decision 111); else the whole fleet, the same decision either way
        // (decision 101): the index skips the static filters for whole
        // groups of equal nodes.
        let again = again.and_then(|p| placement::place_again(p, fleet, &g.cal, rtt, req, policy));
        let decision = match (again, g.index.for_fleet(fleet)) {
            (Some(d), _) => d,
            (None, Some(ix)) => placement::place_indexed(&ix, &g.cal, rtt, req, policy),
            (None, None) => placement::place(fleet, &g.cal, rtt, req, policy),
        };
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

    pub(super) fn hold(
        self: &Arc<Self>,
        g: &mut Inner,
        rows: Vec<Reservation>,
        owner: Owner,
    ) -> Hold {
        for r in &rows {
            g.cal.insert(r.clone());
        }
        let id = self.next_hold.fetch_add(1, Ordering::Relaxed);
        g.pending.insert(id, rows);
        g.changed([owner]);
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

    pub(super) fn version(&self) -> u64 {
        self.lock().version
    }

    /// Replaces the calendar with `rows`, read from the database after
    /// version `seen`. Owners changed here since then keep the rows memory
    /// has for them, which the read may predate; every other owner gets the
    /// database's. False when that cannot be told (a hold was dropped, or
    /// too many changes): read again.
    pub(super) fn replace(&self, rows: Vec<Reservation>, seen: u64) -> bool {
        // Built before the lock: 100,000 rows take tens of milliseconds,
        // and every plan waits for this lock.
        let mut cal = Calendar::new(rows);
        let mut g = self.lock();
        if g.log_from > seen {
            return false;
        }
        let touched: HashSet<Owner> = g
            .touched
            .iter()
            .filter(|(v, _)| *v > seen)
            .map(|(_, o)| *o)
            .collect();
        for &o in &touched {
            cal.remove_owner(o);
            for r in g.cal.of_owner(o) {
                cal.insert(r.clone());
            }
        }
        // Held rows of an owner untouched since the read: not committed
        // then, so not in it.
        for rows in g.pending.values() {
            for r in rows.iter().filter(|r| !touched.contains(&r.owner)) {
                cal.insert(r.clone());
            }
        }
        g.cal = cal;
        g.loaded = true;
        // A reload that read before `seen` now reads again.
        g.touched.retain(|(v, _)| *v > seen);
        g.log_from = g.log_from.max(seen);
        true
    }

    /// Hold `id` of `owner` was not written: its rows give way to `rows`,
    /// what the database holds for the owner (a re-planned seat's lesson
    /// keeps its other seats). Without them (the read failed), the owner's
    /// rows are unknown: the next plan and any reload under way read again.
    pub(super) fn abort(&self, id: u64, owner: Owner, rows: Option<Vec<Reservation>>) {
        let mut g = self.lock();
        g.pending.remove(&id);
        g.cal.remove_owner(owner);
        match rows {
            Some(rows) => {
                for r in rows {
                    g.cal.insert(r);
                }
                g.changed([owner]);
            }
            None => {
                g.loaded = false;
                g.lost_track();
            }
        }
    }

    /// Drops `owners` and puts back the rows the database holds for them.
    pub(super) fn set_owners(&self, owners: &[Owner], rows: Vec<Reservation>) {
        let mut g = self.lock();
        for o in owners {
            g.cal.remove_owner(*o);
        }
        for r in rows {
            g.cal.insert(r);
        }
        g.changed(owners.iter().copied());
    }
}

#[cfg(test)]
pub(super) mod tests {
    use classgrid_placement::Window;
    use uuid::Uuid;

    use super::*;

    fn held(cal: &Arc<LiveCalendar>, owner: Owner) -> Hold {
        let mut g = cal.lock();
        g.loaded = true;
        cal.hold(&mut g, vec![row(owner)], owner)
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
    fn a_snapshot_is_indexed_when_handed_in_again() {
        let mut s = SnapshotIndex::default();
        let a = Arc::new(placement::Fleet::default());
        assert!(s.for_fleet(&a).is_none(), "first sighting: the plain scan");
        let ix = s.for_fleet(&a).expect("second sighting: indexed");
        assert!(Arc::ptr_eq(ix.fleet(), &a));
        assert!(s.for_fleet(&a).is_some_and(|i| Arc::ptr_eq(&i, &ix)));
        // A one-off fleet is scanned and leaves the snapshot's index alone.
        let b = Arc::new(placement::Fleet::default());
        assert!(s.for_fleet(&b).is_none());
        assert!(s.for_fleet(&a).is_some_and(|i| Arc::ptr_eq(&i, &ix)));
        // A new snapshot replaces it once handed in twice.
        let c = Arc::new(placement::Fleet::default());
        assert!(s.for_fleet(&c).is_none());
        assert!(s.for_fleet(&c).is_some_and(|i| Arc::ptr_eq(i.fleet(), &c)));
    }

    /// A school with a measured RTT to every node: two nodes of one kind
    /// on its own site, so it gets one sorted group.
    pub(in crate::reserve) fn measured_school() -> (Arc<placement::Fleet>, RttTable, Request) {
        use placement::{Liveness, Node, SeatSpec, Site, SiteKind, Tier};
        let school = Site {
            id: Uuid::now_v7(),
            name: "school".into(),
            kind: SiteKind::School,
            district: "d1".into(),
        };
        let node = |name: &str| Node {
            id: Uuid::now_v7(),
            name: name.into(),
            site_id: school.id,
            tier: Tier::Edge,
            liveness: Liveness::Connected,
            healthy: true,
            cordoned: false,
            approved: true,
            runtimes: vec!["jupyter".into()],
            cpu_millis: 8_000,
            memory_mib: 16_384,
            devices: vec![],
            cached: vec![],
            staging_bytes_per_sec: None,
            lending: None,
        };
        let nodes = vec![node("a"), node("b")];
        let mut rtt = RttTable::new(Default::default());
        for (n, ms) in nodes.iter().zip([3.0, 1.0]) {
            rtt.set_measured(school.id, n.id, ms);
        }
        let req = Request {
            school_site: school.id,
            window: Window {
                start: 0,
                end: 60_000,
            },
            seats: 2,
            min_seats: 2,
            seat: SeatSpec {
                cpu_millis: 500,
                memory_mib: 1024,
                gpu: None,
                runtime: "jupyter".into(),
            },
            max_rtt_ms: 30.0,
            datasets: vec![],
            staging_lead_ms: 0,
            may_preempt: false,
            residency: Default::default(),
        };
        let fleet = placement::Fleet {
            sites: vec![school],
            nodes,
        };
        (Arc::new(fleet), rtt, req)
    }

    /// Decision 104: the index keeps a school's RTTs sorted only while the
    /// bookings share one table, which `EdgeState::rtt_table` now hands out
    /// until the RTT book changes.
    #[test]
    fn a_school_is_sorted_when_bookings_share_the_rtt_table() {
        let (fleet, rtt, req) = measured_school();
        let policy = Policy::default();
        let place = |cal: &Arc<LiveCalendar>, rtt: &RttTable| {
            let (d, _) = cal.place_and_hold(&fleet, rtt, &req, &policy, None, None);
            assert_eq!(
                format!("{d:?}"),
                format!(
                    "{:?}",
                    placement::place(&fleet, &cal.lock().cal, rtt, &req, &policy)
                )
            );
            let ix = cal.lock().index.index.clone();
            ix.map_or(0, |ix| ix.sorted_schools(rtt))
        };

        let shared = LiveCalendar::default().into();
        // Scan (fleet first seen), index (school first seen), sorted.
        let sorted: Vec<usize> = (0..4).map(|_| place(&shared, &rtt)).collect();
        assert_eq!(sorted, [0, 0, 1, 1]);

        // A table rebuilt for every booking (as before) is never sorted.
        let rebuild = || {
            let mut t = RttTable::new(Default::default());
            for (n, ms) in fleet.nodes.iter().zip([3.0, 1.0]) {
                t.set_measured(req.school_site, n.id, ms);
            }
            t
        };
        let rebuilt = LiveCalendar::default().into();
        let sorted: Vec<usize> = (0..4).map(|_| place(&rebuilt, &rebuild())).collect();
        assert_eq!(sorted, [0, 0, 0, 0]);
    }

    fn row(owner: Owner) -> Reservation {
        Reservation {
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
        }
    }

    fn owners(cal: &LiveCalendar) -> Vec<Owner> {
        let mut v: Vec<Owner> = cal.lock().cal.iter().map(|r| r.owner).collect();
        v.sort_by_key(|o| format!("{o:?}"));
        v
    }

    fn sorted(mut v: Vec<Owner>) -> Vec<Owner> {
        v.sort_by_key(|o| format!("{o:?}"));
        v
    }

    /// Decision 119: a resync whose read raced a booking keeps the read.
    #[test]
    fn a_reload_that_raced_a_commit_merges_instead_of_reading_again() {
        let cal = Arc::new(LiveCalendar::default());
        let (gone, kept, booked, external) = (
            Owner::Lesson(Uuid::now_v7()),
            Owner::Lesson(Uuid::now_v7()),
            Owner::Lesson(Uuid::now_v7()),
            Owner::Lesson(Uuid::now_v7()),
        );
        let older = cal.version();
        cal.set_owners(&[gone, kept], vec![row(gone), row(kept)]);
        let seen = cal.version();
        // A booking is held and committed while the read is under way; the
        // read predates its commit and lacks its row.
        let hold = held(&cal, booked);
        let (id, owner) = hold.settle();
        {
            let mut g = cal.lock();
            g.pending.remove(&id);
            g.changed([owner]);
        }
        // Meanwhile another writer ended `gone` and booked `external`.
        assert!(
            cal.replace(vec![row(kept), row(external)], seen),
            "merged, not read again"
        );
        assert_eq!(owners(&cal), sorted(vec![kept, booked, external]));
        // A reload that read before this one's read reads again.
        assert!(!cal.replace(vec![], older));
        // One that read after the commit takes the database's rows alone.
        let now = cal.version();
        assert!(cal.replace(vec![row(booked)], now));
        assert_eq!(owners(&cal), vec![booked]);
    }

    #[test]
    fn a_reload_keeps_rows_held_and_not_yet_committed() {
        let cal = Arc::new(LiveCalendar::default());
        let (before, during) = (Owner::Lesson(Uuid::now_v7()), Owner::Lesson(Uuid::now_v7()));
        let early = held(&cal, before);
        let seen = cal.version();
        let late = held(&cal, during);
        // Neither is committed, so the read has neither: both are kept,
        // each once.
        assert!(cal.replace(vec![], seen));
        assert_eq!(owners(&cal), sorted(vec![before, during]));
        for h in [early, late] {
            let (id, _) = h.settle();
            cal.lock().pending.remove(&id);
        }
    }

    #[test]
    fn an_aborted_hold_gives_way_to_the_databases_rows_in_one_step() {
        let cal = Arc::new(LiveCalendar::default());
        let lesson = Owner::Lesson(Uuid::now_v7());
        cal.set_owners(&[lesson], vec![row(lesson)]);
        let seen = cal.version();
        // A re-plan of one seat is held, then its write fails.
        let (id, owner) = held(&cal, lesson).settle();
        assert_eq!(cal.len(), 2);
        cal.abort(id, owner, Some(vec![row(lesson)]));
        assert_eq!(cal.len(), 1, "the lesson's committed seat stays");
        // A resync that read before the abort keeps it too.
        assert!(cal.replace(vec![row(lesson)], seen));
        assert_eq!(owners(&cal), vec![lesson]);

        // Unread, the owner is unknown: everything is read again.
        let seen = cal.version();
        let (id, owner) = held(&cal, lesson).settle();
        cal.abort(id, owner, None);
        assert_eq!(cal.len(), 0);
        assert!(!cal.lock().loaded, "the next plan reloads");
        assert!(!cal.replace(vec![row(lesson)], seen));
    }

    #[test]
    fn a_reload_that_raced_a_dropped_hold_reads_again() {
        let cal = Arc::new(LiveCalendar::default());
        let seen = cal.version();
        drop(held(&cal, Owner::Lesson(Uuid::now_v7())));
        assert!(!cal.replace(vec![], seen), "the drop's owner is unknown");
        let seen = cal.version();
        assert!(cal.replace(vec![], seen));
        assert!(cal.lock().loaded);
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
