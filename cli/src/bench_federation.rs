//! `classgrid bench federation`: the storm across three regions (issue 21).
//!
//! Three real brokers in this process, each with its own fresh database on
//! the local PostgreSQL, its own region CA and TLS: `home`, `near` (3 ms
//! away) and `far` (10 ms). They are peered as two district admins peer
//! them (`PeeringService.CreateOffer` at home, `AcceptOffer` at the peer),
//! and every call between them is the brokers' own mutual TLS. Each
//! region's nodes are simulated agents, as `bench storm`'s are, except that
//! each joins with a join token and a certificate request and connects on
//! its own mutual-TLS connection, as a real agent does.
//!
//! Home's fleet holds `--home-percent` of the seats, near's and far's
//! `--peer-percent` each. Every class is booked at home at once; what does
//! not fit at home is borrowed, nearest peer first. "Running" is as the
//! school's region sees it: its own seats' states, and the borrowed seats'
//! states as the peers report them back. Its last line is
//! `federation seats=N placed_s=X running_s=Y book_p50_ms=… book_p99_ms=…
//! cross_p50_ms=… cross_p99_ms=… home=… near=… far=…`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use classgrid_broker::{
    app::App,
    auth::config::SecurityArgs,
    config::{BrokerConfig, ServeArgs},
    server,
};
use classgrid_proto::v1::{
    self as pb, admin_service_client::AdminServiceClient, fleet_service_client::FleetServiceClient,
    join_service_client::JoinServiceClient, peering_service_client::PeeringServiceClient,
};
use sqlx::Connection;
use tokio::sync::{Semaphore, watch};
use tonic::transport::{Channel, Endpoint};

use crate::{
    bench_db::{create_database, drop_database},
    bench_storm::{
        Bearer, SimNode, book_all, district, lesson_id, percentile_ms, seats_of, sim_node,
    },
};

#[derive(Debug, Clone, clap::Args)]
pub struct FederationArgs {
    /// Seats to book in all, every class at the home region.
    #[arg(long, default_value_t = 10_000)]
    pub seats: u32,
    /// Seats per class (one booking each).
    #[arg(long, default_value_t = 45)]
    pub class_size: u32,
    /// The share of the seats the home region's own nodes can hold, %.
    #[arg(long, default_value_t = 60)]
    pub home_percent: u32,
    /// The share of the seats each peer region's nodes can hold, %.
    #[arg(long, default_value_t = 25)]
    pub peer_percent: u32,
    /// PostgreSQL server; a fresh database per region is created on it and
    /// dropped after.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub database_url: String,
    /// Seconds to wait for every seat to run before giving up.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
}

fn check(a: &FederationArgs) -> anyhow::Result<()> {
    if !(1..=100_000).contains(&a.seats) {
        anyhow::bail!("--seats: must be between 1 and 100000, not {}", a.seats);
    }
    if !(1..=1000).contains(&a.class_size) {
        anyhow::bail!(
            "--class-size: must be between 1 and 1000, not {}",
            a.class_size
        );
    }
    if a.home_percent > 100 {
        anyhow::bail!(
            "--home-percent: must be between 0 and 100, not {}",
            a.home_percent
        );
    }
    if !(1..=100).contains(&a.peer_percent) {
        anyhow::bail!(
            "--peer-percent: must be between 1 and 100, not {}",
            a.peer_percent
        );
    }
    if a.home_percent + 2 * a.peer_percent < 100 {
        anyhow::bail!(
            "--home-percent, --peer-percent: the three regions together must hold every seat \
             (home + 2 × peer ≥ 100), not {} + 2 × {}",
            a.home_percent,
            a.peer_percent
        );
    }
    if !(1..=3600).contains(&a.timeout_s) {
        anyhow::bail!(
            "--timeout-s: must be between 1 and 3600, not {}",
            a.timeout_s
        );
    }
    Ok(())
}

/// The peers: name, inter-region RTT (configured, ms) and lending site.
const PEERS: [(&str, f64, &str); 2] = [("near", 3.0, "near-pop"), ("far", 10.0, "far-pop")];
/// Each region's pool: three of them stay under PostgreSQL's default
/// `max_connections` (100) with room for the bench's own.
const DB_CONNECTIONS: u32 = 24;
/// Where home's own nodes sit: the district's point of presence.
const HOME_SITE: &str = "storm-pop";

/// One region: its broker in this process and how the bench reaches it.
struct Region {
    name: &'static str,
    app: App,
    url: String,
    ch: Channel,
    bearer: Bearer,
    db_url: String,
}

pub async fn run(a: FederationArgs) -> anyhow::Result<()> {
    check(&a)?;
    let dir =
        std::env::temp_dir().join(format!("classgrid-bench-federation-{}", std::process::id()));
    let (tx_stop, rx_stop) = watch::channel(false);
    let mut dbs = Vec::new();
    let result = bench(&a, &dir, &rx_stop, &mut dbs).await;
    let _ = tx_stop.send(true);
    for name in dbs {
        drop_database(&a.database_url, &name).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("{}", result?);
    Ok(())
}

async fn bench(
    a: &FederationArgs,
    dir: &std::path::Path,
    stop: &watch::Receiver<bool>,
    dbs: &mut Vec<String>,
) -> anyhow::Result<String> {
    let home = region(a, "home", dir, stop, dbs).await?;
    district(&home.ch, &home.bearer, &home.url).await?;
    let mut peers = Vec::new();
    for (name, _, site) in PEERS {
        let r = region(a, name, dir, stop, dbs).await?;
        FleetServiceClient::with_interceptor(r.ch.clone(), r.bearer.clone())
            .create_site(pb::CreateSiteRequest {
                name: site.into(),
                kind: "district_pop".into(),
                district: name.into(),
            })
            .await
            .map_err(|e| anyhow::anyhow!("region {name}: site {site}: {}", e.message()))?;
        peers.push(r);
    }
    for (p, (_, rtt_ms, site)) in peers.iter().zip(PEERS) {
        peer(&home, p, rtt_ms, site, a.seats).await?;
    }
    eprintln!("federation: home peered with near and far");

    // Nodes, region by region, numbered on so no two share devices' names.
    let acked = Arc::new(AtomicU64::new(0));
    let mut next = 0u32;
    next = nodes(
        &home,
        HOME_SITE,
        share(a.seats, a.home_percent),
        next,
        &acked,
    )
    .await?;
    for (p, (_, _, site)) in peers.iter().zip(PEERS) {
        next = nodes(p, site, share(a.seats, a.peer_percent), next, &acked).await?;
    }
    eprintln!("federation: 3 regions peered, {next} nodes connected; booking");

    let t0 = Instant::now();
    let answers = book_all(&home.ch, &home.bearer, a.seats, a.class_size, |_| {}).await?;
    let placed_s = t0.elapsed().as_secs_f64();
    let mut home_lat = Vec::new();
    let mut cross_lat = Vec::new();
    let mut per_region: Vec<(String, u64)> = std::iter::once(home.name)
        .chain(PEERS.iter().map(|p| p.0))
        .map(|n| (n.to_string(), 0))
        .collect();
    let mut lessons = Vec::new();
    let mut refusals = Vec::new();
    for (lat, r) in answers {
        match r {
            Ok(l) => {
                lessons.push(lesson_id(&l)?);
                // A borrowed lesson's seats name the region that hosts them.
                let hosted_by = l
                    .seats
                    .first()
                    .map(|s| s.region.clone())
                    .unwrap_or_default();
                if hosted_by.is_empty() {
                    home_lat.push(lat);
                } else {
                    cross_lat.push(lat);
                }
                let name = if hosted_by.is_empty() {
                    home.name
                } else {
                    hosted_by.as_str()
                };
                match per_region.iter_mut().find(|(n, _)| n == name) {
                    Some((_, n)) => *n += l.seats.len() as u64,
                    None => {
                        anyhow::bail!("lesson {} is hosted by an unknown region {name:?}", l.id)
                    }
                }
            }
            Err(e) => refusals.push(e),
        }
    }
    let placed: u64 = per_region.iter().map(|(_, n)| n).sum();
    if !refusals.is_empty() {
        eprintln!(
            "{} of {} classes were not admitted; first: {}",
            refusals.len(),
            refusals.len() + lessons.len(),
            refusals[0]
        );
        if placed == 0 {
            anyhow::bail!("the storm placed no seat");
        }
    }

    let running_s = until_running(&home, &lessons, placed, &acked, t0, a.timeout_s).await?;
    let mut all: Vec<Duration> = home_lat.iter().chain(&cross_lat).copied().collect();
    let regions = per_region
        .iter()
        .map(|(n, s)| format!("{n}={s}"))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(format!(
        "federation seats={placed} placed_s={placed_s:.3} running_s={running_s:.3} \
         book_p50_ms={:.1} book_p99_ms={:.1} cross_p50_ms={:.1} cross_p99_ms={:.1} {regions}",
        percentile_ms(&mut all, 0.50),
        percentile_ms(&mut all, 0.99),
        percentile_ms(&mut cross_lat, 0.50),
        percentile_ms(&mut cross_lat, 0.99),
    ))
}

/// `percent` of `seats`, rounded up.
fn share(seats: u32, percent: u32) -> u32 {
    (seats as u64 * percent as u64).div_ceil(100) as u32
}

/// Starts region `name`'s broker with TLS on a fresh database.
async fn region(
    a: &FederationArgs,
    name: &'static str,
    dir: &std::path::Path,
    stop: &watch::Receiver<bool>,
    dbs: &mut Vec<String>,
) -> anyhow::Result<Region> {
    let (db_url, db) = create_database(&a.database_url).await?;
    dbs.push(db);
    let cfg = BrokerConfig::resolve(&ServeArgs {
        database_url: Some(db_url.clone()),
        // Three brokers share one PostgreSQL, whose default is 100
        // connections in all.
        database_connections: Some(DB_CONNECTIONS),
        grpc_addr: Some("127.0.0.1:0".parse()?),
        http_addr: Some("127.0.0.1:0".parse()?),
        log_format: Some("text".into()),
        security: SecurityArgs {
            data_dir: Some(dir.join(name)),
            rate_limit_per_s: Some(1_000_000),
            ..Default::default()
        },
        ..Default::default()
    })?;
    let started = server::start(cfg).await?;
    let url = format!("https://127.0.0.1:{}", started.grpc.local_addr()?.port());
    let app = started.app.clone();
    tokio::spawn(server::run(started, stop.clone()));
    let ca_pem = app
        .tls
        .as_ref()
        .map(|t| t.ca.cert_pem.clone())
        .ok_or_else(|| anyhow::anyhow!("region {name}: its broker started without TLS"))?;
    let ch = connect(&url, &ca_pem, None).await?;
    // The bench is each region's district admin.
    let token =
        classgrid_broker::service::admin::bootstrap_admin_token(&app.store, "federation-bench")
            .await?;
    Ok(Region {
        name,
        app,
        url,
        ch,
        bearer: Bearer(Some(token)),
        db_url,
    })
}

/// A TLS channel to `url` that trusts `ca_pem`, presenting `identity`.
async fn connect(
    url: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> anyhow::Result<Channel> {
    let tls = classgrid_common::tls::client_config(url, ca_pem, identity)?;
    Endpoint::from_shared(url.to_string())?
        .tls_config(tls)?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the broker at {url}: {e}"))
}

/// Home offers, `lender` accepts and lends home up to `lend` slices: the
/// steps of `classgrid peers offer` and `peers accept`. Waits until home
/// sees the peering connected.
async fn peer(
    home: &Region,
    lender: &Region,
    rtt_ms: f64,
    lender_site: &str,
    lend: u32,
) -> anyhow::Result<()> {
    let offer = PeeringServiceClient::with_interceptor(home.ch.clone(), home.bearer.clone())
        .create_offer(pb::CreatePeeringOfferRequest {
            peer: lender.name.into(),
            local_name: home.name.into(),
            url: home.url.clone(),
            site: HOME_SITE.into(),
            rtt_ms,
            lending: Some(pb::LendingPolicy {
                max_slices: 0,
                weight: 1.0,
                ..Default::default()
            }),
            ttl_seconds: 600,
        })
        .await
        .map_err(|e| anyhow::anyhow!("home: peers offer {}: {}", lender.name, e.message()))?
        .into_inner()
        .offer;
    PeeringServiceClient::with_interceptor(lender.ch.clone(), lender.bearer.clone())
        .accept_offer(pb::AcceptPeeringOfferRequest {
            offer,
            local_name: lender.name.into(),
            url: lender.url.clone(),
            site: lender_site.into(),
            rtt_ms,
            lending: Some(pb::LendingPolicy {
                max_slices: lend.min(100_000) as i32,
                weight: 1.0,
                ..Default::default()
            }),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{}: peers accept: {}", lender.name, e.message()))?;
    let connected = crate::bench_failover::until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async {
            home.app.store.list_peerings().await.is_ok_and(|ps| {
                ps.iter()
                    .any(|p| p.name == lender.name && p.state == "connected")
            })
        },
    )
    .await;
    if !connected {
        anyhow::bail!("home never saw its peering with {} connected", lender.name);
    }
    Ok(())
}

/// Joins and connects nodes at `site` of region `r`, numbered from
/// `first`, until they hold `seats` of the storm's seats; returns the
/// number after the last.
async fn nodes(
    r: &Region,
    site: &str,
    seats: u32,
    first: u32,
    acked: &Arc<AtomicU64>,
) -> anyhow::Result<u32> {
    let mut count = 0;
    let mut held = 0;
    while held < seats {
        held += seats_of(first + count);
        count += 1;
    }
    if count == 0 {
        return Ok(first);
    }
    let token = AdminServiceClient::with_interceptor(r.ch.clone(), r.bearer.clone())
        .create_join_token(pb::CreateJoinTokenRequest {
            site: site.into(),
            kind: "agent".into(),
            ttl_seconds: 600,
            uses: count as i32,
            require_approval: Some(false),
        })
        .await
        .map_err(|e| anyhow::anyhow!("region {}: join token: {}", r.name, e.message()))?
        .into_inner()
        .secret;
    // Joining signs a certificate and connecting is a TLS handshake: a few
    // at a time, so the storm's setup does not swamp the brokers.
    let gate = Arc::new(Semaphore::new(16));
    let mut registered = Vec::new();
    for i in first..first + count {
        let (tx, rx) = tokio::sync::oneshot::channel();
        registered.push(rx);
        let (gate, token, url, join_ch) =
            (gate.clone(), token.clone(), r.url.clone(), r.ch.clone());
        let (site, acked, region) = (site.to_string(), acked.clone(), r.name);
        tokio::spawn(async move {
            let name = format!("{region}-sim-{i}");
            let permit = gate.acquire_owned().await;
            let joined = join(join_ch, &url, &token, &name).await;
            drop(permit);
            match joined {
                Ok(ch) => sim_node(ch, SimNode { i, site, name }, acked, tx).await,
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    }
    for rx in registered {
        rx.await
            .map_err(|_| anyhow::anyhow!("a simulated node of {} could not register", r.name))??;
    }
    Ok(first + count)
}

/// Joins node `name` with the join token, and opens its own mutual-TLS
/// connection with the certificate it was issued.
async fn join(join_ch: Channel, url: &str, token: &str, name: &str) -> anyhow::Result<Channel> {
    let (key, csr) = classgrid_common::tls::new_csr(name)?;
    let joined = JoinServiceClient::new(join_ch)
        .join(pb::JoinRequest {
            token: token.into(),
            name: name.into(),
            csr,
        })
        .await
        .map_err(|e| anyhow::anyhow!("node {name} could not join: {}", e.message()))?
        .into_inner();
    connect(url, &joined.ca, Some((&joined.certificate, &key))).await
}

/// Waits until every placed seat runs as home sees it; the seconds since
/// `t0`. The agents' acknowledgements are counted first, so PostgreSQL is
/// not polled while the seats are still starting.
async fn until_running(
    home: &Region,
    lessons: &[uuid::Uuid],
    placed: u64,
    acked: &AtomicU64,
    t0: Instant,
    timeout_s: u64,
) -> anyhow::Result<f64> {
    let deadline = t0 + Duration::from_secs(timeout_s);
    while acked.load(Ordering::Relaxed) < placed && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut db = sqlx::PgConnection::connect(&home.db_url).await?;
    loop {
        // Home's own seats, and a borrowed lesson's seats as its lender
        // last reported them.
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM seats WHERE state = 'running' AND lesson_id = ANY($1))
                  + (SELECT count(*) FROM borrowed_lessons b,
                            jsonb_array_elements(coalesce(b.last_seen->'seats', '[]')) s
                     WHERE b.lesson_id = ANY($1) AND s->>'state' = 'running')",
        )
        .bind(lessons)
        .fetch_one(&mut db)
        .await?;
        if n as u64 >= placed {
            return Ok(t0.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "only {n} of {placed} seats running as home sees them after {timeout_s} s \
                 (agents in all regions acknowledged {})",
                acked.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
