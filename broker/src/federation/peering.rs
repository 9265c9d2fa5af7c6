//! Peering set up by two admins (decision 093). The offering region's admin
//! makes a one-time offer for a named peer; the peer's admin accepts it. The
//! accepting broker trusts the offering CA by the fingerprint in the offer,
//! proves the offer with its secret, and the two brokers issue each other a
//! client certificate from their own region CA. From then on every call is
//! mutual TLS: the caller checks the server against the peer's pinned CA,
//! and the server knows the caller by the certificate it issued to it.

use std::time::Instant;

use chrono::{DateTime, Utc};
use classgrid_proto::v1 as pb;
use uuid::Uuid;

use super::{client, policy::LendingTerms, token::OfferToken};
use crate::{
    auth::{Caller, pki, tokens},
    domain::{ServiceError, error::Checks},
    state::Broker,
    store::{
        peers::{Accepted, Handshake, NewOffer, PeeringRow},
        security::AuditEntry,
    },
};

const DEFAULT_OFFER_TTL_S: i64 = 24 * 3600;
const MAX_OFFER_TTL_S: i64 = 30 * 24 * 3600;
/// Peer client certificates live as long as a server certificate.
const PEER_CERT_DAYS: i64 = 825;

/// What an admin asks for on either side of a peering.
pub struct PeeringTerms {
    pub local_name: String,
    pub url: String,
    pub site: String,
    pub rtt_ms: f64,
    pub lending: LendingTerms,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

impl Broker {
    fn federation_ca(&self) -> Result<&pki::Ca, ServiceError> {
        self.tls.as_ref().map(|t| &t.ca).ok_or_else(|| {
            ServiceError::Conflict(
                "federation needs TLS: this broker runs with --insecure-dev".into(),
            )
        })
    }

    /// Checks the terms both sides give; returns this region's lending site.
    fn check_terms(&self, c: &mut Checks, t: &PeeringTerms) -> Option<Uuid> {
        if !valid_name(&t.local_name) {
            c.fail(
                "local_name",
                "must be 1-63 lower-case letters, digits or `-`, not starting with `-`",
            );
        }
        let url_ok = t.url.starts_with("https://")
            && t.url.len() <= 512
            && t.url["https://".len()..]
                .chars()
                .all(|ch| !matches!(ch, '/' | '?' | '#' | ' '))
            && t.url.len() > "https://".len();
        if !url_ok {
            c.fail(
                "url",
                "must be this broker's gRPC address as the peer reaches it: https://host:port",
            );
        }
        if !(t.rtt_ms.is_finite() && (0.0..=10_000.0).contains(&t.rtt_ms)) {
            c.fail("rtt_ms", "must be between 0 (measure it) and 10000");
        }
        match self.fleet.site(&t.site) {
            Some(s) => Some(s.id),
            None => {
                c.fail(
                    "site",
                    format!(
                        "unknown site `{}`; name this region's site that lent seats are booked at",
                        t.site.chars().take(128).collect::<String>()
                    ),
                );
                None
            }
        }
    }

    /// A peer's step, in this region's audit log.
    pub(crate) async fn audit_peer(
        &self,
        peer: &str,
        action: &str,
        source: &str,
        result: &Result<(), String>,
    ) {
        let (res, detail) = match result {
            Ok(()) => ("ok", String::new()),
            Err(e) => ("error", e.chars().take(1000).collect()),
        };
        let entry = AuditEntry {
            actor: &format!("peer:{peer}"),
            role: "peer",
            action,
            target: &format!("peering:{peer}"),
            source,
            result: res,
            detail: &detail,
        };
        if let Err(e) = self.store.append_audit(&entry).await {
            tracing::error!(error = %e, action, "AUDIT WRITE FAILED");
        }
    }

    /// `peers offer`: a one-time offer for the region called `peer`.
    pub async fn create_peering_offer(
        &self,
        caller: &Caller,
        peer: &str,
        terms: PeeringTerms,
        ttl_s: i64,
    ) -> Result<(PeeringRow, String, DateTime<Utc>), ServiceError> {
        let op = async {
            Self::require_admin(caller)?;
            let ca = self.federation_ca()?;
            let mut c = Checks::default();
            if !valid_name(peer) {
                c.fail("peer", "must be 1-63 lower-case letters, digits or `-`");
            }
            if peer == terms.local_name {
                c.fail("peer", "must differ from local_name");
            }
            if !(0..=MAX_OFFER_TTL_S).contains(&ttl_s) {
                c.fail(
                    "ttl_seconds",
                    format!("must be between 0 (one day) and {MAX_OFFER_TTL_S}"),
                );
            }
            let site = self.check_terms(&mut c, &terms);
            c.finish()?;
            if self.store.peering_named(peer).await?.is_some() {
                return Err(ServiceError::Conflict(format!(
                    "a peering with region {peer} exists; `classgrid peers remove {peer}` first"
                )));
            }
            let id = Uuid::now_v7();
            let secret = tokens::new_secret();
            let ttl = if ttl_s == 0 {
                DEFAULT_OFFER_TTL_S
            } else {
                ttl_s
            };
            let expires = Utc::now() + chrono::Duration::seconds(ttl);
            self.store
                .insert_peering_offer(&NewOffer {
                    id,
                    name: peer,
                    local_name: &terms.local_name,
                    secret_sha256: &tokens::digest(&secret),
                    expires_at: expires,
                    site_id: site.unwrap_or_default(),
                    rtt_ms: (terms.rtt_ms > 0.0).then_some(terms.rtt_ms),
                    lending: terms.lending.to_json(),
                })
                .await?;
            let offer = OfferToken {
                ca_fingerprint: ca.fingerprint(),
                id,
                secret,
                url: terms.url.clone(),
            }
            .format();
            let row = self
                .store
                .peering(id)
                .await?
                .ok_or_else(|| ServiceError::NotFound(format!("peering {id}")))?;
            Ok((row, offer, expires))
        };
        self.audited(
            caller,
            "peering.offer",
            |(r, _, _): &(PeeringRow, String, DateTime<Utc>)| format!("peering:{}", r.name),
            &format!("peering:{peer}"),
            op,
        )
        .await
    }

    /// `peers accept`: handshakes with the offering broker and connects.
    pub async fn accept_peering_offer(
        &self,
        caller: &Caller,
        offer: &str,
        terms: PeeringTerms,
    ) -> Result<PeeringRow, ServiceError> {
        let op = async {
            Self::require_admin(caller)?;
            let ca = self.federation_ca()?;
            let mut c = Checks::default();
            let token = match OfferToken::parse(offer) {
                Ok(t) => Some(t),
                Err(e) => {
                    c.fail("offer", e);
                    None
                }
            };
            let site = self.check_terms(&mut c, &terms);
            c.finish()?;
            let (Some(token), Some(site_id)) = (token, site) else {
                return Err(ServiceError::field("offer", "could not be read"));
            };
            let t0 = Instant::now();
            let peer_ca =
                classgrid_common::tls::fetch_pinned_ca(&token.url, &token.ca_fingerprint, None)
                    .await
                    .map_err(|e| {
                        ServiceError::Unavailable(format!(
                            "the offering broker at {} could not be trusted or reached: {e}",
                            token.url
                        ))
                    })?;
            // A TLS handshake is about two round trips.
            let measured = t0.elapsed().as_secs_f64() * 1000.0 / 2.0;
            let (key_pem, csr_pem) = classgrid_common::tls::new_csr(&terms.local_name)
                .map_err(|e| ServiceError::Internal(anyhow::anyhow!("{e}")))?;
            let tls = classgrid_common::tls::client_config(&token.url, &peer_ca, None)
                .map_err(|e| ServiceError::field("offer", e.to_string()))?;
            let ch = client::endpoint(&token.url)?
                .tls_config(tls)
                .map_err(|e| ServiceError::Internal(anyhow::anyhow!("{e}")))?
                .connect()
                .await
                .map_err(|e| ServiceError::Unavailable(format!("{}: {e}", token.url)))?;
            let mut fed = pb::federation_service_client::FederationServiceClient::new(ch);
            let answer = fed
                .handshake(pb::HandshakeRequest {
                    peering_id: token.id.to_string(),
                    secret: token.secret.clone(),
                    name: terms.local_name.clone(),
                    url: terms.url.clone(),
                    ca_pem: ca.cert_pem.clone(),
                    csr_pem,
                    rtt_ms: measured,
                })
                .await
                .map_err(|s| {
                    ServiceError::Conflict(format!("the offering region refused: {}", s.message()))
                })?
                .into_inner();
            if !valid_name(&answer.name) || answer.name == terms.local_name {
                return Err(ServiceError::Conflict(format!(
                    "the offering region named itself `{}`, which cannot be used",
                    answer.name.chars().take(64).collect::<String>()
                )));
            }
            if self.store.peering_named(&answer.name).await?.is_some() {
                return Err(ServiceError::Conflict(format!(
                    "a peering with region {} exists here; `classgrid peers remove {}` first",
                    answer.name, answer.name
                )));
            }
            let (their_cert, serial, _) = ca
                .sign_client(
                    &answer.csr_pem,
                    "peer",
                    &answer.name,
                    "broker",
                    time::Duration::days(PEER_CERT_DAYS),
                )
                .map_err(|e| ServiceError::Conflict(format!("the offering region's csr: {e}")))?;
            let id = token.id;
            self.save_peer_key(id, &key_pem)?;
            let rtt = if terms.rtt_ms > 0.0 {
                (terms.rtt_ms, "configured")
            } else {
                (measured, "measured")
            };
            self.store
                .insert_accepted_peering(&Accepted {
                    id,
                    name: &answer.name,
                    local_name: &terms.local_name,
                    url: &token.url,
                    ca_pem: &peer_ca,
                    site_id,
                    peer_cert_serial: &serial,
                    own_cert_pem: &answer.client_cert_pem,
                    rtt,
                    lending: terms.lending.to_json(),
                })
                .await?;
            let row = self
                .store
                .peering(id)
                .await?
                .ok_or_else(|| ServiceError::NotFound(format!("peering {id}")))?;
            // Now over mutual TLS: hand the offering region its certificate.
            let confirmed = match self.peer_client(&row) {
                Ok(mut c) => c
                    .confirm(pb::ConfirmRequest {
                        client_cert_pem: their_cert,
                    })
                    .await
                    .map(|_| ())
                    .map_err(|s| s.message().to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = confirmed {
                self.store
                    .set_peering_reachable(id, false, &format!("confirm failed: {e}"))
                    .await?;
                return Err(ServiceError::Unavailable(format!(
                    "region {} did not confirm the peering: {e}",
                    answer.name
                )));
            }
            Ok(row)
        };
        self.audited(
            caller,
            "peering.accept",
            |r: &PeeringRow| format!("peering:{}", r.name),
            "peering",
            op,
        )
        .await
    }

    /// The offering side of the handshake: checks the secret, issues the
    /// accepting region's client certificate, and asks for its own.
    pub async fn peering_handshake(
        &self,
        source: &str,
        r: pb::HandshakeRequest,
    ) -> Result<pb::HandshakeResponse, ServiceError> {
        let name = r.name.chars().take(64).collect::<String>();
        let result = self.peering_handshake_inner(r).await;
        self.audit_peer(
            &name,
            "peering.handshake",
            source,
            &result.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        )
        .await;
        result
    }

    async fn peering_handshake_inner(
        &self,
        r: pb::HandshakeRequest,
    ) -> Result<pb::HandshakeResponse, ServiceError> {
        let ca = self.federation_ca()?;
        let id = Uuid::parse_str(&r.peering_id)
            .map_err(|_| ServiceError::field("peering_id", "must be a UUID"))?;
        let mut c = Checks::default();
        c.check(valid_name(&r.name), "name", "must be a region name");
        c.check(r.url.starts_with("https://"), "url", "must be https://");
        c.check(
            !r.ca_pem.is_empty() && r.ca_pem.len() < 16_384,
            "ca_pem",
            "must be a PEM certificate",
        );
        c.finish()?;
        let refused = || {
            ServiceError::Unauthenticated(
                "no open offer matches: it is wrong, used, expired, or made for another region"
                    .into(),
            )
        };
        let offered = self.store.peering(id).await?.ok_or_else(refused)?;
        if offered.state != "offered" || offered.name != r.name {
            return Err(refused());
        }
        let (their_cert, serial, _) = ca
            .sign_client(
                &r.csr_pem,
                "peer",
                &r.name,
                "broker",
                time::Duration::days(PEER_CERT_DAYS),
            )
            .map_err(|e| ServiceError::field("csr_pem", e.to_string()))?;
        let (key_pem, csr_pem) = classgrid_common::tls::new_csr(&offered.local_name)
            .map_err(|e| ServiceError::Internal(anyhow::anyhow!("{e}")))?;
        let done = self
            .store
            .complete_handshake(&Handshake {
                id,
                secret_sha256: &tokens::digest(&r.secret),
                name: &r.name,
                url: &r.url,
                ca_pem: &r.ca_pem,
                peer_cert_serial: &serial,
                measured_rtt_ms: r.rtt_ms.clamp(0.0, 10_000.0),
            })
            .await?
            .ok_or_else(refused)?;
        // Kept only once the secret proved right: a wrong or replayed offer
        // never touches the key of a live peering.
        self.save_peer_key(id, &key_pem)?;
        Ok(pb::HandshakeResponse {
            name: done.local_name,
            client_cert_pem: their_cert,
            csr_pem,
        })
    }

    /// The accepting region hands over this region's client certificate;
    /// the peering is connected.
    pub async fn peering_confirm(
        &self,
        peer: &PeeringRow,
        source: &str,
        cert_pem: &str,
    ) -> Result<(), ServiceError> {
        let r = if cert_pem.contains("BEGIN CERTIFICATE") && cert_pem.len() < 16_384 {
            self.store.confirm_peering(peer.id, cert_pem).await?;
            client::forget(peer.id);
            Ok(())
        } else {
            Err(ServiceError::field(
                "client_cert_pem",
                "must be a PEM certificate",
            ))
        };
        self.audit_peer(
            &peer.name,
            "peering.confirm",
            source,
            &r.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        )
        .await;
        r
    }

    /// The peering of a caller presenting a client certificate this region
    /// issued to a peer.
    pub async fn peer_identity(&self, der: Option<&[u8]>) -> Result<PeeringRow, ServiceError> {
        let der = der.ok_or_else(|| {
            ServiceError::Unauthenticated(
                "peer regions call with the client certificate from the peering handshake".into(),
            )
        })?;
        let id =
            pki::client_identity(der).map_err(|e| ServiceError::Unauthenticated(e.to_string()))?;
        let row = self
            .store
            .peering_by_cert(&id.serial)
            .await?
            .filter(|p| p.state != "removed" && id.kind == "peer" && p.name == id.site)
            .ok_or_else(|| {
                ServiceError::Unauthenticated(
                    "this certificate belongs to no peering of this region".into(),
                )
            })?;
        Ok(row)
    }

    pub async fn list_peerings(
        &self,
        caller: &Caller,
    ) -> Result<Vec<(PeeringRow, (i64, i64))>, ServiceError> {
        Self::require_admin(caller)?;
        let mut out = Vec::new();
        for p in self.store.list_peerings().await? {
            let counts = self.store.peering_lesson_counts(p.id).await?;
            out.push((p, counts));
        }
        Ok(out)
    }

    /// A peering by id or peer region name.
    pub async fn get_peering(
        &self,
        caller: &Caller,
        key: &str,
    ) -> Result<(PeeringRow, (i64, i64)), ServiceError> {
        Self::require_admin(caller)?;
        let p = match Uuid::parse_str(key) {
            Ok(id) => self.store.peering(id).await?,
            Err(_) => self.store.peering_named(key).await?,
        }
        .ok_or_else(|| {
            ServiceError::NotFound(format!(
                "peering `{}`",
                key.chars().take(64).collect::<String>()
            ))
        })?;
        let counts = self.store.peering_lesson_counts(p.id).await?;
        Ok((p, counts))
    }

    /// `peers remove`: the peer's certificate stops working here at once.
    /// Lessons already hosted keep running to their end.
    pub async fn remove_peering(
        &self,
        caller: &Caller,
        key: &str,
    ) -> Result<PeeringRow, ServiceError> {
        let op = async {
            let (p, _) = self.get_peering(caller, key).await?;
            let row = self
                .store
                .remove_peering(p.id)
                .await?
                .ok_or_else(|| ServiceError::NotFound(format!("peering {}", p.id)))?;
            client::forget(p.id);
            let _ = std::fs::remove_file(self.peer_key_path(p.id));
            Ok(row)
        };
        self.audited(
            caller,
            "peering.remove",
            |r: &PeeringRow| format!("peering:{}", r.name),
            &format!("peering:{}", key.chars().take(64).collect::<String>()),
            op,
        )
        .await
    }
}
