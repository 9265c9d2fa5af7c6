//! `EdgeService`: thin adapters over `service::edge`. With TLS every call
//! must come from an edge certificate of this region, and a registered edge
//! may only act as itself (the site and name its certificate names).

use classgrid_proto::v1::{self as pb, edge_service_server::EdgeService};
use tonic::{Request, Response, Status, Streaming};

use super::{relay, status};
use crate::{auth::pki::Identity, domain::ServiceError, state::App, store::sites::EdgeRow};

pub struct Edges(pub App);

impl Edges {
    async fn identity<T>(&self, req: &Request<T>) -> Result<Option<Identity>, Status> {
        let peer = req.peer_certs().and_then(|c| c.first().map(|d| d.to_vec()));
        self.0.node_identity(peer.as_deref(), "edge").await
    }

    /// The edge named by `edge_id`, checked against the caller's certificate.
    async fn edge<T>(&self, req: &Request<T>, edge_id: &str) -> Result<EdgeRow, Status> {
        let identity = self.identity(req).await?;
        let row = self.0.edge_row(edge_id).await.map_err(status)?;
        if let Some(id) = identity {
            let site_name = self.0.fleet.site_by_id(row.site_id).map(|s| s.name);
            if row.name != id.name || site_name.as_deref() != Some(id.site.as_str()) {
                return Err(Status::permission_denied(format!(
                    "this certificate belongs to edge {}/{}; it cannot act as edge {}",
                    id.site, id.name, row.id
                )));
            }
        }
        Ok(row)
    }
}

#[tonic::async_trait]
impl EdgeService for Edges {
    type RelayStream = relay::Outbound;

    async fn relay(
        &self,
        req: Request<Streaming<pb::RelayChunk>>,
    ) -> Result<Response<relay::Outbound>, Status> {
        let edge = self.edge(&req, relay::edge_id(&req)?).await?;
        relay::open(&self.0, edge, req).await
    }

    async fn register(
        &self,
        req: Request<pb::RegisterEdgeRequest>,
    ) -> Result<Response<pb::RegisterEdgeResponse>, Status> {
        let identity = self.identity(&req).await?;
        let r = req.into_inner();
        let valid = !r.name.is_empty()
            && r.name.len() <= 128
            && r.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid {
            return Err(status(ServiceError::field(
                "name",
                "must be 1 to 128 letters, digits, '.', '_' or '-'",
            )));
        }
        let site = self.0.fleet.site(&r.site).ok_or_else(|| {
            status(ServiceError::field(
                "site",
                format!(
                    "unknown site `{}`",
                    r.site.chars().take(128).collect::<String>()
                ),
            ))
        })?;
        if let Some(id) = identity
            && (id.site != site.name || id.name != r.name)
        {
            return Err(Status::permission_denied(format!(
                "this certificate belongs to edge {}/{}; it cannot register as {}/{}",
                id.site, id.name, site.name, r.name
            )));
        }
        let id = self
            .0
            .store
            .upsert_edge(
                site.id,
                &r.name,
                &r.version.chars().take(64).collect::<String>(),
            )
            .await
            .map_err(|e| status(e.into()))?;
        tracing::info!(edge = %id, site = %site.name, name = %r.name, "edge registered");
        Ok(Response::new(pb::RegisterEdgeResponse {
            edge_id: id.to_string(),
            site_id: site.id.to_string(),
            heartbeat_interval_ms: 2000,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::EdgeHeartbeat>,
    ) -> Result<Response<pb::EdgeHeartbeatAck>, Status> {
        let id = self.edge(&req, &req.get_ref().edge_id).await?.id;
        if !self
            .0
            .store
            .touch_edge(id)
            .await
            .map_err(|e| status(e.into()))?
        {
            return Err(status(ServiceError::NotFound(format!("edge {id}"))));
        }
        Ok(Response::new(pb::EdgeHeartbeatAck {}))
    }

    async fn probe_targets(
        &self,
        req: Request<pb::ProbeTargetsRequest>,
    ) -> Result<Response<pb::ProbeTargetsResponse>, Status> {
        self.edge(&req, &req.get_ref().edge_id).await?;
        Ok(Response::new(self.0.probe_targets().await.map_err(status)?))
    }

    async fn report_rtt(
        &self,
        req: Request<pb::RttReport>,
    ) -> Result<Response<pb::RttReportAck>, Status> {
        let site = self.edge(&req, &req.get_ref().edge_id).await?.site_id;
        let n = self
            .0
            .report_rtt(site, req.get_ref())
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RttReportAck { accepted: n as i32 }))
    }

    async fn sync(
        &self,
        req: Request<pb::EdgeSyncRequest>,
    ) -> Result<Response<pb::EdgeSyncResponse>, Status> {
        let e = self.edge(&req, &req.get_ref().edge_id).await?;
        Ok(Response::new(
            self.0
                .edge_sync(e.id, e.site_id, req.get_ref())
                .await
                .map_err(status)?,
        ))
    }
}
