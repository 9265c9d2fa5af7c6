//! The broker's server-side TLS: the region CA in the data folder (created on
//! first start, or the operator's own), and a server certificate for the
//! broker's names. Clients that hold a certificate from this CA (agents,
//! edges) are verified; others authenticate with bearer tokens.

use std::path::Path;

use super::pki::Ca;

pub struct ServerTls {
    pub ca: Ca,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Names the generated server certificate covers, besides `--tls-san`.
fn default_names() -> Vec<String> {
    let mut v = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            v.push(h.to_string());
        }
    }
    v
}

pub fn prepare(
    data_dir: &Path,
    tls_cert: Option<&Path>,
    tls_key: Option<&Path>,
    extra_names: &[String],
) -> anyhow::Result<ServerTls> {
    let ca = Ca::load_or_create(data_dir)?;
    let (cert_pem, key_pem) = match (tls_cert, tls_key) {
        (Some(c), Some(k)) => (
            std::fs::read_to_string(c)
                .map_err(|e| anyhow::anyhow!("tls_cert {}: {e}", c.display()))?,
            std::fs::read_to_string(k)
                .map_err(|e| anyhow::anyhow!("tls_key {}: {e}", k.display()))?,
        ),
        (None, None) => {
            let mut names = default_names();
            names.extend(extra_names.iter().cloned());
            names.sort();
            names.dedup();
            let names_file = data_dir.join("server.names");
            let wanted = names.join("\n");
            let (cp, kp) = (data_dir.join("server.pem"), data_dir.join("server.key"));
            let current = std::fs::read_to_string(&names_file).unwrap_or_default();
            if !cp.exists() || !kp.exists() || current != wanted {
                ca.server_cert(data_dir, &names)?;
                std::fs::write(&names_file, &wanted)?;
            }
            (std::fs::read_to_string(cp)?, std::fs::read_to_string(kp)?)
        }
        _ => anyhow::bail!("tls_cert and tls_key: give both or neither"),
    };
    Ok(ServerTls {
        ca,
        cert_pem,
        key_pem,
    })
}
