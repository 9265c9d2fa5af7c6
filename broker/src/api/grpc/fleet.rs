use classgrid_proto::v1::{self as pb, fleet_service_server::FleetService};
use tonic::{Request, Response, Status};

use super::{convert, status};
use crate::auth::gate::caller;
use crate::{fleet::LiveNode, state::App};

pub struct FleetApi(pub App);

pub fn node(n: &LiveNode, site: &str, running: i32) -> pb::Node {
    pb::Node {
        id: n.id.to_string(),
        site: site.to_string(),
        name: n.name.clone(),
        tier: n.tier.clone(),
        state: n.state.to_string(),
        last_seen: Some(convert::ts(n.last_seen_wall)),
        capacity: Some(pb::NodeCapacity {
            cpu_millis: n.cpu_millis,
            memory_mib: n.memory_mib,
            devices: n
                .devices
                .iter()
                .map(|d| pb::DeviceInfo {
                    index: d.idx,
                    vendor: d.vendor.clone(),
                    model: d.model.clone(),
                    uuid: d.uuid.clone(),
                    memory_mib: d.memory_mib,
                    memory_used_mib: d.memory_used_mib,
                    utilization_percent: d.utilization_percent,
                    healthy: d.healthy,
                    max_slices: d.max_slices,
                    isolation: match d.isolation.as_str() {
                        "hard" => pb::Isolation::Hard,
                        "soft" => pb::Isolation::Soft,
                        _ => pb::Isolation::None,
                    } as i32,
                })
                .collect(),
        }),
        runtimes: n.runtimes.clone(),
        warnings: n.warnings.clone(),
        running_assignments: running,
        cordoned: n.cordoned,
        awaiting_approval: !n.approved,
        relay: n
            .relay
            .clone()
            .filter(|_| n.is_connected())
            .unwrap_or_default(),
    }
}

impl FleetApi {
    async fn running_counts(&self) -> Result<std::collections::HashMap<uuid::Uuid, i64>, Status> {
        let rows = self
            .0
            .store
            .live_assignments_per_node()
            .await
            .map_err(|e| status(e.into()))?;
        Ok(rows.into_iter().collect())
    }

    /// One node as the API shows it, with its site's name and what runs there.
    async fn node_out(&self, n: &LiveNode) -> Result<pb::Node, Status> {
        let running = self
            .0
            .store
            .live_assignments_on(n.id)
            .await
            .map_err(|e| status(e.into()))?;
        let site = self
            .0
            .fleet
            .site_by_id(n.site_id)
            .map(|s| s.name)
            .unwrap_or_default();
        Ok(node(n, &site, running as i32))
    }
}

#[tonic::async_trait]
impl FleetService for FleetApi {
    async fn create_site(
        &self,
        req: Request<pb::CreateSiteRequest>,
    ) -> Result<Response<pb::Site>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let s = self
            .0
            .scoped(&c)
            .create_site(&r.name, &r.kind, &r.district)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Site {
            id: s.id.to_string(),
            name: s.name,
            kind: s.kind,
            district: s.district,
            edges: vec![],
        }))
    }

    async fn list_sites(
        &self,
        req: Request<pb::ListSitesRequest>,
    ) -> Result<Response<pb::ListSitesResponse>, Status> {
        let c = caller(&req)?;
        let edges = self
            .0
            .store
            .list_edges()
            .await
            .map_err(|e| status(e.into()))?;
        let stale = chrono::Utc::now()
            - chrono::Duration::from_std(self.0.cfg.disconnected_after).unwrap_or_default();
        let sites = self
            .0
            .scoped(&c)
            .sites()
            .into_iter()
            .map(|s| pb::Site {
                id: s.id.to_string(),
                edges: edges
                    .iter()
                    .filter(|e| e.site_id == s.id)
                    .map(|e| pb::Edge {
                        id: e.id.to_string(),
                        name: e.name.clone(),
                        state: if e.last_seen >= stale {
                            "connected"
                        } else {
                            "disconnected"
                        }
                        .into(),
                        last_seen: Some(convert::ts(e.last_seen)),
                    })
                    .collect(),
                name: s.name,
                kind: s.kind,
                district: s.district,
            })
            .collect();
        Ok(Response::new(pb::ListSitesResponse { sites }))
    }

    async fn list_nodes(
        &self,
        req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let c = caller(&req)?;
        let found = self
            .0
            .scoped(&c)
            .nodes(Some(req.get_ref().site.as_str()))
            .map_err(status)?;
        let counts = self.running_counts().await?;
        let nodes = found
            .iter()
            .map(|n| {
                let site = self
                    .0
                    .fleet
                    .site_by_id(n.site_id)
                    .map(|s| s.name)
                    .unwrap_or_default();
                node(n, &site, counts.get(&n.id).copied().unwrap_or(0) as i32)
            })
            .collect();
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn get_node(
        &self,
        req: Request<pb::GetNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        let c = caller(&req)?;
        let n = self.0.scoped(&c).node(&req.get_ref().id).map_err(status)?;
        Ok(Response::new(self.node_out(&n).await?))
    }

    async fn approve_node(
        &self,
        req: Request<pb::ApproveNodeRequest>,
    ) -> Result<Response<pb::ApproveNodeResponse>, Status> {
        let c = caller(&req)?;
        let (n, changed) = self
            .0
            .scoped(&c)
            .approve_node(&req.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ApproveNodeResponse {
            node: Some(self.node_out(&n).await?),
            already_approved: !changed,
        }))
    }
}
