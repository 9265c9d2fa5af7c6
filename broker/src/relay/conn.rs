//! The gRPC server's incoming connections: accepted TCP sockets, and the
//! in-memory pipes of relayed agent connections. Both carry TLS the server
//! terminates itself; both report `TcpConnectInfo`, so `peer_certs()` and
//! the audit's source work the same for relayed agents as for direct ones.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_stream::{
    Stream, StreamExt,
    wrappers::{ReceiverStream, TcpListenerStream},
};
use tonic::transport::server::{Connected, TcpConnectInfo};

pub enum Conn {
    Tcp(TcpStream),
    /// A connection an edge relays; `from` is the agent's LAN address as the
    /// edge saw it.
    Relayed {
        io: DuplexStream,
        from: SocketAddr,
    },
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        match self {
            Conn::Tcp(s) => s.connect_info(),
            // No socket of ours: an absent local address is what marks a
            // connection as relayed (see `relayed_from`).
            Conn::Relayed { from, .. } => TcpConnectInfo {
                local_addr: None,
                remote_addr: Some(*from),
            },
        }
    }
}

/// The agent address of a relayed connection, or None for a direct one.
pub fn relayed_from<T>(req: &tonic::Request<T>) -> Option<SocketAddr> {
    use tonic::transport::server::TlsConnectInfo;
    let info = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .map(|i| i.get_ref())
        .or_else(|| req.extensions().get::<TcpConnectInfo>())?;
    match info.local_addr {
        None => info.remote_addr,
        Some(_) => None,
    }
}

/// Accepted sockets and relayed connections, as one stream for tonic.
pub fn incoming(
    tcp: TcpListener,
    relayed: mpsc::Receiver<Conn>,
) -> impl Stream<Item = io::Result<Conn>> {
    TcpListenerStream::new(tcp)
        .map(|r| r.map(Conn::Tcp))
        .merge(ReceiverStream::new(relayed).map(Ok))
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Relayed { io, .. } => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Relayed { io, .. } => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Relayed { io, .. } => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Relayed { io, .. } => Pin::new(io).poll_shutdown(cx),
        }
    }
}
