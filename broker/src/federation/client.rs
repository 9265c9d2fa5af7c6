//! Calling a peer region's broker: mutual TLS that trusts only the peer's
//! pinned CA and presents the certificate the peer issued to this region.
//! Channels are kept per peering (tonic reconnects them), so a call does not
//! pay a TLS handshake.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use classgrid_proto::v1::federation_service_client::FederationServiceClient;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

use crate::{domain::ServiceError, state::Broker, store::peers::PeeringRow};

/// How long one call to a peer may take before the peer counts as away.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

fn channels() -> &'static Mutex<HashMap<Uuid, Channel>> {
    static C: OnceLock<Mutex<HashMap<Uuid, Channel>>> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// Forgets a peering's channel (it was removed, or its certificate changed).
pub fn forget(id: Uuid) {
    channels()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
}

pub fn endpoint(url: &str) -> Result<Endpoint, ServiceError> {
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| ServiceError::field("url", format!("not a URL: {e}")))?
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5)))
}

impl Broker {
    /// Where the private key of this region's client certificate at a peer
    /// is kept: next to the region CA's key, readable by the broker alone.
    pub(crate) fn peer_key_path(&self, id: Uuid) -> PathBuf {
        self.cfg
            .security
            .data_dir
            .join("peers")
            .join(format!("{}.key", id.simple()))
    }

    pub(crate) fn save_peer_key(&self, id: Uuid, key_pem: &str) -> Result<(), ServiceError> {
        let path = self.peer_key_path(id);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
            crate::auth::pki::write_private(&path, key_pem)
        };
        write()
            .map_err(|e| ServiceError::Internal(anyhow::anyhow!("writing {}: {e}", path.display())))
    }

    /// A client for the peer of `p`, over mTLS.
    pub(crate) fn peer_client(
        &self,
        p: &PeeringRow,
    ) -> Result<FederationServiceClient<Channel>, ServiceError> {
        if let Some(ch) = channels()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&p.id)
        {
            return Ok(FederationServiceClient::new(ch.clone()));
        }
        if p.own_cert_pem.is_empty() || p.ca_pem.is_empty() {
            return Err(ServiceError::Conflict(format!(
                "peering with region {} is not set up yet (state {})",
                p.name, p.state
            )));
        }
        let key = std::fs::read_to_string(self.peer_key_path(p.id)).map_err(|e| {
            ServiceError::Internal(anyhow::anyhow!(
                "the key for region {} is missing from the data folder: {e}",
                p.name
            ))
        })?;
        let tls =
            classgrid_common::tls::client_config(&p.url, &p.ca_pem, Some((&p.own_cert_pem, &key)))
                .map_err(|e| ServiceError::Internal(anyhow::anyhow!("{e}")))?;
        let ch = endpoint(&p.url)?
            .tls_config(tls)
            .map_err(|e| ServiceError::Internal(anyhow::anyhow!("{e}")))?
            .connect_lazy();
        channels()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p.id, ch.clone());
        Ok(FederationServiceClient::new(ch))
    }
}

impl Broker {
    /// Marks a peer that could not be reached; the sentence says since when.
    pub(crate) async fn peer_failed(&self, p: &PeeringRow, s: &tonic::Status) -> String {
        if unreachable(s) {
            let _ = self
                .store
                .set_peering_reachable(p.id, false, s.message())
                .await;
            format!("unreachable: {}", s.message())
        } else {
            format!("refused the ask: {}", s.message())
        }
    }
}

/// Whether a failed call means the peer could not be reached (as opposed to
/// an answer it gave).
pub fn unreachable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
    ) && !s.message().starts_with("cannot be placed")
}
