//! The loop shared by the broker's batching writers (bookings, agents'
//! progress): take what is waiting, write it, repeat; sleep when nothing
//! waits. What goes into a batch is each queue's own rule.

use std::{
    future::Future,
    sync::{Arc, Weak},
    time::Duration,
};

use sqlx::{PgConnection, Postgres, pool::PoolConnection};
use tokio::sync::Notify;

use super::Store;

/// A writer's own connection, kept between batches while it works.
pub(crate) type Conn = PoolConnection<Postgres>;

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

/// Runs `n` writers over `queue` until `owner` (the broker) is dropped. Batches run in
/// the writers' own tasks, so a caller hanging up never cuts a batch that
/// carries others' work. An idle writer holds the queue, not the broker, so
/// a dropped broker's pool closes at once.
///
/// Each writer keeps one connection for its batches (`write` gets it and
/// gives it back, or `None` after an error that may have broken it). A
/// backend's first run of the batch statements plans them, compiles the
/// capacity trigger and prepares the foreign-key checks, several times the
/// cost of a warm run; a writer taking any pooled connection paid that on
/// most backends of the pool at a bell, and again after the pool had closed
/// idle connections. The connection goes back to the pool when the writer
/// has been idle for a while, so an idle broker holds none.
pub(crate) fn spawn<B, Q, W, F>(owner: &Arc<B>, queue: Arc<Q>, n: usize, write: W)
where
    B: Send + Sync + 'static,
    Q: BatchQueue,
    W: Fn(Arc<B>, Option<Conn>, Vec<Q::Item>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = Option<Conn>> + Send,
{
    for _ in 0..n {
        let (queue, write) = (queue.clone(), write.clone());
        let broker: Weak<B> = Arc::downgrade(owner);
        tokio::spawn(async move {
            let mut conn: Option<Conn> = None;
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
                    if tokio::time::timeout(IDLE_CHECK, woken).await.is_err() {
                        conn = None;
                    }
                    continue;
                }
                let Some(b) = broker.upgrade() else { return };
                conn = write(b, conn.take(), batch).await;
            }
        });
    }
}

/// Runs `write` on the writer's connection, or on a fresh one from the
/// pool; returns the connection to keep (see `keep`) with the result.
pub(crate) async fn on_connection<T>(
    store: &Store,
    kept: Option<Conn>,
    write: impl AsyncFnOnce(&mut PgConnection) -> sqlx::Result<T>,
) -> (Option<Conn>, sqlx::Result<T>) {
    let mut conn = match kept {
        Some(c) => c,
        None => match store.acquire().await {
            Ok(c) => c,
            Err(e) => return (None, Err(e)),
        },
    };
    let result = write(&mut conn).await;
    (keep(conn, &result), result)
}

/// The connection to keep after a batch: after success, or an error the
/// server reported on a sound session (the transaction is rolled back, such
/// as the capacity trigger's refusal), the same; after a connection-level
/// error, none, and the pool opens a new one. A server restart reports
/// 57P01 ("terminating connection due to administrator command") as a
/// database error, yet the session is gone: kept, it failed the next batch
/// with a broken pipe.
pub(crate) fn keep<C, T>(conn: C, result: &sqlx::Result<T>) -> Option<C> {
    match result {
        Err(e) if super::is_connection_error(e) => None,
        Ok(_) | Err(sqlx::Error::Database(_)) => Some(conn),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_kept_after_success_and_server_errors_only() {
        assert_eq!(keep("conn", &Ok(())), Some("conn"));
        let refused: sqlx::Result<()> = Err(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(
            keep("conn", &refused),
            None,
            "a reset connection is dropped"
        );
        assert_eq!(keep("conn", &Err::<(), _>(sqlx::Error::PoolTimedOut)), None);
        let conflict: sqlx::Result<()> = Err(sqlx::Error::Database(Box::new(ServerError)));
        assert_eq!(
            keep("conn", &conflict),
            Some("conn"),
            "the session is sound"
        );
    }

    /// An error the server reported, such as the capacity trigger's.
    #[derive(Debug)]
    struct ServerError;

    impl std::fmt::Display for ServerError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("device over-committed")
        }
    }

    impl std::error::Error for ServerError {}

    impl sqlx::error::DatabaseError for ServerError {
        fn message(&self) -> &str {
            "device over-committed"
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }
}
