//! The agent's one stream to the broker: register (with what runs here),
//! heartbeat, report status, obey assign/release/drain, and reconnect with
//! backoff for as long as it takes, never stopping local work for it.

use std::{sync::Arc, time::Duration};

use classgrid_devices::Discovery;
use classgrid_proto::v1::{
    self as pb, agent_message, agent_service_client::AgentServiceClient, broker_message,
};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use classgrid_common::broker_list::Rotation;

use crate::{config::AgentConfig, host, now_ms, supervisor::Supervisor};

/// Until the broker says otherwise in `Registered` (it spaces a large
/// fleet's heartbeats out, decision 120).
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How often the PATH is read again for the commands seats can start.
const COMMANDS_RESCAN: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Between tries when the failure is one that only a person can fix (no
/// certificate, plain text against a TLS broker): still retried, because
/// the person may fix it without restarting the agent, but not so often
/// that the one line saying what to do drowns in repeats.
const NEEDS_PERSON_BACKOFF: Duration = Duration::from_secs(30);
/// A final report sent on a session still alive this much later counts as
/// delivered (see `outbox`).
const DELIVERED_AFTER: Duration = Duration::from_secs(30);

/// Shared between the discovery loop and the stream: the latest capacity, and
/// whether the broker has seen it yet.
pub struct Capacity {
    pub current: std::sync::Mutex<(pb::NodeCapacity, Vec<String>)>,
    pub dirty: std::sync::atomic::AtomicBool,
    /// Wakes the stream to send a change at once: a large fleet's
    /// heartbeats are up to 30 s apart (decision 120), and placement should
    /// not pick a device that went unhealthy for that long.
    pub changed: tokio::sync::Notify,
}

impl Capacity {
    /// The host's capacity; `extra` are warnings about its runtimes.
    pub fn new(d: &Discovery, extra: &[String]) -> Arc<Self> {
        let mut warnings = d.warnings.clone();
        warnings.extend(extra.iter().cloned());
        Self::from_parts(host::capacity(d), warnings)
    }

    pub fn from_parts(cap: pb::NodeCapacity, warnings: Vec<String>) -> Arc<Self> {
        Arc::new(Self {
            current: std::sync::Mutex::new((cap, warnings)),
            dirty: std::sync::atomic::AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// `cur` (held locked) is replaced and the broker must hear of it.
    fn set(&self, cur: &mut (pb::NodeCapacity, Vec<String>), new: (pb::NodeCapacity, Vec<String>)) {
        *cur = new;
        self.dirty.store(true, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_one();
    }
}

pub async fn run(
    cfg: AgentConfig,
    sup: Arc<Supervisor>,
    capacity: Arc<Capacity>,
    mut events: mpsc::UnboundedReceiver<pb::AssignmentStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    // With several brokers listed (decision 091), each failure moves on to
    // the next: the leader is the one that keeps the stream.
    let mut brokers = Rotation::new(cfg.brokers(), Duration::from_millis(250), MAX_BACKOFF);
    loop {
        let started = tokio::time::Instant::now();
        let url = brokers.current().to_string();
        let mut wait = None;
        match session(&cfg, &url, &sup, &capacity, &mut events, &mut shutdown).await {
            Ok(()) => return,
            Err(e) => match needs_person(&cfg, &url, &e) {
                Some(what) => {
                    tracing::error!(error = %e, broker = %url, "{what}");
                    wait = Some(NEEDS_PERSON_BACKOFF);
                }
                None => {
                    warn!(error = %e, broker = %url, "broker connection lost; retrying")
                }
            },
        }
        if started.elapsed() > Duration::from_secs(10) {
            brokers.reset();
        }
        let backoff = brokers.failed();
        let jitter = rand::rng().random_range(0.8..1.2);
        tokio::select! {
            _ = tokio::time::sleep(wait.unwrap_or(backoff).mul_f64(jitter)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The one line that tells school IT what to run when this broker needs a
/// join first.
pub fn join_first(cfg: &AgentConfig, why: &str) -> String {
    // `join` takes one address: any replica's, the leader answering it.
    let first = cfg.brokers().swap_remove(0);
    let https = match first.strip_prefix("http://") {
        Some(rest) => format!("https://{rest}"),
        None => first,
    };
    let state = if cfg.state_dir == crate::config::default_state_dir() {
        String::new()
    } else {
        format!(" --state-dir {}", cfg.state_dir.display())
    };
    format!(
        "{why}: this broker needs TLS: run `classgrid-agent join --broker {https} --token …{state}` first \
         (a district admin creates the token with `classgrid join-tokens create --site {}`), \
         then start the agent again without --broker",
        if cfg.site.is_empty() {
            "SITE"
        } else {
            &cfg.site
        }
    )
}

/// A connection failure that retrying cannot cure, in words; None for the
/// ordinary kind (broker down, network away) that retrying does cure.
fn needs_person(cfg: &AgentConfig, url: &str, e: &anyhow::Error) -> Option<String> {
    let text = format!("{e:#} {e:?}");
    if url.starts_with("https://") && text.contains("no node certificate") {
        return Some(join_first(cfg, "this node has no certificate"));
    }
    // A TLS server answers the plain HTTP/2 preface with a TLS alert, which
    // the HTTP/2 client reads as a malformed frame and ends with GoAway.
    if url.starts_with("http://")
        && ["h2 protocol error", "GoAway", "frame with invalid size"]
            .iter()
            .any(|m| text.contains(m))
    {
        return Some(join_first(
            cfg,
            &format!("{url} answered in TLS, not plain HTTP/2"),
        ));
    }
    if text.contains("the broker refused this agent") {
        return Some(format!(
            "{e:#}: ask a district admin (`classgrid nodes list`), or join again with a new token"
        ));
    }
    None
}

/// Checks, before anything starts, what would otherwise end in endless
/// retries: an https:// broker without a node certificate, and an http://
/// URL whose server speaks TLS. Err is the line to show.
pub async fn preflight(cfg: &AgentConfig) -> Result<(), String> {
    // A list shares one scheme (`broker_list::parse`), so the first tells.
    if cfg.broker.starts_with("https://") {
        let tls = classgrid_common::join::tls_dir(&cfg.state_dir);
        if classgrid_common::tls::NodeTls::load(&tls).is_none() {
            return Err(join_first(
                cfg,
                &format!("no node certificate in {}", tls.display()),
            ));
        }
    } else if cfg.relay.is_none() {
        // Through a relay the first bytes are the relay's, so only a
        // direct connection is checked here; the session's error says it
        // otherwise.
        for url in cfg.brokers() {
            if speaks_tls(&url).await == Some(true) {
                return Err(join_first(
                    cfg,
                    &format!("{url} answers in TLS, not plain HTTP/2"),
                ));
            }
        }
    }
    Ok(())
}

/// Some(true) when the server at an http:// URL answers an HTTP/2 preface
/// with TLS (an alert or handshake record); None when it cannot be told
/// (nothing listens yet, no answer): the agent then just tries.
async fn speaks_tls(url: &str) -> Option<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let uri: tonic::codegen::http::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let wait = Duration::from_secs(3);
    let mut s = tokio::time::timeout(wait, tokio::net::TcpStream::connect((host, port)))
        .await
        .ok()?
        .ok()?;
    // The client preface and an empty SETTINGS frame, as any HTTP/2 client
    // sends first.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .ok()?;
    let mut first = [0u8; 1];
    match tokio::time::timeout(wait, s.read(&mut first)).await {
        // 0x15 alert, 0x16 handshake: TLS record types. An HTTP/2 server's
        // first byte is the high byte of a frame length, 0 for SETTINGS.
        Ok(Ok(1)) => Some(matches!(first[0], 0x15 | 0x16)),
        _ => None,
    }
}

async fn session(
    cfg: &AgentConfig,
    url: &str,
    sup: &Arc<Supervisor>,
    capacity: &Capacity,
    events: &mut mpsc::UnboundedReceiver<pb::AssignmentStatus>,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Certificates are read at each connection, so a renewed one is used
    // from the next reconnect on, without stopping anything.
    let channel =
        classgrid_common::join::channel(url, &cfg.state_dir, cfg.relay.as_deref()).await?;
    let mut client = AgentServiceClient::new(channel);
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(1024);
    let (cap, warnings) = capacity.current.lock().expect("lock").clone();
    capacity
        .dirty
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let runtimes = sup.runtime_kinds();
    let scan = {
        let runtimes = runtimes.clone();
        move || crate::commands::report(&runtimes)
    };
    let mut commands = tokio::task::spawn_blocking(scan.clone()).await?;
    tx.send(pb::AgentMessage {
        msg: Some(agent_message::Msg::Register(pb::Register {
            site: cfg.site.clone(),
            name: cfg.name.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            capacity: Some(cap),
            running: sup.statuses(),
            runtimes,
            tier: cfg.tier.clone(),
            warnings,
            probe_addr: cfg.probe_advertise.clone(),
            commands: commands
                .clone()
                .map(|names| pb::InstalledCommands { names }),
            // Fields added to Register by other issues keep their defaults
            // until the agent fills them.
            ..Default::default()
        })),
    })
    .await?;
    let mut inbound = client
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    // After the stream is up, so that more reports than the channel holds
    // cannot block before anything reads it. What queued while the broker
    // was away goes first, without the usage updates later ones supersede:
    // an hour away with a class running queues thousands, which the broker
    // would take for a flood.
    let mut backlog = sup.final_reports();
    while let Ok(ev) = events.try_recv() {
        backlog.push(ev);
    }
    for st in coalesce(backlog) {
        tx.send(pb::AgentMessage {
            msg: Some(agent_message::Msg::Status(st)),
        })
        .await?;
    }
    let session_start = tokio::time::Instant::now();
    let mut beat = tokio::time::interval(HEARTBEAT);
    // A package installed or removed shows within a rescan.
    let mut rescan = tokio::time::interval_at(
        tokio::time::Instant::now() + COMMANDS_RESCAN,
        COMMANDS_RESCAN,
    );
    let mut commands_changed = false;
    let mut seq = 0i64;
    // Peer probes live as long as this session; the broker names the peers.
    let (peer_tx, mut peer_rx) = mpsc::channel::<pb::PeerRtts>(4);
    let mut peer_tx = Some(peer_tx);
    loop {
        tokio::select! {
            msg = inbound.message() => {
                let Some(msg) = msg? else { anyhow::bail!("the broker closed the stream") };
                match msg.msg {
                    Some(broker_message::Msg::Registered(r)) => {
                        beat = heartbeat_timer(r.heartbeat_interval_ms, seq > 0);
                        info!(node = %r.node_id, peers = r.probe_peers.len(), heartbeat_ms = beat.period().as_millis() as u64, "registered with the broker");
                        if let Some(out) = peer_tx.take() {
                            tokio::spawn(crate::probe::probe_peers(r.probe_peers, out));
                        }
                    }
                    Some(broker_message::Msg::Assign(a)) => crate::datasets::assign(sup.clone(), cfg.data_dir.clone(), a),
                    Some(broker_message::Msg::Release(r)) => sup.release(&r.assignment_id, r.generation, &r.reason),
                    Some(broker_message::Msg::Drain(d)) => info!(reason = %d.reason, "drain requested; no new work will arrive"),
                    Some(broker_message::Msg::Refused(r)) => anyhow::bail!("the broker refused this agent: {}", r.reason),
                    None => {}
                }
            }
            Some(p) = peer_rx.recv() => {
                tx.send(pb::AgentMessage { msg: Some(agent_message::Msg::PeerRtts(p)) }).await?;
            }
            Some(ev) = events.recv() => {
                tx.send(pb::AgentMessage { msg: Some(agent_message::Msg::Status(ev)) }).await?;
            }
            _ = beat.tick() => {
                seq += 1;
                // Reports sent this long ago on a stream still healthy have
                // been read: the broker handles an agent's messages in order.
                if session_start.elapsed() >= DELIVERED_AFTER {
                    sup.final_reports_delivered(now_ms() - DELIVERED_AFTER.as_millis() as i64);
                }
                let changed = capacity
                    .dirty
                    .swap(false, std::sync::atomic::Ordering::SeqCst)
                    .then(|| capacity.current.lock().expect("lock").clone());
                let (cap, warnings) = match changed {
                    Some((cap, lines)) => (Some(cap), Some(pb::DiscoveryWarnings { lines })),
                    None => (None, None),
                };
                let sent_unix_ms = now_ms();
                let installed = std::mem::take(&mut commands_changed)
                    .then(|| commands.clone().map(|names| pb::InstalledCommands { names }))
                    .flatten();
                tx.send(pb::AgentMessage {
                    msg: Some(agent_message::Msg::Heartbeat(pb::Heartbeat { seq, sent_unix_ms, capacity: cap, warnings, commands: installed })),
                })
                .await?;
            }
            // The next beat carries the change; it is sent now.
            _ = capacity.changed.notified() => beat.reset_immediately(),
            _ = rescan.tick(), if commands.is_some() => {
                let now = tokio::task::spawn_blocking(scan.clone()).await?;
                if now != commands {
                    commands = now;
                    commands_changed = true;
                }
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// The broker's heartbeat interval, within what an agent accepts: a
/// broker that sends none (an older one) or nonsense gets the default, and
/// no broker makes an agent beat more than twice a second or less than once
/// a minute.
pub fn heartbeat_every(ms: i32) -> Duration {
    if ms <= 0 {
        return HEARTBEAT;
    }
    Duration::from_millis(ms.clamp(500, 60_000) as u64)
}

/// The heartbeat timer for the broker's interval `ms`. The first beat (it
/// tells the broker the session has caught up) is not put off: it fires at
/// once unless one was already `sent`.
pub fn heartbeat_timer(ms: i32, sent: bool) -> tokio::time::Interval {
    let every = heartbeat_every(ms);
    let now = tokio::time::Instant::now();
    tokio::time::interval_at(if sent { now + every } else { now }, every)
}

/// Re-discovers devices periodically and marks capacity for the next heartbeat
/// when it changed (a device went unhealthy, appeared or vanished).
pub async fn rediscover(
    opts: classgrid_devices::DiscoverOptions,
    every: Duration,
    sup: Arc<Supervisor>,
    capacity: Arc<Capacity>,
    runtime_warnings: Vec<String>,
) {
    loop {
        tokio::time::sleep(every).await;
        let o = opts.clone();
        let Ok(d) = tokio::task::spawn_blocking(move || classgrid_devices::discover(&o)).await
        else {
            continue;
        };
        let cap = host::capacity(&d);
        let mut warnings = d.warnings.clone();
        warnings.extend(runtime_warnings.iter().cloned());
        let mut cur = capacity.current.lock().expect("lock");
        // A warning that appears or clears is news for the node page even
        // when the devices read the same.
        if cur.0.devices != cap.devices || cur.1 != warnings {
            for (old, new) in cur.0.devices.iter().zip(&cap.devices) {
                if old.healthy && !new.healthy {
                    warn!(device = new.index, model = %new.model, "device became unhealthy");
                }
            }
            capacity.set(&mut cur, (cap, warnings));
        }
        drop(cur);
        sup.set_devices(host::schedulable(&d).into_iter().cloned().collect());
    }
}

/// For an agent that stands for a cluster: re-reads the cluster's capacity
/// periodically and marks it for the next heartbeat when it changed.
pub async fn refresh_cluster(
    rt: Arc<dyn crate::runtime::Runtime>,
    every: Duration,
    capacity: Arc<Capacity>,
    runtime_warnings: Vec<String>,
) {
    loop {
        tokio::time::sleep(every).await;
        let Some((cap, mut warnings)) = rt.cluster_capacity().await else {
            return;
        };
        warnings.extend(runtime_warnings.iter().cloned());
        let mut cur = capacity.current.lock().expect("lock");
        if cur.0 != cap {
            for w in warnings.iter().filter(|w| !cur.1.contains(w)) {
                warn!(warning = %w, "cluster capacity");
            }
            capacity.set(&mut cur, (cap, warnings));
        }
    }
}

/// Drops each report that a later one in `queued` repeats for the same
/// assignment, generation and state: usage figures are cumulative, so the
/// later report carries everything the earlier said. State changes are all
/// kept, in order.
fn coalesce(queued: Vec<pb::AssignmentStatus>) -> Vec<pb::AssignmentStatus> {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<pb::AssignmentStatus> = queued
        .into_iter()
        .rev()
        .filter(|s| seen.insert((s.assignment_id.clone(), s.generation, s.state)))
        .collect();
    kept.reverse();
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::AssignmentState::*;

    #[test]
    fn the_brokers_heartbeat_interval_is_kept_within_bounds() {
        assert_eq!(heartbeat_every(20_000), Duration::from_secs(20));
        assert_eq!(heartbeat_every(0), HEARTBEAT, "an older broker sends none");
        assert_eq!(heartbeat_every(-5), HEARTBEAT);
        assert_eq!(heartbeat_every(1), Duration::from_millis(500));
        assert_eq!(heartbeat_every(i32::MAX), Duration::from_secs(60));
    }

    #[tokio::test]
    async fn the_first_beat_is_not_put_off_by_a_long_interval() {
        let mut t = heartbeat_timer(20_000, false);
        assert_eq!(t.period(), Duration::from_secs(20));
        let first = tokio::time::timeout(Duration::from_secs(5), t.tick()).await;
        assert!(first.is_ok(), "no beat sent yet: the first fires at once");
        let mut t = heartbeat_timer(20_000, true);
        let next = tokio::time::timeout(Duration::from_millis(200), t.tick()).await;
        assert!(next.is_err(), "one was sent: the next waits its interval");
    }

    fn st(
        id: &str,
        generation: i64,
        state: pb::AssignmentState,
        slice: f64,
    ) -> pb::AssignmentStatus {
        pb::AssignmentStatus {
            assignment_id: id.into(),
            generation,
            state: state as i32,
            slice_seconds: slice,
            ..Default::default()
        }
    }

    #[test]
    fn an_outage_backlog_keeps_every_state_change_and_the_latest_usage() {
        let mut q = vec![st("a", 1, Starting, 0.0)];
        // An hour of usage reports for two seats, every 15 s.
        for i in 1..=240 {
            q.push(st("a", 1, Running, i as f64));
            q.push(st("b", 1, Running, i as f64 / 2.0));
        }
        q.push(st("a", 1, Failed, 240.5));
        q.push(st("a", 2, Running, 241.0));
        q.push(st("b", 1, Stopped, 121.0));
        let got: Vec<(String, i64, i32, f64)> = coalesce(q)
            .into_iter()
            .map(|s| (s.assignment_id, s.generation, s.state, s.slice_seconds))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), 1, Starting as i32, 0.0),
                ("a".into(), 1, Running as i32, 240.0),
                ("b".into(), 1, Running as i32, 120.0),
                ("a".into(), 1, Failed as i32, 240.5),
                ("a".into(), 2, Running as i32, 241.0),
                ("b".into(), 1, Stopped as i32, 121.0),
            ]
        );
    }
}
