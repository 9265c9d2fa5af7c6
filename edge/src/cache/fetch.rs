//! Resumable, verified downloads over HTTP(S). A download appends to a
//! partial file; after an interruption the next attempt asks for the rest
//! with `Range: bytes=N-` and appends only when the server answers 206. The
//! finished file is hashed end to end and kept only when its sha256 matches.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tracing::Instrument;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A body that stalls this long is treated as an interruption.
const READ_STALL: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Transport(String),
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("content from {url} has sha256 {got}, not the expected {want}; discarded")]
    Digest {
        url: String,
        got: String,
        want: String,
    },
    #[error("content from {url} is {got} bytes, not the expected {want}; discarded")]
    Size { url: String, got: u64, want: u64 },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl FetchError {
    /// A digest or size mismatch will not go away by retrying the same
    /// source; a dropped connection will.
    pub fn retryable(&self) -> bool {
        matches!(self, FetchError::Transport(_) | FetchError::Io(_))
            || matches!(self, FetchError::Status { status, .. } if *status >= 500)
    }
}

/// What one attempt achieved.
#[derive(Debug, Clone, Copy)]
pub struct Fetched {
    /// Bytes received by this attempt (not counting a resumed prefix).
    pub bytes: u64,
    pub elapsed: Duration,
    pub resumed_from: u64,
}

/// Downloads `url` into `partial`, resuming what is there, and verifies the
/// whole file against `sha256` (and `size` when non-zero). `progress` tracks
/// the bytes on disk. On a digest mismatch the partial file is removed.
pub async fn fetch(
    url: &str,
    partial: &Path,
    sha256: &str,
    size: u64,
    progress: Arc<AtomicU64>,
) -> Result<Fetched, FetchError> {
    let have = tokio::fs::metadata(partial)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let have = if size > 0 && have > size { 0 } else { have };
    progress.store(have, Ordering::Relaxed);
    let started = Instant::now();
    let mut received = 0u64;
    let mut resumed_from = 0;
    if size == 0 || have < size {
        let range = (have > 0).then(|| format!("bytes={have}-"));
        let resp = get(url, range.as_deref()).await?;
        let status = resp.status().as_u16();
        let mut file = match status {
            206 if have > 0 => {
                resumed_from = have;
                tokio::fs::OpenOptions::new()
                    .append(true)
                    .open(partial)
                    .await?
            }
            200 => {
                // The origin ignored the range (or there was nothing yet):
                // start over from byte 0.
                progress.store(0, Ordering::Relaxed);
                tokio::fs::File::create(partial).await?
            }
            416 if have > 0 => {
                tokio::fs::OpenOptions::new()
                    .append(true)
                    .open(partial)
                    .await?
            }
            _ => {
                return Err(FetchError::Status {
                    url: url.into(),
                    status,
                });
            }
        };
        let mut body = resp.into_body();
        loop {
            let frame = tokio::time::timeout(READ_STALL, body.frame())
                .await
                .map_err(|_| FetchError::Transport(format!("{url}: no data for {READ_STALL:?}")))?;
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| FetchError::Transport(format!("{url}: {e}")))?;
            if let Ok(data) = frame.into_data() {
                file.write_all(&data).await?;
                received += data.len() as u64;
                progress.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        file.flush().await?;
        file.sync_all().await?;
    }
    let elapsed = started.elapsed();
    let len = tokio::fs::metadata(partial).await?.len();
    if size > 0 && len < size {
        return Err(FetchError::Transport(format!(
            "{url}: connection ended at {len} of {size} bytes"
        )));
    }
    if size > 0 && len > size {
        let _ = tokio::fs::remove_file(partial).await;
        return Err(FetchError::Size {
            url: url.into(),
            got: len,
            want: size,
        });
    }
    let got = hash_file(partial)
        .instrument(classgrid_common::traced_span!("verify", bytes = len))
        .await?;
    if !sha256.is_empty() && !got.eq_ignore_ascii_case(sha256) {
        let _ = tokio::fs::remove_file(partial).await;
        return Err(FetchError::Digest {
            url: url.into(),
            got,
            want: sha256.into(),
        });
    }
    Ok(Fetched {
        bytes: received,
        elapsed,
        resumed_from,
    })
}

pub async fn hash_file(path: &Path) -> std::io::Result<String> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(hex::encode(h.finalize()))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// `host:port` of a URL, without the user information, path or query a
/// signed URL carries its secret in; empty when it is no URL.
pub fn host_of(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(u) => match (u.host(), u.port_u16()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => String::new(),
        },
        Err(_) => String::new(),
    }
}

type Response = hyper::Response<hyper::body::Incoming>;

/// One GET on a fresh HTTP/1.1 connection (TLS for https, with the web's
/// root CAs).
async fn get(url: &str, range: Option<&str>) -> Result<Response, FetchError> {
    let t = |e: String| FetchError::Transport(e);
    let uri: http::Uri = url
        .parse()
        .map_err(|e| t(format!("`{url}` is not a URL: {e}")))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            return Err(t(format!(
                "`{url}`: only http:// and https:// are supported"
            )));
        }
    };
    let host = uri
        .host()
        .ok_or_else(|| t(format!("`{url}` has no host")))?
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((host.trim_matches(['[', ']']), port)),
    )
    .await
    .map_err(|_| {
        t(format!(
            "{host}:{port}: no connection within {CONNECT_TIMEOUT:?}"
        ))
    })?
    .map_err(|e| t(format!("cannot reach {host}:{port}: {e}")))?;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut req = hyper::Request::get(path)
        .header(
            hyper::header::HOST,
            uri.authority().map(|a| a.as_str()).unwrap_or(&host),
        )
        .header(
            hyper::header::USER_AGENT,
            concat!("classgrid-edge/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(r) = range {
        req = req.header(hyper::header::RANGE, r);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| t(e.to_string()))?;
    if https {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| t(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| t(format!("{host}: {e}")))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await
            .map_err(|e| t(format!("TLS with {host}: {e}")))?;
        send(TokioIo::new(tls), req, url).await
    } else {
        send(TokioIo::new(tcp), req, url).await
    }
}

async fn send<I>(
    io: I,
    req: hyper::Request<Empty<Bytes>>,
    url: &str,
) -> Result<Response, FetchError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| FetchError::Transport(format!("{url}: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| FetchError::Transport(format!("{url}: {e}")))
}

/// A small GET for JSON status pages; the body as text.
pub async fn get_text(url: &str) -> Result<String, FetchError> {
    let resp = get(url, None).await?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| FetchError::Transport(format!("{url}: {e}")))?
        .to_bytes();
    if status != 200 {
        return Err(FetchError::Status {
            url: url.into(),
            status,
        });
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn a_fetch_span_names_the_host_never_the_secret_of_a_signed_url() {
        assert_eq!(
            host_of("https://user:pw@data.example:8443/set.bin?sig=abc"),
            "data.example:8443"
        );
        assert_eq!(host_of("http://10.0.0.5/content/ab"), "10.0.0.5");
        assert_eq!(host_of("not a url"), "");
    }
}
