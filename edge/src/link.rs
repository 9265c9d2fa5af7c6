//! The edge's link to the broker: register, then every report interval a
//! heartbeat, a refresh of the probe targets, the RTT table, and a sync of
//! cache and staging state that brings back staging orders, pins and the
//! site's seats. Any failure drops the session and re-registers with
//! backoff; probing, staging and serving content go on meanwhile. While a
//! session is up, the site relay carries agents over its channel.

use std::time::Duration;

use classgrid_common::broker_list::Rotation;
use classgrid_proto::v1::{self as pb, edge_service_client::EdgeServiceClient};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    EdgeConfig,
    autonomy::Seats,
    cache::stage::{Order, Stager},
    probe::{Table, Target},
    relay::{Upstream, UpstreamTx},
};

pub struct Parts {
    pub table: Table,
    pub stager: Stager,
    pub seats: Seats,
    pub upstream: UpstreamTx,
    /// The edge's database, where it keeps the site's seat links.
    pub links: sqlx::SqlitePool,
    /// Where this edge serves seat links; empty when it serves none.
    pub seat_link_url: String,
}

/// Registers and reports until `shutdown`, re-registering after any failure.
pub async fn run(
    cfg: &EdgeConfig,
    parts: &Parts,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // With several brokers listed (decision 091), each failure moves on to
    // the next; the backoff grows once all of them failed in a row.
    let mut brokers = Rotation::new(
        cfg.brokers(),
        Duration::from_millis(250),
        Duration::from_secs(5),
    );
    loop {
        let url = brokers.current().to_string();
        let started = tokio::time::Instant::now();
        let r = session(cfg, &url, parts, &mut shutdown).await;
        parts.upstream.send_replace(None);
        match r {
            Ok(()) => return Ok(()),
            Err(e) => warn!(error = %e, broker = %url, "edge link to broker lost; retrying"),
        }
        // As the agent does: a link that lasted was not failing, so a
        // failover (the leader killed) is retried at once, not after the
        // longest wait of some earlier outage.
        if started.elapsed() > Duration::from_secs(10) {
            brokers.reset();
        }
        tokio::select! {
            _ = tokio::time::sleep(brokers.failed()) => {}
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

async fn session(
    cfg: &EdgeConfig,
    url: &str,
    parts: &Parts,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let channel = classgrid_common::join::channel(url, &cfg.state_dir, None).await?;
    let mut client = EdgeServiceClient::new(channel.clone());
    let reg = client
        .register(pb::RegisterEdgeRequest {
            site: cfg.site.clone(),
            name: cfg.name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
        })
        .await?
        .into_inner();
    info!(edge = %reg.edge_id, site = %cfg.site, "edge registered");
    parts.upstream.send_replace(Some(Upstream {
        channel,
        edge_id: reg.edge_id.clone(),
    }));
    let beat_every = Duration::from_millis(reg.heartbeat_interval_ms.clamp(500, 60_000) as u64);
    let mut beat = tokio::time::interval(beat_every.min(cfg.report_interval));
    let mut report = tokio::time::interval(cfg.report_interval);
    loop {
        tokio::select! {
            _ = beat.tick() => {
                client.heartbeat(pb::EdgeHeartbeat { edge_id: reg.edge_id.clone() }).await?;
            }
            _ = report.tick() => {
                exchange(cfg, parts, &mut client, &reg.edge_id).await?;
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

async fn exchange(
    cfg: &EdgeConfig,
    parts: &Parts,
    client: &mut EdgeServiceClient<tonic::transport::Channel>,
    edge_id: &str,
) -> anyhow::Result<()> {
    let targets = client
        .probe_targets(pb::ProbeTargetsRequest {
            edge_id: edge_id.into(),
        })
        .await?
        .into_inner()
        .targets;
    parts.table.set_targets(
        targets
            .into_iter()
            .map(|t| Target {
                node_id: t.node_id,
                name: t.name,
                addr: t.addr,
            })
            .collect(),
    );
    let rtts: Vec<pb::SiteNodeRtt> = parts
        .table
        .snapshot()
        .into_iter()
        .map(|m| pb::SiteNodeRtt {
            node_id: m.node_id,
            median_ms: m.median_ms,
            variance_ms2: m.variance_ms2,
            samples: m.samples as i32,
        })
        .collect();
    if !rtts.is_empty() {
        client
            .report_rtt(pb::RttReport {
                edge_id: edge_id.into(),
                rtts,
            })
            .await?;
    }
    let rep = parts.stager.report().await;
    let cached = parts
        .stager
        .cache()
        .list()
        .await?
        .into_iter()
        .map(|e| pb::CachedContent {
            sha256: e.sha256,
            size_bytes: e.size_bytes as i64,
        })
        .collect();
    let progress = rep
        .items
        .iter()
        .map(|p| pb::StagingProgress {
            sha256: p.sha256.clone(),
            bytes_done: p.bytes_done as i64,
            size_bytes: p.size_bytes as i64,
            state: p.state.into(),
            message: p.message.chars().take(500).collect(),
        })
        .collect();
    let orders = client
        .sync(pb::EdgeSyncRequest {
            edge_id: edge_id.into(),
            cached,
            progress,
            bytes_per_sec: rep.bytes_per_sec,
            content_url: cfg.advertise_url.clone(),
            seat_link_url: parts.seat_link_url.clone(),
            opened: crate::seatlink::opens(&parts.links).await?,
        })
        .await?
        .into_inner();
    parts.stager.cache().set_pins(&orders.pinned).await?;
    parts
        .stager
        .enqueue(
            orders
                .stage
                .into_iter()
                .map(|o| Order {
                    name: o.name,
                    url: o.url,
                    peer_url: o.peer_url,
                    sha256: o.sha256,
                    size_bytes: o.size_bytes.max(0) as u64,
                })
                .collect(),
        )
        .await;
    parts.seats.replace(&orders.seats).await?;
    // Kept even when this edge serves no links now: they are the site's,
    // and a restart with links on serves them before the next sync.
    crate::seatlink::replace(
        &parts.links,
        &orders.seat_links,
        crate::seatlink::proxy::now_ms(),
    )
    .await?;
    Ok(())
}
