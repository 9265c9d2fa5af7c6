//! Seat links' tokens (decision 089).
//!
//! A seat's token is `HMAC-SHA256(region link key, "classgrid seat link v1:"
//! + seat id)`, in hex (64 characters, 256 bits). So:
//! - the broker shows the same link in every seat view, on every replica,
//!   for the seat's whole life (a class sheet printed days ahead stays
//!   right, and a seat re-planned to another node keeps its link) without
//!   keeping any token: PostgreSQL and the edges hold only sha256(token);
//! - nobody who reads the database or an edge's disk can open a seat, and
//!   nobody can guess a token without the key.
//!
//! The key is 32 random bytes in the broker's data folder next to the
//! region CA's key (`tls/seat-links.key`, 0600), made on first use; the
//! replicas of a region share it as they share the CA.
//!
//! HMAC is written out here (RFC 2104, checked against RFC 4231's vectors
//! below) because the `hmac` crate in the lock file is built on a newer
//! `digest` than the workspace's `sha2`, and the construction is ten lines.

use std::{
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use classgrid_proto::v1 as pb;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The region's key for seat link tokens.
#[derive(Clone)]
pub struct LinkKey([u8; 32]);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(…)")
    }
}

pub fn key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("seat-links.key")
}

impl LinkKey {
    /// The key in `data_dir`, made (random, 0600) when there is none.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<Self> {
        let path = key_path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    anyhow::anyhow!(
                        "{}: a seat link key is 32 bytes, this file has {}; restore it from a replica of this region",
                        path.display(),
                        bytes.len()
                    )
                })?;
                Ok(Self(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let key: [u8; 32] = rand::random();
                // create_new: two replicas starting at once keep one key.
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                {
                    Ok(mut f) => {
                        f.write_all(&key)?;
                        f.sync_all()?;
                        Ok(Self(key))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(data_dir)
                    }
                    Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
                }
            }
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    /// The seat's link token: 64 hex characters.
    pub fn token(&self, seat_id: Uuid) -> String {
        let msg = format!("classgrid seat link v1:{seat_id}");
        hex::encode(hmac_sha256(&self.0, msg.as_bytes()))
    }
}

/// HMAC-SHA256 (RFC 2104) with a key of at most one block.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.map(|x| x ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// What an edge keeps of a token.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A seat's link on its site's edge: `BASE/seat/TOKEN/`, BASE being the
/// edge's https address for seat links (no trailing slash needed).
pub fn link_url(base: &str, token: &str) -> String {
    format!("{}/seat/{token}/", base.trim_end_matches('/'))
}

/// One seat as the edge needs it for its link.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LinkedSeat {
    pub seat_id: Uuid,
    /// The seat's active assignment; None for a seat its teacher stopped.
    pub assignment_id: Option<Uuid>,
    pub lesson_id: Uuid,
    /// `http://host:port` the agent reported; empty while it starts, and
    /// for a stopped seat.
    pub endpoint: String,
    /// The lesson's end plus grace, Unix ms.
    pub open_until_unix_ms: i64,
    pub runtime: String,
    pub paused: bool,
    /// The teacher stopped the seat (decision 103).
    pub stopped: bool,
}

/// The edge's view of one seat's link: its token's hash, never the token.
pub fn seat_link(key: &LinkKey, s: &LinkedSeat) -> pb::SeatLink {
    pb::SeatLink {
        link_sha256: token_sha256(&key.token(s.seat_id)),
        assignment_id: s.assignment_id.map(|a| a.to_string()).unwrap_or_default(),
        lesson_id: s.lesson_id.to_string(),
        endpoint: s.endpoint.clone(),
        open_until_unix_ms: s.open_until_unix_ms,
        paused: s.paused,
        // Notebook servers serve under their link (their base URL); command
        // seats serve at / and the edge takes the prefix off.
        serves_link_path: s.runtime == crate::domain::spec::NOTEBOOK,
        stopped: s.stopped,
    }
}

/// The variable that hands a seat its link's token (decision 088).
pub const TOKEN_ENV: &str = "CLASSGRID_SEAT_LINK_TOKEN";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 1.
        let mac = hmac_sha256(&[0x0b; 20], b"Hi There");
        assert_eq!(
            hex::encode(mac),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // Test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than a block is hashed first.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex::encode(mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_seat_keeps_its_token_and_seats_never_share_one() {
        let dir = std::env::temp_dir().join(format!("cg-links-{}", rand::random::<u64>()));
        let key = LinkKey::load_or_create(&dir).unwrap();
        let again = LinkKey::load_or_create(&dir).unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(key.token(a), again.token(a), "the key is kept");
        assert_ne!(key.token(a), key.token(b));
        assert_eq!(key.token(a).len(), 64);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(key_path(&dir)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let other = LinkKey::load_or_create(&dir.join("other")).unwrap();
        assert_ne!(key.token(a), other.token(a), "another region's key");
        assert_eq!(
            link_url("https://edge.school-a:7443/", &key.token(a)),
            format!("https://edge.school-a:7443/seat/{}/", key.token(a))
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
