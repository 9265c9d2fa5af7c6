//! AdminService (district admins) and JoinService (nodes getting certificates).

use classgrid_proto::v1::{
    self as pb, admin_service_server::AdminService, join_service_server::JoinService,
};
use tonic::{Request, Response, Status};

use super::{convert, status};
use crate::{
    auth::gate::{caller, source_of_request},
    state::App,
    store::security::{ApiTokenRow, JoinTokenRow},
};

pub struct Admin(pub App);
pub struct Join(pub App);

fn site_names(app: &App, ids: &[uuid::Uuid]) -> Vec<String> {
    ids.iter()
        .map(|id| {
            app.fleet
                .site_by_id(*id)
                .map(|s| s.name)
                .unwrap_or_else(|| id.to_string())
        })
        .collect()
}

fn api_token(app: &App, t: &ApiTokenRow) -> pb::ApiToken {
    pb::ApiToken {
        id: t.id.to_string(),
        name: t.name.clone(),
        role: t.role.clone(),
        sites: site_names(app, &t.sites),
        created_by: t.created_by.clone(),
        created: Some(convert::ts(t.created_at)),
        expires: t.expires_at.map(convert::ts),
        revoked: t.revoked_at.map(convert::ts),
    }
}

fn join_token(app: &App, t: &JoinTokenRow) -> pb::JoinToken {
    pb::JoinToken {
        id: t.id.to_string(),
        site: site_names(app, &[t.site_id]).remove(0),
        kind: t.kind.clone(),
        uses_left: t.uses_left,
        expires: Some(convert::ts(t.expires_at)),
        revoked: t.revoked_at.map(convert::ts),
        created_by: t.created_by.clone(),
        require_approval: t.require_approval,
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn create_api_token(
        &self,
        req: Request<pb::CreateApiTokenRequest>,
    ) -> Result<Response<pb::CreatedSecret>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let (row, secret) = self
            .0
            .create_api_token(&c, &r.name, &r.role, &r.sites, r.ttl_seconds)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreatedSecret {
            id: row.id.to_string(),
            secret,
            expires: row.expires_at.map(convert::ts),
        }))
    }

    async fn list_api_tokens(
        &self,
        req: Request<pb::ListApiTokensRequest>,
    ) -> Result<Response<pb::ListApiTokensResponse>, Status> {
        let c = caller(&req)?;
        let rows = self.0.list_api_tokens(&c).await.map_err(status)?;
        Ok(Response::new(pb::ListApiTokensResponse {
            tokens: rows.iter().map(|t| api_token(&self.0, t)).collect(),
        }))
    }

    async fn revoke_api_token(
        &self,
        req: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::ApiToken>, Status> {
        let c = caller(&req)?;
        let id = convert::parse_id("id", &req.get_ref().id).map_err(status)?;
        let row = self.0.revoke_api_token(&c, id).await.map_err(status)?;
        Ok(Response::new(api_token(&self.0, &row)))
    }

    async fn create_join_token(
        &self,
        req: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreatedSecret>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let (row, secret) = self
            .0
            .create_join_token(
                &c,
                &r.site,
                &r.kind,
                r.ttl_seconds,
                r.uses,
                r.require_approval,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreatedSecret {
            id: row.id.to_string(),
            secret,
            expires: Some(convert::ts(row.expires_at)),
        }))
    }

    async fn list_join_tokens(
        &self,
        req: Request<pb::ListJoinTokensRequest>,
    ) -> Result<Response<pb::ListJoinTokensResponse>, Status> {
        let c = caller(&req)?;
        let rows = self.0.list_join_tokens(&c).await.map_err(status)?;
        Ok(Response::new(pb::ListJoinTokensResponse {
            tokens: rows.iter().map(|t| join_token(&self.0, t)).collect(),
        }))
    }

    async fn revoke_join_token(
        &self,
        req: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::JoinToken>, Status> {
        let c = caller(&req)?;
        let id = convert::parse_id("id", &req.get_ref().id).map_err(status)?;
        let row = self.0.revoke_join_token(&c, id).await.map_err(status)?;
        Ok(Response::new(join_token(&self.0, &row)))
    }

    async fn revoke_node(
        &self,
        req: Request<pb::RevokeNodeRequest>,
    ) -> Result<Response<pb::RevokeNodeResponse>, Status> {
        let c = caller(&req)?;
        let n = self
            .0
            .revoke_node(&c, &req.get_ref().node)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RevokeNodeResponse {
            certificates_revoked: n as i32,
        }))
    }

    async fn create_user(
        &self,
        req: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let u = self
            .0
            .create_user(&c, &r.username, &r.password, &r.role, &r.sites)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::User {
            id: u.id.to_string(),
            username: u.username,
            role: u.role,
            sites: site_names(&self.0, &u.sites),
        }))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::RegionStatus>, Status> {
        let c = caller(&req)?;
        let r = self.0.scoped(&c).replicas().await.map_err(status)?;
        Ok(Response::new(pb::RegionStatus {
            leader: r.lease.holder_name.clone(),
            epoch: r.lease.epoch,
            leader_since: r.lease.since.map(convert::ts),
            answered_by: self
                .0
                .leader
                .get()
                .map(|l| l.replica.name.clone())
                .unwrap_or_default(),
            replicas: r
                .replicas
                .iter()
                .map(|x| pb::Replica {
                    name: x.name.clone(),
                    role: r.role(x).into(),
                    grpc_addr: x.grpc_addr.clone(),
                    http_addr: x.http_addr.clone(),
                    started_at: Some(convert::ts(x.started_at)),
                    seen_at: Some(convert::ts(x.seen_at)),
                })
                .collect(),
        }))
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let since = convert::from_ts("since", r.since.as_ref()).map_err(status)?;
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let limit = if r.limit == 0 { 100 } else { r.limit as i64 };
        let rows = self
            .0
            .list_audit(
                &c,
                opt(&r.actor).as_deref(),
                opt(&r.action).as_deref(),
                opt(&r.target).as_deref(),
                since,
                limit,
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListAuditResponse {
            entries: rows
                .into_iter()
                .map(|a| pb::AuditEntry {
                    id: a.id,
                    at: Some(convert::ts(a.at)),
                    actor: a.actor,
                    role: a.role,
                    action: a.action,
                    target: a.target,
                    source: a.source,
                    result: a.result,
                    detail: a.detail,
                })
                .collect(),
        }))
    }
}

#[tonic::async_trait]
impl JoinService for Join {
    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let source = source_of_request(&req);
        let r = req.into_inner();
        let (cert, ca, site, not_after) = self
            .0
            .join(&r.token, &r.name, &r.csr, &source)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::JoinResponse {
            certificate: cert,
            ca,
            site,
            name: r.name,
            not_after: Some(convert::ts(not_after)),
        }))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let source = source_of_request(&req);
        let peer = req.peer_certs().and_then(|c| c.first().map(|d| d.to_vec()));
        let kind = match peer.as_deref().map(crate::auth::pki::client_identity) {
            Some(Ok(id)) => id.kind,
            _ => {
                return Err(Status::unauthenticated(
                    "renew needs the node's current client certificate",
                ));
            }
        };
        let id = self
            .0
            .node_identity(peer.as_deref(), &kind)
            .await?
            .ok_or_else(|| Status::unauthenticated("renew needs TLS"))?;
        let (cert, ca, not_after) = self
            .0
            .renew(&id, &req.get_ref().csr, &source)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::JoinResponse {
            certificate: cert,
            ca,
            site: id.site,
            name: id.name,
            not_after: Some(convert::ts(not_after)),
        }))
    }
}
