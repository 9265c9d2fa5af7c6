//! `classgrid up`: a whole region on one machine, in the foreground. The
//! broker, one agent and one edge run in this process; PostgreSQL is the
//! machine's own server (scripts/up.sh installs and starts it when needed).

use std::net::SocketAddr;

use classgrid_broker::config::{BrokerConfig, DEFAULT_DATABASE_URL, ServeArgs};
use classgrid_common::{context, telemetry};
use tracing::info;

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// PostgreSQL URL; the database is created when missing.
    #[arg(long, env = "CLASSGRID_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// HTTP address (REST, console, /healthz, /metrics).
    #[arg(long, env = "CLASSGRID_HTTP_ADDR", default_value = "127.0.0.1:7080")]
    pub http_addr: SocketAddr,
    /// gRPC address (agents, edges, platforms).
    #[arg(long, env = "CLASSGRID_GRPC_ADDR", default_value = "127.0.0.1:7443")]
    pub grpc_addr: SocketAddr,
    /// Serve plain text without certificates (development only).
    #[arg(long)]
    pub insecure_dev: bool,
    /// Where the local edge serves cached content to the site's agents.
    #[arg(
        long,
        env = "CLASSGRID_EDGE_CONTENT_ADDR",
        default_value = "127.0.0.1:7480"
    )]
    pub edge_content_addr: SocketAddr,
    /// Where the local edge serves students' seat links (https, with a
    /// certificate from the region CA; not without TLS).
    #[arg(
        long,
        env = "CLASSGRID_EDGE_LINKS_ADDR",
        default_value = "127.0.0.1:7482"
    )]
    pub edge_links_addr: SocketAddr,
    /// The demo school site that the local agent and edge join.
    #[arg(long, default_value = "demo-school")]
    pub site: String,
    #[arg(long, default_value = "demo-district")]
    pub district: String,
}

/// How long Ctrl-C may take, at most, to stop `up`.
const STOP_WITHIN: std::time::Duration = std::time::Duration::from_secs(4);

pub async fn run(a: UpArgs) -> anyhow::Result<()> {
    let home = context::home();
    std::fs::create_dir_all(&home)?;
    let _g = telemetry::init("classgrid", telemetry::LogFormat::Text, None);
    let serve = ServeArgs {
        database_url: Some(a.database_url.clone()),
        grpc_addr: Some(a.grpc_addr),
        http_addr: Some(a.http_addr),
        grace_s: Some(10),
        log_format: Some("text".into()),
        security: classgrid_broker::auth::config::SecurityArgs {
            data_dir: Some(home.join("broker")),
            insecure_dev: a.insecure_dev,
            ..Default::default()
        },
        ..Default::default()
    };
    let cfg = BrokerConfig::resolve(&serve)?;
    let started = classgrid_broker::server::start(cfg).await?;
    let app = started.app.clone();
    let system = classgrid_broker::auth::Caller::system();
    app.create_site(&a.site, "school", &a.district)
        .await
        .map_err(|e| anyhow::anyhow!("creating site {}: {e}", a.site))?;
    let scheme = if app.tls.is_some() { "https" } else { "http" };
    let grpc_url = format!("{scheme}://{}", started.grpc.local_addr()?);
    let http_url = format!("{scheme}://{}", started.http.local_addr()?);

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let broker = tokio::spawn(classgrid_broker::server::run(started, stop.clone()));

    // The local agent and edge join like any other: a join token, a CSR,
    // a certificate. Earlier certificates of theirs are revoked first, so a
    // re-run (or a fresh database) always gets a working pair.
    if app.tls.is_some() {
        for (kind, name, dir) in [
            ("agent", "local", home.join("agent-local")),
            ("edge", "edge", home.join("edge")),
        ] {
            let site = app
                .fleet
                .site(&a.site)
                .ok_or_else(|| anyhow::anyhow!("site {} vanished", a.site))?;
            app.store
                .revoke_node_certs_of_kind(site.id, kind, name)
                .await?;
            // The operator starting this machine approves its own agent.
            let (_, token) = app
                .create_join_token(&system, &a.site, kind, 600, 1, Some(false))
                .await
                .map_err(|e| anyhow::anyhow!("join token for the local {kind}: {e}"))?;
            classgrid_common::join::join(&grpc_url, &token, name, &dir, None).await?;
        }
    }
    let token = local_admin_token(&app, &system).await?;
    // A console login for this machine; a new password on every run, since
    // only its hash is kept and the old one cannot be shown again.
    let console_password = classgrid_broker::console::bootstrap::generate_password();
    classgrid_broker::console::bootstrap::admin_user(&app.store, "admin", &console_password, true)
        .await?;

    // Notebook seats where this machine can run them (root: each seat is
    // its own user); the agent says why not otherwise.
    let notebooks = classgrid_agent::runtime::notebook::unavailable(
        &classgrid_agent::runtime::notebook::NotebookDirs::from_env(),
    );
    let mut runtimes = vec!["process".to_string()];
    match &notebooks {
        None => runtimes.push("notebook".into()),
        Some(why) => tracing::warn!("{why}"),
    }
    let agent_cfg = classgrid_agent::config::AgentConfig {
        broker: grpc_url.clone(),
        site: a.site.clone(),
        name: "local".into(),
        tier: "edge".into(),
        state_dir: home.join("agent-local"),
        advertise_host: "127.0.0.1".into(),
        tools: Vec::new(),
        discovery_interval_s: 60,
        log_format: "text".into(),
        runtimes,
        ..classgrid_agent::config::AgentConfig::defaults(home.join("agent-local"))
    };
    // Seats outlive `up` (decision 086): their processes run in their own
    // process groups, so Ctrl-C does not reach them, and the next `up`'s
    // agent adopts them from its state folder, on the same ports, so that
    // students' links keep working across a restart.
    let agent = tokio::spawn(classgrid_agent::run(agent_cfg, false, stop.clone()));
    let edge_cfg = classgrid_edge::EdgeConfig {
        broker: grpc_url.clone(),
        site: a.site.clone(),
        name: "edge".into(),
        state_dir: home.join("edge"),
        log_format: "text".into(),
        listen: a.edge_content_addr,
        advertise_url: format!("http://{}", a.edge_content_addr),
        seat_links: seat_links(&app, &home, a.edge_links_addr)?,
        ..classgrid_edge::EdgeConfig::defaults(home.join("edge"))
    };
    let edge = tokio::spawn(classgrid_edge::run(edge_cfg, stop.clone()));

    let ca_file = if app.tls.is_some() {
        home.join("broker").join("ca.pem").display().to_string()
    } else {
        String::new()
    };
    let ctx = context::Context {
        http_url: http_url.clone(),
        grpc_url: grpc_url.clone(),
        token: token.clone(),
        ca_file: ca_file.clone(),
    };
    let ctx_path = context::default_path();
    ctx.save(&ctx_path)?;

    println!();
    println!("classgrid is up.");
    println!("  gRPC API:   {grpc_url}");
    println!("  HTTP:       {http_url}  (/healthz, /metrics)");
    println!("  console:    {http_url}/console  (user `admin`, password `{console_password}`)");
    println!(
        "  context:    {} (classgrid uses it by default)",
        ctx_path.display()
    );
    if !ca_file.is_empty() {
        println!("  CA:         {ca_file}");
    }
    println!("  admin token (district admin, also in the context file):");
    println!("    {token}");
    println!(
        "  site:       {} (school, {}), with one local agent `local` and one edge",
        a.site, a.district
    );
    println!();
    if notebooks.is_none() && app.tls.is_some() {
        println!(
            "Book a 3-seat notebook lesson starting in 1 minute (JupyterLab per student, warm before the bell):"
        );
        println!(
            "  classgrid lessons book --school {} --start +60s --duration 10m --seats 3 --kind notebook",
            a.site
        );
        println!(
            "Then: classgrid lessons links ID, and open a seat's link in a browser (import the region CA {ca_file} into it once, or accept its warning)."
        );
    } else {
        println!("Book a 4-seat lesson starting in 30 s, each seat a small web server:");
        println!(
            "  classgrid lessons book --school {} --start +30s --duration 5m --seats 4 -- python3 -m http.server '$(PORT)'",
            a.site
        );
    }
    println!("Then: classgrid lessons watch ID   |   classgrid nodes list");
    println!("Press Ctrl-C to stop.");
    println!();

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("shutting down");
    let _ = stop_tx.send(true);
    // Within STOP_WITHIN, whatever is connected: the broker's graceful stop
    // waits for every open HTTP/2 connection, and an outside agent's stream
    // stays open until that agent notices (70 s and more). Everything
    // acknowledged is already committed in PostgreSQL, so what is cut off
    // here loses nothing; the agents reconnect to the next broker.
    let deadline = tokio::time::Instant::now() + STOP_WITHIN;
    for (what, task) in [("agent", agent), ("edge", edge)] {
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            tracing::warn!(what, "did not stop in time; stopping it with the process");
        }
    }
    match tokio::time::timeout_at(deadline, broker).await {
        Ok(r) => r??,
        Err(_) => tracing::warn!(
            "the broker's connections did not close in time (outside agents or clients); closing them"
        ),
    }
    println!(
        "Seats of the local agent keep running; the next `classgrid up` adopts them on the same ports."
    );
    println!("classgrid stopped.");
    Ok(())
}

/// The district-admin token of this installation: the one in the context
/// file while it still works, otherwise a new one.
async fn local_admin_token(
    app: &classgrid_broker::app::App,
    system: &classgrid_broker::auth::Caller,
) -> anyhow::Result<String> {
    if let Ok(ctx) = context::Context::load(&context::default_path())
        && !ctx.token.is_empty()
        && app
            .authenticate(Some(&format!("Bearer {}", ctx.token)), "local".into())
            .await
            .is_ok()
    {
        return Ok(ctx.token);
    }
    let (_, token) = app
        .create_api_token(system, "classgrid up", "district_admin", &[], 0)
        .await
        .map_err(|e| anyhow::anyhow!("minting the local admin token: {e}"))?;
    Ok(token)
}

/// The local edge's seat links: a certificate from the region CA for this
/// machine's names, made afresh on every run (it is cheap, and a changed
/// CA is followed). None without TLS: a link is https or nothing.
fn seat_links(
    app: &classgrid_broker::app::App,
    home: &std::path::Path,
    listen: SocketAddr,
) -> anyhow::Result<Option<classgrid_edge::seatlink::proxy::SeatLinks>> {
    if app.tls.is_none() {
        return Ok(None);
    }
    let ca = classgrid_broker::auth::pki::Ca::load_or_create(&home.join("broker"))?;
    let dir = home.join("edge");
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = (dir.join("seat-links.pem"), dir.join("seat-links.key"));
    let names = vec![listen.ip().to_string(), "localhost".to_string()];
    ca.issue_server("classgrid edge seat links", &names, &cert, &key)?;
    Ok(Some(classgrid_edge::seatlink::proxy::SeatLinks {
        listen: listen.to_string(),
        cert,
        key,
        url: None,
    }))
}
