//! The one gate every gRPC call passes: a tower layer that authenticates the
//! bearer token (or leaves node-certificate and join calls to their own
//! checks), applies the per-token rate limit, and hands a [`Caller`] to the
//! handler in the request's extensions.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use tonic::Status;
use tower::{Layer, Service};

use super::Caller;
use crate::state::App;

/// Methods that do not take a bearer token: health and reflection are
/// public; agents, edges and joins prove themselves with certificates or
/// join tokens, checked in their handlers.
fn is_token_free(path: &str) -> bool {
    [
        "/grpc.health.v1.Health/",
        "/grpc.reflection.",
        "/classgrid.v1.AgentService/",
        "/classgrid.v1.EdgeService/",
        "/classgrid.v1.JoinService/",
        // Peer regions prove themselves with the certificate from the
        // peering handshake, or, for the handshake, the offer's secret.
        "/classgrid.v1.FederationService/",
    ]
    .iter()
    .any(|p| path.starts_with(p))
}

pub fn source_of<B>(req: &http::Request<B>) -> String {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let addr = req
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(|i| i.remote_addr())
        .or_else(|| {
            req.extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        });
    addr.map(|a| a.to_string()).unwrap_or_default()
}

#[derive(Clone)]
pub struct GateLayer {
    pub app: App,
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;
    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            app: self.app.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    app: App,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for Gate<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        // The clone is ready only after poll_ready; swap so we call the ready one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let app = self.app.clone();
        Box::pin(async move {
            if is_token_free(req.uri().path()) {
                return inner.call(req).await;
            }
            let source = source_of(&req);
            let header = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let caller = match app.authenticate(header.as_deref(), source).await {
                Ok(c) => c,
                Err(status) => return Ok(status.into_http()),
            };
            if let Err(status) = app.rate_check(&caller) {
                return Ok(status.into_http());
            }
            req.extensions_mut().insert(caller);
            inner.call(req).await
        })
    }
}

/// The caller the gate attached; its absence is a wiring bug, answered as
/// unauthenticated rather than trusted.
pub fn caller<T>(req: &tonic::Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no credentials"))
}

/// Where a gRPC request came from, for the audit log.
pub fn source_of_request<T>(req: &tonic::Request<T>) -> String {
    req.remote_addr().map(|a| a.to_string()).unwrap_or_default()
}
