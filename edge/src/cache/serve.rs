//! The edge's content server on the site LAN: agents fetch staged content
//! from `GET /content/SHA256` (with `Range`, so their downloads resume too),
//! other edges use it as a source, and `GET /staging` lists progress for
//! `classgrid-edge stage`.
//!
//! It is plain HTTP without authentication: content is addressed and
//! verified by digest, so a reader cannot be handed the wrong bytes, and the
//! server only listens where the edge is told to (the school LAN).

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{stage::Stager, store::valid_digest};

pub fn router(stager: Stager) -> Router {
    Router::new()
        .route("/content/{sha}", get(content))
        .route("/staging", get(staging))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(stager)
}

async fn staging(State(s): State<Stager>) -> impl IntoResponse {
    Json(s.report().await)
}

fn problem(status: StatusCode, msg: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

/// Parses a single `bytes=A-B`, `bytes=A-` or `bytes=-N` range against
/// `len`; None when it is absent or not satisfiable as one range.
pub fn parse_range(h: &str, len: u64) -> Option<(u64, u64)> {
    let spec = h.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (len.checked_sub(n.min(len))?, len.checked_sub(1)?)
        }
        (a, "") => (a.parse().ok()?, len.checked_sub(1)?),
        (a, b) => (
            a.parse().ok()?,
            b.parse::<u64>().ok()?.min(len.checked_sub(1)?),
        ),
    };
    (start <= end && start < len).then_some((start, end))
}

async fn content(State(s): State<Stager>, Path(sha): Path<String>, headers: HeaderMap) -> Response {
    let sha = sha.to_ascii_lowercase();
    if !valid_digest(&sha) {
        return problem(
            StatusCode::BAD_REQUEST,
            "sha256: must be 64 hexadecimal digits".into(),
        );
    }
    let cache = s.cache();
    if !cache.has(&sha).await.unwrap_or(false) {
        return problem(
            StatusCode::NOT_FOUND,
            format!("{sha} is not cached on this edge (see GET /staging)"),
        );
    }
    let _ = cache.touch(&sha).await;
    let mut file = match tokio::fs::File::open(cache.blob_path(&sha)).await {
        Ok(f) => f,
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, format!("{sha}: {e}")),
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return problem(StatusCode::SERVICE_UNAVAILABLE, format!("{sha}: {e}")),
    };
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, len.saturating_sub(1)),
        Some(r) => match parse_range(r, len) {
            Some((a, b)) => (StatusCode::PARTIAL_CONTENT, a, b),
            None => {
                return Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                    .body(Body::empty())
                    .unwrap_or_default();
            }
        },
    };
    let count = if len == 0 { 0 } else { end - start + 1 };
    if start > 0 && file.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{sha}: seek failed"),
        );
    }
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file.take(count)));
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, count)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ETAG, format!("\"{sha}\""));
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
    }
    b.body(body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_are_parsed_against_the_length() {
        assert_eq!(parse_range("bytes=10-", 100), Some((10, 99)));
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=90-200", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
