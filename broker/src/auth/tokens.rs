//! API and join tokens: 256-bit random secrets, shown once, stored as
//! SHA-256 (a slow hash adds nothing for secrets this long, and every API
//! call checks one). Lookups are cached for at most 5 s, which bounds how
//! long a revoked token keeps working.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Caller, Role};

pub const API_PREFIX: &str = "cg";
pub const JOIN_PREFIX: &str = "cgjoin";
pub const CACHE_TTL: Duration = Duration::from_secs(4);

pub fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// `cg_<id>_<secret>`.
pub fn format_api(id: Uuid, secret: &str) -> String {
    format!("{API_PREFIX}_{}_{secret}", id.simple())
}

/// `cgjoin_<ca fingerprint>_<id>_<secret>`: the fingerprint lets a joining
/// node trust the broker before it has the CA.
pub fn format_join(ca_fingerprint: &str, id: Uuid, secret: &str) -> String {
    format!("{JOIN_PREFIX}_{ca_fingerprint}_{}_{secret}", id.simple())
}

pub fn parse_api(token: &str) -> Option<(Uuid, &str)> {
    let rest = token.strip_prefix("cg_")?;
    let (id, secret) = rest.split_once('_')?;
    Some((Uuid::parse_str(id).ok()?, secret))
}

pub struct JoinTokenParts<'a> {
    pub ca_fingerprint: &'a str,
    pub id: Uuid,
    pub secret: &'a str,
}

pub fn parse_join(token: &str) -> Option<JoinTokenParts<'_>> {
    let rest = token.strip_prefix("cgjoin_")?;
    let mut it = rest.splitn(3, '_');
    let (fp, id, secret) = (it.next()?, it.next()?, it.next()?);
    Some(JoinTokenParts {
        ca_fingerprint: fp,
        id: Uuid::parse_str(id).ok()?,
        secret,
    })
}

/// What the cache remembers of a token.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub role: Role,
    pub sites: Vec<Uuid>,
    pub secret_sha256: Vec<u8>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    Missing,
    Malformed,
    Unknown,
    Expired,
    Revoked,
}

impl Rejection {
    pub fn message(&self) -> &'static str {
        match self {
            Rejection::Missing => "a bearer token is required (authorization: Bearer cg_…)",
            Rejection::Malformed => "the bearer token is malformed",
            Rejection::Unknown => "the bearer token is not valid",
            Rejection::Expired => "the bearer token has expired",
            Rejection::Revoked => "the bearer token was revoked",
        }
    }
}

/// Checks a presented secret against a record, in constant time.
pub fn check(
    rec: &TokenRecord,
    id: Uuid,
    secret: &str,
    now: DateTime<Utc>,
    source: String,
) -> Result<Caller, Rejection> {
    let d = digest(secret);
    let same = d.len() == rec.secret_sha256.len()
        && d.iter()
            .zip(&rec.secret_sha256)
            .fold(0u8, |a, (x, y)| a | (x ^ y))
            == 0;
    if !same {
        return Err(Rejection::Unknown);
    }
    if rec.revoked {
        return Err(Rejection::Revoked);
    }
    if rec.expires_at.is_some_and(|e| e <= now) {
        return Err(Rejection::Expired);
    }
    Ok(Caller {
        actor: format!("token:{id}"),
        role: rec.role,
        sites: rec.sites.clone(),
        source,
        token_id: Some(id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(secret: &str) -> TokenRecord {
        TokenRecord {
            role: Role::Platform,
            sites: vec![Uuid::nil()],
            secret_sha256: digest(secret),
            expires_at: None,
            revoked: false,
        }
    }

    #[test]
    fn token_round_trips_and_wrong_secret_is_refused() {
        let id = Uuid::new_v4();
        let s = new_secret();
        let t = format_api(id, &s);
        let (pid, psecret) = parse_api(&t).unwrap();
        assert_eq!(pid, id);
        assert!(check(&rec(&s), pid, psecret, Utc::now(), String::new()).is_ok());
        assert_eq!(
            check(&rec(&s), pid, "nope", Utc::now(), String::new()).unwrap_err(),
            Rejection::Unknown
        );
        assert!(parse_api("cg_notauuid_x").is_none());
        assert!(parse_api("Bearer").is_none());
    }

    #[test]
    fn expired_and_revoked_tokens_are_refused() {
        let mut r = rec("s");
        r.expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
        assert_eq!(
            check(&r, Uuid::nil(), "s", Utc::now(), String::new()).unwrap_err(),
            Rejection::Expired
        );
        let mut r = rec("s");
        r.revoked = true;
        assert_eq!(
            check(&r, Uuid::nil(), "s", Utc::now(), String::new()).unwrap_err(),
            Rejection::Revoked
        );
    }

    #[test]
    fn join_token_carries_the_ca_fingerprint() {
        let id = Uuid::new_v4();
        let t = format_join("ab12", id, "secret");
        let p = parse_join(&t).unwrap();
        assert_eq!((p.ca_fingerprint, p.id, p.secret), ("ab12", id, "secret"));
    }
}
