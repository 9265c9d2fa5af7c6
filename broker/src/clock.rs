//! The lifecycle clock: moves lessons through booked → staging → ready → live
//! → ended at their times, dispatches seats at the start, releases them at the
//! end, runs the job queue, and turns node silence into node states.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;

use classgrid_placement::{Fleet, Owner, Request};
use futures::StreamExt;
use tokio::sync::watch;
use tracing::{Instrument, info, warn};
use uuid::Uuid;

use crate::{
    bind::{SeatBinding, bind_in, new_seat},
    domain::{
        spec::NOTEBOOK,
        states::{lesson as ls, seat as ss},
    },
    fleet::liveness,
    reserve::{Plan, Reserved, only_seat},
    service::window_ms,
    state::{App, Broker},
    store::{
        assignments::{self, AssignmentRow},
        lessons::{self as lesson_store, LessonRow, SeatRow},
        reservations,
    },
};

const TICK: Duration = Duration::from_millis(250);
/// Lessons stepped at once; well under the pool's connections (32 unless
/// configured), so that bookings and agent reports still get theirs.
const LESSON_STEPS_AT_ONCE: usize = 8;
const JOB_TICK: Duration = Duration::from_secs(1);
/// Re-reads the calendar from PostgreSQL: drops rows whose window passed and
/// picks up changes made by other writers (another broker, an operator).
const CALENDAR_RESYNC: Duration = Duration::from_secs(15);

pub async fn run(app: App, mut shutdown: watch::Receiver<bool>) {
    let mut last_jobs = Instant::now() - JOB_TICK;
    let mut last_resync = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = app.clock.notified() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = tick(&app).await {
            warn!(error = %e, "lifecycle tick failed; retrying");
        }
        if last_jobs.elapsed() >= JOB_TICK {
            last_jobs = Instant::now();
            if let Err(e) = app.job_tick().await {
                warn!(error = %e, "job queue tick failed; retrying");
            }
            if let Err(e) = app.voucher_tick().await {
                warn!(error = %e, "voucher expiry/settlement tick failed; retrying");
            }
        }
        if last_resync.elapsed() >= CALENDAR_RESYNC {
            last_resync = Instant::now();
            if let Err(e) = app.reserver.reload_calendar().await {
                warn!(error = %e, "calendar resync failed; retrying");
            }
        }
    }
}

async fn tick(app: &Broker) -> anyhow::Result<()> {
    for (node, state) in liveness::sweep(
        &app.fleet,
        Instant::now(),
        app.cfg.disconnected_after,
        app.cfg.lost_after,
    ) {
        info!(%node, state, "node state changed");
        app.store.set_node_state(node, state).await?;
    }
    let now = Utc::now();
    // Lessons are independent, and each step is a few round trips to
    // PostgreSQL: at a bell with hundreds of classes, one at a time left the
    // last class waiting seconds for the others' round trips.
    futures::stream::iter(app.store.lessons_due(now).await?)
        .for_each_concurrent(LESSON_STEPS_AT_ONCE, |l| async move {
            let r = if l.state == ls::LIVE && l.end_at() <= now {
                app.end_lesson(&l).await
            } else if l.start_at <= now {
                // Also a live lesson whose bell was cut short: binding
                // claims only seats still staged, so a repeat is harmless.
                // A trace of its own per class (its seats' Assigns carry
                // it to the agents); none when tracing is off.
                app.start_lesson(&l)
                    .instrument(classgrid_common::traced_span!("lesson start", lesson = %l.id))
                    .await
            } else {
                app.stage_lesson(&l).await
            };
            if let Err(e) = r {
                warn!(lesson = %l.id, error = %e, "lesson step failed; will retry");
            }
        })
        .await;
    Ok(())
}

impl Broker {
    /// From `start − lead`: datasets are staged near the chosen nodes by
    /// their sites' edges (`service::edge`); a lesson without datasets has
    /// nothing to stage, so its seats count as staged when the window opens.
    async fn stage_lesson(&self, l: &LessonRow) -> anyhow::Result<()> {
        self.stage_step(l).await?;
        if l.seat_spec.0.runtime == NOTEBOOK {
            self.warm_seats(l).await?;
        }
        Ok(())
    }

    /// Notebook seats start before the bell (issue 22): a JupyterLab takes
    /// seconds to answer, 45 at once on one server tens of seconds, so each
    /// seat is bound as soon as it is staged on a connected node, inside the
    /// lesson's reserved window (which opens at `start − lead`). The lesson
    /// stays `ready`; the bell goes live with servers already answering.
    async fn warm_seats(&self, l: &LessonRow) -> anyhow::Result<()> {
        let staged: Vec<SeatRow> = self
            .store
            .seats_of(l.id)
            .await?
            .into_iter()
            .filter(|s| {
                s.state == ss::STAGED && s.node_id.is_some_and(|n| self.fleet.is_connected(n))
            })
            .collect();
        if staged.is_empty() {
            return Ok(());
        }
        let rows = self.binding_rows(l, &staged);
        let mut tx = self.store.begin().await?;
        self.fence(&mut tx).await?;
        let bound = bind_in(&mut tx, rows).await?;
        tx.commit().await?;
        if !bound.is_empty() {
            info!(lesson = %l.id, seats = bound.len(), "notebook seats warming before the bell");
            self.send_seat_assignments(&bound, &l.datasets.0);
            self.lesson_changed(l.id);
        }
        Ok(())
    }

    /// The assignments that bind `seats` (each on its planned node).
    pub(crate) fn binding_rows(&self, l: &LessonRow, seats: &[SeatRow]) -> Vec<AssignmentRow> {
        let binding = SeatBinding::of(l, self.grace_seconds());
        seats
            .iter()
            .filter_map(|s| {
                Some(binding.assignment(
                    s.id,
                    s.node_id?,
                    &s.device_indexes,
                    s.gpu_memory_mib,
                    s.gpu_compute_pct,
                ))
            })
            .collect()
    }

    async fn stage_step(&self, l: &LessonRow) -> anyhow::Result<()> {
        if l.state == ls::READY {
            return Ok(());
        }
        if !l.datasets.0.is_empty() {
            // Seats wait for their site's edge to report the content cached.
            return self.stage_datasets(l).await;
        }
        let mut tx = self.store.begin().await?;
        self.fence(&mut tx).await?;
        lesson_store::set_lesson_state(&mut tx, l.id, &[ls::BOOKED], ls::STAGING, None).await?;
        lesson_store::set_seats_state(&mut tx, l.id, &[ss::PLANNED], ss::STAGED).await?;
        lesson_store::set_lesson_state(&mut tx, l.id, &[ls::STAGING], ls::READY, None).await?;
        tx.commit().await?;
        self.lesson_changed(l.id);
        Ok(())
    }

    /// At the bell: the lesson goes live and every seat whose node is
    /// connected is bound to it (assignment written, seat `starting`) in one
    /// transaction, so a crash or a lost database connection never leaves a
    /// live lesson with seats that nobody will start. Seats whose node is
    /// not connected are re-planned one by one afterwards; until each is
    /// bound or failed, the lesson stays due (`lessons_due`) and this step
    /// runs again.
    async fn start_lesson(&self, l: &LessonRow) -> anyhow::Result<()> {
        let (bind, replan): (Vec<SeatRow>, Vec<SeatRow>) = self
            .store
            .seats_of(l.id)
            .await?
            .into_iter()
            .filter(|s| s.state == ss::PLANNED || s.state == ss::STAGED)
            .partition(|s| s.node_id.is_some_and(|n| self.fleet.is_connected(n)));
        let rows = self.binding_rows(l, &bind);
        let mut tx = self.store.begin().await?;
        self.fence(&mut tx).await?;
        lesson_store::set_seats_state(&mut tx, l.id, &[ss::PLANNED], ss::STAGED).await?;
        let went_live = lesson_store::set_lesson_state(
            &mut tx,
            l.id,
            &[ls::BOOKED, ls::STAGING, ls::READY],
            ls::LIVE,
            None,
        )
        .await?;
        let bound = bind_in(&mut tx, rows).await?;
        tx.commit().await?;
        if went_live {
            info!(lesson = %l.id, "lesson live");
        }
        self.send_seat_assignments(&bound, &l.datasets.0);
        if !replan.is_empty() {
            let fleet = self.fleet.snapshot();
            for seat in &replan {
                if let Err(e) = self.replan_seat(&fleet, l, seat).await {
                    warn!(lesson = %l.id, seat = seat.number, error = %e, "seat re-planning failed; will retry");
                }
            }
        }
        self.lesson_changed(l.id);
        Ok(())
    }

    /// Places one seat again under the lesson's own rules. On failure the
    /// seat is marked failed with the reason, for the platform to see.
    async fn replan_seat(
        &self,
        fleet: &Arc<Fleet>,
        l: &LessonRow,
        seat: &SeatRow,
    ) -> anyhow::Result<()> {
        let req = Request {
            school_site: l.school_site_id,
            window: window_ms(l.window_start, l.window_end),
            seats: 1,
            min_seats: 1,
            seat: l.seat_spec.0.to_placement(),
            max_rtt_ms: l.max_rtt_ms as f64,
            datasets: Vec::new(),
            staging_lead_ms: 0,
            may_preempt: true,
            // The lesson's own rule: a re-planned seat goes nowhere its
            // data may not.
            residency: classgrid_placement::Residency::parse(&l.residency).unwrap_or_default(),
        };
        let owner = Owner::Lesson(l.id);
        let req = &req;
        let plan = Plan::single(fleet, self.rtt_table(), req, owner);
        // The seat's old rows are gone from the database after the move;
        // the lesson's rows are read back after the commit.
        let reserved = self
            .reserver
            .reserve(plan, true, |a| async move {
                let p = match only_seat(&a) {
                    Ok(p) => p,
                    Err(e) => return Ok(Err(e)),
                };
                let mut placed = new_seat(seat.id, p);
                placed.number = seat.number;
                // The move and the binding commit together: a seat is never
                // left re-planned but unbound.
                let row = SeatBinding::of(l, self.grace_seconds()).assignment(
                    seat.id,
                    placed.node_id,
                    &placed.device_indexes,
                    placed.gpu_memory_mib,
                    placed.gpu_compute_pct,
                );
                let cut = reservations::to_time(req.window.start);
                let rows = p.reservations(req, owner);
                let mut tx = self.store.begin().await?;
                self.fence(&mut tx).await?;
                reservations::delete_seat(&mut tx, l.id, seat.id).await?;
                reservations::preempt_jobs(&mut tx, &a.preempted, cut, l.id).await?;
                reservations::insert(&mut tx, &rows, Some(seat.id)).await?;
                lesson_store::move_seat(&mut tx, &placed).await?;
                let bound = bind_in(&mut tx, vec![row]).await?;
                tx.commit().await?;
                Ok(Ok((bound, p.node_id)))
            })
            .await?;
        match reserved {
            Reserved::Done((bound, node)) => {
                info!(lesson = %l.id, seat = seat.number, %node, "seat re-planned");
                self.send_seat_assignments(&bound, &l.datasets.0);
            }
            Reserved::Refused(e) => {
                let msg = format!(
                    "its node was not connected at start and re-planning failed: {}",
                    e.summary
                );
                self.store
                    .update_seat(seat.id, ss::FAILED, None, Some(&msg))
                    .await?;
                warn!(lesson = %l.id, seat = seat.number, %msg, "seat failed");
            }
            Reserved::Declined(_) | Reserved::Exhausted => {}
            Reserved::Failed(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// At the end: release every seat and free the capacity at once.
    async fn end_lesson(&self, l: &LessonRow) -> anyhow::Result<()> {
        let mut tx = self.store.begin().await?;
        self.fence(&mut tx).await?;
        let released = assignments::release_lesson(&mut tx, l.id).await?;
        lesson_store::set_seats_state(
            &mut tx,
            l.id,
            &[ss::PLANNED, ss::STAGED, ss::STARTING, ss::RUNNING],
            ss::RELEASED,
        )
        .await?;
        lesson_store::set_lesson_state(&mut tx, l.id, &[ls::LIVE], ls::ENDED, None).await?;
        reservations::delete_owner(&mut tx, Owner::Lesson(l.id)).await?;
        self.settle_vouchers(&mut tx, Owner::Lesson(l.id), false)
            .await?;
        tx.commit().await?;
        self.reserver.refresh_owners(&[Owner::Lesson(l.id)]).await?;
        self.send_releases(&released, "lesson ended");
        info!(lesson = %l.id, "lesson ended");
        self.lesson_changed(l.id);
        Ok(())
    }

    /// Re-sends what a reconnected node should be running.
    pub async fn resend(&self, ids: &[Uuid]) -> anyhow::Result<()> {
        for id in ids {
            self.store.bump_generation(*id).await?;
            self.send_assignment(*id).await?;
        }
        Ok(())
    }
}
