//! `AgentService.Connect`: one bidirectional stream per node agent.

use std::{pin::Pin, time::Duration};

use classgrid_proto::v1::{
    self as pb, agent_message::Msg, agent_service_server::AgentService, broker_message,
};
use futures::{Stream, StreamExt};
use tokio::{sync::mpsc, time::Instant};
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use super::status;
use crate::state::App;

pub struct Agents {
    app: App,
    /// Registrations in progress at once: about the database pool's size.
    /// When a whole fleet reconnects (a broker restart), the others wait
    /// here holding a small future, not a registration's queries queued
    /// on the pool (~25 KB each; the first 5,000 of 10,000 nodes peaked at
    /// 290 MB of futures, heaptrack).
    registering: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Agents {
    pub fn new(app: App) -> Self {
        let permits = app.cfg.database_connections.max(1) as usize;
        Agents {
            app,
            registering: std::sync::Arc::new(tokio::sync::Semaphore::new(permits)),
        }
    }
}

/// An agent that says nothing for this long is cut off; it will reconnect.
/// Three heartbeats if those are further apart (a large fleet's).
const IDLE_LIMIT: Duration = Duration::from_secs(30);
/// More messages than this per second, sustained over a 5 s window, is a
/// flood: the session is cut off without harm to other agents.
const MAX_MSGS_PER_SEC: usize = 200;
/// At most this many already-received messages are handled as one burst.
const MAX_BURST: usize = 256;

type Outbound = Pin<Box<dyn Stream<Item = Result<pb::BrokerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for Agents {
    type ConnectStream = Outbound;

    async fn connect(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Outbound>, Status> {
        // The register message is read before taking a turn: an agent
        // (or anyone) slow to send it would otherwise hold one of the few
        // turns for up to 10 s while registered-ready agents wait.
        let hello = Box::pin(Hello::read(&self.app, req)).await?;
        // Closed never: the semaphore lives as long as the service.
        let Ok(_turn) = self.registering.acquire().await else {
            return Err(Status::unavailable("the broker is shutting down"));
        };
        // Boxed, so that a connection waiting above is a small future.
        Box::pin(register(self.app.clone(), hello)).await
    }
}

/// A connection whose first message has arrived and is a register.
struct Hello {
    peer: Option<Vec<u8>>,
    source: String,
    relayed: Option<std::net::SocketAddr>,
    inbound: Streaming<pb::AgentMessage>,
    reg: pb::Register,
}

impl Hello {
    async fn read(app: &App, req: Request<Streaming<pb::AgentMessage>>) -> Result<Hello, Status> {
        let peer = req.peer_certs().and_then(|c| c.first().map(|d| d.to_vec()));
        let source = crate::auth::gate::source_of_request(&req);
        let relayed = crate::relay::relayed_from(&req);
        let mut inbound = req.into_inner();
        // Counted while waiting, dropped however the wait ends (a client
        // that goes cancels this future).
        let _waiting = Handshake::start(&app.metrics.agent_handshakes);
        let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("register must arrive within 10 s"))??
            .ok_or_else(|| Status::invalid_argument("stream ended before register"))?;
        let Some(Msg::Register(reg)) = first.msg else {
            app.metrics.agent_refused.inc();
            return Err(Status::invalid_argument(
                "register: the first message must be a register",
            ));
        };
        Ok(Hello {
            peer,
            source,
            relayed,
            inbound,
            reg,
        })
    }
}

/// One connection waiting for its register message, in the
/// `classgrid_agent_handshakes` gauge.
struct Handshake<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> Handshake<'a> {
    fn start(g: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        g.inc();
        Handshake(g)
    }
}

impl Drop for Handshake<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// An agent's session: its register message checked and recorded, then
/// its messages handled until it goes; the answer is what the broker sends
/// it.
async fn register(app: App, hello: Hello) -> Result<Response<Outbound>, Status> {
    let Hello {
        peer,
        source,
        relayed,
        inbound,
        reg,
    } = hello;
    // With TLS, only a node certificate from this region gets in, and it
    // may only register as the node it names.
    let identity = app.node_identity(peer.as_deref(), "agent").await?;
    if let Some(id) = &identity {
        let claimed = app.fleet.site(&reg.site).map(|s| s.name);
        if claimed.as_deref() != Some(id.site.as_str()) || reg.name != id.name {
            app.metrics.agent_refused.inc();
            warn!(cert = %format!("{}/{}", id.site, id.name), claimed = %format!("{}/{}", reg.site.chars().take(64).collect::<String>(), reg.name.chars().take(64).collect::<String>()), "agent claimed another node's identity");
            return Err(Status::permission_denied(format!(
                "this certificate belongs to node {}/{}; it cannot register as {}/{}",
                id.site,
                id.name,
                reg.site.chars().take(64).collect::<String>(),
                reg.name.chars().take(64).collect::<String>()
            )));
        }
    }
    if let Err(e) = crate::service::edge::check_probe_addr(&reg.probe_addr) {
        app.metrics.agent_refused.inc();
        return Err(status(e));
    }
    let via = super::relay::via(&app, relayed, &reg).inspect_err(|_| {
        app.metrics.agent_refused.inc();
    })?;
    let mut live = match app.register_node(&reg).await {
        Ok(n) => n,
        Err(e) => {
            app.metrics.agent_refused.inc();
            warn!(site = %reg.site.chars().take(64).collect::<String>(), name = %reg.name.chars().take(64).collect::<String>(), error = %e, "agent registration refused");
            return Err(status(e));
        }
    };
    let node_id = live.id;
    live.relay = via.map(|v| v.edge);
    live.heartbeat = crate::fleet::liveness::heartbeat_every(app.fleet.len());
    let how = if identity.is_some() {
        "mTLS"
    } else {
        "insecure-dev"
    };
    let detail = match &live.relay {
        Some(edge) => format!("{how} through the relay of edge {edge}"),
        None => how.to_string(),
    };
    let who = crate::auth::Caller {
        actor: format!(
            "node:{}/{}",
            reg.site.chars().take(64).collect::<String>(),
            reg.name
        ),
        role: crate::auth::Role::SchoolAdmin,
        sites: vec![live.site_id],
        source,
        token_id: None,
    };
    app.audit(
        &who,
        "node.register",
        &format!("node:{node_id}"),
        &Ok(()),
        &detail,
    )
    .await;
    if let Err(e) = app.store.set_probe_addr(node_id, &reg.probe_addr).await {
        warn!(node = %node_id, error = %e, "probe address not recorded");
    }
    let probe_peers = app.probe_peers_for(node_id, live.site_id).await;
    let (tx, rx) = mpsc::channel(1024);
    let _ = tx
        .send(Box::new(pb::BrokerMessage {
            msg: Some(broker_message::Msg::Registered(pb::Registered {
                node_id: node_id.to_string(),
                heartbeat_interval_ms: live.heartbeat.as_millis() as i32,
                probe_peers,
            })),
        }))
        .await;
    let idle_limit = IDLE_LIMIT.max(live.heartbeat * 3);
    let sid = app.fleet.attach(live, tx);
    app.metrics.agent_sessions.inc();
    info!(node = %node_id, name = %reg.name, "agent connected");
    if let Err(e) = app.reconcile(node_id, &reg.running).await {
        warn!(node = %node_id, error = %e, "reconcile failed");
    }
    app.clock.notify_one();

    tokio::spawn(async move {
        // Messages already received are taken together, so that a burst
        // of status reports (a class starting) is written in one go.
        let mut inbound = inbound.ready_chunks(MAX_BURST);
        let mut window_start = Instant::now();
        let mut in_window = 0usize;
        loop {
            let burst = match tokio::time::timeout(idle_limit, inbound.next()).await {
                Err(_) => {
                    warn!(node = %node_id, "agent silent too long; closing its stream");
                    break;
                }
                Ok(None) => break,
                Ok(Some(burst)) => burst,
            };
            in_window += burst.len();
            if window_start.elapsed() >= Duration::from_secs(5) {
                window_start = Instant::now();
                in_window = 0;
            } else if in_window > MAX_MSGS_PER_SEC * 5 {
                warn!(node = %node_id, "agent flooding the broker; cutting it off");
                break;
            }
            if !app.fleet.is_current(node_id, sid) {
                info!(node = %node_id, "session replaced or revoked; closing it");
                break;
            }
            // A burst's work runs in an allocation of its own: held in
            // the session's future, what it awaits made every idle
            // session about 18 KB (heaptrack, 5,000 connected nodes).
            if !Box::pin(session_burst(&app, node_id, sid, burst)).await {
                break;
            }
        }
        app.metrics.agent_sessions.dec();
        if app.fleet.detach(node_id, sid) {
            Box::pin(app.node_disconnected(node_id)).await;
        }
    });
    Ok(Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx).map(|m| Ok(*m)),
    )))
}

/// One burst of an agent's messages: status reports written together, the
/// others one by one. False when the stream failed and the session ends.
async fn session_burst(
    app: &App,
    node_id: uuid::Uuid,
    sid: u64,
    burst: Vec<Result<pb::AgentMessage, Status>>,
) -> bool {
    if app.fleet.touch(node_id, sid).is_some() {
        let _ = app.store.set_node_state(node_id, "connected").await;
    }
    let mut statuses = Vec::new();
    for msg in burst {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                info!(node = %node_id, error = %e, "agent stream error");
                flush_statuses(app, node_id, &mut statuses).await;
                return false;
            }
        };
        if let Some(Msg::Status(st)) = msg.msg {
            statuses.push(st);
            continue;
        }
        flush_statuses(app, node_id, &mut statuses).await;
        let result = match msg.msg {
            Some(Msg::Heartbeat(hb)) => {
                app.fleet.caught_up(node_id, sid);
                let commands = match &hb.commands {
                    Some(c) => app.update_commands(node_id, c),
                    None => Ok(()),
                };
                match hb.capacity {
                    Some(cap) => {
                        app.update_capacity(node_id, &cap, hb.warnings.as_ref())
                            .await
                    }
                    None => Ok(()),
                }
                .and(commands)
            }
            Some(Msg::PeerRtts(p)) => app.peer_rtts(node_id, &p).await,
            Some(Msg::Status(_)) | Some(Msg::Register(_)) | None => Err(
                crate::domain::ServiceError::field("msg", "register only once, first"),
            ),
        };
        if let Err(e) = result {
            warn!(node = %node_id, error = %e, "agent message refused");
        }
    }
    flush_statuses(app, node_id, &mut statuses).await;
    true
}

async fn flush_statuses(app: &App, node_id: uuid::Uuid, statuses: &mut Vec<pb::AssignmentStatus>) {
    if statuses.is_empty() {
        return;
    }
    for e in app.agent_statuses(node_id, statuses).await {
        warn!(node = %node_id, error = %e, "agent status refused");
    }
    statuses.clear();
}
