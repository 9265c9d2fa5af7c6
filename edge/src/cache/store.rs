//! The content-addressed store on the edge's disk: `blobs/SHA256` holds
//! verified content, `partial/SHA256` a download in progress. The index (size,
//! last use, pins) lives in the edge's SQLite database, so that LRU order and
//! pins survive a restart.
//!
//! Eviction removes the least recently used unpinned blobs until the new
//! content fits. Pinned content (needed by a booked lesson) is never evicted;
//! when only pinned content is left, the new content is refused with a
//! message that says so, rather than breaking a lesson already promised.

use std::path::{Path, PathBuf};

use sqlx::SqlitePool;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("`{0}` is not a sha256 digest (64 hexadecimal digits)")]
    BadDigest(String),
    #[error(
        "cache full: {need} bytes needed, {free} free of {limit}, and the rest is pinned by booked lessons; raise --cache-max-bytes"
    )]
    Full { need: u64, free: u64, limit: u64 },
    #[error("cache index: {0}")]
    Db(#[from] sqlx::Error),
    #[error("cache files: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub sha256: String,
    pub size_bytes: u64,
}

#[derive(Clone)]
pub struct Cache {
    dir: PathBuf,
    db: SqlitePool,
    limit: u64,
}

pub fn valid_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Cache {
    pub async fn open(dir: &Path, db: SqlitePool, limit: u64) -> Result<Self, CacheError> {
        tokio::fs::create_dir_all(dir.join("blobs")).await?;
        tokio::fs::create_dir_all(dir.join("partial")).await?;
        let c = Self {
            dir: dir.to_path_buf(),
            db,
            limit,
        };
        // A blob whose index row was lost (a crash between rename and
        // insert) is indexed again; a row whose blob is gone is dropped.
        let mut rd = tokio::fs::read_dir(dir.join("blobs")).await?;
        while let Some(e) = rd.next_entry().await? {
            let name = e.file_name().to_string_lossy().to_string();
            if valid_digest(&name) && !c.has(&name).await? {
                let size = e.metadata().await?.len();
                c.index(&name, size).await?;
            }
        }
        for e in c.list().await? {
            if !c.blob_path(&e.sha256).exists() {
                sqlx::query("DELETE FROM content WHERE sha256 = ?")
                    .bind(&e.sha256)
                    .execute(&c.db)
                    .await?;
            }
        }
        Ok(c)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn blob_path(&self, sha: &str) -> PathBuf {
        self.dir.join("blobs").join(sha)
    }

    pub fn partial_path(&self, sha: &str) -> PathBuf {
        self.dir.join("partial").join(sha)
    }

    pub async fn has(&self, sha: &str) -> Result<bool, CacheError> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM content WHERE sha256 = ?")
                .bind(sha)
                .fetch_one(&self.db)
                .await?
                > 0,
        )
    }

    /// Marks content as used now (LRU order).
    pub async fn touch(&self, sha: &str) -> Result<(), CacheError> {
        sqlx::query("UPDATE content SET last_used_ms = ? WHERE sha256 = ?")
            .bind(now_ms())
            .bind(sha)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<Entry>, CacheError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT sha256, size_bytes FROM content ORDER BY sha256")
                .fetch_all(&self.db)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(sha256, s)| Entry {
                sha256,
                size_bytes: s.max(0) as u64,
            })
            .collect())
    }

    pub async fn used_bytes(&self) -> Result<u64, CacheError> {
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(sum(size_bytes), 0) FROM content")
            .fetch_one(&self.db)
            .await?;
        Ok(n.max(0) as u64)
    }

    /// Replaces the set of pinned digests with what booked lessons need now.
    pub async fn set_pins(&self, digests: &[String]) -> Result<(), CacheError> {
        let mut tx = self.db.begin().await?;
        sqlx::query("DELETE FROM pins").execute(&mut *tx).await?;
        for d in digests.iter().filter(|d| valid_digest(d)) {
            sqlx::query("INSERT OR IGNORE INTO pins (sha256) VALUES (?)")
                .bind(d)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn pinned(&self, sha: &str) -> Result<bool, CacheError> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pins WHERE sha256 = ?")
                .bind(sha)
                .fetch_one(&self.db)
                .await?
                > 0,
        )
    }

    /// Frees room for `need` more bytes by evicting unpinned content, least
    /// recently used first.
    pub async fn make_room(&self, need: u64) -> Result<(), CacheError> {
        if need > self.limit {
            return Err(CacheError::Full {
                need,
                free: self.limit.saturating_sub(self.used_bytes().await?),
                limit: self.limit,
            });
        }
        loop {
            let used = self.used_bytes().await?;
            if used + need <= self.limit {
                return Ok(());
            }
            let victim: Option<(String,)> = sqlx::query_as(
                "SELECT sha256 FROM content WHERE sha256 NOT IN (SELECT sha256 FROM pins)
                 ORDER BY last_used_ms ASC LIMIT 1",
            )
            .fetch_optional(&self.db)
            .await?;
            let Some((sha,)) = victim else {
                return Err(CacheError::Full {
                    need,
                    free: self.limit.saturating_sub(used),
                    limit: self.limit,
                });
            };
            tracing::info!(sha256 = %sha, "evicting least recently used content");
            self.remove(&sha).await?;
        }
    }

    async fn remove(&self, sha: &str) -> Result<(), CacheError> {
        sqlx::query("DELETE FROM content WHERE sha256 = ?")
            .bind(sha)
            .execute(&self.db)
            .await?;
        match tokio::fs::remove_file(self.blob_path(sha)).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Moves a verified partial file into the store.
    pub async fn commit(&self, sha: &str, size: u64) -> Result<(), CacheError> {
        if !valid_digest(sha) {
            return Err(CacheError::BadDigest(sha.into()));
        }
        self.make_room(size).await?;
        tokio::fs::rename(self.partial_path(sha), self.blob_path(sha)).await?;
        self.index(sha, size).await
    }

    async fn index(&self, sha: &str, size: u64) -> Result<(), CacheError> {
        sqlx::query(
            "INSERT INTO content (sha256, size_bytes, last_used_ms) VALUES (?, ?, ?)
             ON CONFLICT (sha256) DO UPDATE SET size_bytes = excluded.size_bytes, last_used_ms = excluded.last_used_ms",
        )
        .bind(sha)
        .bind(size as i64)
        .bind(now_ms())
        .execute(&self.db)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn cache(limit: u64) -> (Cache, PathBuf) {
        let dir = std::env::temp_dir().join(format!("cg-edge-cache-{}", rand::random::<u64>()));
        let db = crate::state::open(&dir.join("edge.db")).await.unwrap();
        (
            Cache::open(&dir.join("cache"), db, limit).await.unwrap(),
            dir,
        )
    }

    async fn put(c: &Cache, sha: &str, size: usize) -> Result<(), CacheError> {
        tokio::fs::write(c.partial_path(sha), vec![0u8; size])
            .await
            .unwrap();
        c.commit(sha, size as u64).await
    }

    fn digest(n: u8) -> String {
        format!("{:064x}", n)
    }

    #[tokio::test]
    async fn least_recently_used_content_is_evicted_first() {
        let (c, _d) = cache(300).await;
        put(&c, &digest(1), 100).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        put(&c, &digest(2), 100).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        put(&c, &digest(3), 100).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        c.touch(&digest(1)).await.unwrap();
        put(&c, &digest(4), 100).await.unwrap();
        assert!(c.has(&digest(1)).await.unwrap());
        assert!(
            !c.has(&digest(2)).await.unwrap(),
            "2 was least recently used"
        );
        assert!(!c.blob_path(&digest(2)).exists());
    }

    #[tokio::test]
    async fn content_pinned_by_booked_lessons_is_never_evicted() {
        let (c, _d) = cache(200).await;
        put(&c, &digest(1), 100).await.unwrap();
        put(&c, &digest(2), 100).await.unwrap();
        c.set_pins(&[digest(1), digest(2)]).await.unwrap();
        let e = put(&c, &digest(3), 100).await.unwrap_err();
        assert!(e.to_string().contains("pinned"), "{e}");
        assert!(c.has(&digest(1)).await.unwrap() && c.has(&digest(2)).await.unwrap());
        c.set_pins(&[digest(2)]).await.unwrap();
        put(&c, &digest(3), 100).await.unwrap();
        assert!(!c.has(&digest(1)).await.unwrap());
    }

    #[tokio::test]
    async fn index_survives_a_reopen() {
        let (c, dir) = cache(1000).await;
        put(&c, &digest(9), 10).await.unwrap();
        let db = crate::state::open(&dir.join("edge.db")).await.unwrap();
        let again = Cache::open(&dir.join("cache"), db, 1000).await.unwrap();
        assert_eq!(
            again.list().await.unwrap(),
            vec![Entry {
                sha256: digest(9),
                size_bytes: 10
            }]
        );
    }
}
