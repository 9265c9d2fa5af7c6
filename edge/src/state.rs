//! The edge's small local state in SQLite: the cache index and pins, and the
//! desired state of the site's seats (for autonomy). One file in the state
//! folder; WAL mode, so a crash loses at most the write in flight.

use std::{path::Path, str::FromStr};

use sqlx::{
    SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS content (
        sha256        TEXT PRIMARY KEY,
        size_bytes    INTEGER NOT NULL,
        last_used_ms  INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS pins (sha256 TEXT PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS seats (
        assignment_id  TEXT PRIMARY KEY,
        generation     INTEGER NOT NULL,
        node_id        TEXT NOT NULL,
        lesson_id      TEXT NOT NULL,
        ends_unix_ms   INTEGER NOT NULL,
        state          TEXT NOT NULL
    )",
    crate::seatlink::SCHEMA,
    crate::seatlink::OPENS_SCHEMA,
];

pub async fn open(path: &Path) -> anyhow::Result<SqlitePool> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the edge's state at {}: {e}", path.display()))?;
    for s in SCHEMA {
        sqlx::query(*s).execute(&pool).await?;
    }
    crate::seatlink::upgrade(&pool).await?;
    Ok(pool)
}
