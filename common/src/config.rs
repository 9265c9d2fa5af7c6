//! Configuration precedence, the same for every binary:
//! command-line flag > `CLASSGRID_*` environment variable > TOML file > default.
//!
//! clap resolves flags and environment variables; values it leaves unset are
//! taken from the TOML file named by `--config` (or `CLASSGRID_CONFIG`).

use std::path::Path;

use serde::de::DeserializeOwned;

/// Reads a TOML config file into `T`. Unknown keys are refused so that a typo
/// is reported instead of silently ignored; the error names the file, the line
/// and the key.
pub fn load_file<T: DeserializeOwned + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
}

/// Picks the first value that is set, in precedence order.
pub fn pick<T>(flag_or_env: Option<T>, file: Option<T>, default: T) -> T {
    flag_or_env.or(file).unwrap_or(default)
}
