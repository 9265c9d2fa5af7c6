//! `EdgeService.Relay`: one agent's TCP connection, carried inside a stream
//! from its site's edge. The bytes are pumped through an in-memory pipe
//! whose other end joins the gRPC server's incoming connections, so the
//! agent's TLS ends at this server like a direct agent's, and its own
//! certificate decides who it is; the edge only carries ciphertext.

use std::{net::SocketAddr, pin::Pin};

use classgrid_proto::v1 as pb;
use futures::Stream;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, DuplexStream},
    sync::mpsc,
};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    relay::{Conn, Refusal, Ticket, Via},
    state::App,
    store::sites::EdgeRow,
};

pub const EDGE_ID: &str = "classgrid-edge-id";
pub const RELAY_FROM: &str = "classgrid-relay-from";
/// The largest chunk accepted from an edge; edges send at most 16 KiB.
pub const MAX_CHUNK: usize = 64 * 1024;
/// What one read from the pipe sends to the edge.
const READ_CHUNK: usize = 16 * 1024;
/// Buffered in each direction of the pipe before the pump waits.
const PIPE_BYTES: usize = 64 * 1024;

pub type Outbound = Pin<Box<dyn Stream<Item = Result<pb::RelayChunk, Status>> + Send>>;

fn header<'a, T>(req: &'a Request<T>, key: &str, rule: &str) -> Result<&'a str, Status> {
    req.metadata()
        .get(key)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Status::invalid_argument(format!("{key}: {rule}")))
}

/// The relaying edge's id, from the request metadata.
pub fn edge_id<T>(req: &Request<T>) -> Result<&str, Status> {
    header(req, EDGE_ID, "is required: the edge id Register returned")
}

/// The relayed agent's LAN address, from the request metadata.
fn relay_from<T>(req: &Request<T>) -> Result<SocketAddr, Status> {
    const RULE: &str = "must be the relayed agent's address as ip:port";
    let v = header(req, RELAY_FROM, RULE)?;
    v.parse().map_err(|_| {
        Status::invalid_argument(format!(
            "{RELAY_FROM}: {RULE}, not `{}`",
            v.chars().take(64).collect::<String>()
        ))
    })
}

/// The edge that relays an agent's connection (`relayed` from
/// `relay::relayed_from`), which must serve the node's own site: an edge
/// carries only its school's agents.
pub fn via(
    app: &App,
    relayed: Option<SocketAddr>,
    reg: &pb::Register,
) -> Result<Option<Via>, Status> {
    let Some(from) = relayed else {
        return Ok(None);
    };
    // An unknown site is refused by registration, with its own message.
    let Some(site) = app.fleet.site(&reg.site) else {
        return Ok(None);
    };
    app.relays.book.via(site.id, from).map(Some).ok_or_else(|| {
        Status::permission_denied(format!(
            "relay: node {}/{} reached the broker through another site's edge; a node may relay only through its own site's edge",
            site.name,
            reg.name.chars().take(64).collect::<String>()
        ))
    })
}

/// Admits the connection for `edge` (already checked against the caller's
/// certificate), hands its pipe to the gRPC server and starts the pump.
pub async fn open(
    app: &App,
    edge: EdgeRow,
    req: Request<Streaming<pb::RelayChunk>>,
) -> Result<Response<Outbound>, Status> {
    let from = relay_from(&req)?;
    let site = app
        .fleet
        .site_by_id(edge.site_id)
        .map(|s| s.name)
        .unwrap_or_default();
    let via = Via {
        edge_id: edge.id,
        site_id: edge.site_id,
        edge: format!("{site}/{}", edge.name),
    };
    let ticket = app.relays.book.admit(via, from).map_err(|r| match r {
        Refusal::Full { .. } => Status::resource_exhausted(r.to_string()),
        Refusal::Duplicate { .. } => Status::already_exists(r.to_string()),
    })?;
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    if !app
        .relays
        .hand_over(Conn::Relayed { io: theirs, from })
        .await
    {
        return Err(Status::unavailable("the broker is shutting down"));
    }
    tracing::info!(edge = %edge.id, %from, "relaying an agent connection");
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(pump(req.into_inner(), ours, tx, ticket));
    Ok(Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}

/// Edge → pipe and pipe → edge until the connection ends. The edge ending
/// its stream half-closes the pipe; the server closing the connection ends
/// the response stream; a bad chunk or a broken stream drops both.
async fn pump(
    mut inbound: Streaming<pb::RelayChunk>,
    pipe: DuplexStream,
    tx: mpsc::Sender<Result<pb::RelayChunk, Status>>,
    _ticket: Ticket,
) {
    let (mut rd, mut wr) = tokio::io::split(pipe);
    let up = async {
        while let Some(chunk) = inbound.message().await? {
            if chunk.data.len() > MAX_CHUNK {
                return Err(Status::invalid_argument(format!(
                    "data: a relay chunk carries at most {MAX_CHUNK} bytes, not {}",
                    chunk.data.len()
                )));
            }
            wr.write_all(&chunk.data)
                .await
                .map_err(|_| Status::aborted("the relayed connection was closed"))?;
        }
        let _ = wr.shutdown().await;
        Ok(())
    };
    let down = async {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let chunk = pb::RelayChunk {
                        data: buf[..n].to_vec(),
                    };
                    if tx.send(Ok(chunk)).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    tokio::pin!(up, down);
    let mut up_done = false;
    loop {
        tokio::select! {
            r = &mut up, if !up_done => match r {
                Ok(()) => up_done = true,
                Err(s) => {
                    tracing::warn!(error = %s.message(), "relayed connection dropped");
                    let _ = tx.send(Err(s)).await;
                    return;
                }
            },
            () = &mut down => return,
        }
    }
}
