//! The client side of the region's TLS: trusting the broker's CA (given as a
//! file, or pinned by the fingerprint a join token carries), and presenting a
//! node's client certificate.

use std::{path::Path, sync::Arc};

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// A new key pair and a certificate request for a joining agent or edge.
pub fn new_csr(name: &str) -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let csr = p.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// TLS settings for a gRPC channel: trust `ca_pem`, and present a client
/// certificate when one is given.
pub fn client_config(
    url: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> anyhow::Result<ClientTlsConfig> {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', ':']).next())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| anyhow::anyhow!("broker URL `{url}` has no host"))?;
    let mut cfg = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name(host);
    if let Some((cert, key)) = identity {
        cfg = cfg.identity(Identity::from_pem(cert, key));
    }
    Ok(cfg)
}

/// Connects to the broker over TLS once (directly, or through the site
/// relay when `relay` is given), accepting it only if the CA at the end of
/// its certificate chain has the expected SHA-256 fingerprint and that CA
/// really signed the server certificate. Returns the CA in PEM, to be
/// trusted from then on (kubeadm's and k3s's CA-hash pinning).
pub async fn fetch_pinned_ca(
    url: &str,
    expected_fingerprint: &str,
    relay: Option<&str>,
) -> anyhow::Result<String> {
    let hostport = crate::dial::host_port(url)?;
    let host = hostport
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(hostport)
        .trim_matches(['[', ']'])
        .to_string();
    let verifier = Arc::new(PinnedCa {
        expected: expected_fingerprint.to_ascii_lowercase(),
        seen: Default::default(),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = crate::dial::tcp(url, relay).await?;
    let name = ServerName::try_from(host.clone())
        .map_err(|e| anyhow::anyhow!("broker host `{host}`: {e}"))?;
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| anyhow::anyhow!("TLS to {hostport}: {e}"))?;
    let der = verifier
        .seen
        .lock()
        .expect("lock")
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the broker sent no CA certificate"))?;
    Ok(pem::encode(&pem::Pem::new("CERTIFICATE", der)))
}

#[derive(Debug)]
struct PinnedCa {
    expected: String,
    seen: std::sync::Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates.last().ok_or_else(|| {
            rustls::Error::General("the broker's chain carries no CA certificate".into())
        })?;
        if fingerprint(ca) != self.expected {
            return Err(rustls::Error::General(format!(
                "the broker's CA fingerprint {} does not match the join token's {}",
                fingerprint(ca),
                self.expected
            )));
        }
        // The pinned CA must really have issued the server certificate.
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.clone())
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(
            end_entity,
            &intermediates[..intermediates.len() - 1],
            server_name,
            &[],
            now,
        )?;
        *self.seen.lock().expect("lock") = Some(ca.to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Files a joined node keeps in its state folder.
pub struct NodeTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl NodeTls {
    pub fn load(dir: &Path) -> Option<Self> {
        Some(Self {
            ca_pem: std::fs::read_to_string(dir.join("ca.pem")).ok()?,
            cert_pem: std::fs::read_to_string(dir.join("node.pem")).ok()?,
            key_pem: std::fs::read_to_string(dir.join("node.key")).ok()?,
        })
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("ca.pem"), &self.ca_pem)?;
        // The new certificate is written after the key, each atomically, so a
        // crash mid-rotation leaves a usable pair or the old one.
        let tmp = dir.join("node.key.tmp");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(self.key_pem.as_bytes())?;
        let tmp_cert = dir.join("node.pem.tmp");
        std::fs::write(&tmp_cert, &self.cert_pem)?;
        std::fs::rename(tmp, dir.join("node.key"))?;
        std::fs::rename(tmp_cert, dir.join("node.pem"))
    }
}
