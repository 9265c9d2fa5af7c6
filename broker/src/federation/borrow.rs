//! The home side (decision 094): a lesson that does not fit in this region
//! is offered to the peers nearest first, by the RTT its students would see
//! (decision 095): school → this region + this region → peer + the peer's
//! site → node. The first peer that can take the whole class (or its
//! `min_seats`) holds it; this region records the lesson as borrowed and
//! commits. The school's vouchers stay at home.

use std::time::Duration;

use chrono::Utc;
use classgrid_placement::{Explanation, FilterCount, Residency};
use classgrid_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sqlx::types::Json;
use uuid::Uuid;

use super::client;
use crate::{
    api::grpc::convert,
    domain::{ServiceError, spec},
    reserve::queue::BookingInput,
    state::Broker,
    store::{
        lessons::{LessonRow, LessonView, SeatRow},
        peers::{BorrowedRow, PeeringRow, Settled},
    },
};

/// How long a peer holds what it offers before it lets it go uncommitted.
const HOLD_S: i32 = 30;

/// What a borrowed lesson was booked as; the lender gets only what it needs
/// to run the seats.
#[derive(Serialize, Deserialize)]
struct BookedAs {
    title: String,
    school_site: String,
    duration_s: i32,
    min_seats: i32,
    max_rtt_ms: i32,
    seat: spec::SeatSpec,
    workload: spec::Workload,
    datasets: Vec<spec::Dataset>,
    answers: Vec<String>,
    #[serde(default)]
    residency: String,
}

/// The lender's last answer, kept for when it cannot be reached.
#[derive(Serialize, Deserialize, Default)]
struct Seen {
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
}

impl Seen {
    fn of(h: &pb::HostedLesson) -> Self {
        let l = h.lesson.clone().unwrap_or_default();
        Seen {
            region: h.region.clone(),
            state: l.state,
            message: l.message,
            seats: l
                .seats
                .into_iter()
                .map(|s| SeenSeat {
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

fn federation_note(detail: String) -> FilterCount {
    FilterCount {
        filter: "federation",
        removed: 0,
        detail,
    }
}

impl Broker {
    /// RTT from a school of this region to this region's border, as the
    /// configured topology classes it (a district's point of presence).
    fn school_to_region_ms(&self) -> f64 {
        self.cfg.topology.same_district_ms
    }

    /// Asks the peers, nearest first, to host what did not fit here; the
    /// refusal names every region's answer when none can.
    pub(crate) async fn borrow_or_refuse(
        &self,
        input: &BookingInput,
        home: Box<Explanation>,
    ) -> Result<LessonView, ServiceError> {
        let mut peers: Vec<PeeringRow> = self
            .store
            .list_peerings()
            .await?
            .into_iter()
            .filter(|p| p.state == "connected" || p.state == "disconnected")
            .collect();
        if peers.is_empty() || self.tls.is_none() {
            return Err(ServiceError::Refused(home));
        }
        peers.sort_by(|a, b| {
            let (x, y) = (a.rtt_ms.unwrap_or(f64::MAX), b.rtt_ms.unwrap_or(f64::MAX));
            x.total_cmp(&y).then_with(|| a.name.cmp(&b.name))
        });
        let b = &input.b;
        let mut notes = Vec::new();
        for p in &peers {
            if let Some(since) = p.disconnected_since {
                notes.push(format!(
                    "region {}: unreachable since {}",
                    p.name,
                    since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ));
                continue;
            }
            if matches!(b.residency, Residency::School | Residency::District) {
                // Another region is neither this school nor this district.
                notes.push(format!(
                    "region {}: not asked: the lesson's data must stay in the {}",
                    p.name,
                    b.residency.as_str()
                ));
                continue;
            }
            let inter = p.rtt_ms.unwrap_or(0.0);
            let offset = self.school_to_region_ms() + inter;
            let budget = f64::from(b.max_rtt_ms) - offset;
            if budget < 1.0 {
                notes.push(format!(
                    "region {}: {:.0} ms to reach it ({} inter-region) leaves nothing of max_rtt {} ms",
                    p.name,
                    offset,
                    p.rtt_source.as_deref().unwrap_or("unknown"),
                    b.max_rtt_ms
                ));
                continue;
            }
            match self.ask_peer(p, input, budget).await {
                Ok(hosted) => {
                    notes.push(format!("region {}: admitted", p.name));
                    return self.record_borrowed(p, input, offset, hosted, notes).await;
                }
                Err(why) => notes.push(format!("region {}: {why}", p.name)),
            }
        }
        let mut e = *home;
        e.summary = format!(
            "{}; peer regions, nearest first: {}",
            e.summary,
            notes.join("; ")
        );
        e.filters.extend(notes.into_iter().map(federation_note));
        Err(ServiceError::Refused(Box::new(e)))
    }

    /// Asks one peer for an offer and commits it. The error is the sentence
    /// for the explanation.
    async fn ask_peer(
        &self,
        p: &PeeringRow,
        input: &BookingInput,
        budget_ms: f64,
    ) -> Result<pb::HostedLesson, String> {
        let b = &input.b;
        let mut c = self.peer_client(p).map_err(|e| e.to_string())?;
        let ask = pb::OfferRequest {
            lesson_id: input.id.to_string(),
            // The title may name the school; the lender does not need it.
            title: format!("hosted for region {}", p.local_name),
            start: Some(convert::ts(b.start)),
            duration_seconds: b.duration.num_seconds(),
            seats: b.seats as i32,
            min_seats: b.min_seats as i32,
            seat: Some(convert::seat_spec(&b.seat)),
            workload: Some(convert::pb_workload(&b.workload)),
            datasets: convert::pb_datasets(&b.datasets),
            max_rtt_ms: budget_ms,
            hold_seconds: HOLD_S,
            // The lender applies it to its own nodes (and its content).
            residency: b.residency.as_str().to_string(),
        };
        let answer = match c.offer(ask).await {
            Ok(a) => a.into_inner(),
            Err(s) => return Err(self.peer_failed(p, &s).await),
        };
        if !answer.admitted {
            let why = answer
                .explanation
                .map(|e| e.summary)
                .unwrap_or_else(|| "refused".into());
            return Err(why);
        }
        // Commit; a commit that arrives twice books once, so a lost answer
        // is simply asked again.
        let lesson_id = input.id.to_string();
        let mut last = String::new();
        for _ in 0..3 {
            match c
                .commit(pb::HostedLessonRequest {
                    lesson_id: lesson_id.clone(),
                })
                .await
            {
                Ok(h) => return Ok(h.into_inner()),
                Err(s) if client::unreachable(&s) => {
                    last = s.message().to_string();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(s) => {
                    last = s.message().to_string();
                    break;
                }
            }
        }
        // Not committed: let it go now rather than at its expiry.
        let _ = c.release(pb::HostedLessonRequest { lesson_id }).await;
        Err(format!("held but not committed: {last}"))
    }

    /// Marks a peer that could not be reached; the sentence says since when.
    async fn peer_failed(&self, p: &PeeringRow, s: &tonic::Status) -> String {
        if client::unreachable(s) {
            let _ = self
                .store
                .set_peering_reachable(p.id, false, s.message())
                .await;
            format!("unreachable: {}", s.message())
        } else {
            format!("refused the ask: {}", s.message())
        }
    }

    async fn record_borrowed(
        &self,
        p: &PeeringRow,
        input: &BookingInput,
        offset_ms: f64,
        hosted: pb::HostedLesson,
        answers: Vec<String>,
    ) -> Result<LessonView, ServiceError> {
        let b = &input.b;
        let booked = BookedAs {
            title: b.title.clone(),
            school_site: b.school_site.clone(),
            duration_s: b.duration.num_seconds() as i32,
            min_seats: b.min_seats as i32,
            max_rtt_ms: b.max_rtt_ms as i32,
            seat: b.seat.clone(),
            workload: b.workload.clone(),
            datasets: b.datasets.clone(),
            answers,
            residency: b.residency.as_str().to_string(),
        };
        let seen = Seen::of(&hosted);
        let row = BorrowedRow {
            lesson_id: input.id,
            request_id: b.request_id.clone(),
            peering_id: p.id,
            school_site_id: input.site_id,
            seats: hosted
                .lesson
                .as_ref()
                .map(|l| l.seat_count)
                .filter(|n| *n > 0)
                .unwrap_or(b.seats as i32),
            start_at: b.start,
            end_at: b.end(),
            rtt_offset_ms: offset_ms,
            booking: Json(serde_json::to_value(&booked).unwrap_or_default()),
            state: "committed".into(),
            last_seen: Some(Json(serde_json::to_value(&seen).unwrap_or_default())),
            last_seen_at: Some(Utc::now()),
        };
        self.store.insert_borrowed(&row).await?;
        tracing::info!(lesson = %input.id, region = %p.name, "lesson hosted by a peer region");
        Ok(borrowed_view(&row, p, &seen, None))
    }

    /// A borrowed lesson, as its lender reports it now, or as it last did
    /// when the lender cannot be reached ("peer unreachable since …").
    pub(crate) async fn borrowed_lesson(&self, id: Uuid) -> Result<LessonView, ServiceError> {
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
                Ok(borrowed_view(&row, &p, &seen, None))
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
                Ok(borrowed_view(&row, &p, &seen, Some(note)))
            }
        }
    }
}

/// The lesson as this region shows it: its own school, title and spec; the
/// lender's state and seats, each with its region and the RTT the
/// students see.
fn borrowed_view(
    row: &BorrowedRow,
    p: &PeeringRow,
    seen: &Seen,
    note: Option<String>,
) -> LessonView {
    let booked: Option<BookedAs> = serde_json::from_value(row.booking.0.clone()).ok();
    let explanation = serde_json::json!({
        "federation": {
            "region": p.name,
            "answers": booked.as_ref().map(|b| b.answers.clone()).unwrap_or_default(),
        }
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
            // What the students see: their way to this region and on to
            // the peer, plus the peer's site → node part.
            rtt_ms: s.rtt_ms.map(|ms| ms + row.rtt_offset_ms),
            rtt_source: s.rtt_ms.map(|_| "estimated".to_string()),
            rtt_error_ms: None,
            endpoint: s.endpoint.clone(),
            message: s.message.clone(),
            assignment_id: None,
            generation: None,
            region: seen.region.clone(),
        })
        .collect();
    LessonView { lesson, seats }
}

impl Broker {
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
            let line = Settled {
                seats: h.lesson.as_ref().map(|l| l.seat_count).unwrap_or(b.seats),
                amount_uah: h.used_uah,
                slice_seconds: h.slice_seconds,
            };
            self.store
                .record_settlement(p.id, "borrowed", b.lesson_id, line)
                .await?;
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
                    if !was_away {
                        // "unreachable since …" is news too.
                        self.lesson_changed(b.lesson_id);
                    }
                }
            }
        }
        Ok(())
    }
}
