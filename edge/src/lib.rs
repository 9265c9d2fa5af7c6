//! The classgrid site gateway, run at a school or a district point of
//! presence: it probes the region's nodes from the site (`probe`), keeps a
//! content cache that stages lessons' datasets ahead of the bell (`cache`),
//! serves that content to the site's agents, and keeps the site's seats'
//! desired state locally (`autonomy`), and, when `relay_listen` is set,
//! carries the site's agents to the broker over its own link (`relay`).
//! `vivaldi` is the pure network coordinate model the broker uses to
//! estimate RTTs nobody measured.

pub mod autonomy;
pub mod cache;
pub mod config;
pub mod link;
pub mod metrics;
pub mod probe;
pub mod relay;
pub mod seatlink;
pub mod state;
pub mod vivaldi;

pub use config::{EdgeConfig, RunArgs};
use tokio::sync::watch;
use tracing::info;

/// Runs the edge until `shutdown`: probes, staging and the content server
/// start at once and keep going whether or not the broker answers.
pub async fn run(cfg: EdgeConfig, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let db = state::open(&cfg.state_dir.join("edge.db")).await?;
    let store = cache::store::Cache::open(&cfg.cache_dir, db.clone(), cfg.cache_max_bytes).await?;
    let stager = cache::stage::Stager::new(store, cfg.link_bytes_per_sec as f64);
    let table = probe::Table::default();
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| anyhow::anyhow!("--listen: cannot listen on {}: {e}", cfg.listen))?;
    info!(listen = %cfg.listen, advertise = %cfg.advertise_url, "content server listening");
    let (upstream, upstream_rx) = watch::channel(None);
    // Seat links (decision 088), bound now so a taken port fails the start.
    let seat_links = cfg
        .seat_links
        .as_ref()
        .map(|l| seatlink::proxy::start(db.clone(), l, &cfg.advertise_url, shutdown.clone()))
        .transpose()?;
    let seat_link_url = seat_links
        .as_ref()
        .map(|s| s.base_url.clone())
        .unwrap_or_default();
    let seats = autonomy::Seats::new(db.clone());
    let relayed = relay::Relayed::default();
    let metrics = metrics::router(metrics::Sources {
        stager: stager.clone(),
        table: table.clone(),
        link: upstream_rx.clone(),
        seats: seats.clone(),
        relayed: relayed.clone(),
    });
    let mut sd = shutdown.clone();
    let server = axum::serve(
        listener,
        cache::serve::router(stager.clone()).merge(metrics),
    )
    .with_graceful_shutdown(async move {
        let _ = sd.changed().await;
    });
    // Bound before anything runs, so a taken port fails the start, not later.
    let relay_listener = match cfg.relay_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("--relay-listen: cannot listen on {addr}: {e}"))?;
            info!(relay = %addr, "site relay listening");
            Some(l)
        }
        None => None,
    };
    let mut tasks = vec![
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "content server stopped");
            }
        }),
        tokio::spawn(probe::run(
            table.clone(),
            cfg.probe_interval,
            cfg.probe_window,
            shutdown.clone(),
        )),
        tokio::spawn(stager.clone().run(shutdown.clone())),
    ];
    tasks.extend(seat_links.map(|s| s.task));
    if let Some(l) = relay_listener {
        tasks.push(tokio::spawn(relay::run(
            l,
            upstream_rx,
            relayed,
            shutdown.clone(),
        )));
    }
    let parts = link::Parts {
        table,
        stager,
        seats,
        upstream,
        links: db,
        seat_link_url,
    };
    let r = link::run(&cfg, &parts, shutdown).await;
    for t in tasks {
        t.abort();
    }
    r
}
