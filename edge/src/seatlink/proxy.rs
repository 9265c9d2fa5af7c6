//! The seat links' reverse proxy: https on the edge, `/seat/TOKEN/…` to the
//! seat on its node, WebSockets included. Built on the HTTP stack the edge
//! already has (decision 088): axum for routing, axum-server with rustls for
//! TLS, and hyper 1's client connection for the hop to the seat, whose
//! upgrade support carries a WebSocket as two spliced byte streams.
//!
//! A command seat is any HTTP app serving at `/` (decision 103): it gets the
//! path without `/seat/TOKEN`, learns the prefix from `X-Forwarded-Prefix`
//! (and, at start, from `CLASSGRID_SEAT_LINK_PATH`), and its redirects to an
//! absolute path (`Location: /sub/`) are put back under the link, so the
//! student never leaves it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use hyper_util::rt::TokioIo;
use sqlx::SqlitePool;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{Lookup, lookup, pages};

/// The router for seat links; every other path is an unknown link.
pub fn router(db: SqlitePool) -> Router {
    Router::new().fallback(forward).with_state(db)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The token and what follows it, from `/seat/TOKEN` or `/seat/TOKEN/rest`.
fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/seat/")?;
    Some(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    })
}

async fn forward(State(db): State<SqlitePool>, mut req: Request) -> Response {
    let Some((token, rest)) = split_path(req.uri().path()) else {
        return pages::unknown();
    };
    let token = token.to_string();
    let link = match lookup(&db, &token, now_ms()).await {
        Ok(Lookup::Open(l)) => l,
        Ok(Lookup::Unknown) => return pages::unknown(),
        Ok(Lookup::Ended) => return pages::ended(),
        Ok(Lookup::Stopped) => return pages::stopped(),
        Ok(Lookup::Paused) => return pages::paused(),
        Ok(Lookup::NotReady) => return pages::not_ready(),
        Err(e) => {
            warn!(error = %e, "seat links unreadable");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the edge's state is unreadable",
            )
                .into_response();
        }
    };
    if rest.is_empty() {
        // `/seat/TOKEN` alone: the seat's pages are relative to the slash.
        let to = format!("/seat/{token}/");
        return (
            StatusCode::FOUND,
            [(
                header::LOCATION,
                HeaderValue::from_str(&to).expect("token is URL-safe"),
            )],
        )
            .into_response();
    }
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let path = if link.serves_link_path {
        format!("{}{query}", req.uri().path())
    } else {
        format!("{rest}{query}")
    };
    let Some(authority) = link
        .endpoint
        .strip_prefix("http://")
        .map(|a| a.trim_end_matches('/').to_string())
    else {
        warn!(assignment = %link.assignment_id, endpoint = %link.endpoint, "seat endpoint is not http://host:port");
        return pages::unreachable();
    };
    let Ok(uri) = path.parse::<Uri>() else {
        return pages::unknown();
    };
    let stream = match tokio::net::TcpStream::connect(authority.as_str()).await {
        Ok(s) => s,
        Err(e) => {
            warn!(assignment = %link.assignment_id, %authority, error = %e, "seat unreachable");
            return pages::unreachable();
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(v) => v,
        Err(e) => {
            warn!(assignment = %link.assignment_id, error = %e, "seat handshake failed");
            return pages::unreachable();
        }
    };
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "seat connection ended");
        }
    });
    let client_upgrade = req
        .headers()
        .contains_key(header::UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    let h = &mut parts.headers;
    let prefix = format!("/seat/{token}");
    if link.serves_link_path {
        // The edge has checked the link; the seat's server wants its token.
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("token {token}")).expect("token is URL-safe"),
        );
    } else {
        // The app serves at `/`; this is where the student sees its root.
        h.insert(
            "x-forwarded-prefix",
            HeaderValue::from_str(&prefix).expect("token is URL-safe"),
        );
    }
    h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    if let Some(host) = h.get(header::HOST).cloned() {
        h.insert("x-forwarded-host", host);
    }
    let mut resp = match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => {
            warn!(assignment = %link.assignment_id, error = %e, "seat request failed");
            return pages::unreachable();
        }
    };
    if !link.serves_link_path {
        keep_under_link(resp.headers_mut(), &prefix);
    }
    // The seat answered its student: the teacher's view shows them in.
    if !resp.status().is_server_error()
        && let Err(e) = super::record_open(&db, &token, now_ms()).await
    {
        warn!(error = %e, "could not record a seat link's opening");
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let seat_upgrade = hyper::upgrade::on(&mut resp);
        match client_upgrade {
            Some(client_upgrade) => {
                tokio::spawn(async move {
                    let (Ok(client), Ok(seat)) = (client_upgrade.await, seat_upgrade.await) else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(
                        &mut TokioIo::new(client),
                        &mut TokioIo::new(seat),
                    )
                    .await;
                });
            }
            None => return pages::unreachable(),
        }
    }
    resp.map(Body::new)
}

/// A command seat's redirect to an absolute path of its own (`/sub/`, not
/// `//host/…` nor `https://…`) goes under its link (`/seat/TOKEN/sub/`):
/// the app serves at `/` and knows nothing of the prefix taken off.
fn keep_under_link(headers: &mut axum::http::HeaderMap, prefix: &str) {
    let Some(to) = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with('/') && !v.starts_with("//"))
    else {
        return;
    };
    if let Ok(v) = HeaderValue::from_str(&format!("{prefix}{to}")) {
        headers.insert(header::LOCATION, v);
    }
}

/// A rustls server configuration from PEM files (the chain first, as the
/// region CA issues it, then the key).
pub fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| anyhow::anyhow!("seat link certificate {}: {e}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("seat link certificate {}: {e}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "seat link certificate {}: no certificate in the file",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("seat link key {}: {e}", key.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Serves seat links over TLS on `listener` until `shutdown`.
pub async fn serve(
    db: SqlitePool,
    listener: std::net::TcpListener,
    tls: rustls::ServerConfig,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        let _ = shutdown.changed().await;
        h.graceful_shutdown(Some(std::time::Duration::from_secs(2)));
    });
    info!(listen = %addr, "seat links listening (https)");
    let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls));
    axum_server::from_tcp_rustls(listener, config)?
        .handle(handle)
        .serve(router(db).into_make_service())
        .await?;
    Ok(())
}

/// The seat links' server, once started.
pub struct Serving {
    pub task: tokio::task::JoinHandle<()>,
    /// What the edge tells the broker its links start with
    /// (`https://host:port`): seat views show `BASE/seat/TOKEN/`.
    pub base_url: String,
}

/// Where and with what certificate the edge serves seat links.
#[derive(Debug, Clone)]
pub struct SeatLinks {
    /// host:port to listen on.
    pub listen: String,
    /// PEM files of a certificate from the region CA (`classgrid-broker
    /// edge-cert`) and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The links' public address; None derives it from `listen`.
    pub url: Option<String>,
}

impl SeatLinks {
    /// `CLASSGRID_SEAT_LINKS_LISTEN` (host:port), `CLASSGRID_SEAT_LINKS_CERT`
    /// and `CLASSGRID_SEAT_LINKS_KEY`, and optionally
    /// `CLASSGRID_SEAT_LINKS_URL`; none set serves no links.
    pub fn from_env() -> anyhow::Result<Option<Self>> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let Some(listen) = var("CLASSGRID_SEAT_LINKS_LISTEN") else {
            return Ok(None);
        };
        let (Some(cert), Some(key)) = (
            var("CLASSGRID_SEAT_LINKS_CERT"),
            var("CLASSGRID_SEAT_LINKS_KEY"),
        ) else {
            anyhow::bail!(
                "CLASSGRID_SEAT_LINKS_LISTEN is set: CLASSGRID_SEAT_LINKS_CERT and CLASSGRID_SEAT_LINKS_KEY must name the certificate and key (PEM) that seat links are served with"
            );
        };
        let url = var("CLASSGRID_SEAT_LINKS_URL")
            .map(|u| public_url(&u))
            .transpose()?;
        Ok(Some(Self {
            listen,
            cert: cert.into(),
            key: key.into(),
            url,
        }))
    }
}

/// Starts the seat links' server, bound before returning so that a taken
/// port fails the edge's start. Without a public address set, the links'
/// address is the listening one, with the host of `advertise_url` (the
/// edge's content address, which the site's machines already reach) when
/// it listens on every interface.
pub fn start(
    db: SqlitePool,
    links: &SeatLinks,
    advertise_url: &str,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Serving> {
    let tls = tls_config(&links.cert, &links.key)?;
    let listener = std::net::TcpListener::bind(&links.listen).map_err(|e| {
        anyhow::anyhow!(
            "CLASSGRID_SEAT_LINKS_LISTEN: cannot listen on {}: {e}",
            links.listen
        )
    })?;
    listener.set_nonblocking(true)?;
    let base_url = match &links.url {
        Some(u) => u.clone(),
        None => listening_url(listener.local_addr()?, advertise_url),
    };
    let task = tokio::spawn(async move {
        if let Err(e) = serve(db, listener, tls, shutdown).await {
            tracing::error!(error = %format!("{e:#}"), "seat links server stopped");
        }
    });
    Ok(Serving { task, base_url })
}

/// `CLASSGRID_SEAT_LINKS_URL` checked as the broker will check it.
fn public_url(u: &str) -> anyhow::Result<String> {
    let ok = u.starts_with("https://")
        && u.len() <= 300
        && u.parse::<axum::http::Uri>()
            .is_ok_and(|p| p.host().is_some_and(|h| !h.is_empty()));
    anyhow::ensure!(
        ok,
        "CLASSGRID_SEAT_LINKS_URL: must be an https:// URL with a host, of at most 300 bytes, not `{u}`"
    );
    Ok(u.trim_end_matches('/').to_string())
}

fn listening_url(addr: SocketAddr, advertise_url: &str) -> String {
    let host = if addr.ip().is_unspecified() {
        advertise_url
            .parse::<axum::http::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_string))
            .unwrap_or_else(|| "127.0.0.1".into())
    } else {
        match addr.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        }
    };
    format!("https://{host}:{}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::{keep_under_link, listening_url, public_url, split_path};
    use axum::http::{HeaderMap, HeaderValue, header};

    #[test]
    fn a_command_seats_redirects_stay_under_its_link() {
        let moved = |to: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::LOCATION, HeaderValue::from_str(to).unwrap());
            keep_under_link(&mut h, "/seat/abc");
            h[header::LOCATION].to_str().unwrap().to_string()
        };
        assert_eq!(moved("/sub/"), "/seat/abc/sub/");
        assert_eq!(moved("/"), "/seat/abc/");
        assert_eq!(moved("sub/"), "sub/", "relative: already under the link");
        assert_eq!(moved("https://elsewhere/x"), "https://elsewhere/x");
        assert_eq!(moved("//elsewhere/x"), "//elsewhere/x");
        let mut none = HeaderMap::new();
        keep_under_link(&mut none, "/seat/abc");
        assert!(none.is_empty());
    }

    #[test]
    fn the_public_address_follows_the_listener_or_the_setting() {
        let any: std::net::SocketAddr = "0.0.0.0:7443".parse().unwrap();
        assert_eq!(
            listening_url(any, "http://edge.school.example:7480"),
            "https://edge.school.example:7443"
        );
        let one: std::net::SocketAddr = "10.1.2.3:7443".parse().unwrap();
        assert_eq!(listening_url(one, "http://x:1"), "https://10.1.2.3:7443");
        assert_eq!(
            public_url("https://links.example/").unwrap(),
            "https://links.example"
        );
        assert!(public_url("http://links.example").is_err());
        assert!(public_url("https://").is_err());
    }

    #[test]
    fn the_token_is_the_first_segment_after_seat() {
        assert_eq!(split_path("/seat/abc/lab?x"), Some(("abc", "/lab?x")));
        assert_eq!(split_path("/seat/abc"), Some(("abc", "")));
        assert_eq!(split_path("/seat/abc/"), Some(("abc", "/")));
        assert_eq!(split_path("/other/abc"), None);
    }
}
