//! Writing agents' progress reports, many nodes' in one statement.
//!
//! At a bell every node of a district reports its seats running within a
//! second or so, each in a burst of a few reports. One statement and one
//! commit per burst cost more than the reports themselves: a storm of 10,000
//! seats spent as long in ~800 such statements as in writing the bookings.
//! So a node's burst queues for one of a few writers, which takes every
//! burst waiting (at most `MAX_REPORTS` reports) into one statement. Under
//! light load a batch is one burst, written at once.
//!
//! A node has one burst in flight at a time (its session waits for the
//! write), so each node's reports stay in order. A batch that fails is
//! written again burst by burst, so one node's bad report never costs
//! another node its reports.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
};

use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use super::writers::{self, BatchQueue, Conn};
use crate::{
    app::Broker,
    store::assignments::{Progress, ProgressRow, record_progress},
};

/// Statements in flight at once; the rest of the pool serves bookings.
const WRITERS: usize = 2;
/// Reports in one statement, at most (a burst is never split).
const MAX_REPORTS: usize = 2048;

pub(crate) struct Burst {
    node_id: Uuid,
    reports: Vec<Progress>,
    reply: oneshot::Sender<sqlx::Result<Vec<ProgressRow>>>,
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
    fn push(&self, b: Burst) {
        self.lock().push_back(b);
        self.wake.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Burst>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Starts the progress writers (see `writers`).
pub fn start(broker: &Arc<Broker>) {
    let queue = broker.progress_writes.clone();
    writers::spawn(broker, queue, WRITERS, |b, conn, batch| async move {
        b.write_progress_batch(conn, batch).await
    });
}

impl Broker {
    /// Records one node's burst of progress reports, batched with other
    /// nodes' waiting bursts.
    pub(crate) async fn write_progress(
        &self,
        node_id: Uuid,
        reports: Vec<Progress>,
    ) -> sqlx::Result<Vec<ProgressRow>> {
        debug_assert!(reports.iter().all(|r| r.node_id == node_id));
        let (reply, answer) = oneshot::channel();
        self.progress_writes.push(Burst {
            node_id,
            reports,
            reply,
        });
        // No answer: the writer went away with its broker.
        answer.await.unwrap_or(Err(sqlx::Error::PoolClosed))
    }

    async fn write_progress_batch(&self, conn: Option<Conn>, batch: Vec<Burst>) -> Option<Conn> {
        self.metrics.progress_batch_size.observe(batch.len() as f64);
        let reports: Vec<&Progress> = batch.iter().flat_map(|b| &b.reports).collect();
        let (mut kept, result) =
            writers::on_connection(self, conn, async |c| record_progress(c, &reports).await).await;
        drop(reports);
        match result {
            Ok(rows) => {
                let mut by_node: HashMap<Uuid, Vec<ProgressRow>> =
                    HashMap::with_capacity(batch.len());
                for row in rows {
                    by_node.entry(row.node_id).or_default().push(row);
                }
                for b in batch {
                    let rows = by_node.remove(&b.node_id).unwrap_or_default();
                    let _ = b.reply.send(Ok(rows));
                }
            }
            Err(e) if batch.len() == 1 => {
                if let Some(b) = batch.into_iter().next() {
                    let _ = b.reply.send(Err(e));
                }
            }
            Err(e) => {
                tracing::debug!(bursts = batch.len(), error = %e, "progress batch failed; writing each burst alone");
                for b in batch {
                    let reports: Vec<&Progress> = b.reports.iter().collect();
                    let (k, r) = writers::on_connection(self, kept.take(), async |c| {
                        record_progress(c, &reports).await
                    })
                    .await;
                    kept = k;
                    let _ = b.reply.send(r);
                }
            }
        }
        kept
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
