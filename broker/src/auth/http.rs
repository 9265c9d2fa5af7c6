//! The HTTP side of the gate: a [`Caller`] extractor for axum handlers that
//! authenticates `Authorization: Bearer cg_…` with the same checks and the
//! same per-token rate limit as gRPC. Other credentials (the console's
//! session cookie) slot in here, before the bearer check.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, FromRef, FromRequestParts},
    http::{header, request::Parts},
};

use super::Caller;
use crate::{api::rest::problem::Problem, state::App};

/// Where an HTTP request came from, for the audit log; empty when the server
/// was started without connection info.
pub fn source_of(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default()
}

impl<S> FromRequestParts<S> for Caller
where
    App: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Another layer (or an earlier extractor) may already have decided.
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(c.clone());
        }
        let app = App::from_ref(state);
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        let caller = app.authenticate(header, source_of(parts)).await?;
        app.rate_check(&caller)?;
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}
