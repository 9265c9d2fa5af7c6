//! The broker's shared state: the components every service, adapter and
//! loop is handed. It only holds them; `app` builds and starts them.

use std::sync::Arc;

use classgrid_placement::{Policy, RttTable};
use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

use crate::{
    auth::{
        cache::{Limiter, TokenCache},
        tls::ServerTls,
    },
    config::BrokerConfig,
    edge_view::EdgeState,
    fleet::Fleet,
    metrics::Metrics,
    relay::Relays,
    reserve::{Reserver, queue::BookingWriters},
    store::{Store, progress_queue::ProgressWriters},
};

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
    /// The plan applier: the live calendar, holds, commit/abort, retries.
    pub reserver: Reserver,
    /// The region CA and server certificate; None under --insecure-dev.
    pub tls: Option<ServerTls>,
    pub token_cache: TokenCache,
    pub limiter: Limiter,
    /// Measured and estimated RTTs and each site's edge content.
    pub edge: EdgeState,
    /// Agent connections carried by site edges' relays.
    pub relays: Relays,
    /// Peer regions' probe targets and the school edges' RTTs to them.
    pub peer_probes: crate::federation::probes::PeerProbes,
    /// Planned bookings waiting to be written, several per transaction.
    pub booking_writes: Arc<BookingWriters>,
    /// The last "could any node hold this seat" answer, for the next
    /// booking of the same spec on the same fleet snapshot (a term's
    /// thousands of occurrences ask it once).
    pub possible: crate::fleet::possible::PossibleMemo,
    /// Agents' progress reports waiting to be written, many nodes' at once.
    pub progress_writes: Arc<ProgressWriters>,
    /// This replica's leadership, set once it leads (decision 078); unset
    /// for a broker built without a lease (tests, tools), which is alone.
    pub leader: std::sync::OnceLock<crate::leader::Leadership>,
    /// The region's key for seat link tokens (decision 089).
    pub links: crate::seats::links::LinkKey,
}

impl Broker {
    /// The components, none of them started (see `app::open`).
    pub async fn new(cfg: BrokerConfig, store: Store) -> anyhow::Result<Self> {
        let fleet = Fleet::load(store.list_sites().await?, store.list_nodes().await?);
        fleet.set_lending(cfg.lending.clone());
        let (lesson_events, _) = broadcast::channel(4096);
        let tls = Self::server_tls(&cfg)?;
        let limiter = crate::auth::cache::limiter(cfg.security.rate_limit_per_s);
        let edge = EdgeState::load(&store).await?;
        let reserver = Reserver::new(store.clone(), Self::policy_of(&cfg));
        let links = crate::seats::links::LinkKey::load_or_create(&cfg.security.data_dir)?;
        Ok(Self {
            cfg,
            store,
            fleet,
            metrics: Metrics::default(),
            lesson_events,
            clock: Notify::new(),
            reserver,
            tls,
            token_cache: crate::auth::cache::token_cache(),
            limiter,
            edge,
            relays: Default::default(),
            peer_probes: Default::default(),
            booking_writes: Default::default(),
            possible: Default::default(),
            progress_writes: Default::default(),
            leader: Default::default(),
            links,
        })
    }

    /// The placement policy the configuration sets.
    fn policy_of(cfg: &BrokerConfig) -> Policy {
        Policy {
            weights: cfg.weights,
            max_window_ms: cfg.max_window.as_millis() as i64,
            ..Policy::default()
        }
    }

    /// Configured topology, overlaid with what edges measured and what
    /// network coordinates estimate: one shared table until the RTT book
    /// changes (decision 104).
    pub fn rtt_table(&self) -> Arc<RttTable> {
        self.edge.rtt_table(self.cfg.topology)
    }

    /// The region CA and server certificate from the data folder (made on
    /// first start), or None under --insecure-dev.
    pub fn server_tls(cfg: &BrokerConfig) -> anyhow::Result<Option<ServerTls>> {
        let sec = &cfg.security;
        if sec.insecure_dev {
            tracing::warn!(
                "--insecure-dev: serving PLAIN TEXT and accepting agents without certificates; never do this outside development"
            );
            return Ok(None);
        }
        Ok(Some(crate::auth::tls::prepare(
            &sec.data_dir,
            sec.tls_cert.as_deref(),
            sec.tls_key.as_deref(),
            &sec.tls_san,
        )?))
    }

    /// Fences `tx` by this replica's leader epoch: PostgreSQL refuses it if
    /// another replica has led since (decision 078). Every transaction that
    /// commits a plan or moves a lesson through its lifecycle calls this
    /// first.
    pub async fn fence(&self, tx: &mut sqlx::PgConnection) -> sqlx::Result<()> {
        match self.leader.get() {
            Some(l) => crate::store::lease::fence_conn(tx, l.epoch).await,
            None => Ok(()),
        }
    }

    pub fn lesson_changed(&self, id: Uuid) {
        let _ = self.lesson_events.send(id);
    }
}
