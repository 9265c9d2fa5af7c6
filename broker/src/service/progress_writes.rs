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

use std::{collections::HashMap, sync::Arc};

use tokio::sync::oneshot;
use uuid::Uuid;

use crate::{
    state::Broker,
    store::{
        assignments::{Progress, ProgressRow, record_progress},
        batch::{self, Conn},
        progress_queue::Burst,
    },
};

/// Statements in flight at once; the rest of the pool serves bookings.
const WRITERS: usize = 2;
/// Starts the progress writers (see `store::batch`).
pub fn start(broker: &Arc<Broker>) {
    let queue = broker.progress_writes.clone();
    batch::spawn(broker, queue, WRITERS, |b, conn, batch| async move {
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
        let (mut kept, result) = batch::on_connection(&self.store, conn, async |c| {
            record_progress(c, &reports).await
        })
        .await;
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
                    let (k, r) = batch::on_connection(&self.store, kept.take(), async |c| {
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
