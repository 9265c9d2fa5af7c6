//! The generation rule at the agent (decision 075): the highest generation
//! wins, also while a start is in flight. A runtime whose start waits for the
//! test to let it finish holds a start in flight while the broker's re-send
//! (a higher generation, after a reconnect) or a release arrives.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use classgrid_agent::{
    runtime::{Handle, Probe, Runtime, Runtimes, StartSpec},
    supervisor::Supervisor,
};
use classgrid_proto::v1::{self as pb, AssignmentState};
use futures::future::BoxFuture;
use tokio::sync::{Notify, Semaphore, mpsc};

const ID: &str = "0193a8f2-5c1d-7e4a-9b3c-2d1e0f9a8b7c";
/// Generous: a loaded 2-core machine is slow, and no wait here is fixed.
const DEADLINE: Duration = Duration::from_secs(30);

/// A process runtime whose starts wait until the test lets one finish.
struct HeldStart {
    starts: AtomicUsize,
    stops: AtomicUsize,
    /// Signalled each time a start reaches the runtime.
    entered: Notify,
    /// One permit lets one start finish.
    finish: Semaphore,
    fail: AtomicBool,
    stopped: AtomicBool,
}

impl Default for HeldStart {
    fn default() -> Self {
        Self {
            starts: AtomicUsize::new(0),
            stops: AtomicUsize::new(0),
            entered: Notify::new(),
            finish: Semaphore::new(0),
            fail: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        }
    }
}

impl Runtime for HeldStart {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn start(&self, _spec: StartSpec) -> BoxFuture<'_, anyhow::Result<Handle>> {
        Box::pin(async move {
            let n = self.starts.fetch_add(1, Ordering::SeqCst) + 1;
            self.entered.notify_one();
            self.finish.acquire().await?.forget();
            if self.fail.load(Ordering::SeqCst) {
                anyhow::bail!("image not found");
            }
            Ok(Handle::Process {
                pid: i32::MAX - n as i32,
                start_ticks: 1,
            })
        })
    }

    fn probe<'a>(&'a self, _handle: &'a Handle) -> BoxFuture<'a, Probe> {
        Box::pin(async move {
            if self.stopped.load(Ordering::SeqCst) {
                Probe::Exited(Some(0))
            } else {
                Probe::Running {
                    host: None,
                    ready: true,
                }
            }
        })
    }

    fn stop<'a>(
        &'a self,
        _handle: &'a Handle,
        _grace: Duration,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            self.stops.fetch_add(1, Ordering::SeqCst);
            self.stopped.store(true, Ordering::SeqCst);
            Ok(())
        })
    }

    fn output_tail<'a>(
        &'a self,
        _handle: &'a Handle,
        _work_dir: &'a Path,
    ) -> BoxFuture<'a, String> {
        Box::pin(async { String::new() })
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(10)
    }
}

struct Agent {
    sup: Arc<Supervisor>,
    rt: Arc<HeldStart>,
    reports: mpsc::UnboundedReceiver<pb::AssignmentStatus>,
    dir: PathBuf,
}

impl Agent {
    async fn start(dir: PathBuf) -> Self {
        let rt = Arc::new(HeldStart::default());
        let (sup, reports) = Supervisor::start(
            dir.clone(),
            "127.0.0.1".into(),
            Runtimes::new(vec![rt.clone()]),
        )
        .await
        .unwrap();
        Self {
            sup,
            rt,
            reports,
            dir,
        }
    }

    /// An agent that was assigned `generation` and whose start is in the
    /// runtime, held there until [`Agent::finish_start`].
    async fn starting(generation: i64) -> Self {
        let dir = std::env::temp_dir().join(format!("cg-gen-{}", uuid::Uuid::new_v4().simple()));
        let agent = Self::start(dir).await;
        agent.sup.assign(assign(generation));
        tokio::time::timeout(DEADLINE, agent.rt.entered.notified())
            .await
            .expect("the start reached the runtime");
        agent
    }

    fn finish_start(&self) {
        self.rt.finish.add_permits(1);
    }

    /// The first report that `pred` accepts; every report before it is
    /// returned too, for assertions on what came out.
    async fn report_where(
        &mut self,
        pred: impl Fn(&pb::AssignmentStatus) -> bool,
    ) -> (pb::AssignmentStatus, Vec<pb::AssignmentStatus>) {
        let mut seen = Vec::new();
        let wait = async {
            while let Some(s) = self.reports.recv().await {
                if pred(&s) {
                    return s;
                }
                seen.push(s);
            }
            panic!("the supervisor's reports ended");
        };
        match tokio::time::timeout(DEADLINE, wait).await {
            Ok(s) => (s, seen),
            Err(_) => panic!("no such report within {DEADLINE:?}; got {seen:?}"),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn assign(generation: i64) -> pb::Assign {
    pb::Assign {
        assignment_id: ID.into(),
        generation,
        kind: "seat".into(),
        workload: Some(pb::Workload {
            command: "notebook".into(),
            ..Default::default()
        }),
        ends_unix_ms: chrono::Utc::now().timestamp_millis() + 3_600_000,
        grace_seconds: 1,
        ..Default::default()
    }
}

fn state(s: &pb::AssignmentStatus) -> AssignmentState {
    AssignmentState::try_from(s.state).unwrap_or_default()
}

fn is(want: AssignmentState) -> impl Fn(&pb::AssignmentStatus) -> bool {
    move |s| state(s) == want
}

#[tokio::test]
async fn a_newer_generation_during_a_start_is_reported_by_the_start() {
    let mut agent = Agent::starting(1).await;
    // The broker re-sent the assignment after a reconnect.
    agent.sup.assign(assign(2));
    agent.finish_start();

    let (running, before) = agent.report_where(is(AssignmentState::Running)).await;
    assert_eq!(running.generation, 2, "{running:?}");
    assert!(
        running.endpoint.starts_with("http://127.0.0.1:"),
        "{running:?}"
    );
    assert!(
        before.iter().all(|s| s.generation == 2),
        "every report of the start carries the newest generation: {before:?}"
    );
    assert_eq!(agent.rt.starts.load(Ordering::SeqCst), 1, "one start only");
    let now = agent.sup.statuses();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_eq!(now[0].generation, 2);
}

#[tokio::test]
async fn an_older_generation_during_a_start_changes_nothing() {
    let mut agent = Agent::starting(3).await;
    agent.sup.assign(assign(2));
    agent.sup.assign(assign(3));
    agent.finish_start();

    let (running, _) = agent.report_where(is(AssignmentState::Running)).await;
    assert_eq!(running.generation, 3, "{running:?}");
    assert_eq!(agent.rt.starts.load(Ordering::SeqCst), 1, "one start only");
}

#[tokio::test]
async fn a_start_that_fails_reports_its_failure_under_the_newest_generation() {
    let mut agent = Agent::starting(1).await;
    agent.rt.fail.store(true, Ordering::SeqCst);
    agent.sup.assign(assign(2));
    agent.finish_start();

    let (failed, _) = agent.report_where(is(AssignmentState::Failed)).await;
    assert_eq!(failed.generation, 2, "{failed:?}");
    assert!(failed.message.contains("image not found"), "{failed:?}");
}

#[tokio::test]
async fn a_newer_generation_for_running_work_is_reported_with_its_endpoint() {
    let mut agent = Agent::starting(1).await;
    agent.finish_start();
    let (first, _) = agent.report_where(is(AssignmentState::Running)).await;
    assert_eq!(first.generation, 1);

    agent.sup.assign(assign(2));
    let (again, _) = agent.report_where(|s| s.generation == 2).await;
    assert_eq!(state(&again), AssignmentState::Running, "{again:?}");
    assert_eq!(again.endpoint, first.endpoint);
    assert_eq!(agent.rt.starts.load(Ordering::SeqCst), 1, "one start only");
}

#[tokio::test]
async fn a_release_for_an_older_generation_does_not_stop_a_newer_start() {
    let mut agent = Agent::starting(1).await;
    agent.sup.assign(assign(2));
    agent
        .sup
        .release(ID, 1, "released while the agent was away");
    agent.finish_start();

    let (running, _) = agent
        .report_where(|s| {
            matches!(
                state(s),
                AssignmentState::Running | AssignmentState::Stopped
            )
        })
        .await;
    assert_eq!(state(&running), AssignmentState::Running, "{running:?}");
    assert_eq!(running.generation, 2, "{running:?}");
    assert_eq!(agent.rt.stops.load(Ordering::SeqCst), 0, "not stopped");
}

#[tokio::test]
async fn a_release_during_a_start_stops_the_work_once_started() {
    let mut agent = Agent::starting(1).await;
    agent.sup.assign(assign(2));
    agent.sup.release(ID, 2, "the lesson was cancelled");
    agent.finish_start();

    let (stopped, _) = agent.report_where(is(AssignmentState::Stopped)).await;
    assert_eq!(stopped.generation, 2, "{stopped:?}");
    assert_eq!(stopped.message, "the lesson was cancelled");
    assert_eq!(agent.rt.stops.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_newest_generation_of_a_start_survives_an_agent_restart() {
    let mut agent = Agent::starting(1).await;
    agent.sup.assign(assign(2));
    agent.finish_start();
    agent.report_where(is(AssignmentState::Running)).await;

    // A second agent process on the same state folder adopts the work.
    let again = Agent::start(agent.dir.clone()).await;
    let adopted = again.sup.statuses();
    assert_eq!(adopted.len(), 1, "{adopted:?}");
    assert_eq!(adopted[0].generation, 2, "{adopted:?}");
    assert_eq!(
        again.rt.starts.load(Ordering::SeqCst),
        0,
        "adopted, not started"
    );
}
