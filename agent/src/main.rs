use std::process::ExitCode;

use clap::{Parser, Subcommand};
use classgrid_agent::{
    config::{AgentConfig, RunArgs},
    host,
};
use classgrid_common::telemetry;

/// The classgrid node agent. Install it on a school GPU server, a district
/// edge box or a cloud machine; it reports the node's CPU, memory and
/// accelerators to the regional broker and runs the seats it is given.
///
/// It runs seats as processes (with cgroup CPU and memory limits where the
/// host allows), as containers through a Docker-compatible engine, or stands
/// for a whole Slurm or Kubernetes cluster (`--runtimes`). How to install it
/// on each kind of host: docs/agent-install.md.
///
/// Configuration precedence: flag > CLASSGRID_* environment variable >
/// TOML file (--config) > default.
#[derive(Parser)]
#[command(name = "classgrid-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to the broker and run assignments until SIGINT or SIGTERM.
    /// Running seats are left running when the agent stops; a restarted agent
    /// adopts them.
    Run {
        #[command(flatten)]
        args: Box<RunArgs>,
        /// Stop every running assignment when the agent exits.
        #[arg(long)]
        stop_work_on_exit: bool,
        /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP: bind
        /// it where only the monitoring network reaches). Default: off.
        #[arg(long, env = "CLASSGRID_METRICS_LISTEN", value_name = "ADDR")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// Send traces over OTLP/gRPC, e.g. http://collector:4317: the spans
        /// of each assignment (received, runtime start, RUNNING report) join
        /// the broker's trace that the Assign carries. Default: off (or the
        /// standard OTEL_EXPORTER_OTLP_ENDPOINT).
        #[arg(long, env = "CLASSGRID_OTLP_ENDPOINT", value_name = "URL")]
        otlp_endpoint: Option<String>,
        /// The share of traces begun on this agent that are exported, 0 to 1;
        /// an Assign's context is followed as the broker sampled it.
        #[arg(long, env = "CLASSGRID_TRACE_SAMPLE_RATIO", value_name = "RATIO",
              value_parser = |s: &str| telemetry::parse_sample_ratio("--trace-sample-ratio", s))]
        trace_sample_ratio: Option<f64>,
    },
    /// Join the region: get this node's client certificate with a join token
    /// from a district admin (`classgrid join-tokens create --site SITE`).
    /// The state folder remembers broker, site, name and relay, so `run`
    /// afterwards needs no --broker, --site or --name.
    Join {
        /// The broker's https:// gRPC address.
        #[arg(long, env = "CLASSGRID_BROKER")]
        broker: String,
        /// The join token (cgjoin_…); it pins the broker's CA.
        #[arg(long, env = "CLASSGRID_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// This node's name within its site. Default: the host name.
        #[arg(long, env = "CLASSGRID_NAME")]
        name: Option<String>,
        /// Where the agent keeps its state (certificates go in its tls/
        /// folder). Default: /var/lib/classgrid-agent as root (the systemd
        /// unit's), else $CLASSGRID_HOME/agent; `run` looks in the same place.
        #[arg(long, env = "CLASSGRID_STATE_DIR")]
        state_dir: Option<std::path::PathBuf>,
        /// Join through the site edge's relay at HOST:PORT; `run` keeps using it.
        #[arg(long, env = "CLASSGRID_RELAY", value_name = "HOST:PORT")]
        relay: Option<String>,
    },
    /// Discover this machine's accelerators and print them. On an NVIDIA
    /// machine, `devices --json` is the manual check of discovery; its output
    /// can be saved as a new test fixture (docs/agent-install.md).
    Devices {
        /// Print JSON (the normalised device list and warnings).
        #[arg(long)]
        json: bool,
        /// Override a device tool's path, e.g. `--tool nvidia-smi=/usr/bin/nvidia-smi`. Repeatable.
        #[arg(long = "tool", value_name = "NAME=PATH")]
        tools: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    match cli.command {
        Command::Devices { json, tools } => devices(json, tools),
        Command::Join {
            broker,
            token,
            name,
            state_dir,
            relay,
        } => {
            let name = name
                .unwrap_or_else(|| sysinfo::System::host_name().unwrap_or_else(|| "node".into()));
            let dir = state_dir.unwrap_or_else(classgrid_agent::config::default_state_dir);
            match rt.block_on(classgrid_common::join::join(
                &broker,
                &token,
                &name,
                &dir,
                relay.as_deref(),
            )) {
                Ok(j) => {
                    println!(
                        "joined site {} as {}; certificate valid until {}",
                        j.site, j.name, j.not_after
                    );
                    println!("{}", next_after_join(&dir));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("classgrid-agent: join failed: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            args,
            stop_work_on_exit,
            metrics_listen,
            otlp_endpoint,
            trace_sample_ratio,
        } => {
            let cfg = match AgentConfig::resolve(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("classgrid-agent: {e:#}");
                    return ExitCode::from(2);
                }
            };
            // One plain line and a stop, rather than a service that retries
            // for ever against a broker it can never reach this way.
            if let Err(line) = rt.block_on(classgrid_agent::connect::preflight(&cfg)) {
                eprintln!("classgrid-agent: {line}");
                return ExitCode::from(2);
            }
            // The OTLP exporter's channel spawns onto the runtime it is
            // built in; `run` is driven by this one.
            let _in_rt = rt.enter();
            let _g = telemetry::init_sampled(
                "classgrid-agent",
                cfg.log_format.parse().unwrap_or_default(),
                otlp_endpoint.as_deref(),
                trace_sample_ratio,
            );
            if let Some(addr) = metrics_listen {
                match rt.block_on(classgrid_agent::metrics::serve(addr)) {
                    Ok(bound) => tracing::info!(metrics = %bound, "metrics listening"),
                    Err(e) => {
                        eprintln!(
                            "classgrid-agent: --metrics-listen: cannot listen on {addr}: {e}"
                        );
                        return ExitCode::from(2);
                    }
                }
            }
            let shutdown = rt.block_on(async { signal() });
            match rt.block_on(classgrid_agent::run(cfg, stop_work_on_exit, shutdown)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("classgrid-agent: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// What to run after a join: with the default state folder, `run` needs no
/// folder flag, and as root the shipped systemd unit reads that folder.
fn next_after_join(dir: &std::path::Path) -> String {
    let advertise = "--advertise-host ADDRESS   # this machine's address on the school network";
    if dir == classgrid_agent::config::default_state_dir() {
        if dir == std::path::Path::new(classgrid_agent::config::SYSTEM_STATE_DIR) {
            format!(
                "next: set advertise_host in /etc/classgrid/agent.toml and run `systemctl enable --now classgrid-agent`\n   or: classgrid-agent run {advertise}"
            )
        } else {
            format!("next: classgrid-agent run {advertise}")
        }
    } else {
        format!(
            "next: classgrid-agent run --state-dir {} {advertise}",
            dir.display()
        )
    }
}

fn devices(json: bool, tools: Vec<String>) -> ExitCode {
    let args = RunArgs {
        config: None,
        broker: None,
        site: Some("-".into()),
        name: Some("-".into()),
        tier: None,
        state_dir: Some(std::env::temp_dir()),
        advertise_host: None,
        tools,
        discovery_interval_s: None,
        log_format: None,
        runtimes: None,
        container_socket: None,
        data_dir: None,
        slurm_partition: None,
        slurm_gpu_memory_mib: None,
        kube_api: None,
        kube_namespace: None,
        probe_addr: None,
        probe_delay_ms: None,
        relay: None,
    };
    let opts = match AgentConfig::resolve(&args).and_then(|c| c.discover_options()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("classgrid-agent: {e:#}");
            return ExitCode::from(2);
        }
    };
    let d = classgrid_devices::discover(&opts);
    if json {
        println!("{}", serde_json::to_string_pretty(&d).unwrap_or_default());
        // Standard output stays pure JSON; the person at the terminal still
        // reads what discovery could not understand.
        eprint!("{}", warnings_in_words(&d.warnings));
    } else {
        println!(
            "cpu_millis={} memory_mib={}",
            host::cpu_millis(),
            host::memory_mib()
        );
        for dev in &d.devices {
            println!(
                "{} #{} {} {} MiB (used {}) healthy={} sharing={:?}",
                dev.vendor,
                dev.index,
                dev.model,
                dev.memory_total_mib,
                dev.memory_used_mib,
                dev.healthy,
                dev.sharing
            );
        }
        if d.devices.is_empty() {
            println!("no accelerators found");
        }
        print!("{}", warnings_in_words(&d.warnings));
    }
    ExitCode::SUCCESS
}

/// Discovery's warnings for a person: how many, that the list above may be
/// short or wrong because of them, each on its own line, and what to do.
fn warnings_in_words(warnings: &[String]) -> String {
    if warnings.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n{} problem(s) while reading this machine's accelerators, so the device list may be missing devices or details:\n",
        warnings.len()
    );
    for (i, w) in warnings.iter().enumerate() {
        out.push_str(&format!("  {}. {w}\n", i + 1));
    }
    out.push_str(
        "Run the tool named in each line by hand to see its full output. If it looks right, the agent \
         could not read this layout: please send that output with the agent version, so it can be added \
         as a test fixture (docs/agent-install.md).\n",
    );
    out
}

fn signal() -> tokio::sync::watch::Receiver<bool> {
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
    rx
}
