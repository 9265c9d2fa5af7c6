//! Keeps the node's assignments running, whatever their runtime: starts them,
//! probes them, stops them on release or at their end time (even with no
//! broker), reports usage while they run, and adopts those a previous agent
//! process left running.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use classgrid_common::{
    telemetry::{join_remote, traceparent_of},
    traced_span,
};
use classgrid_devices::{ControlEnv, Device};
use classgrid_proto::v1::{self as pb, AssignmentState};
use tokio::sync::mpsc;
use tracing::{Instrument, info, warn};

use crate::{
    now_ms,
    runtime::{GrantedSlice, Probe, Runtime, Runtimes, StartSpec, notebook, process},
    state::{Record, StateFile},
};

/// How long a seat that runs but does not listen on its PORT stays
/// `starting` before it is reported running anyway.
const LISTEN_WAIT: Duration = Duration::from_secs(10);

/// How often running work reports its usage (slice-seconds, utilisation).
pub const USAGE_INTERVAL: Duration = Duration::from_secs(15);

/// A seat that dies this many times in a row, each within
/// [`STEADY_RUN`] of its start, is crash-looping: it is reported failed
/// instead of being started again.
const MAX_QUICK_RESTARTS: u32 = 5;
/// A run at least this long counts as healthy and resets the restart count.
const STEADY_RUN: Duration = Duration::from_secs(60);
/// A seat is not restarted when its reservation ends sooner than this.
const RESTART_MARGIN_MS: i64 = 2_000;

struct Item {
    rec: Record,
    state: AssignmentState,
    stopping: bool,
    message: String,
    /// Restarts since the seat last ran steadily.
    restarts: u32,
    run_since: tokio::time::Instant,
    /// The trace context of the start (its `runtime start` span), until the
    /// RUNNING report's span joins it; empty when not traced. Only the first
    /// RUNNING joins the assignment's trace: a restart hours later is not
    /// part of the booking's story.
    trace: String,
}

impl Item {
    fn new(rec: Record, state: AssignmentState, message: String) -> Self {
        Self {
            rec,
            state,
            stopping: false,
            message,
            restarts: 0,
            run_since: tokio::time::Instant::now(),
            trace: String::new(),
        }
    }
}

/// A start in flight: what the broker asked of it while the runtime started it.
struct InFlight {
    /// The newest generation assigned, which the start's reports carry: the
    /// broker accepts reports of its current generation only.
    generation: i64,
    /// A stop asked for meanwhile, with its reason.
    stop: Option<String>,
}

/// Locks are taken in the order `starting`, then `items`: a start leaves
/// `starting` and becomes an item under both, so that an Assign or Release
/// finds it in one of the two, never in neither (decision 075).
pub struct Supervisor {
    items: Mutex<HashMap<String, Item>>,
    /// Assignments whose start is in flight.
    starting: Mutex<HashMap<String, InFlight>>,
    /// Ports picked for starts in flight, until their item holds them. The
    /// kernel hands a just-released port out again, and a class's seats
    /// arrive together: two seats got one port, and the second restarted on
    /// it forever.
    picked_ports: Mutex<HashMap<String, u16>>,
    events: mpsc::UnboundedSender<pb::AssignmentStatus>,
    state: StateFile,
    /// Final reports, on disk until the broker has surely had them.
    outbox: crate::outbox::Outbox,
    work_root: PathBuf,
    advertise_host: String,
    devices: Mutex<Vec<Device>>,
    control_env: ControlEnv,
    runtimes: Runtimes,
    /// Seats started again in place after their process ended, since this
    /// agent started (`classgrid_agent_seat_restarts_total`).
    seat_restarts: AtomicU64,
}

/// The first port from `free` that is not `held`, trying a few times.
fn pick_port(
    mut free: impl FnMut() -> std::io::Result<u16>,
    held: impl Fn(u16) -> bool,
) -> Result<u16, String> {
    for _ in 0..64 {
        let p = free().map_err(|e| format!("no free port for the seat: {e}"))?;
        if !held(p) {
            return Ok(p);
        }
    }
    Err("no free port for the seat: the system kept offering ports this node's seats hold".into())
}

/// Runtimes that run on this host take the host's slice controls; cluster
/// runtimes leave device choice to the cluster's scheduler.
fn on_host(kind: &str) -> bool {
    matches!(kind, "process" | "container" | "notebook")
}

impl Supervisor {
    /// Loads the last run's records and adopts all work that its runtime
    /// still runs.
    pub async fn start(
        state_dir: PathBuf,
        advertise_host: String,
        runtimes: Runtimes,
    ) -> anyhow::Result<(Arc<Self>, mpsc::UnboundedReceiver<pb::AssignmentStatus>)> {
        let state = StateFile::new(&state_dir)?;
        let (outbox, problem) = crate::outbox::Outbox::open(&state_dir);
        if let Some(p) = problem {
            warn!(problem = %p, "final status reports unreadable; starting afresh");
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let control_env = ControlEnv::probe(false, None, false);
        let sup = Arc::new(Self {
            items: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashMap::new()),
            picked_ports: Mutex::new(HashMap::new()),
            events: tx,
            state,
            outbox,
            work_root: state_dir.join("work"),
            advertise_host,
            devices: Mutex::new(Vec::new()),
            seat_restarts: AtomicU64::new(0),
            control_env,
            runtimes,
        });
        let (records, problem) = sup.state.load();
        if let Some(p) = problem {
            warn!(problem = %p, "agent state unreadable; the broker will re-send what should run");
        }
        for mut rec in records {
            let kind = rec.handle.kind();
            let Some(rt) = sup.runtimes.get(kind) else {
                warn!(assignment = %rec.id, runtime = kind, "recorded work's runtime is not offered any more; not adopted");
                continue;
            };
            let state = match rt.probe(&rec.handle).await {
                Probe::Running { .. } | Probe::Unknown(_) => AssignmentState::Running,
                Probe::Pending => AssignmentState::Starting,
                Probe::Exited(_) | Probe::Gone => {
                    rt.cleanup(&rec.handle, &rec.id).await;
                    continue;
                }
            };
            if rec.work_dir.as_os_str().is_empty() {
                rec.work_dir = sup.work_root.join(&rec.id);
            }
            info!(assignment = %rec.id, runtime = kind, handle = ?rec.handle, "adopted running assignment");
            let id = rec.id.clone();
            sup.items.lock().expect("lock").insert(
                id.clone(),
                Item::new(rec, state, "adopted after agent restart".into()),
            );
            sup.watch(id.clone(), rt);
            sup.schedule_end(id);
        }
        sup.persist();
        Ok((sup, rx))
    }

    pub fn runtime_kinds(&self) -> Vec<String> {
        self.runtimes.kinds()
    }

    pub fn set_devices(&self, devices: Vec<Device>) {
        *self.devices.lock().expect("lock") = devices;
    }

    /// Writes the records while holding the lock, so that two assignments
    /// ending at once cannot write their snapshots in the wrong order and
    /// leave an ended seat in the file.
    fn persist(&self) {
        let items = self.items.lock().expect("lock");
        let recs: Vec<Record> = items.values().map(|i| i.rec.clone()).collect();
        if let Err(e) = self.state.save(&recs) {
            warn!(error = %e, "cannot save agent state");
        }
    }

    /// Mean measured utilisation of the devices `slots`, where they report it.
    fn utilization(&self, slots: &[usize]) -> Option<f64> {
        let devices = self.devices.lock().expect("lock");
        let known: Vec<f64> = slots
            .iter()
            .filter_map(|s| devices.get(*s)?.utilization_percent)
            .map(|u| u.min(100) as f64)
            .collect();
        (!known.is_empty()).then(|| known.iter().sum::<f64>() / known.len() as f64)
    }

    fn status_of(&self, item: &Item, exit: Option<i32>, tail: String) -> pb::AssignmentStatus {
        let elapsed = (now_ms() - item.rec.started_unix_ms).max(0) as f64 / 1000.0;
        pb::AssignmentStatus {
            assignment_id: item.rec.id.clone(),
            generation: item.rec.generation,
            state: item.state as i32,
            endpoint: item.rec.endpoint.clone(),
            exit_code: exit.unwrap_or(0),
            has_exit_code: exit.is_some(),
            output_tail: tail,
            message: item.message.clone(),
            slice_seconds: elapsed * item.rec.slice_fraction,
            utilization_percent: self.utilization(&item.rec.slots),
        }
    }

    fn emit(&self, s: pb::AssignmentStatus) {
        if crate::outbox::is_final(&s)
            && let Err(e) = self.outbox.record(&s, now_ms())
        {
            warn!(assignment = %s.assignment_id, error = %e, "final report not written to disk; it is still queued in memory");
        }
        let _ = self.events.send(s);
    }

    /// Final reports of the last day, re-sent at the start of every session:
    /// one the broker missed (an outage, a restart of this agent) still
    /// reaches it, and one it had is applied again without effect.
    pub fn final_reports(&self) -> Vec<pb::AssignmentStatus> {
        self.outbox.pending(now_ms())
    }

    /// Final reports recorded up to `upto_ms` went out on a session that has
    /// stayed healthy since; they need not be sent again.
    pub fn final_reports_delivered(&self, upto_ms: i64) {
        if let Err(e) = self.outbox.delivered(upto_ms) {
            warn!(error = %e, "could not prune delivered final reports; they will be re-sent");
        }
    }

    /// Everything running now, for registration, reconciliation and usage.
    pub fn statuses(&self) -> Vec<pb::AssignmentStatus> {
        self.items
            .lock()
            .expect("lock")
            .values()
            .map(|i| self.status_of(i, None, String::new()))
            .collect()
    }

    /// Reports usage of every running assignment periodically, so that
    /// slice-seconds reach the broker while the work runs, not only at its end.
    pub async fn report_usage(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            let running: Vec<pb::AssignmentStatus> = {
                let items = self.items.lock().expect("lock");
                items
                    .values()
                    .filter(|i| i.state == AssignmentState::Running && !i.stopping)
                    .map(|i| self.status_of(i, None, String::new()))
                    .collect()
            };
            for s in running {
                self.emit(s);
            }
        }
    }

    pub fn assign(self: &Arc<Self>, a: pb::Assign) {
        // The agent's part of the broker's trace (decision 099): made only
        // when this agent exports traces, so an untraced bell costs no span
        // per seat.
        let span = traced_span!("assign received", assignment = %a.assignment_id, generation = a.generation);
        join_remote(&span, &a.traceparent);
        let _in = span.enter();
        // Held until the start is in flight, so that two Assigns for one id
        // (a re-send after a reconnect) cannot both start it.
        let mut starting = self.starting.lock().expect("lock");
        if let Some(flight) = starting.get_mut(&a.assignment_id) {
            // The broker writes an assignment's work once and bumps its
            // generation only to re-send it: this is the same work, so no
            // second start, but the start reports under the newest
            // generation. An older or equal one changes nothing.
            if a.generation > flight.generation {
                info!(assignment = %a.assignment_id, from = flight.generation, to = a.generation, "newer generation while starting; the start reports under it");
                flight.generation = a.generation;
            }
            return;
        }
        let known = {
            let mut items = self.items.lock().expect("lock");
            items.get_mut(&a.assignment_id).map(|existing| {
                // Already running: take the broker's generation and say so.
                existing.rec.generation = existing.rec.generation.max(a.generation);
                self.status_of(existing, None, String::new())
            })
        };
        if let Some(s) = known {
            self.persist();
            self.emit(s);
            return;
        }
        if a.ends_unix_ms <= now_ms() {
            self.emit(pb::AssignmentStatus {
                assignment_id: a.assignment_id.clone(),
                generation: a.generation,
                state: AssignmentState::Stopped as i32,
                message: "its end time has passed".into(),
                ..Default::default()
            });
            return;
        }
        let Some(rt) = self.runtimes.get(&a.runtime) else {
            let kinds = self.runtimes.kinds().join(", ");
            self.fail(
                &a,
                format!(
                    "runtime `{}` is not available on this node (it offers {kinds})",
                    a.runtime
                ),
            );
            return;
        };
        starting.insert(
            a.assignment_id.clone(),
            InFlight {
                generation: a.generation,
                stop: None,
            },
        );
        let sup = self.clone();
        let start = traced_span!("runtime start", runtime = rt.kind());
        tokio::spawn(async move { sup.start_one(a, rt).await }.instrument(start));
    }

    async fn start_one(self: Arc<Self>, mut a: pb::Assign, rt: Arc<dyn Runtime>) {
        let id = a.assignment_id.clone();
        let result = self
            .prepare(&a, rt.kind(), None)
            .map_err(|e| anyhow::anyhow!(e));
        let result = match result {
            Ok((spec, fraction)) => {
                let (port, work_dir, slots) = (
                    spec.port,
                    spec.work_dir.clone(),
                    spec.slices.iter().map(|s| s.slot).collect::<Vec<_>>(),
                );
                rt.start(spec)
                    .await
                    .map(|h| (h, port, work_dir, slots, fraction))
            }
            Err(e) => Err(e),
        };
        let mut starting = self.starting.lock().expect("lock");
        let (generation, stop_asked) = starting
            .remove(&id)
            .map_or((a.generation, None), |f| (f.generation, f.stop));
        // What came of the start, and the record, are the newest generation's.
        a.generation = a.generation.max(generation);
        let (handle, port, work_dir, slots, fraction) = match result {
            Ok(v) => v,
            Err(e) => {
                drop(starting);
                self.picked_ports.lock().expect("lock").remove(&id);
                self.fail(&a, format!("{e:#}"));
                return;
            }
        };
        let rec = Record {
            id: id.clone(),
            generation: a.generation,
            kind: a.kind.clone(),
            endpoint: if on_host(rt.kind()) {
                format!("http://{}:{port}", self.advertise_host)
            } else {
                String::new()
            },
            handle,
            port,
            ends_unix_ms: a.ends_unix_ms,
            grace_seconds: a.grace_seconds.clamp(1, 600),
            work_dir,
            started_unix_ms: now_ms(),
            slice_fraction: fraction,
            slots,
            assign: prost::Message::encode_to_vec(&a),
        };
        info!(assignment = %id, runtime = rt.kind(), handle = ?rec.handle, port, "assignment started");
        let mut item = Item::new(rec, AssignmentState::Starting, String::new());
        item.trace = traceparent_of(&tracing::Span::current());
        let started = self.status_of(&item, None, String::new());
        self.items.lock().expect("lock").insert(id.clone(), item);
        drop(starting);
        self.picked_ports.lock().expect("lock").remove(&id);
        self.persist();
        self.emit(started);
        self.watch(id.clone(), rt);
        self.schedule_end(id.clone());
        if let Some(reason) = stop_asked {
            self.stop(&id, &reason);
        }
    }

    /// A free port for a new seat that no seat of this node holds or is
    /// being started on.
    fn pick_port(&self, id: &str) -> Result<u16, String> {
        let mut picked = self.picked_ports.lock().expect("lock");
        let held: HashSet<u16> = {
            let items = self.items.lock().expect("lock");
            items
                .values()
                .map(|i| i.rec.port)
                .chain(picked.values().copied())
                .collect()
        };
        let port = pick_port(process::free_port, |p| held.contains(&p))?;
        picked.insert(id.to_string(), port);
        Ok(port)
    }

    /// The seat's variables, port, work folder and slices. A restarted seat
    /// keeps its `port`, so the endpoint the platform was given stays valid.
    fn prepare(
        &self,
        a: &pb::Assign,
        kind: &str,
        port: Option<u16>,
    ) -> Result<(StartSpec, f64), String> {
        let w = a.workload.as_ref().ok_or("workload: is required")?;
        let (gpu_env, slices, fraction) = self.gpu_env(a, on_host(kind))?;
        let port = match port {
            Some(p) => p,
            None => self.pick_port(&a.assignment_id)?,
        };
        let work_dir = self.work_root.join(&a.assignment_id);
        std::fs::create_dir_all(&work_dir).map_err(|e| format!("{}: {e}", work_dir.display()))?;
        let mut env: Vec<(String, String)> =
            w.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        env.sort();
        env.extend(gpu_env);
        env.push(("PORT".into(), port.to_string()));
        env.push(("CLASSGRID_ASSIGNMENT_ID".into(), a.assignment_id.clone()));
        env.push(("CLASSGRID_WORK_DIR".into(), work_dir.display().to_string()));
        if let Some(path) = link_path(&env) {
            env.push((LINK_PATH_ENV.into(), path));
        }
        Ok((
            StartSpec {
                assign: a.clone(),
                work_dir,
                env,
                port,
                slices,
            },
            fraction,
        ))
    }

    fn fail(&self, a: &pb::Assign, message: String) {
        warn!(assignment = %a.assignment_id, %message, "assignment could not start");
        self.emit(pb::AssignmentStatus {
            assignment_id: a.assignment_id.clone(),
            generation: a.generation,
            state: AssignmentState::Failed as i32,
            message,
            ..Default::default()
        });
    }

    /// The vendor controls that hold each granted slice (for runtimes on this
    /// host), the slices, and the share of accelerators held (for
    /// slice-seconds).
    #[allow(clippy::type_complexity)]
    fn gpu_env(
        &self,
        a: &pb::Assign,
        host: bool,
    ) -> Result<(Vec<(String, String)>, Vec<GrantedSlice>, f64), String> {
        let devices = self.devices.lock().expect("lock");
        let mut env: Vec<(String, String)> = Vec::new();
        let mut slices = Vec::new();
        let mut fraction = 0.0;
        for g in &a.gpus {
            let slot = g.device_index.max(0) as usize;
            let memory_mib = g.memory_mib.max(0) as u64;
            let pct = g.compute_percent.clamp(0, 100) as u32;
            fraction += pct as f64 / 100.0;
            if !host {
                slices.push(GrantedSlice {
                    slot,
                    device: None,
                    memory_mib,
                    compute_percent: pct,
                });
                continue;
            }
            let d = devices.get(slot).ok_or_else(|| {
                format!("device slot {} does not exist on this node", g.device_index)
            })?;
            let c = classgrid_devices::slice_controls(d, memory_mib, pct, &self.control_env);
            for (k, v) in c.env {
                // Several devices of one vendor: visible-device lists are joined.
                match env.iter_mut().find(|(ek, _)| *ek == k) {
                    Some((_, ev)) if k.ends_with("VISIBLE_DEVICES") => {
                        ev.push(',');
                        ev.push_str(&v);
                    }
                    Some((_, ev)) => *ev = v,
                    None => env.push((k, v)),
                }
            }
            slices.push(GrantedSlice {
                slot,
                device: Some(d.clone()),
                memory_mib,
                compute_percent: pct,
            });
        }
        Ok((env, slices, fraction))
    }

    /// Probes the work until it ends: `starting` becomes `running` once the
    /// seat listens on its PORT (or its runtime says it is ready, or after
    /// [`LISTEN_WAIT`]); an exit is reported with its output.
    fn watch(self: &Arc<Self>, id: String, rt: Arc<dyn Runtime>) {
        let sup = self.clone();
        tokio::spawn(async move {
            let mut running_since: Option<tokio::time::Instant> = None;
            let mut last_unknown = String::new();
            loop {
                tokio::time::sleep(rt.poll_interval()).await;
                let Some((handle, state, port)) = sup
                    .items
                    .lock()
                    .expect("lock")
                    .get(&id)
                    .map(|i| (i.rec.handle.clone(), i.state, i.rec.port))
                else {
                    return;
                };
                match rt.probe(&handle).await {
                    Probe::Pending => {}
                    Probe::Unknown(e) => {
                        if e != last_unknown {
                            warn!(assignment = %id, error = %e, "cannot ask the runtime about the work; keeping its state");
                            last_unknown = e;
                        }
                    }
                    Probe::Running { host, ready } => {
                        if state != AssignmentState::Starting {
                            continue;
                        }
                        if rt.checks_readiness() {
                            // Only the runtime's own check counts (the
                            // Jupyter API answers): a port opens before the
                            // server can serve a student.
                            if ready {
                                sup.mark_running(&id, host, true);
                            }
                            continue;
                        }
                        let since = *running_since.get_or_insert_with(tokio::time::Instant::now);
                        let check = host.clone().unwrap_or_else(|| "127.0.0.1".into());
                        let listening = ready
                            || tokio::time::timeout(
                                Duration::from_secs(1),
                                tokio::net::TcpStream::connect((check.as_str(), port)),
                            )
                            .await
                            .is_ok_and(|r| r.is_ok());
                        if listening || since.elapsed() >= LISTEN_WAIT {
                            sup.mark_running(&id, host, listening);
                        }
                    }
                    Probe::Exited(code) => {
                        let tail = rt.output_tail(&handle, &sup.work_dir(&id)).await;
                        rt.cleanup(&handle, &id).await;
                        sup.ended(id, rt, code, tail).await;
                        return;
                    }
                    Probe::Gone => {
                        let tail = rt.output_tail(&handle, &sup.work_dir(&id)).await;
                        sup.ended(id, rt, None, tail).await;
                        return;
                    }
                }
            }
        });
    }

    /// The work's process ended. A lesson seat that was not asked to stop is
    /// started again on this node, with the same slice and port, while its
    /// reservation lasts: this needs no broker, so a class keeps working when
    /// the region is unreachable (and a student's crashed notebook comes
    /// back). Jobs end with their exit, which is their result.
    async fn ended(
        self: Arc<Self>,
        id: String,
        rt: Arc<dyn Runtime>,
        code: Option<i32>,
        tail: String,
    ) {
        let Some(delay) = self.restart_delay(&id, code) else {
            self.finished(&id, code, tail);
            rt.forget(&id).await;
            return;
        };
        warn!(assignment = %id, ?code, delay_ms = delay.as_millis() as u64, "seat process ended before its end time; restarting it");
        tokio::time::sleep(delay).await;
        let planned = {
            let items = self.items.lock().expect("lock");
            items.get(&id).and_then(|i| {
                let live = !i.stopping && i.rec.ends_unix_ms - now_ms() > RESTART_MARGIN_MS;
                live.then(|| (i.rec.assign.clone(), i.rec.port))
            })
        };
        // A release or the end time came while waiting.
        let Some((assign, port)) = planned else {
            self.finished(&id, code, tail);
            rt.forget(&id).await;
            return;
        };
        let started = match <pb::Assign as prost::Message>::decode(assign.as_slice()) {
            Ok(a) => match self.prepare(&a, rt.kind(), Some(port)) {
                Ok((spec, _)) => rt.start(spec).await.map_err(|e| format!("{e:#}")),
                Err(e) => Err(e),
            },
            Err(e) => Err(format!("its recorded assignment is unreadable: {e}")),
        };
        let s = {
            let mut items = self.items.lock().expect("lock");
            let Some(item) = items.get_mut(&id) else {
                return;
            };
            match started {
                Ok(handle) => {
                    self.seat_restarts.fetch_add(1, Ordering::Relaxed);
                    info!(assignment = %id, handle = ?handle, restarts = item.restarts, "seat restarted");
                    item.rec.handle = handle;
                    item.state = AssignmentState::Starting;
                    item.run_since = tokio::time::Instant::now();
                    Some(self.status_of(item, None, String::new()))
                }
                Err(e) => {
                    item.message = format!("{}; restarting it failed: {e}", item.message);
                    None
                }
            }
        };
        match s {
            Some(s) => {
                self.persist();
                self.emit(s);
                self.watch(id, rt);
            }
            None => {
                self.finished(&id, code, tail);
                rt.forget(&id).await;
            }
        }
    }

    /// How long to wait before restarting `id`, or None when it must not be:
    /// not a seat, asked to stop, at its end, recorded before restarts
    /// existed, or crash-looping.
    fn restart_delay(&self, id: &str, code: Option<i32>) -> Option<Duration> {
        let mut items = self.items.lock().expect("lock");
        let item = items.get_mut(id)?;
        if item.rec.kind != "seat"
            || item.stopping
            || item.rec.assign.is_empty()
            || item.rec.ends_unix_ms - now_ms() <= RESTART_MARGIN_MS
        {
            return None;
        }
        if item.run_since.elapsed() >= STEADY_RUN {
            item.restarts = 0;
        }
        let how = code
            .map(|c| format!("exit code {c}"))
            .unwrap_or_else(|| "killed by a signal".into());
        if item.restarts >= MAX_QUICK_RESTARTS {
            item.message = format!(
                "ended ({how}) {} times in a row within {} s of starting; not restarted again",
                item.restarts + 1,
                STEADY_RUN.as_secs()
            );
            return None;
        }
        item.restarts += 1;
        item.message = format!(
            "restarted on this node after its process ended ({how}); restart {} of at most {MAX_QUICK_RESTARTS} in a row",
            item.restarts
        );
        Some(Duration::from_millis(500 << item.restarts.min(5)))
    }

    fn work_dir(&self, id: &str) -> PathBuf {
        self.items
            .lock()
            .expect("lock")
            .get(id)
            .map(|i| i.rec.work_dir.clone())
            .unwrap_or_else(|| self.work_root.join(id))
    }

    fn mark_running(&self, id: &str, host: Option<String>, listening: bool) {
        let (s, trace) = {
            let mut items = self.items.lock().expect("lock");
            let Some(item) = items.get_mut(id) else {
                return;
            };
            if item.state != AssignmentState::Starting {
                return;
            }
            item.state = AssignmentState::Running;
            if let Some(h) = host {
                item.rec.endpoint = format!("http://{h}:{}", item.rec.port);
            } else if item.rec.endpoint.is_empty() {
                item.rec.endpoint = format!("http://{}:{}", self.advertise_host, item.rec.port);
            }
            if !listening {
                item.message = format!("not listening on PORT {}", item.rec.port);
            }
            (
                self.status_of(item, None, String::new()),
                std::mem::take(&mut item.trace),
            )
        };
        let span = if trace.is_empty() {
            tracing::Span::none()
        } else {
            traced_span!("report running", assignment = %id)
        };
        join_remote(&span, &trace);
        let _in = span.enter();
        self.persist();
        self.emit(s);
    }

    /// Seats restarted in place since this agent started.
    pub fn seat_restarts(&self) -> u64 {
        self.seat_restarts.load(Ordering::Relaxed)
    }

    fn schedule_end(self: &Arc<Self>, id: String) {
        let Some(ends) = self
            .items
            .lock()
            .expect("lock")
            .get(&id)
            .map(|i| i.rec.ends_unix_ms)
        else {
            return;
        };
        let sup = self.clone();
        tokio::spawn(async move {
            let wait = (ends - now_ms()).max(0) as u64;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            sup.stop(&id, "its end time was reached");
        });
    }

    fn finished(&self, id: &str, code: Option<i32>, tail: String) {
        let s = {
            let mut items = self.items.lock().expect("lock");
            let Some(mut item) = items.remove(id) else {
                return;
            };
            item.state = if item.stopping {
                AssignmentState::Stopped
            } else if code.is_some() {
                AssignmentState::Exited
            } else {
                AssignmentState::Failed
            };
            if item.message.is_empty() || item.state == AssignmentState::Exited {
                item.message = match code {
                    Some(c) => format!("exited with code {c}"),
                    None if item.stopping => item.message.clone(),
                    None => {
                        "ended (killed by a signal, or its exit status was not observable)".into()
                    }
                };
            }
            let show_tail = matches!(
                item.state,
                AssignmentState::Exited | AssignmentState::Failed
            );
            self.status_of(
                &item,
                if item.stopping { None } else { code },
                if show_tail { tail } else { String::new() },
            )
        };
        info!(assignment = %id, state = ?AssignmentState::try_from(s.state).unwrap_or_default(), "assignment finished");
        self.persist();
        self.emit(s);
    }

    /// Asks the work's runtime to stop it; it is killed after its grace period.
    pub fn stop(self: &Arc<Self>, id: &str, reason: &str) {
        if let Some(flight) = self.starting.lock().expect("lock").get_mut(id) {
            flight.stop = Some(reason.to_string());
            return;
        }
        let (handle, grace) = {
            let mut items = self.items.lock().expect("lock");
            let Some(item) = items.get_mut(id) else {
                return;
            };
            if item.stopping {
                return;
            }
            item.stopping = true;
            item.message = reason.to_string();
            (item.rec.handle.clone(), item.rec.grace_seconds)
        };
        let Some(rt) = self.runtimes.get(handle.kind()) else {
            return;
        };
        info!(assignment = %id, reason, "stopping assignment");
        let id = id.to_string();
        tokio::spawn(async move {
            if let Err(e) = rt
                .stop(&handle, Duration::from_secs(grace.max(1) as u64))
                .await
            {
                warn!(assignment = %id, error = %format!("{e:#}"), "stop failed; the next probe decides");
            }
        });
    }

    pub fn release(self: &Arc<Self>, id: &str, generation: i64, reason: &str) {
        let newest = {
            let starting = self.starting.lock().expect("lock");
            starting.get(id).map(|f| f.generation).or_else(|| {
                let items = self.items.lock().expect("lock");
                items.get(id).map(|i| i.rec.generation)
            })
        };
        match newest {
            // A release for an older generation does not stop newer work,
            // started or still starting.
            Some(g) if g > generation => {}
            Some(_) => self.stop(id, reason),
            None => self.emit(pb::AssignmentStatus {
                assignment_id: id.to_string(),
                generation,
                state: AssignmentState::Stopped as i32,
                message: "not running on this node".into(),
                ..Default::default()
            }),
        }
    }

    /// Stops everything and waits for it to end (used by `classgrid up` on
    /// shutdown, and by `--stop-work-on-exit`).
    pub async fn stop_all(self: &Arc<Self>, reason: &str) {
        let ids: Vec<String> = self.items.lock().expect("lock").keys().cloned().collect();
        for id in &ids {
            self.stop(id, reason);
        }
        for _ in 0..200 {
            if self.items.lock().expect("lock").is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The variable that tells a seat the path under which its student
/// reaches it on the school's edge, `/seat/TOKEN/` (decision 103). A
/// command seat serves at `/` (the edge takes the prefix off) and may use it
/// to build absolute URLs; a notebook serves under it itself.
pub const LINK_PATH_ENV: &str = "CLASSGRID_SEAT_LINK_PATH";

/// The seat's link path, from the link token the broker put among its
/// variables; None without one (a job, or a broker that sends none).
fn link_path(env: &[(String, String)]) -> Option<String> {
    env.iter()
        .rev()
        .find(|(k, _)| k == notebook::LINK_TOKEN_ENV)
        .map(|(_, t)| t.as_str())
        .filter(|t| notebook::is_link_token(t))
        .map(|t| format!("/seat/{t}/"))
}

#[cfg(test)]
mod tests {
    use super::{link_path, pick_port};

    #[test]
    fn a_seat_with_a_link_token_learns_its_link_path() {
        let env = |t: &str| vec![("CLASSGRID_SEAT_LINK_TOKEN".to_string(), t.to_string())];
        let t = "a".repeat(64);
        assert_eq!(link_path(&env(&t)), Some(format!("/seat/{t}/")));
        assert_eq!(link_path(&env("short")), None);
        assert_eq!(link_path(&env(&format!("{}/..", "a".repeat(40)))), None);
        assert_eq!(link_path(&[]), None);
    }

    #[test]
    fn a_port_a_seat_holds_is_never_picked_again() {
        // The kernel offered the held port first, as it did when two seats
        // of one class started 3 ms apart.
        let mut offers = vec![43037, 43037, 41001].into_iter();
        let p = pick_port(|| Ok(offers.next().unwrap()), |p| p == 43037).unwrap();
        assert_eq!(p, 41001);
        let e = pick_port(|| Ok(43037), |p| p == 43037).unwrap_err();
        assert!(e.contains("no free port for the seat"), "{e}");
        let e = pick_port(|| Err(std::io::Error::other("bind refused")), |_| false).unwrap_err();
        assert!(e.contains("bind refused"), "{e}");
    }
}
