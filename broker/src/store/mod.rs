//! PostgreSQL, through sqlx, one module per aggregate. Transactions live here;
//! callers get plain rows back.

/// Queries assembled from constant column lists (never from input) are
/// marked safe here, in one place.
macro_rules! sql {
    ($($t:tt)*) => {
        sqlx::AssertSqlSafe(format!($($t)*))
    };
}

pub mod assignments;
pub mod jobs;
pub mod lessons;
pub mod nodes;
pub mod reservations;
pub mod rtt;
pub mod scoped;
pub mod security;
pub mod sites;
pub mod vouchers;

use sqlx::{
    PgPool,
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgPoolOptions, PgSslMode},
};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The pool's size unless configured (`database_connections`). Booking
/// transactions spend much of their time waiting on row locks and round
/// trips, so more connections than cores keep PostgreSQL busy at a bell:
/// on the 2-core storm, 8 took 3.3 s, 16 took 2.2 s, 32 took 1.8 s and 64
/// was no better (docs/benchmarks.md).
pub const DEFAULT_CONNECTIONS: u32 = 32;

#[derive(Clone)]
pub struct Store {
    pub pool: PgPool,
}

impl Store {
    /// Connects, creating the database first when it does not exist yet, so a
    /// fresh installation needs nothing but a running server.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with(url, DEFAULT_CONNECTIONS).await
    }

    /// `connect`, opening at most `max_connections` (as they are needed).
    pub async fn connect_with(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let opts: PgConnectOptions = url
            .parse()
            .map_err(|e| anyhow::anyhow!("database_url: not a PostgreSQL URL: {e}"))?;
        let opts = plain_when_local(url, opts, std::env::var_os("PGSSLMODE").is_some());
        if !sqlx::Postgres::database_exists(url)
            .await
            .map_err(|e| unreachable_db(url, e))?
        {
            sqlx::Postgres::create_database(url)
                .await
                .map_err(|e| unreachable_db(url, e))?;
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(opts)
            .await
            .map_err(|e| unreachable_db(url, e))?;
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }
}

/// A server on this machine is reached without TLS unless the URL
/// (`sslmode=`) or PGSSLMODE asks for a mode. Over loopback or a Unix socket
/// TLS protects nothing, yet with the default `prefer` every byte was
/// encrypted twice: OpenSSL in PostgreSQL took ~2.5 % of both cores at a
/// bell (decision 072). A remote server keeps `prefer`, or what is asked.
fn plain_when_local(url: &str, opts: PgConnectOptions, env_mode: bool) -> PgConnectOptions {
    let host = opts
        .get_host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let local = opts.get_socket().is_some()
        || host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if local && !env_mode && !url.contains("sslmode=") {
        opts.ssl_mode(PgSslMode::Disable)
    } else {
        opts
    }
}

fn unreachable_db(url: &str, e: sqlx::Error) -> anyhow::Error {
    let shown = match url.find('@') {
        // Never print a password from the URL.
        Some(at) => format!("postgres://…{}", &url[at..]),
        None => url.to_string(),
    };
    anyhow::anyhow!(
        "cannot reach PostgreSQL at {shown}: {e}. Is the server running? \
         (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)"
    )
}

/// True when the error is the capacity trigger refusing a reservation, or a
/// reservation naming a node removed since the plan was made: either way the
/// plan was made on a stale calendar and is retried on a fresh one.
pub fn is_capacity_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("CG001")
        || d.constraint() == Some("reservations_node_id_fkey"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str, env_mode: bool) -> PgSslMode {
        let opts: PgConnectOptions = url.parse().expect("a URL");
        plain_when_local(url, opts, env_mode).get_ssl_mode()
    }

    #[test]
    fn a_local_server_is_reached_without_tls_unless_asked() {
        let plain = |m| matches!(m, PgSslMode::Disable);
        assert!(plain(mode("postgres://postgres@127.0.0.1:5432/cg", false)));
        assert!(plain(mode("postgres://postgres@localhost/cg", false)));
        assert!(plain(mode("postgres://postgres@[::1]:5432/cg", false)));
        assert!(plain(mode(
            "postgres:///cg?host=/var/run/postgresql",
            false
        )));
        assert!(matches!(
            mode("postgres://postgres@127.0.0.1/cg?sslmode=require", false),
            PgSslMode::Require
        ));
        assert!(
            !plain(mode("postgres://postgres@127.0.0.1/cg", true)),
            "PGSSLMODE decides"
        );
        assert!(
            !plain(mode("postgres://cg@db.district.example/cg", false)),
            "a remote server keeps its TLS"
        );
    }
}
