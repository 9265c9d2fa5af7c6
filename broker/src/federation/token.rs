//! The one-time peering offer: `cgpeer_<CA fingerprint>_<peering id>_<secret>_<hex of the URL>`.
//! Like a join token, the fingerprint lets the accepting broker trust the
//! offering broker's CA before it has it (`classgrid_common::tls::fetch_pinned_ca`),
//! and the secret, stored only hashed, proves the acceptor was given the
//! offer.

use uuid::Uuid;

pub const PREFIX: &str = "cgpeer_";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferToken {
    pub ca_fingerprint: String,
    pub id: Uuid,
    pub secret: String,
    pub url: String,
}

impl OfferToken {
    pub fn format(&self) -> String {
        format!(
            "{PREFIX}{}_{}_{}_{}",
            self.ca_fingerprint,
            self.id.simple(),
            self.secret,
            hex::encode(self.url.as_bytes())
        )
    }

    /// Parses an offer; the error says which part is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let rest = s
            .trim()
            .strip_prefix(PREFIX)
            .ok_or("must start with cgpeer_ (the text `classgrid peers offer` printed)")?;
        let parts: Vec<&str> = rest.split('_').collect();
        let [fp, id, secret, url] = parts[..] else {
            return Err("must have four parts after cgpeer_, separated by `_`".into());
        };
        if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("its CA fingerprint must be 64 hex digits".into());
        }
        let id = Uuid::parse_str(id).map_err(|_| "its peering id is not a UUID")?;
        if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("its secret must be 64 hex digits".into());
        }
        let url = hex::decode(url)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or("its URL part is not hex-encoded text")?;
        if !url.starts_with("https://") {
            return Err("its URL must be https://".into());
        }
        Ok(Self {
            ca_fingerprint: fp.to_ascii_lowercase(),
            id,
            secret: secret.to_string(),
            url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_round_trips_and_names_what_is_wrong() {
        let t = OfferToken {
            ca_fingerprint: "ab".repeat(32),
            id: Uuid::now_v7(),
            secret: "cd".repeat(32),
            url: "https://north.example:7443".into(),
        };
        assert_eq!(OfferToken::parse(&t.format()).unwrap(), t);
        assert!(
            OfferToken::parse("cgjoin_x")
                .unwrap_err()
                .contains("cgpeer_")
        );
        let short = t.format().replace(&"cd".repeat(32), "cd");
        assert!(OfferToken::parse(&short).unwrap_err().contains("secret"));
        let plain = OfferToken {
            url: "http://x:1".into(),
            ..t
        };
        assert!(
            OfferToken::parse(&plain.format())
                .unwrap_err()
                .contains("https")
        );
    }
}
