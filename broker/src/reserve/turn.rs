//! Plans run one at a time, and back to back: whoever holds the planning
//! turn takes every plan waiting and runs them on one blocking thread.
//!
//! A plan is the one long stretch of CPU in a booking, so it runs off the
//! runtime's threads: on one it starved the tasks driving the database
//! (each writer statement waited tens of milliseconds to be polled while
//! the classes of a bell were planned). With one blocking task per plan,
//! the turn stayed held across each hop there and back: at a bell of
//! 100,000 seats it was held for 94 % of the storm, half of it in those
//! hops (the blocking thread waiting to be scheduled, then the task waiting
//! to be polled again, on a machine busy with PostgreSQL), and every other
//! class waited behind it (decision 123). Taken together, a batch costs
//! one hop; each plan's answer is sent as soon as it is decided, in the
//! order the plans came.

use std::sync::{Arc, Mutex};

use classgrid_placement::{Admission, Decision, Fleet, Owner, Policy, Request, RttTable};
use tokio::sync::oneshot;

use super::calendar::{Hold, LiveCalendar};
use crate::domain::ServiceError;

/// One plan waiting for its turn, and where its answer goes.
pub(super) struct Job {
    pub fleet: Arc<Fleet>,
    pub rtt: Arc<RttTable>,
    pub req: Arc<Request>,
    pub policy: Arc<Policy>,
    pub hold: Option<Owner>,
    pub again: Option<Arc<Admission>>,
    pub answer: oneshot::Sender<(Decision, Option<Hold>)>,
}

/// Plans waiting for the turn of their calendar, in the order they came.
#[derive(Default)]
pub(super) struct Waiting(Mutex<Vec<Job>>);

impl Waiting {
    fn push(&self, job: Job) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(job);
    }

    fn take(&self) -> Vec<Job> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Places `job` in its turn: its answer, decided after every plan that
/// came before it and before any that comes after.
pub(super) async fn place(
    cal: &Arc<LiveCalendar>,
    waiting: &Waiting,
    job: impl FnOnce(oneshot::Sender<(Decision, Option<Hold>)>) -> Job,
) -> Result<(Decision, Option<Hold>), ServiceError> {
    let (answer, mut answered) = oneshot::channel();
    waiting.push(job(answer));
    tokio::select! {
        // Another holder of the turn took this plan with its batch.
        a = &mut answered => answered_or_stopped(a),
        turn = cal.plan_turn.lock() => {
            let jobs = waiting.take();
            if !jobs.is_empty() {
                let c = cal.clone();
                // A plan that panics ends its batch; the plans after it
                // lose their answer and say so below.
                let _ = tokio::task::spawn_blocking(move || run(&c, jobs)).await;
            }
            drop(turn);
            // This plan was in the batch just run or in an earlier one.
            answered_or_stopped(answered.await)
        }
    }
}

fn answered_or_stopped(
    a: Result<(Decision, Option<Hold>), oneshot::error::RecvError>,
) -> Result<(Decision, Option<Hold>), ServiceError> {
    a.map_err(|_| ServiceError::Internal(anyhow::anyhow!("planning stopped")))
}

/// Runs a batch in order. A plan whose booking was given up while it
/// waited (its caller went away) is not run: its hold would only be
/// dropped again, and a dropped hold makes the next plan re-read the whole
/// calendar. One given up while it runs drops its hold, as before.
fn run(cal: &Arc<LiveCalendar>, jobs: Vec<Job>) {
    for j in jobs {
        if j.answer.is_closed() {
            continue;
        }
        let placed = cal.place_and_hold(
            &j.fleet,
            &j.rtt,
            &j.req,
            &j.policy,
            j.hold,
            j.again.as_deref(),
        );
        let _ = j.answer.send(placed);
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    /// A booking given up while its plan waited (a client that went away
    /// at a busy bell) costs nothing: its plan is skipped, where a plan run
    /// and then dropped would have made the next one re-read the calendar.
    #[test]
    fn a_plan_given_up_while_it_waited_is_not_run() {
        let (fleet, rtt, req) = super::super::calendar::tests::measured_school();
        let (rtt, req) = (Arc::new(rtt), Arc::new(req));
        let cal = Arc::new(LiveCalendar::default());
        cal.lock().loaded = true;
        let job = |owner, answer| Job {
            fleet: fleet.clone(),
            rtt: rtt.clone(),
            req: req.clone(),
            policy: Arc::new(Policy::default()),
            hold: Some(owner),
            again: None,
            answer,
        };
        let (gone, kept) = (Owner::Lesson(Uuid::now_v7()), Owner::Lesson(Uuid::now_v7()));
        let (to_gone, given_up) = oneshot::channel();
        drop(given_up);
        let (to_kept, mut answer) = oneshot::channel();

        run(&cal, vec![job(gone, to_gone), job(kept, to_kept)]);

        let (decision, hold) = answer.try_recv().expect("the plan still waited for is run");
        assert!(matches!(decision, Decision::Admitted(_)), "{decision:?}");
        assert!(hold.is_some());
        let g = cal.lock();
        assert!(g.loaded, "no dropped hold sent the next plan to re-read");
        assert_eq!(g.cal.of_owner(gone).count(), 0);
        assert_eq!(g.cal.of_owner(kept).count(), 2, "its two seats are held");
    }
}
