//! The client context file (`$CLASSGRID_HOME/context.toml`), in the manner of
//! a kubeconfig: where the broker is and how to authenticate. `classgrid up`
//! writes it; `classgrid` and third-party tools read it by default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Context {
    pub http_url: String,
    pub grpc_url: String,
    pub token: String,
    pub ca_file: String,
}

/// `$CLASSGRID_HOME`, or `~/.classgrid`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("CLASSGRID_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let base = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    base.join(".classgrid")
}

pub fn default_path() -> PathBuf {
    home().join("context.toml")
}

impl Context {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("context file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("context file {}: {e}", path.display()))
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, toml::to_string(self)?)?;
        Ok(())
    }
}
