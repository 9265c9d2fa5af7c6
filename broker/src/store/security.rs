use chrono::{DateTime, Utc};
use sqlx::FromRow;
use uuid::Uuid;

use super::Store;

#[derive(Debug, Clone, FromRow)]
pub struct ApiTokenRow {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub sites: Vec<Uuid>,
    pub secret_sha256: Vec<u8>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, FromRow)]
pub struct JoinTokenRow {
    pub id: Uuid,
    pub site_id: Uuid,
    pub kind: String,
    pub uses_left: i32,
    /// Nodes joining with it wait for a district admin's approval.
    pub require_approval: bool,
    pub created_by: String,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, FromRow)]
pub struct NodeCertRow {
    pub serial: String,
    pub kind: String,
    pub site_id: Uuid,
    pub name: String,
    pub not_after: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub sites: Vec<Uuid>,
    pub disabled: bool,
}

#[derive(Debug, Clone, FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub target: String,
    pub source: String,
    pub result: String,
    pub detail: String,
}

/// One audit record to append.
pub struct AuditEntry<'a> {
    pub actor: &'a str,
    pub role: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub source: &'a str,
    pub result: &'a str,
    pub detail: &'a str,
}

const JOIN_COLS: &str =
    "id, site_id, kind, uses_left, require_approval, created_by, expires_at, revoked_at";

impl Store {
    pub async fn insert_api_token(&self, t: &ApiTokenRow) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, sites, secret_sha256, created_by, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(t.id)
        .bind(&t.name)
        .bind(&t.role)
        .bind(&t.sites)
        .bind(&t.secret_sha256)
        .bind(&t.created_by)
        .bind(t.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn api_token(&self, id: Uuid) -> sqlx::Result<Option<ApiTokenRow>> {
        sqlx::query_as("SELECT id, name, role, sites, secret_sha256, created_by, created_at, expires_at, revoked_at FROM api_tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn list_api_tokens(&self) -> sqlx::Result<Vec<ApiTokenRow>> {
        sqlx::query_as("SELECT id, name, role, sites, secret_sha256, created_by, created_at, expires_at, revoked_at FROM api_tokens ORDER BY created_at")
            .fetch_all(&self.pool)
            .await
    }

    pub async fn revoke_api_token(&self, id: Uuid) -> sqlx::Result<Option<ApiTokenRow>> {
        sqlx::query_as(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1
             RETURNING id, name, role, sites, secret_sha256, created_by, created_at, expires_at, revoked_at",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn insert_join_token(&self, t: &JoinTokenRow, digest: &[u8]) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO join_tokens (id, site_id, kind, secret_sha256, uses_left, require_approval, created_by, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(t.id)
        .bind(t.site_id)
        .bind(&t.kind)
        .bind(digest)
        .bind(t.uses_left)
        .bind(t.require_approval)
        .bind(&t.created_by)
        .bind(t.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn list_join_tokens(&self) -> sqlx::Result<Vec<JoinTokenRow>> {
        sqlx::query_as(sql!(
            "SELECT {JOIN_COLS} FROM join_tokens ORDER BY created_at"
        ))
        .fetch_all(&self.pool)
        .await
    }

    pub async fn revoke_join_token(&self, id: Uuid) -> sqlx::Result<Option<JoinTokenRow>> {
        sqlx::query_as(sql!(
            "UPDATE join_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1
             RETURNING {JOIN_COLS}"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Spends one use of a join token, atomically; None when the token is
    /// unknown, wrong, spent, expired or revoked.
    pub async fn spend_join_token(
        &self,
        id: Uuid,
        digest: &[u8],
    ) -> sqlx::Result<Option<JoinTokenRow>> {
        sqlx::query_as(sql!(
            "UPDATE join_tokens SET uses_left = uses_left - 1
             WHERE id = $1 AND secret_sha256 = $2 AND uses_left > 0 AND expires_at > now() AND revoked_at IS NULL
             RETURNING {JOIN_COLS}"
        ))
        .bind(id)
        .bind(digest)
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn insert_node_cert(
        &self,
        serial: &str,
        kind: &str,
        site: Uuid,
        name: &str,
        not_after: DateTime<Utc>,
        join: Option<Uuid>,
    ) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO node_certs (serial, kind, site_id, name, not_after, join_token_id) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(serial)
            .bind(kind)
            .bind(site)
            .bind(name)
            .bind(not_after)
            .bind(join)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn node_cert(&self, serial: &str) -> sqlx::Result<Option<NodeCertRow>> {
        sqlx::query_as("SELECT serial, kind, site_id, name, not_after, revoked_at FROM node_certs WHERE serial = $1")
            .bind(serial)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn active_cert_exists(
        &self,
        site: Uuid,
        kind: &str,
        name: &str,
    ) -> sqlx::Result<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM node_certs WHERE site_id = $1 AND kind = $2 AND name = $3
                AND revoked_at IS NULL AND not_after > now())",
        )
        .bind(site)
        .bind(kind)
        .bind(name)
        .fetch_one(&self.pool)
        .await
    }

    pub async fn revoke_node_certs_of_kind(
        &self,
        site: Uuid,
        kind: &str,
        name: &str,
    ) -> sqlx::Result<u64> {
        let r = sqlx::query("UPDATE node_certs SET revoked_at = now() WHERE site_id = $1 AND kind = $2 AND name = $3 AND revoked_at IS NULL")
            .bind(site)
            .bind(kind)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    pub async fn revoke_node_certs(&self, site: Uuid, name: &str) -> sqlx::Result<u64> {
        let r = sqlx::query("UPDATE node_certs SET revoked_at = now() WHERE site_id = $1 AND name = $2 AND revoked_at IS NULL")
            .bind(site)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    pub async fn insert_user(&self, u: &UserRow) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO users (id, username, password_hash, role, sites) VALUES ($1, $2, $3, $4, $5)")
            .bind(u.id)
            .bind(&u.username)
            .bind(&u.password_hash)
            .bind(&u.role)
            .bind(&u.sites)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn user_by_name(&self, username: &str) -> sqlx::Result<Option<UserRow>> {
        sqlx::query_as("SELECT id, username, password_hash, role, sites, disabled FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn append_audit(&self, e: &AuditEntry<'_>) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO audit_log (actor, role, action, target, source, result, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(e.actor)
            .bind(e.role)
            .bind(e.action)
            .bind(e.target)
            .bind(e.source)
            .bind(e.result)
            .bind(e.detail)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn list_audit(
        &self,
        actor: Option<&str>,
        action_prefix: Option<&str>,
        target: Option<&str>,
        since: Option<DateTime<Utc>>,
        limit: i64,
    ) -> sqlx::Result<Vec<AuditRow>> {
        sqlx::query_as(
            "SELECT id, at, actor, role, action, target, source, result, detail FROM audit_log
             WHERE ($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR starts_with(action, $2))
               AND ($3::text IS NULL OR target = $3) AND ($4::timestamptz IS NULL OR at >= $4)
             ORDER BY id DESC LIMIT $5",
        )
        .bind(actor)
        .bind(action_prefix)
        .bind(target)
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }
}
