use std::process::ExitCode;

use clap::{Parser, Subcommand};
use classgrid_common::telemetry;
use classgrid_edge::{EdgeConfig, RunArgs};

mod seats;
mod stage;

/// The classgrid site gateway, run at a school or a district point of
/// presence.
///
/// Configuration precedence: flag > CLASSGRID_* environment variable >
/// TOML file (--config) > default.
#[derive(Parser)]
#[command(name = "classgrid-edge", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register this site's edge with the broker and keep the link up.
    Run(Box<RunArgs>),
    /// Get this edge's client certificate with a join token of kind `edge`
    /// (`classgrid join-tokens create --site SITE --kind edge`).
    Join {
        /// The broker's https:// gRPC address.
        #[arg(long, env = "CLASSGRID_BROKER")]
        broker: String,
        #[arg(long, env = "CLASSGRID_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long, env = "CLASSGRID_NAME", default_value = "edge")]
        name: String,
        #[arg(long, env = "CLASSGRID_STATE_DIR")]
        state_dir: Option<std::path::PathBuf>,
    },
    /// Show staging progress and the cache of a running edge.
    Stage {
        /// The edge's content server. Default: http://127.0.0.1:7480
        #[arg(
            long,
            env = "CLASSGRID_ADVERTISE_URL",
            default_value = "http://127.0.0.1:7480"
        )]
        edge_url: String,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        output: String,
        /// Refresh every second until interrupted.
        #[arg(long)]
        watch: bool,
    },
    /// Show the site's seats as last heard from the broker: what the site's
    /// agents keep running, and until when, if the broker is unreachable.
    Seats {
        /// The edge's state folder. Default: ~/.classgrid/edge
        #[arg(long, env = "CLASSGRID_STATE_DIR")]
        state_dir: Option<std::path::PathBuf>,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        output: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match Cli::parse().command {
        Command::Run(a) => a,
        Command::Stage {
            edge_url,
            output,
            watch,
        } => return stage::show(&edge_url, &output, watch).await,
        Command::Seats { state_dir, output } => {
            let dir = state_dir.unwrap_or_else(|| classgrid_common::context::home().join("edge"));
            return seats::show(&dir, &output).await;
        }
        Command::Join {
            broker,
            token,
            name,
            state_dir,
        } => {
            let dir = state_dir.unwrap_or_else(|| classgrid_common::context::home().join("edge"));
            return match classgrid_common::join::join(&broker, &token, &name, &dir, None).await {
                Ok(j) => {
                    println!(
                        "joined site {} as edge {}; certificate valid until {}",
                        j.site, j.name, j.not_after
                    );
                    println!("next: classgrid-edge run --state-dir {}", dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("classgrid-edge: join failed: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let cfg = match EdgeConfig::resolve(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("classgrid-edge: {e:#}");
            return ExitCode::from(2);
        }
    };
    let _g = telemetry::init(
        "classgrid-edge",
        cfg.log_format.parse().unwrap_or_default(),
        None,
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = tx.send(true);
    });
    match classgrid_edge::run(cfg, rx).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("classgrid-edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}
