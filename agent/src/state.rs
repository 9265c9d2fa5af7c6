//! What the agent runs, persisted so that a restarted agent adopts its
//! still-running processes instead of restarting them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub id: String,
    pub generation: i64,
    pub kind: String,
    pub pid: i32,
    /// The process's start time in clock ticks since boot (from /proc), so a
    /// recycled pid is never mistaken for our process.
    pub start_ticks: u64,
    pub port: u16,
    pub endpoint: String,
    pub ends_unix_ms: i64,
    pub grace_seconds: i32,
    pub log_path: PathBuf,
    pub started_unix_ms: i64,
    /// Share of accelerators held, for slice-seconds.
    pub slice_fraction: f64,
}

pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            path: dir.join("assignments.json"),
        })
    }

    /// Records from the last run; an unreadable file is reported and ignored,
    /// since the broker re-sends whatever should be running.
    pub fn load(&self) -> (Vec<Record>, Option<String>) {
        match std::fs::read(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), None),
            Err(e) => (Vec::new(), Some(format!("{}: {e}", self.path.display()))),
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(v) => (v, None),
                Err(e) => (Vec::new(), Some(format!("{}: {e}", self.path.display()))),
            },
        }
    }

    /// Writes atomically: a crash leaves the old file or the new one.
    pub fn save(&self, records: &[Record]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(records)?)?;
        std::fs::rename(tmp, &self.path)
    }
}
