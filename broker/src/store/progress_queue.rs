//! Agents' progress reports waiting to be written, many nodes' bursts per
//! statement (see `service::progress_writes`).

use std::{
    collections::{HashSet, VecDeque},
    sync::Mutex,
};

use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use super::{
    assignments::{Progress, ProgressRow},
    batch::BatchQueue,
};

/// Reports in one statement, at most (a burst is never split).
const MAX_REPORTS: usize = 2048;

pub(crate) struct Burst {
    pub(crate) node_id: Uuid,
    pub(crate) reports: Vec<Progress>,
    pub(crate) reply: oneshot::Sender<sqlx::Result<Vec<ProgressRow>>>,
}

#[derive(Default)]
pub struct ProgressWriters {
    queue: Mutex<VecDeque<Burst>>,
    wake: Notify,
}

impl BatchQueue for ProgressWriters {
    type Item = Burst;

    fn wake(&self) -> &Notify {
        &self.wake
    }

    /// The oldest waiting bursts, at most one per node (a node that
    /// reconnected may have its old session's last burst still waiting; the
    /// two must not race in one statement), up to `MAX_REPORTS` reports.
    fn take_batch(&self) -> Vec<Burst> {
        let mut q = self.lock();
        let mut batch: Vec<Burst> = Vec::new();
        let mut nodes = HashSet::new();
        let mut rest = VecDeque::new();
        let mut n = 0;
        while let Some(b) = q.pop_front() {
            if !batch.is_empty() && n + b.reports.len() > MAX_REPORTS {
                q.push_front(b);
                break;
            }
            if nodes.insert(b.node_id) {
                n += b.reports.len();
                batch.push(b);
            } else {
                rest.push_back(b);
            }
        }
        // What was passed over goes back in front, in its order.
        while let Some(b) = rest.pop_back() {
            q.push_front(b);
        }
        batch
    }
}

impl ProgressWriters {
    pub(crate) fn push(&self, b: Burst) {
        self.lock().push_back(b);
        self.wake.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Burst>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn burst(node_id: Uuid, reports: usize) -> Burst {
        let report = || Progress {
            node_id,
            id: Uuid::now_v7(),
            generation: 1,
            state: "running",
            endpoint: String::new(),
            output_tail: String::new(),
            slice_seconds: 0.0,
        };
        Burst {
            node_id,
            reports: (0..reports).map(|_| report()).collect(),
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn a_batch_takes_one_burst_per_node_and_leaves_the_rest_in_order() {
        let w = ProgressWriters::default();
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        for (node, n) in [(a, 1), (a, 2), (b, 3), (a, 4), (c, 5)] {
            w.push(burst(node, n));
        }
        let taken: Vec<(Uuid, usize)> = w
            .take_batch()
            .iter()
            .map(|b| (b.node_id, b.reports.len()))
            .collect();
        assert_eq!(taken, vec![(a, 1), (b, 3), (c, 5)]);
        let taken: Vec<usize> = w.take_batch().iter().map(|b| b.reports.len()).collect();
        assert_eq!(taken, vec![2], "node a's next burst, alone");
        let taken: Vec<usize> = w.take_batch().iter().map(|b| b.reports.len()).collect();
        assert_eq!(taken, vec![4]);
        assert!(w.take_batch().is_empty());
    }

    #[test]
    fn a_batch_stops_at_the_report_limit_but_never_splits_a_burst() {
        let w = ProgressWriters::default();
        w.push(burst(Uuid::now_v7(), MAX_REPORTS + 1));
        w.push(burst(Uuid::now_v7(), 1));
        let first: Vec<usize> = w.take_batch().iter().map(|b| b.reports.len()).collect();
        assert_eq!(first, vec![MAX_REPORTS + 1]);
        let second: Vec<usize> = w.take_batch().iter().map(|b| b.reports.len()).collect();
        assert_eq!(second, vec![1]);
    }
}
