//! Joining a region as an agent or edge, and renewing the certificate: the
//! same steps for both, in the manner of kubeadm and k3s.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use classgrid_proto::v1::{self as pb, join_service_client::JoinServiceClient};
use serde::{Deserialize, Serialize};

use crate::tls::{self, NodeTls};

/// What `join` leaves in the state folder, so `run` needs no more flags.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Joined {
    pub broker: String,
    pub site: String,
    pub name: String,
    pub issued: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// The site relay the join went through; `run` uses it unless told
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
}

pub fn tls_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("tls")
}

impl Joined {
    pub fn load(state_dir: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(state_dir.join("join.json")).ok()?).ok()
    }

    fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(state_dir)?;
        std::fs::write(
            state_dir.join("join.json"),
            serde_json::to_vec_pretty(self)?,
        )?;
        Ok(())
    }

    /// Renew once two thirds of the certificate's life has passed.
    pub fn renew_due(&self, now: DateTime<Utc>) -> bool {
        let life = self.not_after - self.issued;
        now >= self.issued + life * 2 / 3
    }
}

fn ts(t: Option<&prost_types::Timestamp>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.seconds, 0))
        .unwrap_or_else(Utc::now)
}

/// Joins with a join token: pins the broker's CA by the fingerprint the
/// token carries, sends a certificate request, and stores the certificate.
/// With `relay`, every connection goes through the site edge's relay.
pub async fn join(
    broker: &str,
    token: &str,
    name: &str,
    state_dir: &Path,
    relay: Option<&str>,
) -> anyhow::Result<Joined> {
    if !broker.starts_with("https://") {
        anyhow::bail!("--broker: joining needs the broker's https:// address, not `{broker}`");
    }
    let fp = token
        .strip_prefix("cgjoin_")
        .and_then(|r| r.split('_').next())
        .filter(|f| f.len() == 64)
        .ok_or_else(|| anyhow::anyhow!("--token: not a classgrid join token (cgjoin_…)"))?;
    let ca = tls::fetch_pinned_ca(broker, fp, relay).await?;
    let (key, csr) = tls::new_csr(name)?;
    let ch = crate::dial::connect(
        tonic::transport::Endpoint::from_shared(broker.to_string())?
            .tls_config(tls::client_config(broker, &ca, None)?)?,
        relay,
    )
    .await?;
    let r = JoinServiceClient::new(ch)
        .join(pb::JoinRequest {
            token: token.to_string(),
            name: name.to_string(),
            csr,
        })
        .await
        .map_err(|s| anyhow::anyhow!("the broker refused the join: {}", s.message()))?
        .into_inner();
    NodeTls {
        ca_pem: r.ca,
        cert_pem: r.certificate,
        key_pem: key,
    }
    .save(&tls_dir(state_dir))?;
    let j = Joined {
        broker: broker.to_string(),
        site: r.site,
        name: r.name,
        issued: Utc::now(),
        not_after: ts(r.not_after.as_ref()),
        relay: relay.map(str::to_string),
    };
    j.save(state_dir)?;
    Ok(j)
}

/// Gets a fresh certificate with the current one; the next connection uses it.
pub async fn renew(state_dir: &Path, relay: Option<&str>) -> anyhow::Result<Joined> {
    let j = Joined::load(state_dir).ok_or_else(|| anyhow::anyhow!("not joined"))?;
    let cur = NodeTls::load(&tls_dir(state_dir))
        .ok_or_else(|| anyhow::anyhow!("no certificate in {}", tls_dir(state_dir).display()))?;
    let (key, csr) = tls::new_csr(&j.name)?;
    let ch = crate::dial::connect(
        tonic::transport::Endpoint::from_shared(j.broker.clone())?.tls_config(
            tls::client_config(&j.broker, &cur.ca_pem, Some((&cur.cert_pem, &cur.key_pem)))?,
        )?,
        relay,
    )
    .await?;
    let r = JoinServiceClient::new(ch)
        .renew(pb::RenewRequest { csr })
        .await?
        .into_inner();
    NodeTls {
        ca_pem: r.ca,
        cert_pem: r.certificate,
        key_pem: key,
    }
    .save(&tls_dir(state_dir))?;
    let j = Joined {
        issued: Utc::now(),
        not_after: ts(r.not_after.as_ref()),
        ..j
    };
    j.save(state_dir)?;
    Ok(j)
}

/// A channel to the broker: mTLS with the node's certificate for https://,
/// plain for http:// (the broker must then run with --insecure-dev); through
/// the site relay when `relay` is given.
pub async fn channel(
    broker: &str,
    state_dir: &Path,
    relay: Option<&str>,
) -> anyhow::Result<tonic::transport::Channel> {
    let mut ep = tonic::transport::Endpoint::from_shared(broker.to_string())?
        .connect_timeout(std::time::Duration::from_secs(5))
        .http2_keep_alive_interval(std::time::Duration::from_secs(10))
        .keep_alive_timeout(std::time::Duration::from_secs(5));
    if broker.starts_with("https://") {
        let t = NodeTls::load(&tls_dir(state_dir)).ok_or_else(|| {
            anyhow::anyhow!(
                "no node certificate in {}: run `join` with a join token first",
                tls_dir(state_dir).display()
            )
        })?;
        ep = ep.tls_config(tls::client_config(
            broker,
            &t.ca_pem,
            Some((&t.cert_pem, &t.key_pem)),
        )?)?;
    }
    crate::dial::connect(ep, relay).await
}
