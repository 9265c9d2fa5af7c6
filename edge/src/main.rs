use std::process::ExitCode;

use clap::{Parser, Subcommand};
use classgrid_common::telemetry;
use classgrid_edge::{EdgeConfig, RunArgs};

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
    Run(RunArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let Command::Run(args) = Cli::parse().command;
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
