//! The site relay's broker side: which agent connections arrived through a
//! site edge rather than straight from the agent, and the hand-over of
//! those connections to the gRPC server (`conn`).
//!
//! An edge opens one `EdgeService.Relay` stream per agent connection it
//! carries. The stream's bytes become an in-memory connection that joins the
//! gRPC server's incoming TCP connections, so the agent's TLS is terminated
//! here and its own certificate decides who it is, exactly as for a direct
//! agent. The book below only records which edge carries which connection
//! (by the agent's LAN address the edge reports), bounds how many one edge
//! may carry, and lets the agent's session show that it is relayed.

pub mod conn;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::sync::mpsc;
use uuid::Uuid;

pub use conn::{Conn, relayed_from};

/// Relayed connections one edge may carry at once. Each is an HTTP/2 stream
/// on the edge's one connection, whose streams the server caps at 200; the
/// edge's own calls need room beside them.
pub const MAX_PER_EDGE: usize = 128;

/// The edge that carries a relayed connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub edge_id: Uuid,
    pub site_id: Uuid,
    /// `site/name` of the edge, for people.
    pub edge: String,
}

/// Why a relayed connection was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "relay: edge {edge} already carries {limit} connections, the most one edge may relay at once"
    )]
    Full { edge: String, limit: usize },
    #[error(
        "classgrid-relay-from: edge {edge} already relays a connection from {from}; each relayed connection needs its own agent address"
    )]
    Duplicate { edge: String, from: SocketAddr },
}

type Key = (Uuid, SocketAddr);

/// Open relayed connections by (site, agent address).
#[derive(Clone)]
pub struct Book {
    open: Arc<Mutex<HashMap<Key, Via>>>,
    max_per_edge: usize,
}

/// Holds a connection's place in the book; dropping it frees the place.
pub struct Ticket {
    open: Arc<Mutex<HashMap<Key, Via>>>,
    key: Key,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        lock(&self.open).remove(&self.key);
    }
}

fn lock(m: &Mutex<HashMap<Key, Via>>) -> std::sync::MutexGuard<'_, HashMap<Key, Via>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Book {
    pub fn new(max_per_edge: usize) -> Self {
        Self {
            open: Default::default(),
            max_per_edge,
        }
    }

    pub fn admit(&self, via: Via, from: SocketAddr) -> Result<Ticket, Refusal> {
        let mut open = lock(&self.open);
        let key = (via.site_id, from);
        if open.contains_key(&key) {
            return Err(Refusal::Duplicate {
                edge: via.edge,
                from,
            });
        }
        if open.values().filter(|v| v.edge_id == via.edge_id).count() >= self.max_per_edge {
            return Err(Refusal::Full {
                edge: via.edge,
                limit: self.max_per_edge,
            });
        }
        open.insert(key, via);
        Ok(Ticket {
            open: self.open.clone(),
            key,
        })
    }

    /// The edge of `site` that relays the connection from `from`, if any.
    pub fn via(&self, site: Uuid, from: SocketAddr) -> Option<Via> {
        lock(&self.open).get(&(site, from)).cloned()
    }
}

/// The book, and the queue of relayed connections for the gRPC server.
pub struct Relays {
    pub book: Book,
    tx: mpsc::Sender<Conn>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<Conn>>>,
}

impl Default for Relays {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(64);
        Self {
            book: Book::new(MAX_PER_EDGE),
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
        }
    }
}

impl Relays {
    /// The relayed connections, for the one gRPC server that serves them.
    pub fn take_incoming(&self) -> Option<mpsc::Receiver<Conn>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Gives a relayed connection to the gRPC server; false once it stopped.
    pub async fn hand_over(&self, conn: Conn) -> bool {
        self.tx.send(conn).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via(edge: u128, site: u128) -> Via {
        Via {
            edge_id: Uuid::from_u128(edge),
            site_id: Uuid::from_u128(site),
            edge: format!("site-{site}/edge-{edge}"),
        }
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 5], port))
    }

    #[test]
    fn an_edge_carries_at_most_its_limit_and_a_closed_connection_frees_its_place() {
        let book = Book::new(2);
        let a = book.admit(via(1, 1), addr(1)).unwrap();
        let _b = book.admit(via(1, 1), addr(2)).unwrap();
        let e = book.admit(via(1, 1), addr(3)).err().unwrap();
        assert!(matches!(e, Refusal::Full { limit: 2, .. }), "{e}");
        assert!(e.to_string().contains("the most one edge may relay"), "{e}");
        // Another edge has its own limit.
        let _c = book.admit(via(2, 2), addr(3)).unwrap();
        drop(a);
        assert!(book.via(Uuid::from_u128(1), addr(1)).is_none());
        let _d = book.admit(via(1, 1), addr(3)).unwrap();
    }

    #[test]
    fn connections_are_found_by_site_and_agent_address_only() {
        let book = Book::new(8);
        let _t = book.admit(via(1, 1), addr(7)).unwrap();
        assert_eq!(book.via(Uuid::from_u128(1), addr(7)), Some(via(1, 1)));
        // The same LAN address at another school is another connection.
        assert_eq!(book.via(Uuid::from_u128(2), addr(7)), None);
        let _u = book.admit(via(2, 2), addr(7)).unwrap();
        let e = book.admit(via(1, 1), addr(7)).err().unwrap();
        assert!(matches!(e, Refusal::Duplicate { .. }), "{e}");
        assert!(e.to_string().starts_with("classgrid-relay-from:"), "{e}");
    }
}
