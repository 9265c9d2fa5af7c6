//! The loop shared by the broker's batching writers (bookings, agents'
//! progress): take what is waiting, write it, repeat; sleep when nothing
//! waits. What goes into a batch is each queue's own rule.

use std::{
    future::Future,
    sync::{Arc, Weak},
    time::Duration,
};

use tokio::sync::Notify;

use crate::app::Broker;

/// How often an idle writer checks that its broker still exists.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// A queue that writers take batches from.
pub(crate) trait BatchQueue: Send + Sync + 'static {
    type Item: Send + 'static;
    /// Notified (`notify_waiters`) when a batch may have become available.
    fn wake(&self) -> &Notify;
    /// The next batch, empty when nothing can be taken now.
    fn take_batch(&self) -> Vec<Self::Item>;
}

/// Runs `n` writers over `queue` until the broker is dropped. Batches run in
/// the writers' own tasks, so a caller hanging up never cuts a batch that
/// carries others' work. An idle writer holds the queue, not the broker, so
/// a dropped broker's pool closes at once.
pub(crate) fn spawn<Q, W, F>(broker: &Arc<Broker>, queue: Arc<Q>, n: usize, write: W)
where
    Q: BatchQueue,
    W: Fn(Arc<Broker>, Vec<Q::Item>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = ()> + Send,
{
    for _ in 0..n {
        let (queue, write) = (queue.clone(), write.clone());
        let broker: Weak<Broker> = Arc::downgrade(broker);
        tokio::spawn(async move {
            loop {
                // Registered before looking, so a wake-up between the look
                // and the wait is not lost.
                let woken = queue.wake().notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let batch = queue.take_batch();
                if batch.is_empty() {
                    if broker.strong_count() == 0 {
                        return;
                    }
                    let _ = tokio::time::timeout(IDLE_CHECK, woken).await;
                    continue;
                }
                let Some(b) = broker.upgrade() else { return };
                write(b, batch).await;
            }
        });
    }
}
