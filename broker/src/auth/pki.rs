//! The region's private CA: created on first start unless the operator brings
//! certificates, it signs the broker's server certificate and the client
//! certificates agents and edges get when they join.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

pub struct Ca {
    pub cert_pem: String,
    pub cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

/// What a client certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `agent` or `edge`.
    pub kind: String,
    pub site: String,
    pub name: String,
    pub serial: String,
}

/// SAN URI that binds a client certificate to one node of one site.
pub fn identity_uri(kind: &str, site: &str, name: &str) -> String {
    format!("classgrid://{kind}/{site}/{name}")
}

pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn pem_to_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    Ok(CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?
        .to_vec())
}

impl Ca {
    /// Loads `ca.pem`/`ca.key` from `dir`, creating them on first start.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if cert_path.exists() && key_path.exists() {
            let cert_pem = std::fs::read_to_string(&cert_path)?;
            let key = KeyPair::from_pem(&std::fs::read_to_string(&key_path)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", key_path.display()))?;
            let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
                .map_err(|e| anyhow::anyhow!("{}: {e}", cert_path.display()))?;
            return Ok(Self {
                cert_der: pem_to_der(&cert_pem)?,
                cert_pem,
                issuer,
            });
        }
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "classgrid region CA");
        dn.push(DnType::OrganizationName, "classgrid");
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        p.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        p.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
        let cert = p.self_signed(&key)?;
        write_private(&key_path, &key.serialize_pem())?;
        std::fs::write(&cert_path, cert.pem())?;
        let cert_pem = cert.pem();
        let issuer = Issuer::new(p, key);
        Ok(Self {
            cert_der: cert.der().to_vec(),
            cert_pem,
            issuer,
        })
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// A server certificate for the broker's names, written next to the CA.
    pub fn server_cert(&self, dir: &Path, names: &[String]) -> anyhow::Result<(PathBuf, PathBuf)> {
        let (cp, kp) = (dir.join("server.pem"), dir.join("server.key"));
        self.issue_server("classgrid broker", names, &cp, &kp)?;
        Ok((cp, kp))
    }

    /// A server certificate for `names` (DNS names or IP addresses), written
    /// as `cert_path` (the certificate, then the CA: the chain carries the CA
    /// so that clients can pin it by fingerprint) and `key_path` (0600).
    pub fn issue_server(
        &self,
        common_name: &str,
        names: &[String],
        cert_path: &Path,
        key_path: &Path,
    ) -> anyhow::Result<()> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(names.to_vec())?;
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        p.not_after = OffsetDateTime::now_utc() + Duration::days(825);
        let cert = p.signed_by(&key, &self.issuer)?;
        std::fs::write(cert_path, format!("{}{}", cert.pem(), self.cert_pem))?;
        write_private(key_path, &key.serialize_pem())?;
        Ok(())
    }

    /// Signs a joining node's CSR. The identity comes from the join token,
    /// never from the CSR: whatever names the CSR asks for are replaced.
    pub fn sign_client(
        &self,
        csr_pem: &str,
        kind: &str,
        site: &str,
        name: &str,
        valid: Duration,
    ) -> anyhow::Result<(String, String, OffsetDateTime)> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| anyhow::anyhow!("csr: not a valid PEM certificate request: {e}"))?;
        let mut serial: [u8; 16] = rand::random();
        // Positive and without a leading zero byte, so the DER encoding and
        // the stored hex agree byte for byte.
        serial[0] = (serial[0] & 0x7f) | 0x01;
        let not_after = OffsetDateTime::now_utc() + valid;
        let p = &mut csr.params;
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, format!("{kind}:{site}/{name}"));
        p.subject_alt_names = vec![SanType::URI(identity_uri(kind, site, name).try_into()?)];
        p.is_ca = IsCa::NoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
        p.not_after = not_after;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = csr.signed_by(&self.issuer)?;
        Ok((cert.pem(), hex::encode(serial), not_after))
    }
}

/// Reads the identity from a verified client certificate (DER).
pub fn client_identity(der: &[u8]) -> anyhow::Result<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow::anyhow!("client certificate: {e}"))?;
    let raw = cert.raw_serial();
    let first = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let serial = hex::encode(&raw[first..]);
    let san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .ok_or_else(|| anyhow::anyhow!("client certificate has no classgrid identity"))?;
    for n in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = n {
            if let Some(rest) = uri.strip_prefix("classgrid://") {
                let mut parts = rest.splitn(3, '/');
                if let (Some(kind), Some(site), Some(name)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    return Ok(Identity {
                        kind: kind.into(),
                        site: site.into(),
                        name: name.into(),
                        serial,
                    });
                }
            }
        }
    }
    anyhow::bail!("client certificate has no classgrid identity")
}

pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}
