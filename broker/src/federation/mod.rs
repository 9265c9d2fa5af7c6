//! Federation (issue 21): regions that peer, lend and borrow capacity.
//!
//! - `token`: the one-time peering offer's text.
//! - `policy`: what a region lends a peer (pure).
//! - `peering`: offer, accept, the brokers' handshake, list and remove.
//! - `client`: calling a peer over mutual TLS.
//! - `lend`: the lender — offers through its own placement, holds with an
//!   expiry, commit, release, the sweeper.
//! - `borrow`: the home region asking peers nearest first.
//! - `borrowed`: a borrowed lesson read back, followed, cancelled, settled.
//! - `probes`: peers' probe targets and the edges' RTTs to them.
//!
//! Decisions 093 (peering and trust), 094 (holds), 095 (RTT and order) and
//! 109 (probe targets).

pub mod borrow;
pub mod borrowed;
pub mod client;
pub mod lend;
pub mod peering;
pub mod policy;
pub mod probes;
pub mod token;

use std::{sync::Arc, time::Duration};

use classgrid_proto::v1 as pb;
use tokio::sync::watch;

use crate::state::Broker;

/// How often holds are checked for expiry and peers are pinged.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const PING_EVERY: Duration = Duration::from_secs(3);

/// Runs the hold sweeper and the peer pings until `stop`.
pub fn start(app: &Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let app = app.clone();
    tokio::spawn(async move {
        let mut last_ping = tokio::time::Instant::now() - PING_EVERY;
        loop {
            if let Err(e) = app.expire_holds().await {
                tracing::warn!(error = %e, "expiring peer holds failed; trying again");
            }
            if let Err(e) = app.settle_lent().await {
                tracing::warn!(error = %e, "settling lent lessons failed; trying again");
            }
            if let Err(e) = app.refresh_borrowed().await {
                tracing::warn!(error = %e, "reading borrowed lessons failed; trying again");
            }
            if last_ping.elapsed() >= PING_EVERY {
                last_ping = tokio::time::Instant::now();
                app.ping_peers().await;
                if let Err(e) = app.reconcile_held(chrono::Duration::seconds(60)).await {
                    tracing::warn!(error = %e, "reconciling held borrowed lessons failed; trying again");
                }
                if let Err(e) = app.settle_borrowed().await {
                    tracing::warn!(error = %e, "settling borrowed lessons failed; trying again");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
                _ = stop.wait_for(|v| *v) => return,
            }
        }
    });
}

impl Broker {
    /// Pings every set-up peer: marks it connected or disconnected (since
    /// the first failure), and keeps a measured RTT current.
    async fn ping_peers(&self) {
        let Ok(peers) = self.store.list_peerings().await else {
            return;
        };
        let peers: Vec<_> = peers
            .into_iter()
            .filter(|p| p.state == "connected" || p.state == "disconnected")
            .collect();
        self.peer_probes
            .retain(&peers.iter().map(|p| p.id).collect::<Vec<_>>());
        for p in peers {
            let Ok(mut c) = self.peer_client(&p) else {
                continue;
            };
            let t0 = std::time::Instant::now();
            let r = c.ping(pb::PingRequest {}).await;
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            let _ = match r {
                Ok(_) => {
                    let _ = self.store.set_measured_rtt(p.id, ms).await;
                    // Its probe targets, for this region's school edges; a
                    // peer that publishes none (or fails to) has none.
                    let published = match c.probe_targets(pb::PeerProbeTargetsRequest {}).await {
                        Ok(t) => t
                            .into_inner()
                            .targets
                            .into_iter()
                            .map(|t| (t.node_name, t.addr))
                            .collect(),
                        Err(_) => Vec::new(),
                    };
                    self.peer_probes.set_targets(p.id, &p.name, published);
                    self.store.set_peering_reachable(p.id, true, "").await
                }
                Err(s) => {
                    self.store
                        .set_peering_reachable(p.id, false, s.message())
                        .await
                }
            };
        }
    }
}
