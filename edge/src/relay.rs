//! The site relay: agents on the school LAN that cannot reach the region
//! connect to `relay_listen`, and each accepted TCP connection becomes one
//! `EdgeService.Relay` stream on the channel the link already holds, so the
//! site keeps one upstream connection however many agents it carries. The
//! bytes pass through untouched (they are the agent's own TLS session), so
//! the broker checks each agent's certificate itself and this edge can
//! neither read nor impersonate a node.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use classgrid_proto::v1::{self as pb, edge_service_client::EdgeServiceClient};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use tonic::transport::Channel;
use tracing::{info, warn};

/// Bytes read from an agent per chunk; the broker accepts up to 64 KiB.
const CHUNK: usize = 16 * 1024;
/// The largest chunk taken from the broker, with room for framing.
const MAX_CHUNK_IN: usize = 64 * 1024 + 64;

/// The link's current session with the broker: relayed streams ride on its
/// channel and name the edge by the id Register returned.
#[derive(Clone)]
pub struct Upstream {
    pub channel: Channel,
    pub edge_id: String,
}

/// None while the link is down; the link keeps it current.
pub type UpstreamTx = watch::Sender<Option<Upstream>>;

/// Agent connections being carried now, for `/metrics`
/// (`classgrid_edge_relayed_agents`). An agent holds one connection for its
/// session, so this counts the agents relayed (a join's short call counts
/// while it lasts).
#[derive(Clone, Default)]
pub struct Relayed(Arc<AtomicUsize>);

impl Relayed {
    pub fn now(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one connection until the guard is dropped, however the
    /// carrying ends (closed, failed, or the task aborted at shutdown).
    fn carrying(&self) -> impl Drop + use<> {
        struct Guard(Arc<AtomicUsize>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.0.fetch_add(1, Ordering::Relaxed);
        Guard(self.0.clone())
    }
}

/// Accepts agents' connections until `shutdown`. A connection that arrives
/// while the link is down is closed at once; the agent retries.
pub async fn run(
    listener: TcpListener,
    upstream: watch::Receiver<Option<Upstream>>,
    relayed: Relayed,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (sock, from) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: pause, keep serving.
                    warn!(error = %e, "relay: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Some(up) = upstream.borrow().clone() else {
            warn!(%from, "relay: no link to the broker yet; closing the agent's connection");
            continue;
        };
        let counted = relayed.carrying();
        tokio::spawn(async move {
            let _counted = counted;
            match carry(sock, from, up).await {
                Ok(()) => info!(%from, "relay: agent connection closed"),
                Err(e) => warn!(%from, error = %e, "relay: agent connection ended"),
            }
        });
    }
}

/// One agent connection, both ways, until either end closes it.
async fn carry(sock: TcpStream, from: SocketAddr, up: Upstream) -> anyhow::Result<()> {
    let _ = sock.set_nodelay(true);
    let (mut rd, mut wr) = sock.into_split();
    let (tx, rx) = mpsc::channel::<pb::RelayChunk>(8);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("classgrid-edge-id", up.edge_id.parse()?);
    req.metadata_mut()
        .insert("classgrid-relay-from", from.to_string().parse()?);
    // The agent speaks first (its TLS hello), before the broker answers.
    let uplink = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = rd.read(&mut buf).await?;
            // The agent closed its side: ending the stream tells the broker.
            if n == 0 {
                return anyhow::Ok(());
            }
            let chunk = pb::RelayChunk {
                data: buf[..n].to_vec(),
            };
            if tx.send(chunk).await.is_err() {
                return Ok(());
            }
        }
    });
    let mut client = EdgeServiceClient::new(up.channel).max_decoding_message_size(MAX_CHUNK_IN);
    let downlink = async {
        let mut inbound = client
            .relay(req)
            .await
            .map_err(|s| anyhow::anyhow!("the broker refused the relay: {}", s.message()))?
            .into_inner();
        info!(%from, "relay: carrying an agent connection");
        while let Some(chunk) = inbound
            .message()
            .await
            .map_err(|s| anyhow::anyhow!("relay stream: {}", s.message()))?
        {
            // The agent hung up (as the CA check at join does at once):
            // the connection is simply over.
            if wr.write_all(&chunk.data).await.is_err() {
                break;
            }
        }
        anyhow::Ok(())
    };
    let r = downlink.await;
    // The broker's side is done; whatever the agent still sends has nowhere
    // to go.
    uplink.abort();
    let _ = wr.shutdown().await;
    r
}
