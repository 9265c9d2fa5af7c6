//! District-admin commands: API and join tokens, node certificates, users,
//! and the audit log.

use clap::Subcommand;
use classgrid_proto::v1::{self as pb, admin_service_client::AdminServiceClient};
use serde_json::json;

use crate::{
    client::{Global, Output},
    parse::{parse_duration, parse_time, ts},
};

#[derive(Subcommand)]
pub enum Tokens {
    /// Create an API token for a platform or an admin. The secret is shown once.
    Create {
        /// platform, school_admin or district_admin
        #[arg(long)]
        role: String,
        /// Site the token may see (repeatable); required unless district_admin.
        #[arg(long = "site")]
        sites: Vec<String>,
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime (e.g. 90d is not accepted; use seconds or 2160h); 0 = never expires.
        #[arg(long, default_value = "0")]
        ttl: String,
    },
    List,
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum JoinTokens {
    /// Create a join token for agents (or edges) of one site. The secret is shown once.
    Create {
        #[arg(long)]
        site: String,
        /// agent or edge
        #[arg(long, default_value = "agent")]
        kind: String,
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// How many nodes may join with it.
        #[arg(long, default_value_t = 1)]
        uses: i32,
        /// Nodes joining with it wait for `classgrid nodes approve` before
        /// work is placed on them. Without the flag the broker's
        /// `[join] require_approval` decides; `--require-approval=false`
        /// overrides a broker that requires it.
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "true|false")]
        require_approval: Option<bool>,
    },
    List,
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum Users {
    /// Create a console user (the password is read from CLASSGRID_PASSWORD).
    Create {
        username: String,
        /// school_admin or district_admin
        #[arg(long)]
        role: String,
        #[arg(long = "site")]
        sites: Vec<String>,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    #[arg(long)]
    pub actor: Option<String>,
    /// Action prefix, e.g. `lesson.` or `token.revoke`.
    #[arg(long)]
    pub action: Option<String>,
    #[arg(long)]
    pub target: Option<String>,
    /// RFC 3339 time, or relative to now with a minus sign (-1h).
    // `-1h` starts with a hyphen, which clap would take for a flag without this.
    #[arg(long, allow_hyphen_values = true)]
    pub since: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: i32,
}

fn time(t: Option<&prost_types::Timestamp>) -> String {
    crate::tz::show(t)
}

fn print_secret(o: Output, s: &pb::CreatedSecret, what: &str) {
    if o == Output::Json {
        println!(
            "{}",
            json!({"id": s.id, "secret": s.secret, "expires": time(s.expires.as_ref())})
        );
    } else {
        println!("{what} {} created; it is shown only now:", s.id);
        println!("{}", s.secret);
    }
}

pub async fn tokens(g: &Global, c: Tokens) -> anyhow::Result<()> {
    let mut client = AdminServiceClient::new(g.channel().await?);
    match c {
        Tokens::Create {
            role,
            sites,
            name,
            ttl,
        } => {
            let ttl_seconds = parse_duration("--ttl", &ttl)?;
            let s = client
                .create_api_token(pb::CreateApiTokenRequest {
                    name,
                    role,
                    sites,
                    ttl_seconds,
                })
                .await?
                .into_inner();
            print_secret(g.output, &s, "token");
        }
        Tokens::List => {
            let r = client
                .list_api_tokens(pb::ListApiTokensRequest {})
                .await?
                .into_inner();
            for t in r.tokens {
                if g.output == Output::Json {
                    println!(
                        "{}",
                        json!({"id": t.id, "name": t.name, "role": t.role, "sites": t.sites, "created_by": t.created_by,
                        "created": time(t.created.as_ref()), "expires": time(t.expires.as_ref()), "revoked": time(t.revoked.as_ref())})
                    );
                } else {
                    let state = if t.revoked.is_some() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{}  {:<14} {:<8} sites={} expires={} {}",
                        t.id,
                        t.role,
                        state,
                        t.sites.join(","),
                        time(t.expires.as_ref()),
                        t.name
                    );
                }
            }
        }
        Tokens::Revoke { id } => {
            let t = client
                .revoke_api_token(pb::RevokeRequest { id })
                .await?
                .into_inner();
            println!("token {} revoked", t.id);
        }
    }
    Ok(())
}

pub async fn join_tokens(g: &Global, c: JoinTokens) -> anyhow::Result<()> {
    let mut client = AdminServiceClient::new(g.channel().await?);
    match c {
        JoinTokens::Create {
            site,
            kind,
            ttl,
            uses,
            require_approval,
        } => {
            let ttl_seconds = parse_duration("--ttl", &ttl)?;
            let s = client
                .create_join_token(pb::CreateJoinTokenRequest {
                    site,
                    kind,
                    ttl_seconds,
                    uses,
                    require_approval,
                })
                .await?
                .into_inner();
            print_secret(g.output, &s, "join token");
            if g.output == Output::Table {
                // The address this command reached the broker at: the one
                // a node on the same network uses too.
                let broker = g
                    .context()
                    .map(|c| c.grpc_url)
                    .unwrap_or_else(|_| "https://BROKER:7443".into());
                println!(
                    "On the node: classgrid-agent join --broker {broker} --token <the token above>"
                );
            }
        }
        JoinTokens::List => {
            let r = client
                .list_join_tokens(pb::ListJoinTokensRequest {})
                .await?
                .into_inner();
            for t in r.tokens {
                if g.output == Output::Json {
                    println!(
                        "{}",
                        json!({"id": t.id, "site": t.site, "kind": t.kind, "uses_left": t.uses_left, "require_approval": t.require_approval, "expires": time(t.expires.as_ref()), "revoked": time(t.revoked.as_ref())})
                    );
                } else {
                    println!(
                        "{}  site={} kind={} uses_left={} expires={}{}{}",
                        t.id,
                        t.site,
                        t.kind,
                        t.uses_left,
                        time(t.expires.as_ref()),
                        if t.require_approval {
                            " require_approval"
                        } else {
                            ""
                        },
                        if t.revoked.is_some() { " revoked" } else { "" }
                    );
                }
            }
        }
        JoinTokens::Revoke { id } => {
            let t = client
                .revoke_join_token(pb::RevokeRequest { id })
                .await?
                .into_inner();
            println!("join token {} revoked", t.id);
        }
    }
    Ok(())
}

pub async fn revoke_node(g: &Global, node: String) -> anyhow::Result<()> {
    let mut client = AdminServiceClient::new(g.channel().await?);
    let r = client
        .revoke_node(pb::RevokeNodeRequest { node: node.clone() })
        .await?
        .into_inner();
    println!(
        "node {node}: {} certificate(s) revoked; its agent was disconnected",
        r.certificates_revoked
    );
    Ok(())
}

pub async fn users(g: &Global, c: Users) -> anyhow::Result<()> {
    let mut client = AdminServiceClient::new(g.channel().await?);
    let Users::Create {
        username,
        role,
        sites,
    } = c;
    let password = std::env::var("CLASSGRID_PASSWORD")
        .map_err(|_| crate::client::input("set the new user's password in CLASSGRID_PASSWORD"))?;
    let u = client
        .create_user(pb::CreateUserRequest {
            username,
            password,
            role,
            sites,
        })
        .await?
        .into_inner();
    println!("user {} ({}) created", u.username, u.role);
    Ok(())
}

/// `classgrid status`: the replicas, which one leads, since when.
pub async fn status(g: &Global) -> anyhow::Result<()> {
    let mut client = AdminServiceClient::new(g.channel().await?);
    let r = client.status(pb::StatusRequest {}).await?.into_inner();
    if g.output == Output::Json {
        let replicas: Vec<_> = r
            .replicas
            .iter()
            .map(|x| {
                json!({"name": x.name, "role": x.role, "grpc_addr": x.grpc_addr, "http_addr": x.http_addr,
                       "started_at": time(x.started_at.as_ref()), "seen_at": time(x.seen_at.as_ref())})
            })
            .collect();
        println!(
            "{}",
            json!({"leader": r.leader, "epoch": r.epoch, "leader_since": time(r.leader_since.as_ref()),
                   "answered_by": r.answered_by, "replicas": replicas})
        );
        return Ok(());
    }
    println!(
        "leader: {} (epoch {}) since {}",
        r.leader,
        r.epoch,
        time(r.leader_since.as_ref())
    );
    println!(
        "{:<24} {:<8} {:<22} {:<22} {}",
        "REPLICA", "ROLE", "GRPC", "HTTP", "SEEN"
    );
    for x in &r.replicas {
        println!(
            "{:<24} {:<8} {:<22} {:<22} {}",
            x.name,
            x.role,
            x.grpc_addr,
            x.http_addr,
            time(x.seen_at.as_ref())
        );
    }
    Ok(())
}

pub async fn audit(g: &Global, a: AuditArgs) -> anyhow::Result<()> {
    let mut client = AdminServiceClient::new(g.channel().await?);
    let since = match a.since.as_deref() {
        None => None,
        Some(s) => Some(ts(match s.strip_prefix('-') {
            Some(rel) => {
                chrono::Utc::now() - chrono::Duration::seconds(parse_duration("--since", rel)?)
            }
            None => parse_time("--since", s)?,
        })),
    };
    let r = client
        .list_audit(pb::ListAuditRequest {
            actor: a.actor.unwrap_or_default(),
            action: a.action.unwrap_or_default(),
            target: a.target.unwrap_or_default(),
            since,
            limit: a.limit,
        })
        .await?
        .into_inner();
    for e in r.entries {
        if g.output == Output::Json {
            println!(
                "{}",
                json!({"id": e.id, "at": time(e.at.as_ref()), "actor": e.actor, "role": e.role, "action": e.action,
                "target": e.target, "source": e.source, "result": e.result, "detail": e.detail})
            );
        } else {
            println!(
                "{}  {:<30} {:<18} {:<40} {:<6} {} {}",
                time(e.at.as_ref()),
                e.actor,
                e.action,
                e.target,
                e.result,
                e.source,
                e.detail
            );
        }
    }
    Ok(())
}
