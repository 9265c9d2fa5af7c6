//! Seat links: `https://EDGE/seat/TOKEN/…` opens one seat of the site,
//! through this edge (decision 088).
//!
//! - The broker sends, beside the site's seat intent, the sha256 of each
//!   seat's link token, the seat's address on its node and until when the
//!   link is open (the lesson's end plus grace). The edge keeps them in its
//!   SQLite state next to the intent, so links keep working while the
//!   broker is unreachable and after the edge restarts. It never holds a
//!   token itself: a request's token is hashed and looked up.
//! - A token opens only the seat whose hash it matches. Unknown tokens, a
//!   link past its end, a seat the teacher stopped and a class whose links
//!   the teacher paused get a clear page, never an error or a hint about
//!   other seats.
//! - Requests and WebSockets go to the seat unchanged (notebook seats serve
//!   under `/seat/TOKEN/` themselves), with `Authorization: token TOKEN`
//!   for the seat's server; command seats, any HTTP app serving at `/`, get
//!   the path without the prefix (decision 103, `proxy`).
//! - TLS from a certificate of the region CA (`proxy::serve`).

pub mod pages;
pub mod proxy;

use classgrid_proto::v1 as pb;
use sha2::{Digest, Sha256};
use sqlx::{Sqlite, SqlitePool, Transaction};

/// How long past its end a link is remembered, so that a student who opens
/// it after the lesson reads "this lesson has ended", not "unknown link".
pub const REMEMBER_ENDED_MS: i64 = 7 * 24 * 3600 * 1000;

pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS seat_links (
        link_sha256         TEXT PRIMARY KEY,
        assignment_id       TEXT NOT NULL,
        lesson_id           TEXT NOT NULL,
        endpoint            TEXT NOT NULL,
        open_until_unix_ms  INTEGER NOT NULL,
        paused              INTEGER NOT NULL,
        serves_link_path    INTEGER NOT NULL,
        stopped             INTEGER NOT NULL DEFAULT 0
    )";

/// Brings an edge state made before a column was added up to [`SCHEMA`]
/// (SQLite has no `ADD COLUMN IF NOT EXISTS`): `stopped`, decision 103.
pub async fn upgrade(db: &SqlitePool) -> sqlx::Result<()> {
    let columns: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM pragma_table_info('seat_links')")
            .fetch_all(db)
            .await?;
    if !columns.iter().any(|(c,)| c == "stopped") {
        sqlx::query("ALTER TABLE seat_links ADD COLUMN stopped INTEGER NOT NULL DEFAULT 0")
            .execute(db)
            .await?;
    }
    Ok(())
}

/// When each link first opened its seat (the seat answered through it), for
/// the teacher's view of who is in: reported to the broker at each sync. A
/// table of its own, so the broker's list replacing `seat_links` keeps it.
pub const OPENS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS seat_link_opens (
        link_sha256     TEXT PRIMARY KEY,
        opened_unix_ms  INTEGER NOT NULL
    )";

/// Records that `token`'s seat answered through its link, once.
pub async fn record_open(db: &SqlitePool, token: &str, now_unix_ms: i64) -> sqlx::Result<()> {
    sqlx::query("INSERT OR IGNORE INTO seat_link_opens (link_sha256, opened_unix_ms) VALUES (?, ?)")
        .bind(token_sha256(token))
        .bind(now_unix_ms)
        .execute(db)
        .await
        .map(|_| ())
}

/// The first opening of every link the edge still keeps, for the broker.
pub async fn opens(db: &SqlitePool) -> sqlx::Result<Vec<pb::SeatLinkOpened>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT o.link_sha256, o.opened_unix_ms FROM seat_link_opens o
           JOIN seat_links l ON l.link_sha256 = o.link_sha256
          ORDER BY o.opened_unix_ms LIMIT 10000",
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(link_sha256, opened_unix_ms)| pb::SeatLinkOpened {
            link_sha256,
            opened_unix_ms,
        })
        .collect())
}

/// The sha256 of a link token, hex: what the broker sends and the edge keeps.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// One seat link as the edge keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub assignment_id: String,
    pub lesson_id: String,
    /// `http://host:port` of the seat on its node.
    pub endpoint: String,
    pub open_until_unix_ms: i64,
    pub paused: bool,
    /// The seat serves under `/seat/TOKEN/` itself (notebook); otherwise
    /// the prefix is taken off before the request reaches it.
    pub serves_link_path: bool,
}

/// What a request's token opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Open(Link),
    Unknown,
    Ended,
    /// The teacher stopped this seat; its lesson goes on.
    Stopped,
    Paused,
    /// Known, but its seat has no address yet (still starting).
    NotReady,
}

/// Replaces the kept links with the broker's current list, in one
/// transaction; links it no longer sends are kept (as ended) until
/// [`REMEMBER_ENDED_MS`] after their end.
pub async fn replace_in(
    tx: &mut Transaction<'_, Sqlite>,
    links: &[pb::SeatLink],
    now_unix_ms: i64,
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM seat_links WHERE open_until_unix_ms < ?")
        .bind(now_unix_ms - REMEMBER_ENDED_MS)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "DELETE FROM seat_link_opens WHERE link_sha256 NOT IN (SELECT link_sha256 FROM seat_links)",
    )
    .execute(&mut **tx)
    .await?;
    // A seat the broker no longer intends (stopped, its lesson cancelled)
    // closes now; those still intended are written back just below.
    sqlx::query("UPDATE seat_links SET open_until_unix_ms = MIN(open_until_unix_ms, ?)")
        .bind(now_unix_ms)
        .execute(&mut **tx)
        .await?;
    for s in links.iter().filter(|s| !s.link_sha256.is_empty()) {
        sqlx::query(
            "INSERT OR REPLACE INTO seat_links
               (link_sha256, assignment_id, lesson_id, endpoint, open_until_unix_ms, paused,
                serves_link_path, stopped)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(s.link_sha256.to_ascii_lowercase())
        .bind(&s.assignment_id)
        .bind(&s.lesson_id)
        .bind(&s.endpoint)
        .bind(s.open_until_unix_ms)
        .bind(s.paused)
        .bind(s.serves_link_path)
        .bind(s.stopped)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// What `token` opens at `now_unix_ms`.
pub async fn lookup(db: &SqlitePool, token: &str, now_unix_ms: i64) -> sqlx::Result<Lookup> {
    // Tokens are URL-safe base64 or hex; anything else is no token of ours
    // and is not even hashed.
    if token.len() < 32
        || token.len() > 128
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Ok(Lookup::Unknown);
    }
    #[derive(sqlx::FromRow)]
    struct Row {
        assignment_id: String,
        lesson_id: String,
        endpoint: String,
        open_until_unix_ms: i64,
        paused: bool,
        serves_link_path: bool,
        stopped: bool,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT assignment_id, lesson_id, endpoint, open_until_unix_ms, paused, serves_link_path,
                stopped
           FROM seat_links WHERE link_sha256 = ?",
    )
    .bind(token_sha256(token))
    .fetch_optional(db)
    .await?;
    let Some(r) = row else {
        return Ok(Lookup::Unknown);
    };
    Ok(if now_unix_ms >= r.open_until_unix_ms {
        Lookup::Ended
    } else if r.stopped {
        // Before paused: the seat is gone, a resume does not bring it back.
        Lookup::Stopped
    } else if r.paused {
        Lookup::Paused
    } else if r.endpoint.is_empty() {
        Lookup::NotReady
    } else {
        Lookup::Open(Link {
            assignment_id: r.assignment_id,
            lesson_id: r.lesson_id,
            endpoint: r.endpoint,
            open_until_unix_ms: r.open_until_unix_ms,
            paused: r.paused,
            serves_link_path: r.serves_link_path,
        })
    })
}

/// [`replace_in`] in a transaction of its own.
pub async fn replace(
    db: &SqlitePool,
    links: &[pb::SeatLink],
    now_unix_ms: i64,
) -> sqlx::Result<()> {
    let mut tx = db.begin().await?;
    replace_in(&mut tx, links, now_unix_ms).await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(token: &str, until: i64) -> pb::SeatLink {
        pb::SeatLink {
            link_sha256: token_sha256(token),
            assignment_id: "a1".into(),
            lesson_id: "l1".into(),
            endpoint: "http://10.0.0.5:41000".into(),
            open_until_unix_ms: until,
            paused: false,
            serves_link_path: true,
            stopped: false,
        }
    }

    #[tokio::test]
    async fn a_token_opens_only_its_seat_until_its_end() {
        let dir = std::env::temp_dir().join(format!("cg-edge-links-{}", rand::random::<u64>()));
        let db = crate::state::open(&dir.join("edge.db")).await.unwrap();
        let good = "A".repeat(43);
        let mut tx = db.begin().await.unwrap();
        replace_in(&mut tx, &[intent(&good, 2_000)], 1_000)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(
            matches!(lookup(&db, &good, 1_000).await.unwrap(), Lookup::Open(l) if l.assignment_id == "a1")
        );
        assert_eq!(lookup(&db, &good, 2_000).await.unwrap(), Lookup::Ended);
        assert_eq!(
            lookup(&db, &"B".repeat(43), 1_000).await.unwrap(),
            Lookup::Unknown
        );
        assert_eq!(lookup(&db, "../etc", 1_000).await.unwrap(), Lookup::Unknown);
        // The teacher stopped the seat: its link says so until its end.
        let stopped = pb::SeatLink {
            stopped: true,
            endpoint: String::new(),
            assignment_id: String::new(),
            ..intent(&good, 2_000)
        };
        replace(&db, &[stopped], 1_500).await.unwrap();
        assert_eq!(lookup(&db, &good, 1_500).await.unwrap(), Lookup::Stopped);
        assert_eq!(lookup(&db, &good, 2_000).await.unwrap(), Lookup::Ended);
        // Reset by the teacher: it opens again.
        replace(&db, &[intent(&good, 2_000)], 1_600).await.unwrap();
        assert!(matches!(
            lookup(&db, &good, 1_600).await.unwrap(),
            Lookup::Open(_)
        ));
        // Gone from the broker's intent: still known as ended, not unknown.
        let mut tx = db.begin().await.unwrap();
        replace_in(&mut tx, &[], 3_000).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(lookup(&db, &good, 3_000).await.unwrap(), Lookup::Ended);
        let _ = std::fs::remove_dir_all(dir);
    }
}
