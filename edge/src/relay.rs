//! The site relay: agents on the school LAN that cannot reach the region
//! connect to `relay_listen`, and each accepted TCP connection becomes one
//! `EdgeService.Relay` stream on the channel the link already holds, so the
//! site keeps one upstream connection however many agents it carries. The
//! bytes pass through untouched (they are the agent's own TLS session), so
//! the broker checks each agent's certificate itself and this edge can
//! neither read nor impersonate a node.

use std::net::SocketAddr;

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

/// Accepts agents' connections until `shutdown`. A connection that arrives
/// while the link is down is closed at once; the agent retries.
pub async fn run(
    listener: TcpListener,
    upstream: watch::Receiver<Option<Upstream>>,
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
        tokio::spawn(async move {
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
