use clap::{Parser, Subcommand};
use classgrid_broker::{
    config::{BrokerConfig, ServeArgs},
    server,
    store::Store,
};
use classgrid_common::telemetry;

/// glibc's allocator took about a third of the runtime's CPU at a bell (many
/// small, short-lived allocations across threads); mimalloc made the storm
/// about 10 % faster (decision 068).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The classgrid regional broker: matches lessons and jobs from course
/// platforms to school, district and cloud nodes.
///
/// Configuration precedence: flag > CLASSGRID_* environment variable >
/// TOML file (--config) > default.
#[derive(Parser)]
#[command(name = "classgrid-broker", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply migrations, then serve gRPC and HTTP until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Apply the SQL migrations in migrations/ and exit.
    Migrate(ServeArgs),
    /// Print a new district-admin API token (for the first admin, run on
    /// the server itself with database access). Audited as `bootstrap`.
    AdminToken(ServeArgs),
    /// Create the first console admin (a district admin), on the server
    /// itself; the password is read from CLASSGRID_ADMIN_PASSWORD so it
    /// never appears in the process list. Audited as `bootstrap`.
    AdminUser(AdminUserArgs),
    /// Issue the certificate a school edge serves seat links with, from the
    /// region CA (decision 088), on the server itself: writes
    /// OUT/seat-links.pem (certificate and CA) and OUT/seat-links.key, for
    /// the edge's CLASSGRID_SEAT_LINKS_CERT and _KEY. Audited as `bootstrap`.
    EdgeCert(EdgeCertArgs),
}

#[derive(clap::Args)]
struct EdgeCertArgs {
    /// A name students' browsers reach the edge by: a DNS name or an IP
    /// address. Repeat for several.
    #[arg(long = "name", required = true)]
    names: Vec<String>,
    /// The folder to write seat-links.pem and seat-links.key into.
    #[arg(long)]
    out: std::path::PathBuf,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args)]
struct AdminUserArgs {
    /// The console username.
    name: String,
    /// Set a new password for an existing user (and sign them out).
    #[arg(long)]
    reset: bool,
    #[command(flatten)]
    serve: ServeArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    classgrid_common::memory::without_huge_pages();
    let cli = Cli::parse();
    let args = match &cli.command {
        Command::Serve(a) | Command::Migrate(a) | Command::AdminToken(a) => a,
        Command::AdminUser(u) => &u.serve,
        Command::EdgeCert(e) => &e.serve,
    };
    let cfg = match BrokerConfig::resolve(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("classgrid-broker: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let _guard = telemetry::init_sampled(
        "classgrid-broker",
        cfg.log_format.parse().unwrap_or_default(),
        cfg.otlp_endpoint.as_deref(),
        cfg.trace_sample_ratio,
    );
    let result = match cli.command {
        Command::Serve(_) => {
            async {
                let started = server::start(cfg).await?;
                server::run(started, server::shutdown_signal()).await
            }
            .await
        }
        Command::AdminToken(_) => {
            async {
                let store = Store::connect(&cfg.database_url).await?;
                store.migrate().await?;
                let t =
                    classgrid_broker::service::admin::bootstrap_admin_token(&store, "admin-token")
                        .await?;
                println!("{t}");
                Ok(())
            }
            .await
        }
        Command::AdminUser(u) => {
            async {
                use classgrid_broker::console::bootstrap::{PASSWORD_ENV, admin_user};
                let password = std::env::var(PASSWORD_ENV).map_err(|_| {
                    anyhow::anyhow!("set {PASSWORD_ENV} to the new user's password")
                })?;
                let store = Store::connect(&cfg.database_url).await?;
                store.migrate().await?;
                admin_user(&store, &u.name, &password, u.reset).await?;
                println!(
                    "console user `{}` (district_admin) is ready; sign in at /console",
                    u.name
                );
                Ok(())
            }
            .await
        }
        Command::EdgeCert(e) => {
            async {
                let (cert, key) =
                    classgrid_broker::service::admin::issue_edge_cert(&cfg, &e.names, &e.out)
                        .await?;
                println!(
                    "seat links certificate for {} from the region CA:\n  CLASSGRID_SEAT_LINKS_CERT={}\n  CLASSGRID_SEAT_LINKS_KEY={}",
                    e.names.join(", "),
                    cert.display(),
                    key.display()
                );
                Ok(())
            }
            .await
        }
        Command::Migrate(_) => {
            async {
                Store::connect(&cfg.database_url).await?.migrate().await?;
                tracing::info!("migrations applied");
                Ok(())
            }
            .await
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "broker failed");
            eprintln!("classgrid-broker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
