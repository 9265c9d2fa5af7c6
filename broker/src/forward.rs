//! A standby serves by forwarding to the leader (decision 100). The leader
//! alone holds the live calendar, the fleet view and the agent streams, so
//! a standby does not answer from its own memory: it hands the caller to
//! the leader, as a Vault standby forwards to the active node.
//!
//! - **gRPC is spliced at the TCP level.** The bytes go through unread, so
//!   TLS still ends at the leader and an agent's or edge's client
//!   certificate is verified there, exactly as when it connects directly.
//!   A splice ends when the leader it reaches is no longer the leader (a
//!   new epoch, or a lease that ran out), so a client behind a standby
//!   reconnects at once, as HAProxy's `on-marked-down shutdown-sessions`
//!   does for its clients.
//! - **HTTP is forwarded per request** (REST, console, SSE), because the
//!   standby must still answer `/healthz`, `/readyz` and `/metrics` as
//!   itself on the same port. The request goes to the leader over TLS,
//!   verified against the region CA under a name of the shared server
//!   certificate, and the answer, streamed bodies included, comes back as
//!   it is.
//!
//! No protocol of our own: bytes, and HTTP/1.1 through hyper.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tracing::{debug, warn};

/// Marks a request a standby forwarded, so that it is never forwarded
/// twice: a replica that gets one while it is itself a standby (the lease
/// moved on the way) answers 503 rather than passing it round.
pub const FORWARDED_BY: &str = "x-classgrid-forwarded-by";

/// Where the leader serves, as its lease row says, and under which epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub epoch: i64,
    pub name: String,
    pub grpc_addr: String,
    pub http_addr: String,
}

/// How long a standby waits for the leader to accept a connection before
/// giving up on the caller (who then tries elsewhere).
const CONNECT: Duration = Duration::from_secs(2);

/// Splices each accepted gRPC connection to the current leader until
/// `promoted`, then hands the listener back for this replica's own server.
/// With no live leader, or one that does not accept, the connection is
/// closed: the caller fails over at once, as it did when standbys refused.
pub async fn splice_until(
    grpc: TcpListener,
    target: watch::Receiver<Option<Target>>,
    mut promoted: watch::Receiver<bool>,
) -> TcpListener {
    loop {
        tokio::select! {
            r = grpc.accept() => {
                if let Ok((conn, from)) = r {
                    let target = target.clone();
                    tokio::spawn(async move { splice(conn, from, target).await });
                }
            }
            _ = promoted.wait_for(|v| *v) => return grpc,
        }
    }
}

async fn splice(
    mut conn: TcpStream,
    from: std::net::SocketAddr,
    mut target: watch::Receiver<Option<Target>>,
) {
    let Some(t) = target.borrow_and_update().clone() else {
        return;
    };
    let mut leader = match tokio::time::timeout(CONNECT, TcpStream::connect(&t.grpc_addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(leader = %t.name, addr = %t.grpc_addr, error = %e, "standby: cannot reach the leader's gRPC port; closing the caller's connection");
            return;
        }
        Err(_) => {
            warn!(leader = %t.name, addr = %t.grpc_addr, "standby: the leader's gRPC port did not accept in time; closing the caller's connection");
            return;
        }
    };
    let _ = conn.set_nodelay(true);
    let _ = leader.set_nodelay(true);
    debug!(%from, leader = %t.name, "standby: splicing a gRPC connection to the leader");
    let leader_changed = async {
        // Ends when the lease names another leader or none; a dropped
        // sender (the standby is stopping) ends it too.
        let _ = target.wait_for(|now| now.as_ref() != Some(&t)).await;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut conn, &mut leader) => {}
        _ = leader_changed => {
            debug!(%from, leader = %t.name, "standby: the leader changed; closing a spliced connection");
        }
    }
}

/// The standby's HTTP client to the leader: TLS verified against the
/// region CA under `server_name` (a name of the certificate every replica
/// shares, decision 078), or plain under --insecure-dev.
#[derive(Clone)]
pub struct Forwarder {
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    me: String,
    target: watch::Receiver<Option<Target>>,
}

impl Forwarder {
    /// `tls` is (the region CA's PEM, this replica's server certificate's
    /// PEM); the name verified is the first the certificate covers.
    pub fn new(
        tls: Option<(&str, &str)>,
        me: String,
        target: watch::Receiver<Option<Target>>,
    ) -> anyhow::Result<Self> {
        let tls = match tls {
            None => None,
            Some((ca_pem, cert_pem)) => {
                let _ = rustls::crypto::ring::default_provider().install_default();
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls_pki_types::pem::PemObject::pem_slice_iter(ca_pem.as_bytes()) {
                    roots.add(c.map_err(|e| anyhow::anyhow!("the region CA's PEM: {e}"))?)?;
                }
                let config = rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                let name = first_name(cert_pem)?;
                Some((
                    tokio_rustls::TlsConnector::from(Arc::new(config)),
                    rustls_pki_types::ServerName::try_from(name.clone()).map_err(|e| {
                        anyhow::anyhow!("the server certificate's name {name:?}: {e}")
                    })?,
                ))
            }
        };
        Ok(Self { tls, me, target })
    }

    /// Forwards one request to the leader and streams its answer back.
    pub async fn forward(&self, mut req: Request) -> Response {
        if req.headers().contains_key(FORWARDED_BY) {
            return unavailable("this broker replica is a standby too; retry in a moment");
        }
        let Some(t) = self.target.borrow().clone() else {
            return unavailable(
                "this broker replica is a standby and no leader holds the lease right now; retry in a moment",
            );
        };
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        *req.uri_mut() = match path.parse::<Uri>() {
            Ok(u) => u,
            Err(_) => return unavailable("the request's path cannot be forwarded"),
        };
        *req.version_mut() = axum::http::Version::HTTP_11;
        let h = req.headers_mut();
        for hop in [
            header::CONNECTION,
            header::TE,
            header::TRAILER,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
            header::PROXY_AUTHORIZATION,
        ] {
            h.remove(hop);
        }
        h.remove("keep-alive");
        if let Ok(v) = HeaderValue::from_str(&t.http_addr) {
            h.insert(header::HOST, v);
        }
        if let Ok(v) = HeaderValue::from_str(&self.me) {
            h.insert(FORWARDED_BY, v);
        }
        match self.send(&t, req).await {
            Ok(r) => r,
            Err(e) => {
                warn!(leader = %t.name, addr = %t.http_addr, error = %e, "standby: cannot forward a request to the leader");
                unavailable(&format!(
                    "this broker replica is a standby and cannot reach the leader ({}) just now; retry in a moment",
                    t.name
                ))
            }
        }
    }

    async fn send(&self, t: &Target, req: Request) -> anyhow::Result<Response> {
        let tcp = tokio::time::timeout(CONNECT, TcpStream::connect(&t.http_addr)).await??;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => exchange(TokioIo::new(tcp), req).await,
            Some((connector, name)) => {
                let tls =
                    tokio::time::timeout(CONNECT, connector.connect(name.clone(), tcp)).await??;
                exchange(TokioIo::new(tls), req).await
            }
        }
    }
}

/// One request on a fresh HTTP/1.1 connection; the connection lives as
/// long as the answer's body is read (an SSE stream for hours).
async fn exchange<IO>(io: TokioIo<IO>, req: Request) -> anyhow::Result<Response>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Body>(io).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "standby: a forwarded connection ended");
        }
    });
    let r = sender.send_request(req).await?;
    Ok(r.map(Body::new))
}

/// The first DNS name (else IP address) a PEM certificate covers.
fn first_name(cert_pem: &str) -> anyhow::Result<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the server certificate's PEM: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("the server certificate: {e}"))?;
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|s| s.value.general_names.clone())
        .unwrap_or_default();
    let mut ip = None;
    for n in names {
        match n {
            x509_parser::extensions::GeneralName::DNSName(d) => return Ok(d.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(b) if ip.is_none() => {
                ip = match b.len() {
                    4 => Some(std::net::IpAddr::from(
                        <[u8; 4]>::try_from(b).unwrap_or_default(),
                    )),
                    16 => Some(std::net::IpAddr::from(
                        <[u8; 16]>::try_from(b).unwrap_or_default(),
                    )),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    ip.map(|i| i.to_string())
        .ok_or_else(|| anyhow::anyhow!("the server certificate names no host (no subjectAltName)"))
}

fn unavailable(detail: &str) -> Response {
    let body = serde_json::json!({
        "type": "about:blank", "status": 503, "code": "standby", "title": "Try again shortly",
        "detail": detail,
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "application/problem+json"),
            (header::RETRY_AFTER, "1"),
        ],
        body.to_string(),
    )
        .into_response()
}
