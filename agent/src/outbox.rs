//! Final statuses (exited, failed, stopped) are written to disk when they
//! happen and re-sent at the start of every broker session until they are a
//! day old. They carry a seat's or a job's last usage; the broker may be
//! unreachable when they happen, and the agent may restart before it comes
//! back, which would lose an in-memory queue. The broker applies a repeated
//! report idempotently: an older generation's is ignored, slice-seconds only
//! grow, a released assignment stays released.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use classgrid_proto::v1::{self as pb, AssignmentState};
use prost::Message;
use serde::{Deserialize, Serialize};

/// Reports older than this are dropped: the broker settles usage long before.
const KEEP_MS: i64 = 24 * 3600 * 1000;
/// A bound on the file, whatever happens; the oldest go first.
const MAX_ENTRIES: usize = 10_000;
/// Re-sent at a session's start at most; the broker cuts off an agent that
/// sends more than 1,000 messages in 5 s.
const RESEND_MAX: usize = 500;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    at_unix_ms: i64,
    assignment_id: String,
    /// The `AssignmentStatus`, protobuf-encoded.
    status: Vec<u8>,
}

pub struct Outbox {
    path: PathBuf,
    entries: Mutex<Vec<Entry>>,
}

pub fn is_final(s: &pb::AssignmentStatus) -> bool {
    matches!(
        AssignmentState::try_from(s.state),
        Ok(AssignmentState::Exited | AssignmentState::Failed | AssignmentState::Stopped)
    )
}

impl Outbox {
    /// Loads what an earlier run left; an unreadable file is reported and
    /// started afresh (running work re-reports its usage anyway).
    pub fn open(dir: &Path) -> (Self, Option<String>) {
        let path = dir.join("final-statuses.json");
        let (entries, problem) = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), None),
            Err(e) => (Vec::new(), Some(format!("{}: {e}", path.display()))),
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(v) => (v, None),
                Err(e) => (Vec::new(), Some(format!("{}: {e}", path.display()))),
            },
        };
        let outbox = Self {
            path,
            entries: Mutex::new(entries),
        };
        (outbox, problem)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `s` (the latest final report per assignment) and writes the file
    /// before returning, so the report survives a crash from here on.
    pub fn record(&self, s: &pb::AssignmentStatus, now_ms: i64) -> std::io::Result<()> {
        let mut entries = self.lock();
        entries.retain(|e| e.assignment_id != s.assignment_id && e.at_unix_ms > now_ms - KEEP_MS);
        entries.push(Entry {
            at_unix_ms: now_ms,
            assignment_id: s.assignment_id.clone(),
            status: s.encode_to_vec(),
        });
        let excess = entries.len().saturating_sub(MAX_ENTRIES);
        entries.drain(..excess);
        self.save(&entries)
    }

    /// Writes atomically: a crash leaves the old file or the new one.
    fn save(&self, entries: &[Entry]) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(entries)?)?;
        std::fs::rename(tmp, &self.path)
    }

    /// The final reports of the last day, oldest first; at most the newest
    /// `RESEND_MAX`, well under what the broker takes as a flood.
    pub fn pending(&self, now_ms: i64) -> Vec<pb::AssignmentStatus> {
        let entries = self.lock();
        let fresh: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.at_unix_ms > now_ms - KEEP_MS)
            .collect();
        fresh[fresh.len().saturating_sub(RESEND_MAX)..]
            .iter()
            .filter_map(|e| pb::AssignmentStatus::decode(e.status.as_slice()).ok())
            .collect()
    }

    /// Forgets reports recorded up to `upto_ms`: the caller has seen them go
    /// out on a session that stayed healthy long after.
    pub fn delivered(&self, upto_ms: i64) -> std::io::Result<()> {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|e| e.at_unix_ms > upto_ms);
        if entries.len() == before {
            return Ok(());
        }
        self.save(&entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(id: &str, state: AssignmentState, slice: f64) -> pb::AssignmentStatus {
        pb::AssignmentStatus {
            assignment_id: id.into(),
            generation: 1,
            state: state as i32,
            slice_seconds: slice,
            ..Default::default()
        }
    }

    #[test]
    fn final_reports_survive_a_restart_latest_per_assignment_for_a_day() {
        let dir = std::env::temp_dir().join(format!("cg-outbox-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (o, problem) = Outbox::open(&dir);
        assert!(problem.is_none());
        let day = KEEP_MS;
        o.record(&status("a", AssignmentState::Failed, 1.0), 1_000)
            .unwrap();
        o.record(&status("b", AssignmentState::Stopped, 2.0), 2_000)
            .unwrap();
        // A later final report on the same assignment replaces the earlier.
        o.record(&status("a", AssignmentState::Exited, 3.0), 3_000)
            .unwrap();

        let (again, _) = Outbox::open(&dir);
        let got: Vec<(String, f64)> = again
            .pending(4_000)
            .into_iter()
            .map(|s| (s.assignment_id, s.slice_seconds))
            .collect();
        assert_eq!(got, vec![("b".into(), 2.0), ("a".into(), 3.0)]);
        // A day later, b is gone; recording prunes the file too.
        assert_eq!(again.pending(2_000 + day).len(), 1);
        again
            .record(&status("c", AssignmentState::Stopped, 0.0), 3_500 + day)
            .unwrap();
        let (third, _) = Outbox::open(&dir);
        let ids: Vec<String> = third
            .pending(3_500 + day)
            .into_iter()
            .map(|s| s.assignment_id)
            .collect();
        assert_eq!(ids, vec!["c".to_string()]);
        // Delivered reports are forgotten, on disk too.
        third.delivered(3_500 + day).unwrap();
        assert!(Outbox::open(&dir).0.pending(3_600 + day).is_empty());
    }

    #[test]
    fn a_session_start_resends_only_the_newest_reports() {
        let dir = std::env::temp_dir().join(format!("cg-outbox-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let (o, _) = Outbox::open(&dir);
        for i in 0..(RESEND_MAX + 20) {
            o.record(
                &status(&format!("a{i}"), AssignmentState::Stopped, 0.0),
                i as i64,
            )
            .unwrap();
        }
        let p = o.pending(1_000);
        assert_eq!(p.len(), RESEND_MAX);
        assert_eq!(p[0].assignment_id, "a20");
    }

    #[test]
    fn only_final_states_are_kept_and_a_corrupt_file_is_reported() {
        assert!(is_final(&status("a", AssignmentState::Stopped, 0.0)));
        assert!(!is_final(&status("a", AssignmentState::Running, 0.0)));
        let dir = std::env::temp_dir().join(format!("cg-outbox-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("final-statuses.json"), b"{not json").unwrap();
        let (o, problem) = Outbox::open(&dir);
        assert!(problem.unwrap().contains("final-statuses.json"));
        assert!(o.pending(0).is_empty());
    }
}
