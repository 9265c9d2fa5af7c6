//! `/v1/sites` and `/v1/nodes`: what the caller's schools can use, scoped
//! like gRPC's FleetService, and approving a node that waits for it.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    routing::{get, post},
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{extract::Params, model::rfc3339, problem::ApiResult};
use crate::{auth::Caller, fleet::LiveNode, state::App};

pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/sites", get(sites))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{id}", get(node))
        .route("/v1/nodes/{id}/approve", post(approve))
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"id": "0190f0c2-7d1e-7c3a-9f0e-2b1d4c5e6f70", "name": "school-a", "kind": "school", "district": "east"}))]
pub struct Site {
    pub id: Uuid,
    pub name: String,
    /// school, district_pop or cloud.
    pub kind: String,
    pub district: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SiteList {
    pub sites: Vec<Site>,
}

/// One accelerator.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Device {
    pub index: i32,
    pub vendor: String,
    pub model: String,
    pub memory_mib: i64,
    pub memory_used_mib: i64,
    pub utilization_percent: i32,
    pub healthy: bool,
    pub max_slices: i32,
    /// none, soft or hard.
    pub isolation: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Node {
    pub id: Uuid,
    pub site: String,
    pub name: String,
    /// edge or cloud.
    pub tier: String,
    /// connected, disconnected or lost.
    pub state: String,
    pub cordoned: bool,
    /// Joined with a token that asks for approval, and not approved yet:
    /// placement does not use the node until a district admin approves it.
    pub awaiting_approval: bool,
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: String,
    pub cpu_millis: i32,
    pub memory_mib: i64,
    pub runtimes: Vec<String>,
    pub warnings: Vec<String>,
    pub devices: Vec<Device>,
    /// `site/name` of the edge whose site relay carries the node's
    /// connection; absent when it is connected directly or not at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodeList {
    pub nodes: Vec<Node>,
}

/// The node after an approval.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApprovedNode {
    pub node: Node,
    /// The node was approved before this call; nothing changed.
    pub already_approved: bool,
}

fn node_of(app: &App, n: &LiveNode) -> Node {
    Node {
        id: n.id,
        site: app
            .fleet
            .site_by_id(n.site_id)
            .map(|s| s.name)
            .unwrap_or_default(),
        name: n.name.clone(),
        tier: n.tier.clone(),
        state: n.state.to_string(),
        cordoned: n.cordoned,
        awaiting_approval: !n.approved,
        last_seen: rfc3339(n.last_seen_wall, app.cfg.time_zone),
        cpu_millis: n.cpu_millis,
        memory_mib: n.memory_mib,
        runtimes: n.runtimes.clone(),
        warnings: n.warnings.clone(),
        relay: n.relay.clone().filter(|_| n.is_connected()),
        devices: n
            .devices
            .iter()
            .map(|d| Device {
                index: d.idx,
                vendor: d.vendor.clone(),
                model: d.model.clone(),
                memory_mib: d.memory_mib,
                memory_used_mib: d.memory_used_mib,
                utilization_percent: d.utilization_percent,
                healthy: d.healthy,
                max_slices: d.max_slices,
                isolation: d.isolation.clone(),
            })
            .collect(),
    }
}

/// Sites the caller may see.
#[utoipa::path(get, operation_id = "list_sites", path = "/v1/sites", tag = "fleet", responses((status = 200, description = "Sites", body = SiteList)))]
pub async fn sites(State(app): State<App>, caller: Caller) -> ApiResult<Json<SiteList>> {
    let sites = app
        .scoped(&caller)
        .sites()
        .into_iter()
        .map(|s| Site {
            id: s.id,
            name: s.name,
            kind: s.kind,
            district: s.district,
        })
        .collect();
    Ok(Json(SiteList { sites }))
}

/// Nodes at the caller's sites, optionally of one site.
#[utoipa::path(get, operation_id = "list_nodes", path = "/v1/nodes", tag = "fleet",
    params(("site" = Option<String>, Query, description = "Site name or id")),
    responses((status = 200, description = "Nodes", body = NodeList)))]
pub async fn nodes(
    State(app): State<App>,
    caller: Caller,
    q: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<NodeList>> {
    let p = Params::from_query(q, &["site"])?;
    let found = app.scoped(&caller).nodes(p.get("site"))?;
    Ok(Json(NodeList {
        nodes: found.iter().map(|n| node_of(&app, n)).collect(),
    }))
}

/// One node, by id or `SITE/NAME`, with its devices.
#[utoipa::path(get, operation_id = "get_node", path = "/v1/nodes/{id}", tag = "fleet",
    params(("id" = String, Path, description = "Node id, or SITE/NAME with the slash escaped as %2F")),
    responses((status = 200, description = "The node", body = Node)))]
pub async fn node(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Node>> {
    Ok(Json(node_of(&app, &app.scoped(&caller).node(&id)?)))
}

/// Approve a node that joined with a token asking for approval, so that
/// lessons and jobs may be placed on it (district admins; audited as
/// `node.approve`). Approving an approved node changes nothing.
#[utoipa::path(post, operation_id = "approve_node", path = "/v1/nodes/{id}/approve", tag = "fleet",
    params(("id" = String, Path, description = "Node id, or SITE/NAME with the slash escaped as %2F")),
    responses((status = 200, description = "The node, approved", body = ApprovedNode)))]
pub async fn approve(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<ApprovedNode>> {
    let (n, changed) = app.scoped(&caller).approve_node(&id).await?;
    Ok(Json(ApprovedNode {
        node: node_of(&app, &n),
        already_approved: !changed,
    }))
}
