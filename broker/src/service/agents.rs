//! What agents tell the broker: registration, reconciliation by assignment id
//! and generation, and assignment status. Agents sit on networks the broker
//! does not control, so everything they send is checked like any other input.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use chrono::Utc;
use classgrid_placement::Owner;
use classgrid_proto::v1::{self as pb, AssignmentState};
use tracing::{info, warn};
use uuid::Uuid;

use super::vouchers::settlement::USAGE_WAIT;
use crate::{
    domain::{
        ServiceError,
        error::Checks,
        spec::{RUNTIMES, VENDORS},
        states::{job as js, seat as ss},
    },
    fleet::LiveNode,
    state::Broker,
    store::{
        assignments::{self, AssignmentRow},
        jobs as job_store,
        nodes::{DeviceRow, Registration},
        reservations,
    },
};

const MAX_DEVICES: usize = 64;
const MAX_REPORTED: usize = 10_000;

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// Checks a capacity report; impossible values are refused, not clamped.
pub fn parse_capacity(
    c: &mut Checks,
    cap: Option<&pb::NodeCapacity>,
) -> (i32, i64, Vec<DeviceRow>) {
    let Some(cap) = cap else {
        c.fail("capacity", "is required");
        return (0, 0, Vec::new());
    };
    if !(1..=1_024_000).contains(&cap.cpu_millis) {
        c.fail(
            "capacity.cpu_millis",
            format!("must be between 1 and 1024000, not {}", cap.cpu_millis),
        );
    }
    if !(1..=16 * 1024 * 1024).contains(&cap.memory_mib) {
        c.fail(
            "capacity.memory_mib",
            format!("must be between 1 and 16777216, not {}", cap.memory_mib),
        );
    }
    if cap.devices.len() > MAX_DEVICES {
        c.fail(
            "capacity.devices",
            format!("must list at most {MAX_DEVICES} devices"),
        );
    }
    let mut seen = std::collections::HashSet::new();
    let devices = cap
        .devices
        .iter()
        .take(MAX_DEVICES)
        .enumerate()
        .map(|(i, d)| {
            let f = |n: &str| format!("capacity.devices[{i}].{n}");
            if !(0..=1023).contains(&d.index) || !seen.insert(d.index) {
                c.fail(f("index"), "must be unique and between 0 and 1023");
            }
            if !VENDORS.contains(&d.vendor.as_str()) {
                c.fail(
                    f("vendor"),
                    format!("unknown vendor; known: {}", VENDORS.join(", ")),
                );
            }
            if d.model.len() > 128 || d.uuid.len() > 128 {
                c.fail(f("model"), "model and uuid must be at most 128 characters");
            }
            if !(0..=1024 * 1024).contains(&d.memory_mib)
                || !(0..=d.memory_mib.max(0)).contains(&d.memory_used_mib)
            {
                c.fail(
                    f("memory_mib"),
                    "must be between 0 and 1048576, with used memory not above it",
                );
            }
            if !(0..=100).contains(&d.utilization_percent) {
                c.fail(f("utilization_percent"), "must be between 0 and 100");
            }
            let max_slices = if d.max_slices == 0 { 1 } else { d.max_slices };
            if !(1..=128).contains(&max_slices) {
                c.fail(f("max_slices"), "must be between 1 and 128");
            }
            DeviceRow {
                idx: d.index,
                vendor: d.vendor.clone(),
                model: d.model.clone(),
                uuid: d.uuid.clone(),
                memory_mib: d.memory_mib,
                memory_used_mib: d.memory_used_mib,
                utilization_percent: d.utilization_percent,
                healthy: d.healthy,
                max_slices,
                isolation: match pb::Isolation::try_from(d.isolation).unwrap_or_default() {
                    pb::Isolation::Hard => "hard",
                    pb::Isolation::Soft => "soft",
                    _ => "none",
                }
                .to_string(),
            }
        })
        .collect();
    (cap.cpu_millis, cap.memory_mib, devices)
}

impl Broker {
    /// Validates and records a registration; returns the live node to attach.
    pub async fn register_node(&self, r: &pb::Register) -> Result<LiveNode, ServiceError> {
        let mut c = Checks::default();
        if !valid_name(&r.name) {
            c.fail(
                "register.name",
                "must be 1 to 128 letters, digits, '.', '_' or '-'",
            );
        }
        let site = self.fleet.site(&r.site);
        if site.is_none() {
            c.fail(
                "register.site",
                format!(
                    "unknown site `{}`; create it first",
                    r.site.chars().take(128).collect::<String>()
                ),
            );
        }
        let tier = if r.tier.is_empty() {
            "edge"
        } else {
            r.tier.as_str()
        };
        if tier != "edge" && tier != "cloud" {
            c.fail("register.tier", "must be edge or cloud");
        }
        let runtimes: Vec<String> = if r.runtimes.is_empty() {
            vec!["process".into()]
        } else {
            r.runtimes.clone()
        };
        if runtimes.len() > 8 || runtimes.iter().any(|rt| !RUNTIMES.contains(&rt.as_str())) {
            c.fail(
                "register.runtimes",
                format!("must be among {}", RUNTIMES.join(", ")),
            );
        }
        if r.running.len() > MAX_REPORTED {
            c.fail(
                "register.running",
                format!("must list at most {MAX_REPORTED} assignments"),
            );
        }
        if r.agent_version.len() > 64 {
            c.fail("register.agent_version", "must be at most 64 characters");
        }
        let (cpu, mem, devices) = parse_capacity(&mut c, r.capacity.as_ref());
        let commands = installed_commands(&mut c, "register.commands", r.commands.as_ref());
        c.finish()?;
        let site = site.ok_or_else(|| ServiceError::field("register.site", "unknown site"))?;
        let warnings = bounded_warnings(&r.warnings);
        let reg = Registration {
            site_id: site.id,
            name: &r.name,
            tier,
            cpu_millis: cpu,
            memory_mib: mem,
            runtimes: &runtimes,
            warnings: &warnings,
            agent_version: &r.agent_version,
            devices: &devices,
        };
        let (id, approved) = self.store.register_node(&reg).await?;
        let row = crate::store::nodes::NodeRow {
            id,
            site_id: site.id,
            name: r.name.clone(),
            tier: tier.to_string(),
            state: "connected".into(),
            cordoned: false,
            approved,
            cpu_millis: cpu,
            memory_mib: mem,
            runtimes,
            warnings,
            agent_version: r.agent_version.clone(),
            last_seen: Utc::now(),
        };
        let mut node = LiveNode::from_row(row, devices);
        node.commands = commands;
        Ok(node)
    }

    /// A heartbeat's new list of the commands the node's process runtime
    /// can start (a package installed or removed).
    pub fn update_commands(
        &self,
        node_id: Uuid,
        commands: &pb::InstalledCommands,
    ) -> Result<(), ServiceError> {
        let mut c = Checks::default();
        let commands = installed_commands(&mut c, "heartbeat.commands", Some(commands));
        c.finish()?;
        self.fleet.set_commands(node_id, commands);
        Ok(())
    }

    /// A heartbeat's changed capacity, and the agent's warnings now when it
    /// sent them (an older agent does not: its Register's stay).
    pub async fn update_capacity(
        &self,
        node_id: Uuid,
        cap: &pb::NodeCapacity,
        warnings: Option<&pb::DiscoveryWarnings>,
    ) -> Result<(), ServiceError> {
        let mut c = Checks::default();
        let (_, _, devices) = parse_capacity(&mut c, Some(cap));
        c.finish()?;
        self.store.update_devices(node_id, &devices).await?;
        self.fleet.update_devices(node_id, devices);
        if let Some(w) = warnings {
            self.store
                .set_node_warnings(node_id, &bounded_warnings(&w.lines))
                .await?;
        }
        Ok(())
    }

    /// Brings a reconnected agent and the broker to the same view. Work the
    /// agent still runs is kept (never killed because a connection dropped);
    /// work the broker released is stopped; work the agent lost is re-sent.
    pub async fn reconcile(
        &self,
        node_id: Uuid,
        running: &[pb::AssignmentStatus],
    ) -> Result<(), ServiceError> {
        let active: HashMap<Uuid, AssignmentRow> = self
            .store
            .active_assignments(node_id)
            .await?
            .into_iter()
            .map(|a| (a.id, a))
            .collect();
        let mut reported = std::collections::HashSet::new();
        let mut stale = Vec::new();
        let mut kept = Vec::new();
        for st in running {
            let Ok(id) = st.assignment_id.parse::<Uuid>() else {
                continue;
            };
            reported.insert(id);
            if active.contains_key(&id) {
                self.store
                    .set_assignment_generation(id, st.generation)
                    .await?;
                kept.push(st.clone());
            } else {
                stale.push(AssignmentRowRef {
                    id,
                    generation: st.generation,
                });
            }
        }
        for e in self.agent_statuses(node_id, &kept).await {
            warn!(node = %node_id, error = %e, "reconnect report refused");
        }
        for s in &stale {
            info!(node = %node_id, assignment = %s.id, "agent runs released work; stopping it");
            self.fleet.send(
                node_id,
                release_msg(s.id, s.generation, "released while the agent was away"),
            );
        }
        let now = Utc::now();
        let mut resend = Vec::new();
        for (id, a) in &active {
            if reported.contains(id) {
                continue;
            }
            if a.ends_at > now {
                resend.push(*id);
            } else {
                let mut tx = self.store.begin().await?;
                self.fence(&mut tx).await?;
                assignments::release_for(&mut tx, a.seat_id, a.job_id).await?;
                tx.commit().await?;
            }
        }
        if !resend.is_empty() {
            info!(node = %node_id, count = resend.len(), "re-sending assignments the agent does not run");
            self.resend(&resend).await?;
        }
        // Released work with no final report yet: ask again, so that its
        // usage is settled from the agent's own last word (decision 076).
        let since = now - chrono::Duration::from_std(USAGE_WAIT).unwrap_or_default();
        for (id, generation) in self.store.released_unreported(node_id, since).await? {
            if !reported.contains(&id) {
                self.fleet.send(
                    node_id,
                    release_msg(id, generation, "released; final report asked again"),
                );
            }
        }
        Ok(())
    }

    /// Applies one assignment status report from the agent on `node_id`.
    pub async fn agent_status(
        &self,
        node_id: Uuid,
        st: &pb::AssignmentStatus,
    ) -> Result<(), ServiceError> {
        let report = Report::parse(st)?;
        self.apply_report(node_id, &report).await
    }

    /// Applies a burst of status reports from one agent, in order. Runs of
    /// progress reports (starting, running) go to the database in one
    /// statement; anything else, and a second report on the same assignment,
    /// goes one by one. Returns the reports that were refused.
    pub async fn agent_statuses(
        &self,
        node_id: Uuid,
        sts: &[pb::AssignmentStatus],
    ) -> Vec<ServiceError> {
        let mut refused = Vec::new();
        let mut run: Vec<Report> = Vec::new();
        for st in sts {
            let report = match Report::parse(st) {
                Ok(r) => r,
                Err(e) => {
                    refused.push(e);
                    continue;
                }
            };
            let joins_run = report.is_progress() && !run.iter().any(|r| r.id == report.id);
            if !joins_run {
                refused.extend(self.apply_progress(node_id, std::mem::take(&mut run)).await);
            }
            if report.is_progress() {
                run.push(report);
            } else if let Err(e) = self.apply_report(node_id, &report).await {
                refused.push(e);
            }
        }
        refused.extend(self.apply_progress(node_id, run).await);
        refused
    }

    async fn apply_progress(&self, node_id: Uuid, run: Vec<Report<'_>>) -> Vec<ServiceError> {
        if run.is_empty() {
            return Vec::new();
        }
        let progress: Vec<assignments::Progress> = run
            .iter()
            .map(|r| assignments::Progress {
                node_id,
                id: r.id,
                generation: r.st.generation,
                state: r.state,
                endpoint: r.st.endpoint.clone(),
                output_tail: r.tail.clone(),
                slice_seconds: r.st.slice_seconds,
            })
            .collect();
        let rows = match self.write_progress(node_id, progress).await {
            Ok(rows) => rows,
            Err(e) => return vec![e.into()],
        };
        let mut refused = Vec::new();
        let mut lessons = std::collections::HashSet::new();
        for row in &rows {
            if let Some(l) = row.lesson_id {
                lessons.insert(l);
            }
            let job = row.job_id.filter(|_| !row.released);
            if let (Some(job_id), Some(r)) = (job, run.iter().find(|r| r.id == row.id)) {
                if let Err(e) = self
                    .store
                    .record_job_result(job_id, &r.st.endpoint, None, &r.tail)
                    .await
                {
                    refused.push(e.into());
                }
            }
        }
        for l in lessons {
            self.lesson_changed(l);
        }
        // Unchanged reports: an older generation's (ignored, as one by one)
        // or another node's assignment (refused).
        for r in run
            .iter()
            .filter(|r| !rows.iter().any(|row| row.id == r.id))
        {
            match self.store.get_assignment(r.id).await {
                Ok(Some(a)) if a.node_id == node_id => {}
                Ok(_) => refused.push(ServiceError::NotFound(format!(
                    "assignment {} on this node",
                    r.id
                ))),
                Err(e) => refused.push(e.into()),
            }
        }
        refused
    }

    async fn apply_report(&self, node_id: Uuid, r: &Report<'_>) -> Result<(), ServiceError> {
        let (id, state, st, exit) = (r.id, r.state, r.st, r.exit);
        let tail = r.tail.as_str();
        // Only the owning node may report on an assignment.
        match self.store.get_assignment(id).await? {
            Some(a) if a.node_id == node_id => {}
            _ => {
                return Err(ServiceError::NotFound(format!(
                    "assignment {id} on this node"
                )));
            }
        }
        let Some(a) = self
            .store
            .record_status(
                id,
                st.generation,
                state,
                &st.endpoint,
                exit,
                tail,
                st.slice_seconds,
            )
            .await?
        else {
            return Ok(()); // an older generation's report
        };
        let released = a.state == "released";
        if let Some(seat_id) = a.seat_id {
            let (seat_state, msg) = match state {
                "running" if !released => (ss::RUNNING, None),
                "exited" | "failed" if !released => {
                    let code = exit
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "unknown".into());
                    (
                        ss::FAILED,
                        Some(format!("seat process ended (exit {code}): {}", st.message)),
                    )
                }
                "stopped" | "exited" | "failed" => (ss::RELEASED, None),
                _ => return Ok(self.seat_changed(seat_id).await?),
            };
            let endpoint = (!st.endpoint.is_empty()).then_some(st.endpoint.as_str());
            self.store
                .update_seat(seat_id, seat_state, endpoint, msg.as_deref())
                .await?;
            self.seat_changed(seat_id).await?;
        }
        // A released assignment's last words (a preempted or cancelled run)
        // must not decide the fate of the job's later runs.
        if let Some(job_id) = a.job_id.filter(|_| !released) {
            self.store
                .record_job_result(job_id, &st.endpoint, exit, tail)
                .await?;
            let finished = match state {
                "exited" if exit == Some(0) => Some(js::SUCCEEDED),
                "exited" | "failed" => Some(js::FAILED),
                _ => None,
            };
            if let Some(to) = finished {
                let mut tx = self.store.begin().await?;
                self.fence(&mut tx).await?;
                let msg = if st.message.is_empty() {
                    to.to_string()
                } else {
                    st.message.clone()
                };
                if job_store::set_state(&mut *tx, job_id, &[js::RUNNING], to, Some(&msg)).await? {
                    // This report carries the run's final slice-seconds.
                    self.settle_vouchers(&mut tx, Owner::Job(job_id), true)
                        .await?;
                }
                reservations::delete_owner(&mut tx, Owner::Job(job_id)).await?;
                assignments::set_final_state(&mut tx, id, state).await?;
                tx.commit().await?;
                // The job's capacity is free now, not at the next reload:
                // queued jobs and bookings planned meanwhile may use it.
                self.reserver.refresh_owners(&[Owner::Job(job_id)]).await?;
            }
        }
        Ok(())
    }

    async fn seat_changed(&self, seat_id: Uuid) -> Result<(), ServiceError> {
        if let Some(s) = self.store.get_seat(seat_id).await? {
            self.lesson_changed(s.lesson_id);
        }
        Ok(())
    }

    pub async fn node_disconnected(&self, node_id: Uuid) {
        warn!(node = %node_id, "agent stream ended; node disconnected (its work keeps running)");
        if let Err(e) = self.store.set_node_state(node_id, "disconnected").await {
            warn!(node = %node_id, error = %e, "could not record node state");
        }
    }
}

/// A status report that passed validation.
struct Report<'a> {
    id: Uuid,
    state: &'static str,
    st: &'a pb::AssignmentStatus,
    exit: Option<i32>,
    /// The last 4 KiB of output, cut on a character boundary.
    tail: String,
}

impl<'a> Report<'a> {
    fn parse(st: &'a pb::AssignmentStatus) -> Result<Self, ServiceError> {
        let id: Uuid = st
            .assignment_id
            .parse()
            .map_err(|_| ServiceError::field("status.assignment_id", "must be a UUID"))?;
        let state = match AssignmentState::try_from(st.state).unwrap_or_default() {
            AssignmentState::Starting => "starting",
            AssignmentState::Running => "running",
            AssignmentState::Exited => "exited",
            AssignmentState::Failed => "failed",
            AssignmentState::Stopped => "stopped",
            AssignmentState::Unspecified => {
                return Err(ServiceError::field("status.state", "must be set"));
            }
        };
        if st.endpoint.len() > 512 || st.message.len() > 4096 {
            return Err(ServiceError::field(
                "status.endpoint",
                "endpoint or message too long",
            ));
        }
        // PostgreSQL text cannot hold NUL: one such report would fail the
        // statement that carries other nodes' reports too.
        for (field, text) in [
            ("status.endpoint", &st.endpoint),
            ("status.message", &st.message),
        ] {
            if text.contains('\0') {
                return Err(ServiceError::field(
                    field,
                    "must not contain NUL characters",
                ));
            }
        }
        if !st.slice_seconds.is_finite() || st.slice_seconds < 0.0 {
            return Err(ServiceError::field(
                "status.slice_seconds",
                "must be a non-negative number",
            ));
        }
        // A program's output may hold anything; NUL cannot be stored.
        let tail: String = st
            .output_tail
            .chars()
            .rev()
            .take(4096)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|c| {
                if c == '\0' {
                    char::REPLACEMENT_CHARACTER
                } else {
                    c
                }
            })
            .collect();
        Ok(Report {
            id,
            state,
            st,
            exit: st.has_exit_code.then_some(st.exit_code),
            tail,
        })
    }

    /// Starting or running, with no exit: changes nothing but the status.
    fn is_progress(&self) -> bool {
        matches!(self.state, "starting" | "running") && self.exit.is_none()
    }
}

struct AssignmentRowRef {
    id: Uuid,
    generation: i64,
}

fn release_msg(id: Uuid, generation: i64, reason: &str) -> pb::BrokerMessage {
    pb::BrokerMessage {
        msg: Some(pb::broker_message::Msg::Release(pb::Release {
            assignment_id: id.to_string(),
            generation,
            reason: reason.into(),
        })),
    }
}

/// The most commands an agent may report, and the longest name.
const MAX_COMMANDS: usize = 20_000;
const MAX_COMMAND_NAME: usize = 255;

/// An agent's installed commands, refused naming the field and the rule
/// when a hostile agent sends more or odder names than a PATH can hold.
fn installed_commands(
    c: &mut Checks,
    field: &str,
    commands: Option<&pb::InstalledCommands>,
) -> Option<Arc<HashSet<String>>> {
    let names = &commands?.names;
    if names.len() > MAX_COMMANDS {
        c.fail(
            format!("{field}.names"),
            format!("must list at most {MAX_COMMANDS} commands"),
        );
        return None;
    }
    let odd = names.iter().position(|n| {
        n.is_empty()
            || n.len() > MAX_COMMAND_NAME
            || n.contains('/')
            || n.chars().any(char::is_control)
    });
    if let Some(i) = odd {
        c.fail(
            format!("{field}.names[{i}]"),
            format!("must be 1 to {MAX_COMMAND_NAME} bytes, without '/' or control characters"),
        );
        return None;
    }
    Some(Arc::new(names.iter().cloned().collect()))
}

/// An agent's warnings as the broker keeps them: at most 32, each at most
/// 512 characters, whatever a hostile agent sends.
fn bounded_warnings(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .take(32)
        .map(|w| w.chars().take(512).collect())
        .collect()
}
