//! The broker's shared state, handed to every adapter and loop.

use std::sync::Arc;

use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

use crate::{config::BrokerConfig, fleet::Fleet, metrics::Metrics, store::Store};

pub type App = Arc<Broker>;

pub struct Broker {
    pub cfg: BrokerConfig,
    pub store: Store,
    pub fleet: Fleet,
    pub metrics: Metrics,
    /// Lesson ids whose lesson or seats changed; Watch streams reload on it.
    pub lesson_events: broadcast::Sender<Uuid>,
    /// Wakes the lifecycle clock early (a booking, a cancel, a node back).
    pub clock: Notify,
}

impl Broker {
    pub async fn new(cfg: BrokerConfig, store: Store) -> anyhow::Result<App> {
        let fleet = Fleet::load(store.list_sites().await?, store.list_nodes().await?);
        let (lesson_events, _) = broadcast::channel(4096);
        Ok(Arc::new(Self {
            cfg,
            store,
            fleet,
            metrics: Metrics::default(),
            lesson_events,
            clock: Notify::new(),
        }))
    }

    pub fn lesson_changed(&self, id: Uuid) {
        let _ = self.lesson_events.send(id);
    }
}
