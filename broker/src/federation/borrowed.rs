//! A borrowed lesson at home (decision 094): read from its lender, or as
//! last seen while the lender is away ("peer region … unreachable since …");
//! followed live for Watch and the console; cancelled through its lender;
//! and its lender's settlement line copied once.

use std::collections::HashMap;

use chrono::Utc;
use classgrid_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sqlx::types::Json;
use uuid::Uuid;

use crate::{
    domain::{ServiceError, spec},
    seats::links::{link_url, token_sha256},
    state::Broker,
    store::{
        borrowed::BorrowedRow,
        lessons::{LessonRow, LessonView, SeatRow},
        peers::PeeringRow,
        settlement::Settled,
    },
};

/// What a borrowed lesson was booked as; the lender gets only what it needs
/// to run the seats.
#[derive(Serialize, Deserialize)]
pub(super) struct BookedAs {
    pub(super) title: String,
    pub(super) school_site: String,
    pub(super) duration_s: i32,
    pub(super) min_seats: i32,
    pub(super) max_rtt_ms: i32,
    pub(super) seat: spec::SeatSpec,
    pub(super) workload: spec::Workload,
    pub(super) datasets: Vec<spec::Dataset>,
    pub(super) answers: Vec<String>,
    #[serde(default)]
    pub(super) residency: String,
    /// The tier of each seat's node, as the lender offered them: the
    /// school's voucher charge is split over them (decision 105).
    #[serde(default)]
    pub(super) seat_tiers: Vec<String>,
}

/// The lender's last answer, kept for when it cannot be reached.
#[derive(Serialize, Deserialize, Default)]
pub(super) struct Seen {
    region: String,
    state: String,
    message: String,
    seats: Vec<SeenSeat>,
}

#[derive(Serialize, Deserialize)]
struct SeenSeat {
    id: String,
    number: i32,
    state: String,
    node_name: String,
    device_indexes: Vec<i32>,
    endpoint: String,
    rtt_ms: Option<f64>,
    message: String,
    /// sha256 of the seat's link token as its lender sent it (decision
    /// 110); the token itself is never kept.
    #[serde(default)]
    link_sha256: String,
}

/// A link token as a lender may send it: what `LinkKey::token` makes (64
/// lower-case hex), so a hostile lender cannot put anything else in a URL.
fn valid_token(t: &str) -> bool {
    t.len() == 64
        && t.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The link token the lender sent for seat `id`, if a valid one.
fn token_of<'h>(h: &'h pb::HostedLesson, id: &str) -> Option<&'h str> {
    h.seat_links
        .iter()
        .find(|l| l.seat_id == id && valid_token(&l.token))
        .map(|l| l.token.as_str())
}

impl Seen {
    pub(super) fn of(h: &pb::HostedLesson) -> Self {
        let l = h.lesson.clone().unwrap_or_default();
        Seen {
            region: h.region.clone(),
            state: l.state,
            message: l.message,
            seats: l
                .seats
                .into_iter()
                .map(|s| SeenSeat {
                    link_sha256: token_of(h, &s.id).map(token_sha256).unwrap_or_default(),
                    id: s.id,
                    number: s.number,
                    state: s.state,
                    node_name: s.node_name,
                    device_indexes: s.device_indexes,
                    endpoint: s.endpoint,
                    rtt_ms: s.rtt.map(|r| r.ms),
                    message: s.message,
                })
                .collect(),
        }
    }
}

impl Broker {
    /// A borrowed lesson and the peering of the region that hosts it.
    async fn borrowed_and_peer(&self, id: Uuid) -> Result<(BorrowedRow, PeeringRow), ServiceError> {
        let row = self
            .store
            .borrowed(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("lesson {id}")))?;
        let p = self
            .store
            .peering(row.peering_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("peering {}", row.peering_id)))?;
        Ok((row, p))
    }

    /// A borrowed lesson, as its lender reports it now, or as it last did
    /// when the lender cannot be reached ("peer unreachable since …").
    pub(crate) async fn borrowed_lesson(&self, id: Uuid) -> Result<LessonView, ServiceError> {
        let (row, p) = self.borrowed_and_peer(id).await?;
        let fresh = match self.peer_client(&p) {
            Ok(mut c) => c
                .get_hosted(pb::HostedLessonRequest {
                    lesson_id: id.to_string(),
                })
                .await
                .map(|h| h.into_inner()),
            Err(e) => Err(tonic::Status::unavailable(e.to_string())),
        };
        match fresh {
            Ok(h) => {
                let seen = Seen::of(&h);
                self.store
                    .save_borrowed_seen(id, &serde_json::to_value(&seen).unwrap_or_default())
                    .await?;
                if p.disconnected_since.is_some() {
                    self.store.set_peering_reachable(p.id, true, "").await?;
                }
                self.view_of(&row, &p, &seen, None, Some(&h)).await
            }
            Err(s) => {
                let _ = self.peer_failed(&p, &s).await;
                let p = self.store.peering(p.id).await?.unwrap_or(p);
                let seen: Seen = row
                    .last_seen
                    .as_ref()
                    .and_then(|j| serde_json::from_value(j.0.clone()).ok())
                    .unwrap_or_default();
                let since = p.disconnected_since.unwrap_or_else(Utc::now);
                let note = format!(
                    "peer region {} unreachable since {}; seats as last reported",
                    p.name,
                    since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                );
                self.view_of(&row, &p, &seen, Some(note), None).await
            }
        }
    }
}

/// The lesson as this region shows it: its own school, title and spec; the
/// lender's state and seats, each with its region and the RTT the
/// students see: `measured` by the school's edge where it probes the seat's
/// node (by node name, decision 109), else estimated.
fn borrowed_view(
    row: &BorrowedRow,
    p: &PeeringRow,
    seen: &Seen,
    note: Option<String>,
    measured: &HashMap<String, f64>,
) -> LessonView {
    let booked: Option<BookedAs> = serde_json::from_value(row.booking.0.clone()).ok();
    // In the shape of a local admission, so `lessons explain` reads it: each
    // region's answer, nearest first, as a `federation` filter line.
    let answers = booked
        .as_ref()
        .map(|b| b.answers.clone())
        .unwrap_or_default();
    let explanation = serde_json::json!({
        "admitted": true,
        "admission": {
            "explanation": {
                "summary": format!("hosted by region {}: {}", p.name, answers.join("; ")),
                "filters": answers
                    .iter()
                    .map(|a| serde_json::json!({"filter": "federation", "removed": 0, "detail": a}))
                    .collect::<Vec<_>>(),
            },
            "seats": [],
        },
        "federation": { "region": p.name, "answers": answers },
    });
    let explanation = RawValue::from_string(explanation.to_string())
        .unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"));
    let message = match note {
        Some(n) => n,
        None if seen.message.is_empty() => format!("hosted by region {}", p.name),
        None => format!("hosted by region {}: {}", p.name, seen.message),
    };
    let state = if seen.state.is_empty() {
        "booked".to_string()
    } else {
        seen.state.clone()
    };
    let (seat, workload, datasets) = match &booked {
        Some(b) => (b.seat.clone(), b.workload.clone(), b.datasets.clone()),
        None => (
            spec::SeatSpec {
                cpu_millis: 0,
                memory_mib: 0,
                gpu: None,
                runtime: String::new(),
            },
            spec::Workload::default(),
            Vec::new(),
        ),
    };
    let lesson = LessonRow {
        id: row.lesson_id,
        request_id: row.request_id.clone(),
        school_site_id: row.school_site_id,
        school_site: booked
            .as_ref()
            .map(|b| b.school_site.clone())
            .unwrap_or_default(),
        title: booked.as_ref().map(|b| b.title.clone()).unwrap_or_default(),
        start_at: row.start_at,
        duration_s: (row.end_at - row.start_at).num_seconds() as i32,
        state,
        seat_count: row.seats,
        min_seats: booked.as_ref().map(|b| b.min_seats).unwrap_or(0),
        seat_spec: Json(seat),
        workload: Json(workload),
        datasets: Json(datasets),
        max_rtt_ms: booked.as_ref().map(|b| b.max_rtt_ms).unwrap_or(0),
        window_start: row.start_at,
        window_end: row.end_at,
        explanation: Json(explanation),
        message,
        created_at: row.last_seen_at.unwrap_or_else(Utc::now),
        residency: booked
            .as_ref()
            .map(|b| b.residency.clone())
            .unwrap_or_default(),
        // A series occurrence is booked at home; its borrowed copy names none.
        series_id: None,
    };
    let seats = seen
        .seats
        .iter()
        .map(|s| SeatRow {
            id: s.id.parse().unwrap_or_else(|_| {
                Uuid::from_u64_pair(row.lesson_id.as_u64_pair().0, s.number as u64)
            }),
            lesson_id: row.lesson_id,
            number: s.number,
            state: s.state.clone(),
            node_id: None,
            node_name: Some(s.node_name.clone()),
            device_indexes: s.device_indexes.clone(),
            gpu_memory_mib: 0,
            gpu_compute_pct: 0,
            // What the students see: measured from their school, or their
            // way to this region and on to the peer plus the peer's site →
            // node part.
            rtt_ms: measured
                .get(&s.node_name)
                .copied()
                .or(s.rtt_ms.map(|ms| ms + row.rtt_offset_ms)),
            rtt_source: if measured.contains_key(&s.node_name) {
                Some("measured".to_string())
            } else {
                s.rtt_ms.map(|_| "estimated".to_string())
            },
            rtt_error_ms: None,
            endpoint: s.endpoint.clone(),
            message: s.message.clone(),
            assignment_id: None,
            generation: None,
            region: seen.region.clone(),
            // The school's edge proxies only this region's seats; a link to
            // a borrowed seat through it is not built yet.
            link: String::new(),
            link_opened_at: None,
        })
        .collect();
    LessonView { lesson, seats }
}

impl Broker {
    /// `borrowed_view` with what the school's edge measured to the
    /// lender's probed nodes, and each seat's link on the school's edge
    /// when the lender's fresh answer `fresh` gave its token (decision
    /// 110): without one (the lender unreachable), the view has no links,
    /// though the edge keeps serving the links it was given.
    pub(super) async fn view_of(
        &self,
        row: &BorrowedRow,
        p: &PeeringRow,
        seen: &Seen,
        note: Option<String>,
        fresh: Option<&pb::HostedLesson>,
    ) -> Result<LessonView, ServiceError> {
        let measured = self.peer_probes.measured_from(row.school_site_id, p.id);
        let mut view = borrowed_view(row, p, seen, note, &measured);
        if let (Some(h), Some(base)) = (fresh, self.store.seat_link_base(row.school_site_id).await?)
        {
            for s in &mut view.seats {
                if let Some(t) = token_of(h, &s.id.to_string()) {
                    s.link = link_url(&base, t);
                }
            }
        }
        Ok(view)
    }

    /// The school site's edge's links to its borrowed seats (decision
    /// 110): each seat the lender gave a token for, to the endpoint it
    /// reported, open until the lesson's end plus grace. The edge proxies
    /// them as it proxies this region's seats.
    pub(crate) async fn borrowed_seat_links(
        &self,
        site: Uuid,
    ) -> Result<Vec<pb::SeatLink>, ServiceError> {
        let grace = self.cfg.grace.as_secs_f64();
        let mut links = Vec::new();
        for row in self.store.site_borrowed_open(site, grace).await? {
            let Some(seen) = row
                .last_seen
                .as_ref()
                .and_then(|j| serde_json::from_value::<Seen>(j.0.clone()).ok())
            else {
                continue;
            };
            let notebook = serde_json::from_value::<BookedAs>(row.booking.0.clone())
                .is_ok_and(|b| b.seat.runtime == spec::NOTEBOOK);
            let until = row.end_at + chrono::Duration::milliseconds((grace * 1000.0) as i64);
            for s in seen.seats.iter().filter(|s| !s.link_sha256.is_empty()) {
                let live = matches!(s.state.as_str(), "starting" | "running");
                links.push(pb::SeatLink {
                    link_sha256: s.link_sha256.clone(),
                    // The lender's assignment ids are its own business.
                    assignment_id: String::new(),
                    lesson_id: row.lesson_id.to_string(),
                    endpoint: if live {
                        s.endpoint.clone()
                    } else {
                        String::new()
                    },
                    open_until_unix_ms: until.timestamp_millis(),
                    paused: false,
                    serves_link_path: notebook,
                    stopped: false,
                });
            }
        }
        Ok(links)
    }

    /// Copies each lender's settlement line of a borrowed lesson that is
    /// over, once: a lender that cannot be reached now is asked again on
    /// the next pass, so a partition delays the line and never loses or
    /// doubles it.
    pub async fn settle_borrowed(&self) -> Result<usize, ServiceError> {
        let mut n = 0;
        for b in self.store.borrowed_to_settle().await? {
            let Some(p) = self.store.peering(b.peering_id).await? else {
                continue;
            };
            let Ok(mut c) = self.peer_client(&p) else {
                continue;
            };
            let Ok(h) = c
                .get_hosted(pb::HostedLessonRequest {
                    lesson_id: b.lesson_id.to_string(),
                })
                .await
                .map(|h| h.into_inner())
            else {
                continue;
            };
            let seen = Seen::of(&h);
            self.store
                .save_borrowed_seen(
                    b.lesson_id,
                    &serde_json::to_value(&seen).unwrap_or_default(),
                )
                .await?;
            if !h.settled {
                continue;
            }
            // A hostile or broken lender's line is not copied: it must be
            // what the two ledgers can agree on.
            let line = Settled {
                seats: h.lesson.as_ref().map(|l| l.seat_count).unwrap_or(b.seats),
                amount_uah: h.used_uah,
                slice_seconds: h.slice_seconds,
            };
            if line.seats < 0
                || line.amount_uah < 0
                || !(line.slice_seconds >= 0.0 && line.slice_seconds.is_finite())
            {
                tracing::warn!(lesson = %b.lesson_id, region = %p.name, ?line, "lender's settlement line refused: seats, used_uah and slice_seconds must be at least 0");
                continue;
            }
            let tiers = serde_json::from_value::<BookedAs>(b.booking.0.clone())
                .map(|booked| booked.seat_tiers)
                .unwrap_or_default();
            self.charge_borrowed(&b, line, &tiers).await?;
            tracing::info!(lesson = %b.lesson_id, region = %p.name, amount_uah = line.amount_uah, "borrowed lesson settled");
            n += 1;
        }
        Ok(n)
    }
}

impl Broker {
    /// Reads every borrowed lesson not over yet from its lender and, where
    /// its state or seats changed, announces it like a local change, so
    /// Watch, the event stream and the console follow hosted seats too.
    pub async fn refresh_borrowed(&self) -> Result<(), ServiceError> {
        for b in self.store.borrowed_live().await? {
            let Some(p) = self.store.peering(b.peering_id).await? else {
                continue;
            };
            let Ok(mut c) = self.peer_client(&p) else {
                continue;
            };
            match c
                .get_hosted(pb::HostedLessonRequest {
                    lesson_id: b.lesson_id.to_string(),
                })
                .await
            {
                Ok(h) => {
                    let seen = serde_json::to_value(Seen::of(&h.into_inner())).unwrap_or_default();
                    if b.last_seen.as_ref().map(|j| &j.0) != Some(&seen)
                        || p.disconnected_since.is_some()
                    {
                        self.store.save_borrowed_seen(b.lesson_id, &seen).await?;
                        if p.disconnected_since.is_some() {
                            self.store.set_peering_reachable(p.id, true, "").await?;
                        }
                        self.lesson_changed(b.lesson_id);
                    }
                }
                Err(s) => {
                    let was_away = p.disconnected_since.is_some();
                    let _ = self.peer_failed(&p, &s).await;
                    if !was_away && super::client::unreachable(&s) {
                        // "unreachable since …" is news too.
                        self.lesson_changed(b.lesson_id);
                    }
                }
            }
        }
        Ok(())
    }
}

impl Broker {
    /// Cancels a borrowed lesson: its lender releases the hold or the
    /// seats. The lesson stays recorded as borrowed, so what its seats used
    /// before the cancel is still settled.
    pub(crate) async fn cancel_borrowed(
        &self,
        id: Uuid,
        reason: &str,
    ) -> Result<LessonView, ServiceError> {
        let (row, p) = self.borrowed_and_peer(id).await?;
        let seen = Seen {
            region: p.name.clone(),
            ..Default::default()
        };
        let last: Seen = row
            .last_seen
            .as_ref()
            .and_then(|j| serde_json::from_value(j.0.clone()).ok())
            .unwrap_or(seen);
        if matches!(last.state.as_str(), "ended" | "cancelled") {
            return Err(ServiceError::Conflict(format!(
                "lesson {id} is already {}",
                last.state
            )));
        }
        let mut c = self.peer_client(&p)?;
        let h = c
            .release(pb::HostedLessonRequest {
                lesson_id: id.to_string(),
            })
            .await
            .map_err(|s| {
                ServiceError::Unavailable(format!(
                    "region {} hosts this lesson and could not be reached to cancel it ({}); retry",
                    p.name,
                    s.message()
                ))
            })?
            .into_inner();
        let seen = Seen::of(&h);
        self.store
            .save_borrowed_seen(id, &serde_json::to_value(&seen).unwrap_or_default())
            .await?;
        tracing::info!(lesson = %id, region = %p.name, reason, "borrowed lesson cancelled");
        self.lesson_changed(id);
        self.view_of(&row, &p, &seen, None, Some(&h)).await
    }
}

impl Broker {
    /// Settles borrowed lessons left `held` by a booking that stopped
    /// between hold and commit (this broker died): a lender that committed
    /// keeps the lesson, which is then borrowed for good (a retried booking
    /// with the same request id finds it); any other is released and
    /// forgotten. The lender's own expiry frees it anyway; this keeps the
    /// two sides' records the same.
    pub async fn reconcile_held(&self, older_than: chrono::Duration) -> Result<(), ServiceError> {
        for b in self
            .store
            .borrowed_held_before(Utc::now() - older_than)
            .await?
        {
            let Some(p) = self.store.peering(b.peering_id).await? else {
                continue;
            };
            let Ok(mut c) = self.peer_client(&p) else {
                continue;
            };
            let req = || pb::HostedLessonRequest {
                lesson_id: b.lesson_id.to_string(),
            };
            match c.get_hosted(req()).await {
                Ok(h) if h.get_ref().hold_state == "committed" => {
                    let seen = serde_json::to_value(Seen::of(h.get_ref())).unwrap_or_default();
                    self.store
                        .commit_borrowed(b.lesson_id, &b.booking.0, &seen)
                        .await?;
                }
                Ok(_) => {
                    if c.release(req()).await.is_ok() {
                        self.forget_held_borrowed(b.lesson_id, "the lender did not commit it")
                            .await?;
                    }
                }
                Err(s) if s.code() == tonic::Code::NotFound => {
                    self.forget_held_borrowed(b.lesson_id, "the lender never held it")
                        .await?;
                }
                Err(_) => {}
            }
        }
        Ok(())
    }
}
