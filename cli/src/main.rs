//! `classgrid`: the command-line client for district admins, school IT and
//! course-platform developers, and `classgrid up` for a single-machine
//! installation.

/// As in the broker (`classgrid bench storm` runs the broker in process):
/// glibc's allocator took about a third of the runtime's CPU at a bell.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod bench;
mod bench_bell;
mod bench_db;
mod bench_failover;
mod bench_federation;
mod bench_storm;
mod bench_storm_ha;
mod bench_term;
mod client;
mod commands;
mod logs;
mod output;
mod parse;
mod peers;
mod series;
mod template_xlsx;
mod tz;
mod up;
mod vouchers;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// classgrid: AI compute for school lessons.
///
/// The client reads the broker address and token from the context file
/// ($CLASSGRID_HOME/context.toml, written by `classgrid up`); flags and
/// CLASSGRID_* environment variables override it.
///
/// Exit codes: 0 ok; 1 other error; 2 invalid input; 3 not found;
/// 4 refused (cannot be placed, or wrong state); 5 broker unreachable;
/// 6 not authenticated or not allowed.
#[derive(Parser)]
#[command(name = "classgrid", version)]
struct Cli {
    #[command(flatten)]
    global: client::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a single-machine installation in the foreground until Ctrl-C:
    /// broker, one local agent and one edge, on this machine's PostgreSQL
    /// (which scripts/up.sh installs and starts when needed).
    Up(up::UpArgs),
    /// Sites: schools, district points of presence, clouds.
    #[command(subcommand)]
    Sites(commands::Sites),
    /// Nodes and their devices.
    #[command(subcommand)]
    Nodes(commands::Nodes),
    /// Lessons: book, read, watch, explain, cancel.
    #[command(subcommand)]
    Lessons(commands::Lessons),
    /// Ad-hoc jobs.
    #[command(subcommand)]
    Jobs(commands::Jobs),
    /// Recurring lessons over a term: book (or --dry-run), read, edit.
    #[command(subcommand)]
    Series(series::Series),
    /// A school's timetable from its spreadsheet: template, import (--dry-run to preview).
    #[command(subcommand)]
    Timetable(series::Timetable),
    /// Benchmarks against the real broker and PostgreSQL.
    #[command(subcommand)]
    Bench(bench::Bench),
    /// API tokens for platforms and admins (district admins).
    #[command(subcommand)]
    Tokens(admin::Tokens),
    /// Join tokens with which agents and edges get their certificates.
    #[command(subcommand, name = "join-tokens")]
    JoinTokens(admin::JoinTokens),
    /// Console users.
    #[command(subcommand)]
    Users(admin::Users),
    /// Read the audit log, filtered.
    Audit(admin::AuditArgs),
    /// The region's broker replicas, which one leads and since when.
    Status,
    /// Peer regions: offer, accept, list, show, remove, settlement.
    #[command(subcommand)]
    Peers(peers::Peers),
    /// Compute vouchers: issue, list, balance, ledger, seat quotas.
    #[command(subcommand)]
    Vouchers(vouchers::Vouchers),
    /// Charged accelerator-hours by school, voucher, month or node class.
    Usage(vouchers::UsageArgs),
    /// Print shell completions, e.g. `classgrid completions bash > /etc/bash_completion.d/classgrid`.
    Completions { shell: clap_complete::Shell },
}

fn main() -> ExitCode {
    classgrid_common::memory::without_huge_pages();
    let cli = Cli::parse();
    // Like any Unix filter, a client command ends quietly when its stdout
    // is closed (`classgrid … | head`). Not through SIGPIPE's default
    // action: that also killed the command, silently and with no message,
    // when the broker (or a load balancer failing over) closed a connection
    // mid-write, since HTTP/2 writes with writev, which raises SIGPIPE.
    // Such a write now fails with EPIPE and the command says so.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("");
        // Printing (println!, completions) panics on a closed stdout.
        if msg.contains("Broken pipe") || msg.contains("BrokenPipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
    tz::set(cli.global.time_zone);
    if let Command::Completions { shell } = cli.command {
        use clap::CommandFactory;
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "classgrid",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = rt.block_on(async move {
        match cli.command {
            Command::Up(a) => up::run(a).await,
            Command::Sites(c) => commands::sites(&cli.global, c).await,
            Command::Nodes(c) => commands::nodes(&cli.global, c).await,
            Command::Lessons(c) => commands::lessons(&cli.global, c).await,
            Command::Jobs(c) => commands::jobs(&cli.global, c).await,
            Command::Series(c) => series::series(&cli.global, c).await,
            Command::Timetable(c) => series::timetable(&cli.global, c).await,
            Command::Bench(b) => bench::run(&cli.global, b).await,
            Command::Tokens(c) => admin::tokens(&cli.global, c).await,
            Command::JoinTokens(c) => admin::join_tokens(&cli.global, c).await,
            Command::Users(c) => admin::users(&cli.global, c).await,
            Command::Audit(a) => admin::audit(&cli.global, a).await,
            Command::Status => admin::status(&cli.global).await,
            Command::Peers(c) => peers::peers(&cli.global, c).await,
            Command::Vouchers(c) => vouchers::vouchers(&cli.global, c).await,
            Command::Usage(a) => vouchers::usage(&cli.global, a).await,
            Command::Completions { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("classgrid: {}", client::describe(&e));
            ExitCode::from(client::exit_code(&e))
        }
    }
}
