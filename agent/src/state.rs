//! What the agent runs, persisted so that a restarted agent adopts its
//! still-running work (in any runtime) instead of restarting it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::Handle;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub id: String,
    pub generation: i64,
    pub kind: String,
    /// The runtime kind and what names the work there (pid, container id,
    /// Slurm job id, pod), flattened: `{"runtime": "process", "pid": ...}`.
    #[serde(flatten)]
    pub handle: Handle,
    pub port: u16,
    pub endpoint: String,
    pub ends_unix_ms: i64,
    pub grace_seconds: i32,
    #[serde(default)]
    pub work_dir: PathBuf,
    pub started_unix_ms: i64,
    /// Share of accelerators held, for slice-seconds.
    pub slice_fraction: f64,
    /// The capacity slots of the devices held, for measured utilisation.
    #[serde(default)]
    pub slots: Vec<usize>,
    /// The broker's `Assign`, protobuf-encoded, so that a seat whose process
    /// dies can be started again the same way even while the broker is away
    /// and after this agent restarted.
    #[serde(default)]
    pub assign: Vec<u8>,
}

pub struct StateFile {
    path: PathBuf,
}

/// Records written before runtimes other than process existed carry no
/// `runtime` tag; they are process records.
fn upgrade(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(items) = v.as_array_mut() {
        for r in items.iter_mut().filter_map(|r| r.as_object_mut()) {
            r.entry("runtime").or_insert_with(|| "process".into());
        }
    }
    v
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
        let parsed = match std::fs::read(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), None),
            Err(e) => return (Vec::new(), Some(format!("{}: {e}", self.path.display()))),
            Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
                .and_then(|v| serde_json::from_value(upgrade(v))),
        };
        match parsed {
            Ok(v) => (v, None),
            Err(e) => (Vec::new(), Some(format!("{}: {e}", self.path.display()))),
        }
    }

    /// Writes atomically: a crash leaves the old file or the new one.
    pub fn save(&self, records: &[Record]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(records)?)?;
        std::fs::rename(tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_from_before_runtimes_load_as_process_records() {
        let dir = std::env::temp_dir().join(format!("cg-state-{}", uuid::Uuid::new_v4().simple()));
        let f = StateFile::new(&dir).unwrap();
        std::fs::write(
            dir.join("assignments.json"),
            r#"[{"id":"a","generation":2,"kind":"seat","pid":42,"start_ticks":7,"port":9,
                "endpoint":"http://h:9","ends_unix_ms":1,"grace_seconds":5,
                "log_path":"/x/output.log","started_unix_ms":0,"slice_fraction":0.5}]"#,
        )
        .unwrap();
        let (recs, problem) = f.load();
        assert!(problem.is_none(), "{problem:?}");
        assert_eq!(
            recs[0].handle,
            Handle::Process {
                pid: 42,
                start_ticks: 7
            }
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn every_runtime_handle_survives_a_save_and_load() {
        let dir = std::env::temp_dir().join(format!("cg-state-{}", uuid::Uuid::new_v4().simple()));
        let f = StateFile::new(&dir).unwrap();
        let handles = [
            Handle::Process {
                pid: 1,
                start_ticks: 2,
            },
            Handle::Container {
                container_id: "c0ffee".into(),
            },
            Handle::Slurm {
                job_id: "17".into(),
            },
            Handle::Kubernetes {
                namespace: "ns".into(),
                pod_name: "classgrid-x".into(),
            },
        ];
        let recs: Vec<Record> = handles
            .iter()
            .enumerate()
            .map(|(i, h)| Record {
                id: format!("a{i}"),
                generation: 1,
                kind: "seat".into(),
                handle: h.clone(),
                port: 80,
                endpoint: String::new(),
                ends_unix_ms: 0,
                grace_seconds: 1,
                work_dir: PathBuf::new(),
                started_unix_ms: 0,
                slice_fraction: 0.0,
                assign: Vec::new(),
                slots: vec![0],
            })
            .collect();
        f.save(&recs).unwrap();
        assert_eq!(f.load().0, recs);
        let text = std::fs::read_to_string(dir.join("assignments.json")).unwrap();
        assert!(
            text.contains(r#""pid": 1"#),
            "pid stays a top-level field: {text}"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
