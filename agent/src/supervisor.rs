//! Keeps the node's assignments running: starts them, watches them, stops
//! them on release or at their end time (even with no broker), and adopts
//! those a previous agent process left running.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use classgrid_devices::{ControlEnv, Device};
use classgrid_proto::v1::{self as pb, AssignmentState};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    runtime::process,
    state::{Record, StateFile},
};

struct Item {
    rec: Record,
    state: AssignmentState,
    stopping: bool,
    message: String,
}

pub struct Supervisor {
    items: Mutex<HashMap<String, Item>>,
    events: mpsc::UnboundedSender<pb::AssignmentStatus>,
    state: StateFile,
    work_root: PathBuf,
    advertise_host: String,
    devices: Mutex<Vec<Device>>,
    control_env: ControlEnv,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Supervisor {
    /// Loads the last run's records and adopts every process still alive.
    pub fn start(
        state_dir: PathBuf,
        advertise_host: String,
    ) -> anyhow::Result<(Arc<Self>, mpsc::UnboundedReceiver<pb::AssignmentStatus>)> {
        let state = StateFile::new(&state_dir)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let control_env = ControlEnv::probe(false, None, false);
        let sup = Arc::new(Self {
            items: Mutex::new(HashMap::new()),
            events: tx,
            state,
            work_root: state_dir.join("work"),
            advertise_host,
            devices: Mutex::new(Vec::new()),
            control_env,
        });
        let (records, problem) = sup.state.load();
        if let Some(p) = problem {
            warn!(problem = %p, "agent state unreadable; the broker will re-send what should run");
        }
        for rec in records {
            if process::alive(rec.pid, rec.start_ticks) {
                info!(assignment = %rec.id, pid = rec.pid, "adopted running assignment");
                let id = rec.id.clone();
                sup.items.lock().expect("lock").insert(
                    id.clone(),
                    Item {
                        rec,
                        state: AssignmentState::Running,
                        stopping: false,
                        message: "adopted after agent restart".into(),
                    },
                );
                sup.watch_adopted(id.clone());
                sup.schedule_end(id);
            }
        }
        sup.persist();
        Ok((sup, rx))
    }

    pub fn set_devices(&self, devices: Vec<Device>) {
        *self.devices.lock().expect("lock") = devices;
    }

    fn persist(&self) {
        let recs: Vec<Record> = self
            .items
            .lock()
            .expect("lock")
            .values()
            .map(|i| i.rec.clone())
            .collect();
        if let Err(e) = self.state.save(&recs) {
            warn!(error = %e, "cannot save agent state");
        }
    }

    fn status_of(item: &Item, exit: Option<i32>) -> pb::AssignmentStatus {
        let elapsed = (now_ms() - item.rec.started_unix_ms).max(0) as f64 / 1000.0;
        pb::AssignmentStatus {
            assignment_id: item.rec.id.clone(),
            generation: item.rec.generation,
            state: item.state as i32,
            endpoint: item.rec.endpoint.clone(),
            exit_code: exit.unwrap_or(0),
            has_exit_code: exit.is_some(),
            output_tail: if matches!(
                item.state,
                AssignmentState::Exited | AssignmentState::Failed
            ) {
                process::tail(&item.rec.log_path, 2048)
            } else {
                String::new()
            },
            message: item.message.clone(),
            slice_seconds: elapsed * item.rec.slice_fraction,
        }
    }

    fn emit(&self, s: pb::AssignmentStatus) {
        let _ = self.events.send(s);
    }

    /// Everything running now, for registration and reconciliation.
    pub fn statuses(&self) -> Vec<pb::AssignmentStatus> {
        self.items
            .lock()
            .expect("lock")
            .values()
            .map(|i| Self::status_of(i, None))
            .collect()
    }

    pub fn assign(self: &Arc<Self>, a: pb::Assign) {
        {
            let mut items = self.items.lock().expect("lock");
            if let Some(existing) = items.get_mut(&a.assignment_id) {
                // Already running: take the broker's generation and say so.
                existing.rec.generation = existing.rec.generation.max(a.generation);
                let s = Self::status_of(existing, None);
                drop(items);
                self.persist();
                self.emit(s);
                return;
            }
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
        if !a.runtime.is_empty() && a.runtime != "process" {
            self.fail(
                &a,
                format!("runtime `{}` is not available on this node", a.runtime),
            );
            return;
        }
        let (gpu_env, fraction) = match self.gpu_env(&a) {
            Ok(v) => v,
            Err(e) => {
                self.fail(&a, e);
                return;
            }
        };
        let work_dir = self.work_root.join(&a.assignment_id);
        let spawned = match process::spawn(&a, &work_dir, &gpu_env) {
            Ok(s) => s,
            Err(e) => {
                self.fail(&a, e.to_string());
                return;
            }
        };
        let endpoint = format!("http://{}:{}", self.advertise_host, spawned.port);
        let rec = Record {
            id: a.assignment_id.clone(),
            generation: a.generation,
            kind: a.kind.clone(),
            pid: spawned.pid,
            start_ticks: spawned.start_ticks,
            port: spawned.port,
            endpoint,
            ends_unix_ms: a.ends_unix_ms,
            grace_seconds: a.grace_seconds.clamp(1, 600),
            log_path: spawned.log_path,
            started_unix_ms: now_ms(),
            slice_fraction: fraction,
        };
        info!(assignment = %rec.id, pid = rec.pid, port = rec.port, "assignment started");
        let id = rec.id.clone();
        let port = rec.port;
        let item = Item {
            rec,
            state: AssignmentState::Starting,
            stopping: false,
            message: String::new(),
        };
        self.emit(Self::status_of(&item, None));
        self.items.lock().expect("lock").insert(id.clone(), item);
        self.persist();
        self.watch_child(id.clone(), spawned.child);
        self.await_listening(id.clone(), port);
        self.schedule_end(id);
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

    /// The vendor controls that hold each granted slice, and the share of
    /// accelerators held (for slice-seconds).
    fn gpu_env(&self, a: &pb::Assign) -> Result<(Vec<(String, String)>, f64), String> {
        let devices = self.devices.lock().expect("lock");
        let mut env: Vec<(String, String)> = Vec::new();
        let mut fraction = 0.0;
        for g in &a.gpus {
            let d = devices.get(g.device_index.max(0) as usize).ok_or_else(|| {
                format!("device slot {} does not exist on this node", g.device_index)
            })?;
            let c = classgrid_devices::slice_controls(
                d,
                g.memory_mib.max(0) as u64,
                g.compute_percent.clamp(0, 100) as u32,
                &self.control_env,
            );
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
            fraction += g.compute_percent.clamp(0, 100) as f64 / 100.0;
        }
        Ok((env, fraction))
    }

    fn watch_child(self: &Arc<Self>, id: String, mut child: tokio::process::Child) {
        let sup = self.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let code = status.ok().and_then(|s| s.code());
            sup.finished(&id, code);
        });
    }

    /// An adopted process is not our child: poll it.
    fn watch_adopted(self: &Arc<Self>, id: String) {
        let sup = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some((pid, ticks)) = sup
                    .items
                    .lock()
                    .expect("lock")
                    .get(&id)
                    .map(|i| (i.rec.pid, i.rec.start_ticks))
                else {
                    return;
                };
                if !process::alive(pid, ticks) {
                    sup.finished(&id, None);
                    return;
                }
            }
        });
    }

    /// Running once the seat accepts connections on its port; work that never
    /// listens counts as running after a short wait.
    fn await_listening(self: &Arc<Self>, id: String, port: u16) {
        let sup = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let mut listening = false;
            while tokio::time::Instant::now() < deadline {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    listening = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let s = {
                let mut items = sup.items.lock().expect("lock");
                let Some(item) = items.get_mut(&id) else {
                    return;
                };
                if item.state != AssignmentState::Starting {
                    return;
                }
                item.state = AssignmentState::Running;
                if !listening {
                    item.message = format!("not listening on PORT {port}");
                }
                Self::status_of(item, None)
            };
            sup.emit(s);
        });
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

    fn finished(&self, id: &str, code: Option<i32>) {
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
            Self::status_of(&item, if item.stopping { None } else { code })
        };
        info!(assignment = %id, state = ?AssignmentState::try_from(s.state).unwrap_or_default(), "assignment finished");
        self.persist();
        self.emit(s);
    }

    /// SIGTERM to the whole process group, then SIGKILL after the grace period.
    pub fn stop(self: &Arc<Self>, id: &str, reason: &str) {
        let (pid, grace) = {
            let mut items = self.items.lock().expect("lock");
            let Some(item) = items.get_mut(id) else {
                return;
            };
            if item.stopping {
                return;
            }
            item.stopping = true;
            item.message = reason.to_string();
            (item.rec.pid, item.rec.grace_seconds)
        };
        info!(assignment = %id, reason, "stopping assignment");
        process::signal_group(pid, libc::SIGTERM);
        let sup = self.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(grace.max(1) as u64)).await;
            if sup.items.lock().expect("lock").contains_key(&id) {
                process::signal_group(pid, libc::SIGKILL);
            }
        });
    }

    pub fn release(self: &Arc<Self>, id: &str, generation: i64, reason: &str) {
        let known = self
            .items
            .lock()
            .expect("lock")
            .get(id)
            .map(|i| i.rec.generation);
        match known {
            // A release for an older generation does not stop newer work.
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

    /// Stops everything (used by `classgrid up` on shutdown).
    pub async fn stop_all(self: &Arc<Self>, reason: &str) {
        let ids: Vec<String> = self.items.lock().expect("lock").keys().cloned().collect();
        for id in &ids {
            self.stop(id, reason);
        }
        for _ in 0..100 {
            if self.items.lock().expect("lock").is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
