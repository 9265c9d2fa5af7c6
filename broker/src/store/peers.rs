//! Federation rows: peerings, the holds a lender keeps for its peers'
//! lessons, the lessons a home region borrowed, what was lent, and the
//! append-only settlement ledger (migrations/0017_federation.sql).

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
}

const HOLD_COLS: &str =
    "peering_id, home_lesson_id, lesson_id, seats, window_start, window_end, state, expires_at";

#[derive(Debug, Clone, FromRow)]
pub struct BorrowedRow {
    pub lesson_id: Uuid,
    pub request_id: Option<String>,
    pub peering_id: Uuid,
    pub school_site_id: Uuid,
    pub seats: i32,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub rtt_offset_ms: f64,
    pub booking: Json<serde_json::Value>,
    pub state: String,
    pub last_seen: Option<Json<serde_json::Value>>,
    pub last_seen_at: Option<DateTime<Utc>>,
}

/// Committed borrowed lessons in the columns of `lessons::LESSON_COLS`, as
/// last seen, so lists and timetables show them beside the region's own.
pub(crate) const BORROWED_AS_LESSONS: &str = "SELECT b.lesson_id AS id, b.request_id, b.school_site_id,
    bs.name AS school_site, COALESCE(b.booking->>'title', '') AS title, b.start_at,
    EXTRACT(EPOCH FROM b.end_at - b.start_at)::int AS duration_s,
    COALESCE(NULLIF(b.last_seen->>'state', ''), 'booked') AS state, b.seats AS seat_count,
    COALESCE((b.booking->>'min_seats')::int, 0) AS min_seats, b.booking->'seat' AS seat_spec,
    b.booking->'workload' AS workload, b.booking->'datasets' AS datasets,
    COALESCE((b.booking->>'max_rtt_ms')::int, 0) AS max_rtt_ms, b.start_at AS window_start,
    b.end_at AS window_end, '{}'::json AS explanation, 'hosted by region ' || bp.name AS message,
    b.created_at, COALESCE(b.booking->>'residency', '') AS residency
    FROM borrowed_lessons b JOIN sites bs ON bs.id = b.school_site_id JOIN peerings bp ON bp.id = b.peering_id
    WHERE b.state = 'committed'";

const BORROWED_COLS: &str =
    "lesson_id, request_id, peering_id, school_site_id, seats, start_at, end_at,
    rtt_offset_ms, booking, state, last_seen, last_seen_at";

#[derive(Debug, Clone, FromRow)]
pub struct SettlementRow {
    pub peer: String,
    pub direction: String,
    pub home_lesson_id: Uuid,
    pub seats: i32,
    pub amount_uah: i64,
    pub slice_seconds: f64,
    pub recorded_at: DateTime<Utc>,
}

/// One lesson's line of the ledger, as both sides record it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settled {
    pub seats: i32,
    pub amount_uah: i64,
    pub slice_seconds: f64,
}

/// A lent lesson that is over and whose usage is all in.
#[derive(Debug, Clone, FromRow)]
pub struct ToSettle {
    pub peering_id: Uuid,
    pub home_lesson_id: Uuid,
    pub lesson_id: Uuid,
    pub seats: i32,
}

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
            "INSERT INTO peer_holds ({HOLD_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
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
                "INSERT INTO lent_lessons (peering_id, home_lesson_id, lesson_id, seats)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(r.peering_id)
            .bind(r.home_lesson_id)
            .bind(r.lesson_id)
            .bind(r.seats)
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

    // ---- home side ----

    pub async fn insert_borrowed(&self, b: &BorrowedRow) -> sqlx::Result<()> {
        sqlx::query(sql!(
            "INSERT INTO borrowed_lessons ({BORROWED_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .bind(b.lesson_id)
        .bind(&b.request_id)
        .bind(b.peering_id)
        .bind(b.school_site_id)
        .bind(b.seats)
        .bind(b.start_at)
        .bind(b.end_at)
        .bind(b.rtt_offset_ms)
        .bind(&b.booking)
        .bind(&b.state)
        .bind(&b.last_seen)
        .bind(b.last_seen_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn borrowed(&self, id: Uuid) -> sqlx::Result<Option<BorrowedRow>> {
        sqlx::query_as(sql!(
            "SELECT {BORROWED_COLS} FROM borrowed_lessons WHERE lesson_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn borrowed_by_request_id(&self, rid: &str) -> sqlx::Result<Option<Uuid>> {
        sqlx::query_scalar("SELECT lesson_id FROM borrowed_lessons WHERE request_id = $1")
            .bind(rid)
            .fetch_optional(&self.pool)
            .await
    }

    /// Forgets a borrowed lesson that was held but never committed.
    pub async fn delete_held_borrowed(&self, id: Uuid) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM borrowed_lessons WHERE lesson_id = $1 AND state = 'held'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Borrowed lessons still `held` since before `cutoff`: their booking
    /// stopped between hold and commit (the broker died).
    pub async fn borrowed_held_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> sqlx::Result<Vec<BorrowedRow>> {
        sqlx::query_as(sql!(
            "SELECT {BORROWED_COLS} FROM borrowed_lessons WHERE state = 'held' AND created_at < $1 LIMIT 100"
        ))
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn set_borrowed_state(&self, id: Uuid, state: &str) -> sqlx::Result<()> {
        sqlx::query("UPDATE borrowed_lessons SET state = $2 WHERE lesson_id = $1")
            .bind(id)
            .bind(state)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A held borrowed lesson is committed, with the booking's final form
    /// and the lender's answer.
    pub async fn commit_borrowed(
        &self,
        id: Uuid,
        booking: &serde_json::Value,
        seen: &serde_json::Value,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE borrowed_lessons SET state = 'committed', booking = $2, last_seen = $3, last_seen_at = now()
             WHERE lesson_id = $1",
        )
        .bind(id)
        .bind(Json(booking))
        .bind(Json(seen))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The lender's last answer about a borrowed lesson.
    pub async fn save_borrowed_seen(&self, id: Uuid, seen: &serde_json::Value) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE borrowed_lessons SET last_seen = $2, last_seen_at = now() WHERE lesson_id = $1",
        )
        .bind(id)
        .bind(Json(seen))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- settlement ----

    /// Appends one settlement line; a line already there for the lesson and
    /// direction is kept as it is (recorded once).
    pub async fn record_settlement(
        &self,
        peering: Uuid,
        direction: &str,
        home_lesson: Uuid,
        s: Settled,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO settlement_entries (peering_id, direction, home_lesson_id, seats, amount_uah, slice_seconds)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(peering)
        .bind(direction)
        .bind(home_lesson)
        .bind(s.seats)
        .bind(s.amount_uah)
        .bind(s.slice_seconds)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The line recorded for a lesson and direction, if any.
    pub async fn settled(
        &self,
        peering: Uuid,
        direction: &str,
        home_lesson: Uuid,
    ) -> sqlx::Result<Option<Settled>> {
        let row: Option<(i32, i64, f64)> = sqlx::query_as(
            "SELECT seats, amount_uah, slice_seconds FROM settlement_entries
             WHERE peering_id = $1 AND direction = $2 AND home_lesson_id = $3",
        )
        .bind(peering)
        .bind(direction)
        .bind(home_lesson)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(seats, amount_uah, slice_seconds)| Settled {
            seats,
            amount_uah,
            slice_seconds,
        }))
    }

    /// Lent lessons that are over, not yet settled, and whose usage is in:
    /// every assignment made its final report, or `usage_wait` passed since
    /// the lesson's end (as voucher settlement waits).
    pub async fn lent_to_settle(&self, usage_wait_s: f64) -> sqlx::Result<Vec<ToSettle>> {
        sqlx::query_as(
            "SELECT ll.peering_id, ll.home_lesson_id, ll.lesson_id, ll.seats
             FROM lent_lessons ll JOIN lessons l ON l.id = ll.lesson_id
             WHERE l.state IN ('ended', 'cancelled')
               AND NOT EXISTS (SELECT 1 FROM settlement_entries e WHERE e.peering_id = ll.peering_id
                    AND e.direction = 'lent' AND e.home_lesson_id = ll.home_lesson_id)
               AND (NOT EXISTS (SELECT 1 FROM assignments a JOIN seats s ON s.id = a.seat_id
                        WHERE s.lesson_id = l.id AND a.final_report_at IS NULL)
                    OR l.start_at + make_interval(secs => l.duration_s + $1) < now())
             LIMIT 100",
        )
        .bind(usage_wait_s)
        .fetch_all(&self.pool)
        .await
    }

    /// Borrowed lessons not over yet, as last seen: the ones whose seats
    /// Watch and the console follow.
    pub async fn borrowed_live(&self) -> sqlx::Result<Vec<BorrowedRow>> {
        sqlx::query_as(sql!(
            "SELECT {BORROWED_COLS} FROM borrowed_lessons
             WHERE state = 'committed' AND end_at > now() - interval '10 minutes'
               AND COALESCE(last_seen->>'state', '') NOT IN ('ended', 'cancelled')
             LIMIT 500"
        ))
        .fetch_all(&self.pool)
        .await
    }

    /// Borrowed lessons past their end that this region has not settled.
    pub async fn borrowed_to_settle(&self) -> sqlx::Result<Vec<BorrowedRow>> {
        sqlx::query_as(sql!(
            "SELECT {BORROWED_COLS} FROM borrowed_lessons b
             WHERE state = 'committed' AND end_at < now()
               AND NOT EXISTS (SELECT 1 FROM settlement_entries e WHERE e.peering_id = b.peering_id
                    AND e.direction = 'borrowed' AND e.home_lesson_id = b.lesson_id)
             LIMIT 100"
        ))
        .fetch_all(&self.pool)
        .await
    }

    /// Settlement lines recorded in `[from, to)`, for one peering or all.
    pub async fn settlement_lines(
        &self,
        peering: Option<Uuid>,
        (from, to): (DateTime<Utc>, DateTime<Utc>),
    ) -> sqlx::Result<Vec<SettlementRow>> {
        sqlx::query_as(
            "SELECT p.name AS peer, e.direction, e.home_lesson_id, e.seats, e.amount_uah, e.slice_seconds,
                e.recorded_at
             FROM settlement_entries e JOIN peerings p ON p.id = e.peering_id
             WHERE ($1::uuid IS NULL OR e.peering_id = $1) AND e.recorded_at >= $2 AND e.recorded_at < $3
             ORDER BY e.recorded_at, e.id",
        )
        .bind(peering)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
    }
}
