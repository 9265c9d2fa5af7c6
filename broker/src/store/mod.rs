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
pub(crate) mod batch;
pub mod borrowed;
pub mod console;
pub mod explanations;
pub mod jobs;
pub mod lease;
pub mod lessons;
pub mod metrics_reads;
pub mod nodes;
pub mod peers;
pub(crate) mod progress_queue;
pub mod reservations;
pub mod rtt;
pub mod scoped;
pub mod seat_links;
pub mod security;
pub mod series;
pub mod settlement;
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

/// The broker's one door to PostgreSQL: every statement is written in this
/// module's files, and transactions open here (`begin`).
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
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
        let opts = without_jit(opts);
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

    /// A transaction, for the statements of one change.
    pub async fn begin(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool.begin().await
    }

    /// A connection of the pool, for a writer that keeps one between
    /// batches (`batch`).
    pub async fn acquire(&self) -> sqlx::Result<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        self.pool.acquire().await
    }

    /// Whether the database answers now.
    pub async fn ping(&self) -> bool {
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&self.pool)
            .await
            .is_ok()
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

/// The broker's sessions run without PostgreSQL's JIT unless the URL's
/// `options` set `jit` (decision 118). Every statement here is short, yet the planner's
/// estimates for a table that is young or still empty inside a bell's
/// transaction can pass `jit_above_cost`; each such statement then spent
/// 0.5-0.9 s compiling LLVM code for a scan that returned nothing (the
/// lending settlement's poll, at 50,000 seats: 8 % of the machine's samples
/// in libLLVM during a 100,000-seat storm).
fn without_jit(opts: PgConnectOptions) -> PgConnectOptions {
    if opts.get_options().is_some_and(|o| o.contains("jit")) {
        opts
    } else {
        opts.options([("jit", "off")])
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
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("CG001"))
}

/// True when PostgreSQL broke a lock cycle by aborting the transaction:
/// nothing was written, so trying again is safe.
pub fn is_deadlock(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("40P01"))
}

/// True when a unique constraint refused the row (a request id or an id
/// already written).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}

/// True when the error means the connection it came on is no use any more:
/// the socket or TLS broke, the pool could not give one, or the server said
/// so (SQLSTATE class 08, 57P01-57P03: the server is shutting down or
/// restarting, or a FATAL error that ends the session). Such a connection is
/// dropped, never kept for the next batch.
pub fn is_connection_error(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            let code = d.code();
            let code = code.as_deref().unwrap_or("");
            let fatal = d
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some_and(|pg| {
                    matches!(
                        pg.severity(),
                        sqlx::postgres::PgSeverity::Fatal | sqlx::postgres::PgSeverity::Panic
                    )
                });
            fatal || code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
        _ => false,
    }
}

/// True when the same transaction may succeed if it is simply tried again:
/// the connection failed (see `is_connection_error`), the server had too
/// many connections, or it chose this transaction as a serialization or
/// deadlock victim. Nothing of a transaction that failed so was committed,
/// except when the connection broke during COMMIT itself; writes are
/// idempotent by id for that case (the retry finds its own row).
pub fn is_transient(e: &sqlx::Error) -> bool {
    is_connection_error(e)
        || matches!(e, sqlx::Error::Database(d)
            if matches!(d.code().as_deref(), Some("40001" | "40P01" | "53300" | "55P03")))
}

/// How long a request keeps trying again after transient failures before
/// it answers "unavailable, retry" (503): long enough to ride out a
/// PostgreSQL restart or a failover of a few seconds, short of a platform's
/// own request timeout.
pub const TRANSIENT_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

/// Pauses between tries after transient failures: 100 ms, doubling to
/// 1 s, until `TRANSIENT_BUDGET` is spent. Hand-written, as a retry crate's
/// closure would have to own the booking loop, which re-plans between tries.
pub struct TransientRetry {
    deadline: std::time::Instant,
    pause: std::time::Duration,
}

impl Default for TransientRetry {
    fn default() -> Self {
        Self {
            deadline: std::time::Instant::now() + TRANSIENT_BUDGET,
            pause: std::time::Duration::from_millis(100),
        }
    }
}

impl TransientRetry {
    /// Waits before the next try; false, at once, when the budget is spent.
    pub async fn pause(&mut self) -> bool {
        let now = std::time::Instant::now();
        if now + self.pause > self.deadline {
            return false;
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(std::time::Duration::from_secs(1));
        true
    }
}

/// `is_transient` for an error that went through `anyhow`.
pub fn is_transient_any(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<sqlx::Error>().is_some_and(is_transient))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(url: &str, env_mode: bool) -> PgSslMode {
        let opts: PgConnectOptions = url.parse().expect("a URL");
        plain_when_local(url, opts, env_mode).get_ssl_mode()
    }

    #[test]
    fn broken_connections_are_transient_and_constraint_refusals_are_not() {
        let io = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(is_connection_error(&io) && is_transient(&io));
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
        let wrapped = anyhow::Error::from(sqlx::Error::PoolTimedOut).context("lesson step");
        assert!(is_transient_any(&wrapped));
        assert!(!is_transient_any(&anyhow::anyhow!("bad plan")));
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
