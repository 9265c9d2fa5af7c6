//! A small Kubernetes API client over plain HTTP/1.1 and JSON: the few calls
//! the runtime makes, against the API server as `kubectl proxy` serves it
//! (the proxy holds the cluster's credentials and TLS).

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Clone)]
pub struct Api {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// An API error: the HTTP status (0 when the server was not reached) and the
/// server's message.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status == 0 {
            write!(f, "kubernetes API: {}", self.message)
        } else {
            write!(f, "kubernetes API: HTTP {}: {}", self.status, self.message)
        }
    }
}

impl std::error::Error for ApiError {}

fn unreachable(e: impl std::fmt::Display) -> ApiError {
    ApiError {
        status: 0,
        message: e.to_string(),
    }
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<hyper::Request<Full<Bytes>>, ApiError> {
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("accept", "application/json")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(unreachable)
    }

    /// One request, its JSON answer; a non-2xx status is an error carrying
    /// the server's `Status.message`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let req = self.request(method, path, body)?;
        let resp = tokio::time::timeout(TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| unreachable(format!("no answer within {TIMEOUT:?}")))?
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        let bytes = tokio::time::timeout(TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| unreachable("the answer did not finish in time"))?
            .map_err(unreachable)?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let message = value["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
            return Err(ApiError { status, message });
        }
        Ok(value)
    }

    /// Plain text (pod logs).
    pub async fn text(&self, path: &str) -> Result<String, ApiError> {
        let req = self.request("GET", path, None)?;
        let resp = tokio::time::timeout(TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| unreachable("no answer in time"))?
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(unreachable)?
            .to_bytes();
        if !(200..300).contains(&status) {
            return Err(ApiError {
                status,
                message: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            });
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A watch: calls `on_event` with each event object of the stream
    /// (`{"type": ..., "object": ...}`, one JSON document per line) until the
    /// server ends it.
    pub async fn watch(&self, path: &str, mut on_event: impl FnMut(Value)) -> Result<(), ApiError> {
        let req = self.request("GET", path, None)?;
        let resp = tokio::time::timeout(TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| unreachable("no answer in time"))?
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(ApiError {
                status,
                message: "watch refused".into(),
            });
        }
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(unreachable)?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buf.extend_from_slice(data);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line) {
                    on_event(v);
                }
            }
        }
        if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
            on_event(v);
        }
        Ok(())
    }
}
