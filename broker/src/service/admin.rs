//! District-admin operations and node joins: tokens, certificates, users,
//! and reading the audit log. Every change here is audited.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    auth::{Caller, Role, passwords, tokens},
    domain::{ServiceError, error::Checks},
    state::Broker,
    store::security::{ApiTokenRow, AuditEntry, AuditRow, JoinTokenRow, UserRow},
};

const MAX_TTL_S: i64 = 5 * 365 * 24 * 3600;

impl Broker {
    /// Appends one audit row; a failure to audit is logged, never hidden.
    pub async fn audit(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        result: &Result<(), String>,
        detail: &str,
    ) {
        let (res, det) = match result {
            Ok(()) => ("ok".to_string(), detail.to_string()),
            Err(e) => (
                "error".to_string(),
                if detail.is_empty() {
                    e.clone()
                } else {
                    format!("{detail}: {e}")
                },
            ),
        };
        let entry = AuditEntry {
            actor: &caller.actor,
            role: caller.role.as_str(),
            action,
            target,
            source: &caller.source,
            result: &res,
            detail: &det.chars().take(1000).collect::<String>(),
        };
        if let Err(e) = self.store.append_audit(&entry).await {
            tracing::error!(error = %e, action, target, "AUDIT WRITE FAILED");
        }
    }

    /// Runs a mutating operation and audits its outcome, whatever it is.
    pub async fn audited<T>(
        &self,
        caller: &Caller,
        action: &str,
        target: impl Fn(&T) -> String,
        fallback_target: &str,
        op: impl std::future::Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        let r = op.await;
        match &r {
            Ok(v) => self.audit(caller, action, &target(v), &Ok(()), "").await,
            Err(e) => {
                self.audit(caller, action, fallback_target, &Err(e.to_string()), "")
                    .await
            }
        }
        r
    }

    pub(crate) fn require_admin(caller: &Caller) -> Result<(), ServiceError> {
        if caller.is_district_admin() {
            Ok(())
        } else {
            Err(ServiceError::Forbidden(
                "only a district admin may do this".into(),
            ))
        }
    }

    fn resolve_sites(&self, c: &mut Checks, field: &str, sites: &[String]) -> Vec<Uuid> {
        let mut out = Vec::new();
        for (i, s) in sites.iter().enumerate() {
            match self.fleet.site(s) {
                Some(site) => out.push(site.id),
                None => c.fail(
                    format!("{field}[{i}]"),
                    format!("unknown site `{}`", s.chars().take(128).collect::<String>()),
                ),
            }
        }
        out
    }

    /// Creates an API token; the secret is returned once and stored hashed.
    pub async fn create_api_token(
        &self,
        caller: &Caller,
        name: &str,
        role: &str,
        sites: &[String],
        ttl_s: i64,
    ) -> Result<(ApiTokenRow, String), ServiceError> {
        let op = async {
            Self::require_admin(caller)?;
            let mut c = Checks::default();
            c.check(
                name.len() <= 128 && !name.contains('\0'),
                "name",
                "must be at most 128 characters, without NUL",
            );
            let parsed = Role::parse(role);
            if parsed.is_none() {
                c.fail("role", "must be platform, school_admin or district_admin");
            }
            let site_ids = self.resolve_sites(&mut c, "sites", sites);
            if parsed.is_some_and(|r| r != Role::DistrictAdmin) && sites.is_empty() {
                c.fail("sites", "is required for platform and school_admin tokens");
            }
            if !(0..=MAX_TTL_S).contains(&ttl_s) {
                c.fail(
                    "ttl_seconds",
                    format!("must be between 0 (never expires) and {MAX_TTL_S}"),
                );
            }
            c.finish()?;
            let id = Uuid::now_v7();
            let secret = tokens::new_secret();
            let row = ApiTokenRow {
                id,
                name: name.to_string(),
                role: role.to_string(),
                sites: if parsed == Some(Role::DistrictAdmin) {
                    Vec::new()
                } else {
                    site_ids
                },
                secret_sha256: tokens::digest(&secret),
                created_by: caller.actor.clone(),
                created_at: Utc::now(),
                expires_at: (ttl_s > 0).then(|| Utc::now() + chrono::Duration::seconds(ttl_s)),
                revoked_at: None,
            };
            self.store.insert_api_token(&row).await?;
            Ok((row, tokens::format_api(id, &secret)))
        };
        self.audited(
            caller,
            "token.create",
            |(r, _): &(ApiTokenRow, String)| format!("token:{}", r.id),
            "token",
            op,
        )
        .await
    }

    pub async fn list_api_tokens(&self, caller: &Caller) -> Result<Vec<ApiTokenRow>, ServiceError> {
        Self::require_admin(caller)?;
        Ok(self.store.list_api_tokens().await?)
    }

    pub async fn revoke_api_token(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<ApiTokenRow, ServiceError> {
        let op = async {
            Self::require_admin(caller)?;
            let row = self
                .store
                .revoke_api_token(id)
                .await?
                .ok_or_else(|| ServiceError::NotFound(format!("token {id}")))?;
            // This broker forgets it at once; other replicas within the cache TTL.
            self.token_cache.invalidate(&id).await;
            Ok(row)
        };
        self.audited(
            caller,
            "token.revoke",
            |r: &ApiTokenRow| format!("token:{}", r.id),
            &format!("token:{id}"),
            op,
        )
        .await
    }

    /// Creates a join token; the secret is returned once and stored hashed.
    /// `require_approval` unset takes the broker's `[join] require_approval`
    /// for agents; edges are never placed on, so there is nothing to approve.
    pub async fn create_join_token(
        &self,
        caller: &Caller,
        site: &str,
        kind: &str,
        ttl_s: i64,
        uses: i32,
        require_approval: Option<bool>,
    ) -> Result<(JoinTokenRow, String), ServiceError> {
        let op = async {
            Self::require_admin(caller)?;
            let mut c = Checks::default();
            let site_row = self.fleet.site(site);
            if site_row.is_none() {
                c.fail(
                    "site",
                    format!(
                        "unknown site `{}`",
                        site.chars().take(128).collect::<String>()
                    ),
                );
            }
            let kind = if kind.is_empty() { "agent" } else { kind };
            c.check(
                kind == "agent" || kind == "edge",
                "kind",
                "must be agent or edge",
            );
            let ttl = if ttl_s == 0 { 24 * 3600 } else { ttl_s };
            c.check(
                (60..=30 * 24 * 3600).contains(&ttl),
                "ttl_seconds",
                "must be between 60 seconds and 30 days (0 means 24 hours)",
            );
            let uses = if uses == 0 { 1 } else { uses };
            c.check(
                (1..=10_000).contains(&uses),
                "uses",
                "must be between 1 and 10000 (0 means 1)",
            );
            c.check(
                kind == "agent" || require_approval != Some(true),
                "require_approval",
                "applies to agent tokens only: no work is placed on an edge",
            );
            let require_approval =
                kind == "agent" && require_approval.unwrap_or(self.cfg.join.require_approval);
            c.finish()?;
            let tls = self.tls.as_ref().ok_or_else(|| {
                ServiceError::Conflict(
                    "join tokens need TLS; this broker runs with --insecure-dev".into(),
                )
            })?;
            let site_row = site_row.ok_or_else(|| ServiceError::field("site", "unknown site"))?;
            let secret = tokens::new_secret();
            let row = JoinTokenRow {
                id: Uuid::now_v7(),
                site_id: site_row.id,
                kind: kind.to_string(),
                uses_left: uses,
                require_approval,
                created_by: caller.actor.clone(),
                expires_at: Utc::now() + chrono::Duration::seconds(ttl),
                revoked_at: None,
            };
            self.store
                .insert_join_token(&row, &tokens::digest(&secret))
                .await?;
            let token = tokens::format_join(&tls.ca.fingerprint(), row.id, &secret);
            Ok((row, token))
        };
        self.audited(
            caller,
            "join_token.create",
            |(r, _): &(JoinTokenRow, String)| format!("join_token:{}", r.id),
            site,
            op,
        )
        .await
    }

    pub async fn list_join_tokens(
        &self,
        caller: &Caller,
    ) -> Result<Vec<JoinTokenRow>, ServiceError> {
        Self::require_admin(caller)?;
        Ok(self.store.list_join_tokens().await?)
    }

    pub async fn revoke_join_token(
        &self,
        caller: &Caller,
        id: Uuid,
    ) -> Result<JoinTokenRow, ServiceError> {
        let op = async {
            Self::require_admin(caller)?;
            self.store
                .revoke_join_token(id)
                .await?
                .ok_or_else(|| ServiceError::NotFound(format!("join token {id}")))
        };
        self.audited(
            caller,
            "join_token.revoke",
            |r: &JoinTokenRow| format!("join_token:{}", r.id),
            &format!("join_token:{id}"),
            op,
        )
        .await
    }

    /// Revokes every certificate of a node and cuts its agent off.
    pub async fn revoke_node(&self, caller: &Caller, key: &str) -> Result<u64, ServiceError> {
        let op = async {
            Self::require_admin(caller)?;
            let node = self
                .find_node(key)
                .ok_or_else(|| ServiceError::NotFound(format!("node {key}")))?;
            let n = self
                .store
                .revoke_node_certs(node.site_id, &node.name)
                .await?;
            self.fleet.kick(node.id);
            Ok(n)
        };
        self.audited(caller, "node.revoke", |_| key.to_string(), key, op)
            .await
    }

    pub async fn create_user(
        &self,
        caller: &Caller,
        username: &str,
        password: &str,
        role: &str,
        sites: &[String],
    ) -> Result<UserRow, ServiceError> {
        let op = async {
            Self::require_admin(caller)?;
            let mut c = Checks::default();
            let valid = !username.is_empty()
                && username.len() <= 64
                && username
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "._-@".contains(ch));
            c.check(
                valid,
                "username",
                "must be 1 to 64 letters, digits, '.', '_', '-' or '@'",
            );
            c.check(
                (10..=256).contains(&password.chars().count()),
                "password",
                "must be 10 to 256 characters",
            );
            let parsed = Role::parse(role).filter(|r| *r != Role::Platform);
            c.check(
                parsed.is_some(),
                "role",
                "must be school_admin or district_admin",
            );
            let site_ids = self.resolve_sites(&mut c, "sites", sites);
            if parsed == Some(Role::SchoolAdmin) && sites.is_empty() {
                c.fail("sites", "is required for a school_admin");
            }
            c.finish()?;
            if self.store.user_by_name(username).await?.is_some() {
                return Err(ServiceError::Conflict(format!("user `{username}` exists")));
            }
            let row = UserRow {
                id: Uuid::now_v7(),
                username: username.to_string(),
                password_hash: passwords::hash(password)?,
                role: role.to_string(),
                sites: if parsed == Some(Role::DistrictAdmin) {
                    Vec::new()
                } else {
                    site_ids
                },
                disabled: false,
            };
            self.store.insert_user(&row).await?;
            Ok(row)
        };
        self.audited(
            caller,
            "user.create",
            |u: &UserRow| format!("user:{}", u.username),
            username,
            op,
        )
        .await
    }

    pub async fn list_audit(
        &self,
        caller: &Caller,
        actor: Option<&str>,
        action: Option<&str>,
        target: Option<&str>,
        since: Option<DateTime<Utc>>,
        limit: i64,
    ) -> Result<Vec<AuditRow>, ServiceError> {
        Self::require_admin(caller)?;
        if !(1..=1000).contains(&limit) {
            return Err(ServiceError::field("limit", "must be between 1 and 1000"));
        }
        Ok(self
            .store
            .list_audit(actor, action, target, since, limit)
            .await?)
    }

    /// A node joins with a join token and a CSR; its certificate names the
    /// token's site and the requested node name, nothing the CSR says.
    pub async fn join(
        &self,
        token: &str,
        name: &str,
        csr: &str,
        source: &str,
    ) -> Result<(String, String, String, DateTime<Utc>), ServiceError> {
        let tls = self.tls.as_ref().ok_or_else(|| {
            ServiceError::Conflict(
                "this broker runs with --insecure-dev; there is nothing to join".into(),
            )
        })?;
        let mut c = Checks::default();
        let valid = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch));
        c.check(
            valid,
            "name",
            "must be 1 to 128 letters, digits, '.', '_' or '-'",
        );
        c.check(csr.len() <= 16 * 1024, "csr", "must be at most 16 KiB");
        c.finish()?;
        let parts = tokens::parse_join(token)
            .ok_or_else(|| ServiceError::Unauthenticated("the join token is malformed".into()))?;
        let who = Caller {
            actor: format!("join_token:{}", parts.id),
            role: Role::SchoolAdmin,
            sites: Vec::new(),
            source: source.to_string(),
            token_id: None,
        };
        let op = async {
            let jt = self
                .store
                .spend_join_token(parts.id, &tokens::digest(parts.secret))
                .await?
                .ok_or_else(|| {
                    ServiceError::Unauthenticated(
                        "the join token is unknown, used up, expired or revoked".into(),
                    )
                })?;
            let site = self
                .fleet
                .site_by_id(jt.site_id)
                .ok_or_else(|| ServiceError::NotFound("the token's site".into()))?;
            if self
                .store
                .active_cert_exists(site.id, &jt.kind, name)
                .await?
            {
                return Err(ServiceError::Conflict(format!(
                    "{} {}/{name} already has a valid certificate; revoke it first (classgrid nodes revoke {}/{name}) to join again",
                    jt.kind, site.name, site.name
                )));
            }
            // A node that registers for the first time inherits the token's
            // rule from its certificate; one already known must wait again,
            // as it may be another machine under the same name. Before the
            // certificate is issued, so that a failure leaves it waiting.
            if jt.require_approval
                && jt.kind == "agent"
                && let Some(node) = self.store.mark_awaiting_approval(site.id, name).await?
            {
                self.fleet.set_approved(node, false);
            }
            let valid = time::Duration::days(self.cfg.security.client_cert_days as i64);
            let (cert, serial, not_after) = tls
                .ca
                .sign_client(csr, &jt.kind, &site.name, name, valid)
                .map_err(|e| ServiceError::field("csr", e.to_string()))?;
            let not_after =
                DateTime::<Utc>::from_timestamp(not_after.unix_timestamp(), 0).unwrap_or_default();
            self.store
                .insert_node_cert(&serial, &jt.kind, site.id, name, not_after, Some(jt.id))
                .await?;
            Ok((cert, tls.ca.cert_pem.clone(), site.name.clone(), not_after))
        };
        self.audited(
            &who,
            "node.join",
            |r: &(String, String, String, DateTime<Utc>)| format!("{}/{name}", r.2),
            name,
            op,
        )
        .await
    }

    /// Issues a fresh certificate for the node presenting a valid one.
    pub async fn renew(
        &self,
        id: &crate::auth::pki::Identity,
        csr: &str,
        source: &str,
    ) -> Result<(String, String, DateTime<Utc>), ServiceError> {
        let tls = self
            .tls
            .as_ref()
            .ok_or_else(|| ServiceError::Conflict("no TLS".into()))?;
        let site = self
            .fleet
            .site(&id.site)
            .ok_or_else(|| ServiceError::NotFound(format!("site {}", id.site)))?;
        let who = Caller {
            actor: format!("node:{}/{}", id.site, id.name),
            role: Role::SchoolAdmin,
            sites: vec![site.id],
            source: source.to_string(),
            token_id: None,
        };
        let op = async {
            let valid = time::Duration::days(self.cfg.security.client_cert_days as i64);
            let (cert, serial, not_after) = tls
                .ca
                .sign_client(csr, &id.kind, &id.site, &id.name, valid)
                .map_err(|e| ServiceError::field("csr", e.to_string()))?;
            let not_after =
                DateTime::<Utc>::from_timestamp(not_after.unix_timestamp(), 0).unwrap_or_default();
            self.store
                .insert_node_cert(&serial, &id.kind, site.id, &id.name, not_after, None)
                .await?;
            Ok((cert, tls.ca.cert_pem.clone(), not_after))
        };
        self.audited(
            &who,
            "node.renew",
            |_| format!("{}/{}", id.site, id.name),
            &id.name,
            op,
        )
        .await
    }

    pub fn find_node(&self, key: &str) -> Option<crate::fleet::LiveNode> {
        if let Ok(id) = key.parse::<Uuid>() {
            return self.fleet.node(id);
        }
        let (site, name) = key.split_once('/')?;
        let site = self.fleet.site(site)?;
        self.fleet
            .nodes()
            .into_iter()
            .find(|n| n.site_id == site.id && n.name == name)
    }
}

/// The first district-admin token of a region, minted from the server's own
/// shell (`classgrid-broker admin-token`), where no token exists yet to
/// authorise it. Audited as `bootstrap`.
pub async fn bootstrap_admin_token(
    store: &crate::store::Store,
    name: &str,
) -> anyhow::Result<String> {
    let id = Uuid::now_v7();
    let secret = tokens::new_secret();
    store
        .insert_api_token(&ApiTokenRow {
            id,
            name: name.chars().take(128).collect(),
            role: "district_admin".into(),
            sites: Vec::new(),
            secret_sha256: tokens::digest(&secret),
            created_by: "bootstrap".into(),
            created_at: Utc::now(),
            expires_at: None,
            revoked_at: None,
        })
        .await?;
    store
        .append_audit(&AuditEntry {
            actor: "bootstrap",
            role: "district_admin",
            action: "token.create",
            target: &format!("token:{id}"),
            source: "local",
            result: "ok",
            detail: "district_admin token minted on the server",
        })
        .await?;
    Ok(tokens::format_api(id, &secret))
}

/// Issues a school edge's seat-links certificate from the region CA
/// (`classgrid-broker edge-cert`), audited as `bootstrap` like the other
/// commands run on the server itself.
pub async fn issue_edge_cert(
    cfg: &crate::config::BrokerConfig,
    names: &[String],
    out: &std::path::Path,
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    for n in names {
        let ok = !n.is_empty()
            && n.len() <= 253
            && (n.parse::<std::net::IpAddr>().is_ok()
                || n.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                }));
        anyhow::ensure!(
            ok,
            "--name `{n}`: must be a DNS name (letters, digits, hyphens, dots) or an IP address"
        );
    }
    let store = crate::store::Store::connect(&cfg.database_url).await?;
    store.migrate().await?;
    std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("--out {}: {e}", out.display()))?;
    let ca = crate::auth::pki::Ca::load_or_create(&cfg.security.data_dir)?;
    let (cert, key) = (out.join("seat-links.pem"), out.join("seat-links.key"));
    ca.issue_server("classgrid edge seat links", names, &cert, &key)?;
    store
        .append_audit(&AuditEntry {
            actor: "bootstrap",
            role: "district_admin",
            action: "edge_cert.issue",
            target: &format!("names:{}", names.join(",")),
            source: "local",
            result: "ok",
            detail: "seat links certificate issued on the server",
        })
        .await?;
    Ok((cert, key))
}
