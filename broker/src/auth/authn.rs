//! Turning credentials into a [`Caller`]: bearer tokens (cached ≤ 5 s so a
//! revocation takes effect within that), node certificates, and the
//! per-token rate limit.

use chrono::Utc;
use tonic::Status;

use super::{
    Caller, Role,
    pki::{self, Identity},
    tokens::{self, Rejection, TokenRecord},
};
use crate::state::Broker;

impl Broker {
    pub async fn authenticate(
        &self,
        header: Option<&str>,
        source: String,
    ) -> Result<Caller, Status> {
        let unauth = |r: Rejection| Status::unauthenticated(r.message());
        let raw = header.ok_or(unauth(Rejection::Missing))?;
        let token = raw
            .strip_prefix("Bearer ")
            .or_else(|| raw.strip_prefix("bearer "))
            .ok_or(unauth(Rejection::Malformed))?
            .trim();
        let (id, secret) = tokens::parse_api(token).ok_or(unauth(Rejection::Malformed))?;
        let store = self.store.clone();
        let rec = self
            .token_cache
            .try_get_with(id, async move {
                let row = store.api_token(id).await?;
                Ok::<_, sqlx::Error>(row.and_then(|r| {
                    Some(TokenRecord {
                        role: Role::parse(&r.role)?,
                        sites: r.sites,
                        secret_sha256: r.secret_sha256,
                        expires_at: r.expires_at,
                        revoked: r.revoked_at.is_some(),
                    })
                }))
            })
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "token lookup failed");
                Status::unavailable("cannot check the token right now; retry")
            })?
            .ok_or(unauth(Rejection::Unknown))?;
        tokens::check(&rec, id, secret, Utc::now(), source).map_err(unauth)
    }

    pub fn rate_check(&self, caller: &Caller) -> Result<(), Status> {
        self.limiter.check_key(&caller.actor).map_err(|_| {
            Status::resource_exhausted(format!(
                "rate limit: at most {} requests per second per token; slow down and retry",
                self.cfg.security.rate_limit_per_s
            ))
        })
    }

    /// Checks a node's client certificate: issued by this region, known,
    /// not revoked, not expired, and of the expected kind.
    pub async fn node_identity(
        &self,
        peer_der: Option<&[u8]>,
        kind: &str,
    ) -> Result<Option<Identity>, Status> {
        let Some(der) = peer_der else {
            if self.tls.is_none() {
                // --insecure-dev: no certificates exist to check.
                return Ok(None);
            }
            return Err(Status::unauthenticated(format!(
                "{kind}s connect with the client certificate from `classgrid-{kind} join`"
            )));
        };
        let id = pki::client_identity(der).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let row = self
            .store
            .node_cert(&id.serial)
            .await
            .map_err(|_| Status::unavailable("cannot check the certificate right now; retry"))?
            .ok_or_else(|| {
                Status::unauthenticated("this certificate was not issued by this region")
            })?;
        if row.revoked_at.is_some() {
            return Err(Status::unauthenticated(
                "this certificate was revoked; join again with a new token",
            ));
        }
        if row.not_after <= Utc::now() {
            return Err(Status::unauthenticated(
                "this certificate has expired; join again with a new token",
            ));
        }
        if row.kind != kind || id.kind != kind {
            return Err(Status::permission_denied(format!(
                "this is a {} certificate, not a {kind} one",
                row.kind
            )));
        }
        Ok(Some(id))
    }
}
