//! `classgrid bench bell`: the bell for a class of real seats on this
//! machine (issue 22). A broker, an agent and an edge run in this process,
//! like `classgrid up`, on a throwaway database; the seats are real
//! (JupyterLab per seat for `--kind notebook`) and every link is opened
//! through the edge over TLS, as a student's browser would.
//!
//! It measures:
//! - **warm**: a lesson booked `--lead-s` ahead, whose seats start during
//!   the lead; the time from the bell until every link answers;
//! - **cold**: the same class booked *at* the bell; the time from the
//!   booking until every link answers;
//! - the resident memory of a warm seat (its process group, from /proc).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use classgrid_broker::{
    auth::pki::Ca,
    config::{BrokerConfig, DEFAULT_DATABASE_URL, ServeArgs},
    domain::{
        lesson::RawBooking,
        spec::{RawSeat, Workload},
    },
    server,
};
use uuid::Uuid;

#[derive(Debug, Clone, clap::Args)]
pub struct BellArgs {
    /// Seats in the class.
    #[arg(long, default_value_t = 45)]
    pub seats: u32,
    /// notebook (JupyterLab per seat; needs root) or process (a small web
    /// server per seat).
    #[arg(long, default_value = "notebook")]
    pub kind: String,
    /// How far ahead the warm lesson is booked: its staging lead, in which
    /// its seats start.
    #[arg(long, default_value_t = 150)]
    pub lead_s: u64,
    /// PostgreSQL server; a throwaway database is made on it and dropped.
    #[arg(long, env = "CLASSGRID_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
}

const SITE: &str = "bench-school";

fn check(a: &BellArgs) -> anyhow::Result<()> {
    if !(1..=200).contains(&a.seats) {
        anyhow::bail!("--seats: must be between 1 and 200, not {}", a.seats);
    }
    if a.kind != "notebook" && a.kind != "process" {
        anyhow::bail!("--kind: must be notebook or process, not `{}`", a.kind);
    }
    if !(30..=3600).contains(&a.lead_s) {
        anyhow::bail!("--lead-s: must be between 30 and 3600, not {}", a.lead_s);
    }
    if a.kind == "notebook" {
        let dirs = classgrid_agent::runtime::notebook::NotebookDirs::from_env();
        if let Some(why) = classgrid_agent::runtime::notebook::unavailable(&dirs) {
            anyhow::bail!("--kind notebook: {why}");
        }
    }
    Ok(())
}

pub async fn run(a: BellArgs) -> anyhow::Result<()> {
    check(&a)?;
    let (db_url, db_name) = crate::bench_db::create_database(&a.database_url).await?;
    let home = std::env::temp_dir().join(format!("classgrid-bench-bell-{}", std::process::id()));
    std::fs::create_dir_all(&home)?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let result = bench(&a, &db_url, &home, stop).await;
    let _ = stop_tx.send(true);
    crate::bench_db::drop_database(&a.database_url, &db_name).await;
    match result {
        Ok(line) => {
            let _ = std::fs::remove_dir_all(&home);
            println!("{line}");
            Ok(())
        }
        Err(e) => Err(e.context(format!("the bench's state is in {}", home.display()))),
    }
}

async fn bench(
    a: &BellArgs,
    db_url: &str,
    home: &Path,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<String> {
    let cfg = BrokerConfig::resolve(&ServeArgs {
        database_url: Some(db_url.to_string()),
        grpc_addr: Some("127.0.0.1:0".parse()?),
        http_addr: Some("127.0.0.1:0".parse()?),
        log_format: Some("text".into()),
        staging_lead_s: Some(a.lead_s),
        grace_s: Some(5),
        security: classgrid_broker::auth::config::SecurityArgs {
            data_dir: Some(home.join("broker")),
            insecure_dev: true,
            rate_limit_per_s: Some(1_000_000),
            ..Default::default()
        },
        ..Default::default()
    })?;
    let started = server::start(cfg).await?;
    let grpc_url = format!("http://{}", started.grpc.local_addr()?);
    let app = started.app.clone();
    tokio::spawn(server::run(started, stop.clone()));
    app.create_site(SITE, "school", "bench")
        .await
        .map_err(|e| anyhow::anyhow!("creating the bench's school: {e}"))?;

    // The edge serves the links with a certificate from the region CA.
    let ca_dir = home.join("broker");
    let ca = Ca::load_or_create(&ca_dir)?;
    let (cert, key) = (home.join("seat-links.pem"), home.join("seat-links.key"));
    ca.issue_server(
        "classgrid edge seat links",
        &["127.0.0.1".into()],
        &cert,
        &key,
    )?;
    let content = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let edge_cfg = classgrid_edge::EdgeConfig {
        broker: grpc_url.clone(),
        site: SITE.into(),
        name: "edge".into(),
        state_dir: home.join("edge"),
        log_format: "text".into(),
        listen: content,
        advertise_url: format!("http://{content}"),
        report_interval: Duration::from_millis(300),
        seat_links: Some(classgrid_edge::seatlink::proxy::SeatLinks {
            listen: "127.0.0.1:0".into(),
            cert,
            key,
            url: None,
        }),
        ..classgrid_edge::EdgeConfig::defaults(home.join("edge"))
    };
    tokio::spawn(classgrid_edge::run(edge_cfg, stop.clone()));
    let agent_dir = home.join("agent");
    let agent_cfg = classgrid_agent::config::AgentConfig {
        broker: grpc_url.clone(),
        site: SITE.into(),
        name: "bench-node".into(),
        tier: "edge".into(),
        state_dir: agent_dir.clone(),
        advertise_host: "127.0.0.1".into(),
        log_format: "text".into(),
        runtimes: vec![a.kind.clone()],
        ..classgrid_agent::config::AgentConfig::defaults(agent_dir.clone())
    };
    tokio::spawn(classgrid_agent::run(agent_cfg, false, stop.clone()));
    let tls = Arc::new(client_tls(&ca_dir.join("ca.pem"))?);

    until(Duration::from_secs(60), "the agent never connected", || {
        app.fleet.nodes().iter().any(|n| n.is_connected())
    })
    .await?;
    if a.kind == "notebook" {
        let dirs = classgrid_agent::runtime::notebook::NotebookDirs::from_env();
        let ready = dirs
            .envs
            .join(format!(
                "jupyterlab-{}",
                classgrid_agent::runtime::notebook::JUPYTERLAB_VERSION
            ))
            .join(".classgrid-ready");
        if !ready.exists() {
            eprintln!("bench bell: building the node's notebook environment first (once)");
        }
        until(
            Duration::from_secs(900),
            "the notebook environment was never built",
            || ready.exists(),
        )
        .await?;
    }

    // Warm: booked ahead; the seats start during the lead.
    let bell = chrono::Utc::now() + chrono::Duration::seconds(a.lead_s as i64);
    let warm = app
        .book_lesson(booking(a, bell))
        .await
        .map_err(|e| anyhow::anyhow!("booking the warm lesson: {e}"))?;
    let links = links_of(&app, warm.lesson.id).await?;
    let wait = (bell - chrono::Utc::now()).to_std().unwrap_or_default();
    eprintln!(
        "bench bell: {} {} seats booked; the bell rings in {:.0} s",
        a.seats,
        a.kind,
        wait.as_secs_f64()
    );
    // Just before the bell: how many seats already answer (warm means all).
    tokio::time::sleep(wait.saturating_sub(Duration::from_secs(3))).await;
    let early = answering(&links, &tls, &a.kind).await;
    eprintln!(
        "bench bell: 3 s before the bell, {early}/{} links answer",
        links.len()
    );
    tokio::time::sleep((bell - chrono::Utc::now()).to_std().unwrap_or_default()).await;
    let rung = Instant::now();
    all_answer(&links, &tls, &a.kind).await?;
    let warm_s = rung.elapsed().as_secs_f64();
    let rss = seat_rss_mib(&agent_dir);
    let per_seat = if rss.is_empty() {
        0.0
    } else {
        rss.iter().sum::<f64>() / rss.len() as f64
    };
    eprintln!(
        "bench bell: warm: every link answered {warm_s:.3} s after the bell; {per_seat:.1} MiB per seat"
    );
    app.cancel_lesson(warm.lesson.id, "bench: warm measured")
        .await
        .map_err(|e| anyhow::anyhow!("cancelling the warm lesson: {e}"))?;
    until(
        Duration::from_secs(120),
        "the warm seats never stopped",
        || seat_rss_mib(&agent_dir).is_empty(),
    )
    .await?;

    // Cold: the same class booked at the bell.
    let booked = Instant::now();
    let cold = app
        .book_lesson(booking(a, chrono::Utc::now()))
        .await
        .map_err(|e| anyhow::anyhow!("booking the cold lesson: {e}"))?;
    let links = links_of(&app, cold.lesson.id).await?;
    all_answer(&links, &tls, &a.kind).await?;
    let cold_s = booked.elapsed().as_secs_f64();
    let _ = app.cancel_lesson(cold.lesson.id, "bench: done").await;
    let _ = until(Duration::from_secs(120), "", || {
        seat_rss_mib(&agent_dir).is_empty()
    })
    .await;

    Ok(format!(
        "bell: seats={} kind={} lead_s={} warm_answering_3s_before={early}/{} warm_all_answer_s={warm_s:.3} cold_all_answer_s={cold_s:.3} rss_per_warm_seat_mib={per_seat:.1}",
        a.seats, a.kind, a.lead_s, a.seats
    ))
}

fn booking(a: &BellArgs, start: chrono::DateTime<chrono::Utc>) -> RawBooking {
    let workload = if a.kind == "notebook" {
        Workload::default()
    } else {
        Workload {
            command: "python3".into(),
            args: vec![
                "-m".into(),
                "http.server".into(),
                "--bind".into(),
                "127.0.0.1".into(),
                "$(PORT)".into(),
            ],
            ..Default::default()
        }
    };
    RawBooking {
        school_site: SITE.into(),
        title: format!("bench bell {}", a.kind),
        start: Some(start),
        duration_seconds: 1200,
        seats: a.seats as i64,
        seat: Some(RawSeat {
            cpu_millis: 20,
            memory_mib: 64,
            runtime: a.kind.clone(),
            ..Default::default()
        }),
        workload,
        // All on loopback: an RTT measured under the bench's own load is
        // noise, not distance.
        max_rtt_ms: 1000,
        ..Default::default()
    }
}

/// The lesson's links, once the edge has said where it serves them.
async fn links_of(app: &classgrid_broker::app::App, lesson: Uuid) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = app
            .lesson(lesson)
            .await
            .map_err(|e| anyhow::anyhow!("reading the lesson: {e}"))?;
        if v.seats.iter().all(|s| !s.link.is_empty()) {
            return Ok(v.seats.into_iter().map(|s| s.link).collect());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the edge never served the seat links"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls every link until each answers 200 through the edge (Jupyter's
/// API for notebooks, the page for web servers).
async fn all_answer(
    links: &[String],
    tls: &Arc<rustls::ClientConfig>,
    kind: &str,
) -> anyhow::Result<()> {
    let path = if kind == "notebook" { "api/status" } else { "" };
    let mut tasks = tokio::task::JoinSet::new();
    for link in links {
        let (url, tls) = (format!("{link}{path}"), tls.clone());
        tasks.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                if get_status(&url, &tls).await.ok() == Some(200) {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    anyhow::bail!("{url} never answered");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// How many links answer 200 now (one try each).
async fn answering(links: &[String], tls: &Arc<rustls::ClientConfig>, kind: &str) -> usize {
    let path = if kind == "notebook" { "api/status" } else { "" };
    let mut tasks = tokio::task::JoinSet::new();
    for link in links {
        let (url, tls) = (format!("{link}{path}"), tls.clone());
        tasks.spawn(async move { get_status(&url, &tls).await.ok() == Some(200) });
    }
    let mut n = 0;
    while let Some(r) = tasks.join_next().await {
        n += usize::from(r.unwrap_or(false));
    }
    n
}

fn client_tls(ca: &Path) -> anyhow::Result<rustls::ClientConfig> {
    use rustls_pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// One GET's status over TLS. Only the status line is read: this is a
/// probe, and an HTTP client crate for one line is not worth its build.
async fn get_status(url: &str, tls: &Arc<rustls::ClientConfig>) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| anyhow::anyhow!("not https: {url}"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(authority);
    let tcp = tokio::net::TcpStream::connect(authority).await?;
    let name = rustls_pki_types::ServerName::try_from(host.to_string())?;
    let mut s = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = [0u8; 16];
    let mut n = 0;
    while n < 12 {
        let got = s.read(&mut buf[n..]).await?;
        anyhow::ensure!(got > 0, "closed before the status line");
        n += got;
    }
    std::str::from_utf8(&buf[9..12])?
        .parse()
        .map_err(|e| anyhow::anyhow!("status: {e}"))
}

/// Resident memory (MiB) of each running seat: its process group, summed,
/// from the pids the agent keeps in its state folder.
fn seat_rss_mib(agent_dir: &Path) -> Vec<f64> {
    let Ok(text) = std::fs::read_to_string(agent_dir.join("assignments.json")) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let groups: Vec<i64> = v
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["pid"].as_i64()).collect())
        .unwrap_or_default();
    let page = 4096.0;
    let mut by_group = std::collections::HashMap::<i64, f64>::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let p: PathBuf = entry.path();
        let Ok(stat) = std::fs::read_to_string(p.join("stat")) else {
            continue;
        };
        // pgrp is the third field after the command's closing parenthesis.
        let Some(pgrp) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|g| g.parse::<i64>().ok())
        else {
            continue;
        };
        if !groups.contains(&pgrp) {
            continue;
        }
        let rss = std::fs::read_to_string(p.join("statm"))
            .ok()
            .and_then(|m| {
                m.split_whitespace()
                    .nth(1)
                    .and_then(|r| r.parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        *by_group.entry(pgrp).or_default() += rss * page / (1 << 20) as f64;
    }
    by_group.into_values().collect()
}

async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while !f() {
        anyhow::ensure!(t0.elapsed() < limit, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
