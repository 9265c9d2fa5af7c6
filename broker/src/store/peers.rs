//! Federation rows: peerings, and the holds a lender keeps for its peers'
//! lessons with what it lent (migrations/0017_federation.sql). Borrowed
//! lessons are in `borrowed`, the settlement ledger in `settlement`.

use chrono::{DateTime, Utc};
use sqlx::{FromRow, types::Json};
use uuid::Uuid;

use super::Store;

#[derive(Debug, Clone, FromRow)]
pub struct PeeringRow {
    pub id: Uuid,
    pub name: String,
    pub local_name: String,
    pub url: String,
    pub ca_pem: String,
    pub offer_expires_at: Option<DateTime<Utc>>,
    pub site_id: Uuid,
    pub site: String,
    pub peer_cert_serial: Option<String>,
    pub own_cert_pem: String,
    pub state: String,
    pub disconnected_since: Option<DateTime<Utc>>,
    pub rtt_ms: Option<f64>,
    pub rtt_source: Option<String>,
    /// What `federation::policy` parses; kept as JSON here so the store
    /// does not depend on the federation module.
    pub lending: Json<serde_json::Value>,
    pub message: String,
    pub created_at: DateTime<Utc>,
}

const PEERING_COLS: &str =
    "p.id, p.name, p.local_name, p.url, p.ca_pem, p.offer_expires_at, p.site_id,
    s.name AS site, p.peer_cert_serial, p.own_cert_pem, p.state, p.disconnected_since, p.rtt_ms,
    p.rtt_source, p.lending, p.message, p.created_at";

/// A new offer, as `peers offer` makes it.
pub struct NewOffer<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub local_name: &'a str,
    pub secret_sha256: &'a [u8],
    pub expires_at: DateTime<Utc>,
    pub site_id: Uuid,
    pub rtt_ms: Option<f64>,
    pub lending: serde_json::Value,
}

/// A peering as the accepting side writes it after the handshake.
pub struct Accepted<'a> {
    pub id: Uuid,
    pub name: &'a str,
    pub local_name: &'a str,
    pub url: &'a str,
    pub ca_pem: &'a str,
    pub site_id: Uuid,
    pub peer_cert_serial: &'a str,
    pub own_cert_pem: &'a str,
    pub rtt: (f64, &'a str),
    pub lending: serde_json::Value,
}

/// The accepting side's half, as the offering side records it at the
/// handshake.
pub struct Handshake<'a> {
    pub id: Uuid,
    pub secret_sha256: &'a [u8],
    pub name: &'a str,
    pub url: &'a str,
    pub ca_pem: &'a str,
    pub peer_cert_serial: &'a str,
    pub measured_rtt_ms: f64,
}

#[derive(Debug, Clone, FromRow)]
pub struct HoldRow {
    pub peering_id: Uuid,
    pub home_lesson_id: Uuid,
    pub lesson_id: Uuid,
    pub seats: i32,
    pub window_start: DateTime<Utc>,
    pub window_end: DateTime<Utc>,
    pub state: String,
    pub expires_at: DateTime<Utc>,
    /// The lending weight in force when the offer was made (decision 108).
    pub weight: f64,
}

const HOLD_COLS: &str = "peering_id, home_lesson_id, lesson_id, seats, window_start, window_end, state, expires_at, weight";

impl Store {
    pub async fn insert_peering_offer(&self, o: &NewOffer<'_>) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO peerings (id, name, local_name, offer_secret_sha256, offer_expires_at, site_id,
                state, rtt_ms, rtt_source, lending)
             VALUES ($1, $2, $3, $4, $5, $6, 'offered', $7, CASE WHEN $7 IS NULL THEN NULL ELSE 'configured' END, $8)",
        )
        .bind(o.id)
        .bind(o.name)
        .bind(o.local_name)
        .bind(o.secret_sha256)
        .bind(o.expires_at)
        .bind(o.site_id)
        .bind(o.rtt_ms)
        .bind(Json(&o.lending))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the accepting side's half of an offer whose secret matches
    /// and that has not expired; None when none does (a wrong, used or
    /// expired offer). A configured RTT is kept; else the handshake's
    /// measurement is taken.
    pub async fn complete_handshake(&self, h: &Handshake<'_>) -> sqlx::Result<Option<PeeringRow>> {
        let done: Option<Uuid> = sqlx::query_scalar(
            "UPDATE peerings SET url = $4, ca_pem = $5, peer_cert_serial = $6,
                rtt_ms = COALESCE(rtt_ms, $7), rtt_source = COALESCE(rtt_source, 'measured'),
                offer_secret_sha256 = NULL, updated_at = now()
             WHERE id = $1 AND state = 'offered' AND offer_secret_sha256 = $2 AND name = $3
                AND offer_expires_at > now()
             RETURNING id",
        )
        .bind(h.id)
        .bind(h.secret_sha256)
        .bind(h.name)
        .bind(h.url)
        .bind(h.ca_pem)
        .bind(h.peer_cert_serial)
        .bind(h.measured_rtt_ms)
        .fetch_optional(&self.pool)
        .await?;
        match done {
            Some(id) => self.peering(id).await,
            None => Ok(None),
        }
    }

    /// The certificate the peer issued to this region; the peering is
    /// connected from now on.
    pub async fn confirm_peering(&self, id: Uuid, own_cert_pem: &str) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE peerings SET own_cert_pem = $2, state = 'connected', disconnected_since = NULL,
                offer_expires_at = NULL, updated_at = now()
             WHERE id = $1 AND state IN ('offered', 'connected', 'disconnected')",
        )
        .bind(id)
        .bind(own_cert_pem)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn insert_accepted_peering(&self, a: &Accepted<'_>) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO peerings (id, name, local_name, url, ca_pem, site_id, peer_cert_serial,
                own_cert_pem, state, rtt_ms, rtt_source, lending)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'connected', $9, $10, $11)",
        )
        .bind(a.id)
        .bind(a.name)
        .bind(a.local_name)
        .bind(a.url)
        .bind(a.ca_pem)
        .bind(a.site_id)
        .bind(a.peer_cert_serial)
        .bind(a.own_cert_pem)
        .bind(a.rtt.0)
        .bind(a.rtt.1)
        .bind(Json(&a.lending))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn peering(&self, id: Uuid) -> sqlx::Result<Option<PeeringRow>> {
        sqlx::query_as(sql!(
            "SELECT {PEERING_COLS} FROM peerings p JOIN sites s ON s.id = p.site_id WHERE p.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    /// The live (not removed) peering with the region called `name`.
    pub async fn peering_named(&self, name: &str) -> sqlx::Result<Option<PeeringRow>> {
        sqlx::query_as(sql!(
            "SELECT {PEERING_COLS} FROM peerings p JOIN sites s ON s.id = p.site_id
             WHERE p.name = $1 AND p.state <> 'removed'"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
    }

    /// The peering whose client certificate has this serial.
    pub async fn peering_by_cert(&self, serial: &str) -> sqlx::Result<Option<PeeringRow>> {
        sqlx::query_as(sql!(
            "SELECT {PEERING_COLS} FROM peerings p JOIN sites s ON s.id = p.site_id
             WHERE p.peer_cert_serial = $1"
        ))
        .bind(serial)
        .fetch_optional(&self.pool)
        .await
    }

    /// Every peering not removed, by name.
    pub async fn list_peerings(&self) -> sqlx::Result<Vec<PeeringRow>> {
        sqlx::query_as(sql!(
            "SELECT {PEERING_COLS} FROM peerings p JOIN sites s ON s.id = p.site_id
             WHERE p.state <> 'removed' ORDER BY p.name"
        ))
        .fetch_all(&self.pool)
        .await
    }

    /// Connected or disconnected: whether the last call reached the peer.
    /// `disconnected_since` keeps the first failure's time.
    pub async fn set_peering_reachable(
        &self,
        id: Uuid,
        reachable: bool,
        message: &str,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE peerings SET
                state = CASE WHEN $2 THEN 'connected' ELSE 'disconnected' END,
                disconnected_since = CASE WHEN $2 THEN NULL ELSE COALESCE(disconnected_since, now()) END,
                message = $3, updated_at = now()
             WHERE id = $1 AND state IN ('connected', 'disconnected')",
        )
        .bind(id)
        .bind(reachable)
        .bind(message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_measured_rtt(&self, id: Uuid, ms: f64) -> sqlx::Result<()> {
        sqlx::query("UPDATE peerings SET rtt_ms = $2 WHERE id = $1 AND rtt_source = 'measured'")
            .bind(id)
            .bind(ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn remove_peering(&self, id: Uuid) -> sqlx::Result<Option<PeeringRow>> {
        sqlx::query(
            "UPDATE peerings SET state = 'removed', offer_secret_sha256 = NULL, peer_cert_serial = NULL,
                updated_at = now()
             WHERE id = $1 AND state <> 'removed'",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.peering(id).await
    }

    /// Lessons lent to and borrowed from a peering, not yet over.
    pub async fn peering_lesson_counts(&self, id: Uuid) -> sqlx::Result<(i64, i64)> {
        sqlx::query_as(
            "SELECT
                (SELECT count(*) FROM peer_holds WHERE peering_id = $1
                    AND state IN ('held', 'committed') AND window_end > now()),
                (SELECT count(*) FROM borrowed_lessons WHERE peering_id = $1
                    AND state IN ('held', 'committed') AND end_at > now())",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
    }

    // ---- lender side ----

    /// Writes the hold before its lesson is booked; an existing hold for the
    /// same home lesson comes back instead (idempotent by lesson id).
    pub async fn insert_hold(&self, h: &HoldRow) -> sqlx::Result<(HoldRow, bool)> {
        let inserted: Option<HoldRow> = sqlx::query_as(sql!(
            "INSERT INTO peer_holds ({HOLD_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (peering_id, home_lesson_id) DO NOTHING RETURNING {HOLD_COLS}"
        ))
        .bind(h.peering_id)
        .bind(h.home_lesson_id)
        .bind(h.lesson_id)
        .bind(h.seats)
        .bind(h.window_start)
        .bind(h.window_end)
        .bind(&h.state)
        .bind(h.expires_at)
        .bind(h.weight)
        .fetch_optional(&self.pool)
        .await?;
        match inserted {
            Some(r) => Ok((r, true)),
            None => Ok((
                self.hold(h.peering_id, h.home_lesson_id)
                    .await?
                    .ok_or(sqlx::Error::RowNotFound)?,
                false,
            )),
        }
    }

    pub async fn hold(&self, peering: Uuid, home_lesson: Uuid) -> sqlx::Result<Option<HoldRow>> {
        sqlx::query_as(sql!(
            "SELECT {HOLD_COLS} FROM peer_holds WHERE peering_id = $1 AND home_lesson_id = $2"
        ))
        .bind(peering)
        .bind(home_lesson)
        .fetch_optional(&self.pool)
        .await
    }

    /// Moves a hold from one of `from` to `to`; the row as it is after,
    /// or None when it was in no state of `from`.
    pub async fn set_hold_state(
        &self,
        peering: Uuid,
        home_lesson: Uuid,
        from: &[&str],
        to: &str,
    ) -> sqlx::Result<Option<HoldRow>> {
        let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
        sqlx::query_as(sql!(
            "UPDATE peer_holds SET state = $4
             WHERE peering_id = $1 AND home_lesson_id = $2 AND state = ANY($3)
             RETURNING {HOLD_COLS}"
        ))
        .bind(peering)
        .bind(home_lesson)
        .bind(&from)
        .bind(to)
        .fetch_optional(&self.pool)
        .await
    }

    /// Commits a hold not yet expired, and records the lesson as lent, in
    /// one transaction. A committed hold stays committed and is recorded
    /// once, however often the commit arrives.
    pub async fn commit_hold(
        &self,
        peering: Uuid,
        home_lesson: Uuid,
    ) -> sqlx::Result<Option<HoldRow>> {
        let mut tx = self.pool.begin().await?;
        let row: Option<HoldRow> = sqlx::query_as(sql!(
            "UPDATE peer_holds SET state = 'committed', committed_at = COALESCE(committed_at, now())
             WHERE peering_id = $1 AND home_lesson_id = $2
                AND (state = 'committed' OR (state = 'held' AND expires_at > now()))
             RETURNING {HOLD_COLS}"
        ))
        .bind(peering)
        .bind(home_lesson)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = &row {
            sqlx::query(
                "INSERT INTO lent_lessons (peering_id, home_lesson_id, lesson_id, seats, weight)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(r.peering_id)
            .bind(r.home_lesson_id)
            .bind(r.lesson_id)
            .bind(r.seats)
            .bind(r.weight)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(row)
    }

    /// Holds past their expiry that were never committed.
    pub async fn expired_holds(&self) -> sqlx::Result<Vec<HoldRow>> {
        sqlx::query_as(sql!(
            "SELECT {HOLD_COLS} FROM peer_holds
             WHERE state IN ('holding', 'held') AND expires_at <= now() LIMIT 500"
        ))
        .fetch_all(&self.pool)
        .await
    }

    /// Slices lent or held for a peering whose windows overlap `window`.
    pub async fn lent_slices(
        &self,
        peering: Uuid,
        (start, end): (DateTime<Utc>, DateTime<Utc>),
        except: Uuid,
    ) -> sqlx::Result<i64> {
        sqlx::query_scalar(
            "SELECT COALESCE(sum(seats), 0)::bigint FROM peer_holds
             WHERE peering_id = $1 AND home_lesson_id <> $4
                AND state IN ('holding', 'held', 'committed')
                AND window_start < $3 AND $2 < window_end",
        )
        .bind(peering)
        .bind(start)
        .bind(end)
        .bind(except)
        .fetch_one(&self.pool)
        .await
    }
}
