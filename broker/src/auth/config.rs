//! Security settings: where the CA lives, the server certificate, the
//! plain-text escape hatch, the per-token rate limit, and whether joining
//! nodes wait for approval.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    /// Folder for the region CA and server certificate (created on first start).
    #[arg(long, env = "CLASSGRID_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Server certificate chain (PEM) to use instead of a generated one.
    #[arg(long, env = "CLASSGRID_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "CLASSGRID_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Extra DNS names or IPs for the generated server certificate (repeatable).
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
    /// Serve gRPC and HTTP in plain text and accept agents without
    /// certificates. For development only; a warning is logged.
    #[arg(long, env = "CLASSGRID_INSECURE_DEV")]
    pub insecure_dev: bool,
    /// Requests per second allowed per API token (bursts of twice that).
    #[arg(long, env = "CLASSGRID_RATE_LIMIT_PER_S")]
    pub rate_limit_per_s: Option<u32>,
    /// Validity of node certificates issued at join, days.
    #[arg(long, env = "CLASSGRID_CLIENT_CERT_DAYS")]
    pub client_cert_days: Option<u32>,
    /// Whether nodes joining with a join token that does not say wait for a
    /// district admin's approval before placement uses them (`[join]
    /// require_approval` in the file).
    #[arg(
        long,
        env = "CLASSGRID_JOIN_REQUIRE_APPROVAL",
        value_name = "true|false"
    )]
    pub join_require_approval: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityFile {
    pub data_dir: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_san: Option<Vec<String>>,
    pub insecure_dev: Option<bool>,
    pub rate_limit_per_s: Option<u32>,
    pub client_cert_days: Option<u32>,
}

/// `[join]` in the TOML file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinFile {
    pub require_approval: Option<bool>,
}

/// How nodes join (decision 064).
#[derive(Debug, Clone, Copy)]
pub struct JoinConfig {
    /// The default for join tokens created without saying. Off by default,
    /// so that `scripts/up.sh` stays one command: issuing the token is then
    /// the approval (decision 061).
    pub require_approval: bool,
}

impl JoinConfig {
    pub fn resolve(a: &SecurityArgs, f: Option<&JoinFile>) -> Self {
        Self {
            require_approval: classgrid_common::config::pick(
                a.join_require_approval,
                f.and_then(|f| f.require_approval),
                false,
            ),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SecurityConfig {
    pub data_dir: PathBuf,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_san: Vec<String>,
    pub insecure_dev: bool,
    pub rate_limit_per_s: u32,
    pub client_cert_days: u32,
}

impl SecurityConfig {
    pub fn resolve(a: &SecurityArgs, f: Option<&SecurityFile>) -> anyhow::Result<Self> {
        let f = f.cloned().unwrap_or_default();
        let rate = a.rate_limit_per_s.or(f.rate_limit_per_s).unwrap_or(50);
        if rate == 0 {
            anyhow::bail!("rate_limit_per_s: must be at least 1");
        }
        let days = a.client_cert_days.or(f.client_cert_days).unwrap_or(30);
        if !(1..=825).contains(&days) {
            anyhow::bail!("client_cert_days: must be between 1 and 825");
        }
        Ok(Self {
            data_dir: a
                .data_dir
                .clone()
                .or(f.data_dir)
                .unwrap_or_else(|| classgrid_common::context::home().join("broker")),
            tls_cert: a.tls_cert.clone().or(f.tls_cert),
            tls_key: a.tls_key.clone().or(f.tls_key),
            tls_san: if a.tls_san.is_empty() {
                f.tls_san.unwrap_or_default()
            } else {
                a.tls_san.clone()
            },
            insecure_dev: a.insecure_dev || f.insecure_dev.unwrap_or(false),
            rate_limit_per_s: rate,
            client_cert_days: days,
        })
    }
}
