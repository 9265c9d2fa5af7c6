//! One leader per region (decision 078). Several replicas run against one
//! PostgreSQL; the one holding the lease (`store::lease`) serves everything
//! and runs the lesson clock and the plan writers, under an epoch that every
//! plan-committing transaction is fenced by. The others are standbys: they
//! answer `/healthz` (alive), `/readyz` (503, not the leader) and
//! `/metrics` as themselves, forward every other call to the leader
//! (`forward`, decision 100), and take the lease once it expires.
//!
//! Safety comes from the fence in the database, not from timing: a leader
//! paused past its lease wakes to a new epoch, and its commits are refused.
//! Liveness comes from the renewal loop, which stops this process the
//! moment the lease is seen in another replica's hands.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use chrono::{DateTime, Utc};
use tokio::{net::TcpListener, sync::watch};
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::{
    config::BrokerConfig,
    store::{
        Store,
        lease::{self, Replica},
    },
};

/// What this replica knows of its own leadership, once it leads.
#[derive(Debug, Clone)]
pub struct Leadership {
    pub replica: Replica,
    pub epoch: i64,
    pub since: DateTime<Utc>,
    /// When the lease was last taken or renewed: the leader's readiness.
    /// A renewal is a write through the lease's own connections, so it
    /// proves the database reachable without queueing behind the bell's
    /// work on the main pool (a `SELECT 1` there waited over HAProxy's 1 s
    /// check while 2,000 agents connected, and the leader was marked down).
    pub renewed: Arc<std::sync::Mutex<Instant>>,
}

impl Leadership {
    /// True while the last renewal is younger than the lease.
    pub fn fresh(&self, lease: Duration) -> bool {
        self.renewed
            .lock()
            .map(|t| t.elapsed() < lease)
            .unwrap_or(false)
    }
}

/// This process as a replica: a fresh id per process, so a restarted one
/// waits for its old lease like any standby. Its addresses are where the
/// other replicas forward to: the bound address, or `advertise_host` (else
/// the host name) with the bound port when it binds every address.
pub fn replica(
    cfg: &BrokerConfig,
    grpc: &TcpListener,
    http: &TcpListener,
) -> anyhow::Result<Replica> {
    let host_name = || {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "broker".into())
    };
    let reach = |bound: std::net::SocketAddr| -> String {
        match (&cfg.advertise_host, bound.ip().is_unspecified()) {
            (Some(h), _) => match h.parse::<std::net::IpAddr>() {
                Ok(ip) => std::net::SocketAddr::new(ip, bound.port()).to_string(),
                Err(_) => format!("{h}:{}", bound.port()),
            },
            (None, true) => format!("{}:{}", host_name(), bound.port()),
            (None, false) => bound.to_string(),
        }
    };
    let http_addr = reach(http.local_addr()?);
    let name = cfg.replica_name.clone().unwrap_or_else(|| {
        format!(
            "{}:{}",
            host_name(),
            http.local_addr().map(|a| a.port()).unwrap_or(0)
        )
    });
    Ok(Replica {
        id: Uuid::new_v4(),
        name,
        grpc_addr: reach(grpc.local_addr()?),
        http_addr,
    })
}

/// How often a standby looks at the lease.
fn poll(lease: Duration) -> Duration {
    (lease / 6).max(Duration::from_millis(200))
}

/// The listeners a replica serves on.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
}

/// The TLS a replica serves with: the server certificate and key, and the
/// region CA a standby verifies the leader against.
pub struct ServeTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

/// Waits until this replica leads. Meanwhile the HTTP listener serves the
/// standby's own answers and forwards the rest to the leader (it is closed
/// and bound again for the leader's full router), and gRPC connections are
/// spliced to the leader, or closed while none leads so that the caller
/// tries elsewhere. Returns the leadership and the listeners, or None when
/// `shutdown` came first.
pub async fn campaign(
    store: &Store,
    cfg: &BrokerConfig,
    me: Replica,
    listeners: Listeners,
    tls: Option<ServeTls>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<(Leadership, Listeners)>> {
    lease::seen(&store, &me).await?;
    if let Some(epoch) = lease::try_acquire(&store, &me, cfg.lease).await? {
        return Ok(Some((led(me, epoch), listeners)));
    }
    let Listeners { grpc, http } = listeners;
    let addr = http.local_addr()?;
    let current = lease::current(&store).await?;
    info!(
        leader = %current.holder_name,
        leader_http = %current.http_addr,
        epoch = current.epoch,
        "standby: another replica leads; waiting for its lease"
    );
    let (promoted_tx, promoted) = watch::channel(false);
    let (target_tx, target) = watch::channel(target_of(lease::live_leader(&store).await?, &me));
    let forwarder = crate::forward::Forwarder::new(
        tls.as_ref()
            .map(|t| (t.ca_pem.as_str(), t.cert_pem.as_str())),
        me.name.clone(),
        target.clone(),
    )?;
    let standby = Arc::new(Standby {
        store: store.clone(),
        me: me.clone(),
        forwarder,
    });
    let server = tokio::spawn(crate::api::serve::serve_router(
        standby_router(standby),
        tls.map(|t| (t.cert_pem, t.key_pem)),
        http,
        promoted.clone(),
    ));
    let splicing = tokio::spawn(crate::forward::splice_until(grpc, target, promoted));
    let epoch = loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(poll(cfg.lease)) => false,
            r = shutdown.wait_for(|v| *v) => r.is_ok(),
        };
        if stopping {
            let _ = promoted_tx.send(true);
            let _ = server.await;
            let _ = splicing.await;
            return Ok(None);
        }
        let step = async {
            lease::seen(&store, &me).await?;
            if let Some(epoch) = lease::try_acquire(&store, &me, cfg.lease).await? {
                return Ok(Some(epoch));
            }
            let live = lease::live_leader(&store).await?;
            target_tx.send_if_modified(|t| {
                let now = target_of(live, &me);
                let changed = *t != now;
                *t = now;
                changed
            });
            Ok::<_, sqlx::Error>(None)
        };
        match step.await {
            Ok(Some(epoch)) => break epoch,
            Ok(None) => {}
            Err(e) => warn!(error = %e, "standby: cannot read the lease; retrying"),
        }
    };
    // The standby's server lets go of the port, and the leader's takes it;
    // connections spliced to the old leader are closed (it is gone).
    let _ = target_tx.send(None);
    let _ = promoted_tx.send(true);
    let _ = server.await;
    let grpc = splicing.await?;
    let http = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("http_addr {addr}: cannot bind it again as leader: {e}"))?;
    Ok(Some((led(me, epoch), Listeners { grpc, http })))
}

/// The leader to forward to: the lease's live holder, unless it is this
/// replica (a lease of ours that a restart left behind is waited out).
fn target_of(live: Option<lease::LeaseRow>, me: &Replica) -> Option<crate::forward::Target> {
    live.filter(|l| l.holder.is_some() && l.holder != Some(me.id))
        .map(|l| crate::forward::Target {
            epoch: l.epoch,
            name: l.holder_name,
            grpc_addr: l.grpc_addr,
            http_addr: l.http_addr,
        })
}

fn led(me: Replica, epoch: i64) -> Leadership {
    info!(replica = %me.name, epoch, "this replica leads the region");
    Leadership {
        replica: me,
        epoch,
        since: Utc::now(),
        renewed: Arc::new(std::sync::Mutex::new(Instant::now())),
    }
}

/// Renews the lease while this process runs, on `store`: the lease's own
/// few connections, apart from the workload's pool, so that a busy bell
/// cannot starve the renewal into a takeover. A renewal that finds the lease
/// in another replica's hands ends the process at once: its in-memory plans
/// and agent streams belong to a leader that no longer is, and a restart
/// comes back as a standby. A database that cannot be reached is retried:
/// no replica can take the lease meanwhile, and the fence refuses any
/// commit of this epoch once one has.
pub fn keep(store: Store, cfg: &BrokerConfig, l: &Leadership, stop: watch::Receiver<bool>) {
    let (me, epoch, lease) = (l.replica.clone(), l.epoch, cfg.lease);
    let renewed = l.renewed.clone();
    let every = (lease / 5).max(Duration::from_millis(200));
    tokio::spawn(async move {
        let mut last_ok = Instant::now();
        let mut stop = stop;
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                r = stop.wait_for(|v| *v) => r.is_ok(),
            };
            if stopping {
                // A clean stop hands the lease over at once.
                let _ = lease::give_up(&store, me.id, epoch).await;
                return;
            }
            let step = async {
                let _ = lease::seen(&store, &me).await;
                lease::renew(&store, me.id, epoch, lease).await
            };
            match tokio::time::timeout(lease, step).await {
                Ok(Ok(true)) => {
                    last_ok = Instant::now();
                    if let Ok(mut t) = renewed.lock() {
                        *t = last_ok;
                    }
                }
                Ok(Ok(false)) => depose(epoch, "another replica holds the lease now"),
                Ok(Err(e)) => {
                    warn!(error = %e, since_s = last_ok.elapsed().as_secs(), "cannot renew the leader lease; retrying")
                }
                Err(_) => warn!(
                    since_s = last_ok.elapsed().as_secs(),
                    "renewing the leader lease timed out; retrying"
                ),
            }
        }
    });
}

/// Stops the process: a deposed leader must not act on anything it holds in
/// memory.
pub fn depose(epoch: i64, why: &str) -> ! {
    error!(
        epoch,
        why,
        "no longer the leader; stopping this replica (it comes back as a standby when restarted)"
    );
    eprintln!("classgrid-broker: no longer the leader (epoch {epoch}): {why}; stopping");
    std::process::exit(75)
}

struct Standby {
    store: Store,
    me: Replica,
    forwarder: crate::forward::Forwarder,
}

fn standby_router(s: Arc<Standby>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { (StatusCode::OK, "ok (standby)\n") }),
        )
        .route("/readyz", get(standby_ready))
        .route("/metrics", get(standby_metrics))
        .fallback(forwarded)
        .with_state(s)
}

async fn standby_ready(State(s): State<Arc<Standby>>) -> impl IntoResponse {
    let body = match lease::current(&s.store).await {
        Ok(l) => serde_json::json!({
            "ready": false, "role": "standby", "replica": s.me.name,
            "serving": "forwards every API call to the leader (decision 100)",
            "leader": {"name": l.holder_name, "http_addr": l.http_addr, "grpc_addr": l.grpc_addr,
                        "epoch": l.epoch, "since": l.since},
        }),
        Err(_) => serde_json::json!({"ready": false, "role": "standby", "replica": s.me.name,
                                     "error": "database unreachable"}),
    };
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body))
}

async fn standby_metrics(State(s): State<Arc<Standby>>) -> impl IntoResponse {
    let epoch = lease::current(&s.store).await.map(|l| l.epoch).unwrap_or(0);
    (
        [(
            header::CONTENT_TYPE,
            classgrid_common::exposition::CONTENT_TYPE,
        )],
        role_metrics(false, epoch),
    )
}

/// The replica's role and the region's leader epoch, in OpenMetrics text.
pub fn role_metrics(leader: bool, epoch: i64) -> String {
    format!(
        "# HELP classgrid_broker_leader 1 on the replica that leads the region, 0 on a standby.\n\
         # TYPE classgrid_broker_leader gauge\nclassgrid_broker_leader {}\n\
         # HELP classgrid_broker_leader_epoch The leader lease's epoch as this replica last saw it.\n\
         # TYPE classgrid_broker_leader_epoch gauge\nclassgrid_broker_leader_epoch {epoch}\n",
        u8::from(leader)
    )
}

/// Any other request: the leader's answer, through this replica.
async fn forwarded(
    State(s): State<Arc<Standby>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    s.forwarder.forward(req).await
}
