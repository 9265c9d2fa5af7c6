use classgrid_proto::v1::{self as pb, edge_service_server::EdgeService};
use tonic::{Request, Response, Status};

use super::status;
use crate::{app::App, domain::ServiceError};

pub struct Edges(pub App);

#[tonic::async_trait]
impl EdgeService for Edges {
    async fn register(
        &self,
        req: Request<pb::RegisterEdgeRequest>,
    ) -> Result<Response<pb::RegisterEdgeResponse>, Status> {
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
        let id = super::convert::parse_id("edge_id", &req.get_ref().edge_id).map_err(status)?;
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
}
