//! The home side (decision 094): a lesson that does not fit in this region
//! is offered to the peers nearest first, by the RTT its students would see
//! (decision 095): school → this region + this region → peer + the peer's
//! site → node. The first peer that can take the whole class (or its
//! `min_seats`) holds it; this region records the lesson as borrowed and
//! commits. The school's vouchers stay at home.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use classgrid_placement::{Explanation, FilterCount, Residency};
use classgrid_proto::v1 as pb;
use sqlx::types::Json;

use super::{
    borrowed::{BookedAs, Seen},
    client,
};
use crate::{
    api::grpc::convert,
    config::FederationPlacement,
    domain::{ServiceError, lesson::Booking},
    reserve::queue::BookingInput,
    service::vouchers::borrowed::OfferPrice,
    state::Broker,
    store::{
        borrowed::{self as borrowed_store, BorrowedRow},
        lessons::LessonView,
        peers::PeeringRow,
    },
};

/// How long a peer holds what it offers before it lets it go uncommitted.
const HOLD_S: i32 = 30;

fn federation_note(detail: String) -> FilterCount {
    FilterCount {
        filter: "federation",
        removed: 0,
        detail,
    }
}

/// A gRPC client of one peer region's broker.
type PeerClient = classgrid_proto::v1::federation_service_client::FederationServiceClient<
    tonic::transport::Channel,
>;

/// The slowest of some seats' RTTs, ms (0 for none).
fn slowest(ms: impl Iterator<Item = f64>) -> f64 {
    ms.fold(0.0, f64::max)
}

impl Broker {
    /// RTT from a school of this region to this region's border, as the
    /// configured topology classes it (a district's point of presence).
    fn school_to_region_ms(&self) -> f64 {
        self.cfg.topology.same_district_ms
    }

    /// The peers that may be asked, nearest first by inter-region RTT
    /// (unknown last); none without TLS, which federation needs.
    async fn peers_nearest_first(&self) -> Result<Vec<PeeringRow>, ServiceError> {
        if self.tls.is_none() {
            return Ok(Vec::new());
        }
        let mut peers: Vec<PeeringRow> = self
            .store
            .list_peerings()
            .await?
            .into_iter()
            .filter(|p| p.state == "connected" || p.state == "disconnected")
            .collect();
        peers.sort_by(|a, b| {
            let (x, y) = (a.rtt_ms.unwrap_or(f64::MAX), b.rtt_ms.unwrap_or(f64::MAX));
            x.total_cmp(&y).then_with(|| a.name.cmp(&b.name))
        });
        Ok(peers)
    }

    /// Whether peer `p` may be asked for this class: the RTT its students
    /// would have before the lender's own part (school → this region +
    /// inter-region) and the budget left for that part; otherwise the
    /// sentence that says why not.
    fn reach(&self, p: &PeeringRow, b: &Booking) -> Result<(f64, f64), String> {
        if let Some(since) = p.disconnected_since {
            return Err(format!(
                "region {}: unreachable since {}",
                p.name,
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
        }
        if matches!(b.residency, Residency::School | Residency::District) {
            // Another region is neither this school nor this district.
            return Err(format!(
                "region {}: not asked: the lesson's data must stay in the {}",
                p.name,
                b.residency.as_str()
            ));
        }
        let inter = p.rtt_ms.unwrap_or(0.0);
        let offset = self.school_to_region_ms() + inter;
        let budget = f64::from(b.max_rtt_ms) - offset;
        if budget < 1.0 {
            return Err(format!(
                "region {}: {:.0} ms to reach it ({} inter-region) leaves nothing of max_rtt {} ms",
                p.name,
                offset,
                p.rtt_source.as_deref().unwrap_or("unknown"),
                b.max_rtt_ms
            ));
        }
        Ok((offset, budget))
    }

    /// The peers of `peers` that may be asked, with `reach`'s offset and
    /// budget; why each other one may not goes to `notes`.
    fn reachable<'p>(
        &self,
        peers: &'p [PeeringRow],
        b: &Booking,
        notes: &mut Vec<String>,
    ) -> Vec<(&'p PeeringRow, f64, f64)> {
        peers
            .iter()
            .filter_map(|p| match self.reach(p, b) {
                Ok((offset, budget)) => Some((p, offset, budget)),
                Err(note) => {
                    notes.push(note);
                    None
                }
            })
            .collect()
    }

    /// Asks the peers, nearest first, to host what did not fit here; the
    /// refusal names every region's answer when none can.
    pub(crate) async fn borrow_or_refuse(
        &self,
        input: &BookingInput,
        home: Box<Explanation>,
    ) -> Result<LessonView, ServiceError> {
        let peers = self.peers_nearest_first().await?;
        if peers.is_empty() {
            return Err(ServiceError::Refused(home));
        }
        // Every region's answer, this one's first: why it did not fit here.
        let mut notes = vec![format!("this region: {}", home.summary)];
        for (p, offset, budget) in self.reachable(&peers, &input.b, &mut notes) {
            match self.ask_peer(p, input, offset, budget).await {
                Ok((row, hosted)) => {
                    notes.push(format!("region {}: admitted", p.name));
                    return self.record_borrowed(p, row, hosted, notes).await;
                }
                Err(why) => notes.push(format!("region {}: {why}", p.name)),
            }
        }
        let mut e = *home;
        // The refusal already leads with this region's answer.
        notes.remove(0);
        e.summary = format!(
            "{}; peer regions, nearest first: {}",
            e.summary,
            notes.join("; ")
        );
        e.filters.extend(notes.into_iter().map(federation_note));
        Err(ServiceError::Refused(Box::new(e)))
    }

    /// Under `[federation] placement = "best_rtt"` (decision 107), before a
    /// class is booked here: plans it here with nothing held, and when a
    /// peer could give its students a shorter round trip, asks every such
    /// peer for an offer and lets the one whose slowest seat is fastest
    /// host it, releasing the others. A peer is asked only if the RTT to
    /// reach it is already below this region's slowest seat, so a region
    /// whose own seats are near asks nobody. None: book here as usual (or,
    /// when nothing fits here, borrow home-first).
    pub(crate) async fn borrow_if_nearer(
        &self,
        input: &Arc<BookingInput>,
    ) -> Result<Option<LessonView>, ServiceError> {
        if self.cfg.federation_placement != FederationPlacement::BestRtt {
            return Ok(None);
        }
        let peers = self.peers_nearest_first().await?;
        if peers.is_empty() {
            return Ok(None);
        }
        let home_ms = match self
            .plan_unheld(std::slice::from_ref(input), &[None])
            .await?
            .pop()
        {
            Some(Ok(w)) => slowest(w.admission.seats.iter().map(|s| s.rtt.ms)),
            _ => return Ok(None),
        };
        let mut notes = vec![format!("this region: slowest seat {home_ms:.1} ms")];
        let mut offers = Vec::new();
        for (p, offset, budget) in self.reachable(&peers, &input.b, &mut notes) {
            if offset >= home_ms {
                // Its seats cannot be reached sooner than this region's.
                continue;
            }
            match self.offer_from(p, input, budget).await {
                Ok((c, answer)) => {
                    let ms = slowest(
                        self.offered_rtts(p, input, &answer, offset)
                            .into_iter()
                            .map(|(_, ms, _)| ms),
                    );
                    notes.push(format!("region {}: slowest seat {ms:.1} ms", p.name));
                    offers.push((p, c, answer, offset, ms));
                }
                Err(why) => notes.push(format!("region {}: {why}", p.name)),
            }
        }
        offers.sort_by(|a, b| a.4.total_cmp(&b.4));
        let mut chosen = None;
        for (p, mut c, answer, offset, ms) in offers {
            if chosen.is_none() && ms < home_ms {
                match self.take_offer(p, &mut c, input, offset, answer).await {
                    Ok((row, hosted)) => {
                        notes.push(format!("region {}: admitted (best RTT)", p.name));
                        chosen = Some((p, row, hosted));
                        continue;
                    }
                    Err(why) => notes.push(format!("region {}: {why}", p.name)),
                }
            } else {
                // Not the one: its hold goes now, not at its expiry.
                let _ = c.release(self.hosted_request(input)).await;
            }
        }
        match chosen {
            Some((p, row, hosted)) => Ok(Some(self.record_borrowed(p, row, hosted, notes).await?)),
            None => Ok(None),
        }
    }

    /// Asks one peer for an offer; on an admission, writes the lesson as
    /// borrowed (`held`) before committing, so a broker that dies in between
    /// finds it again (`reconcile_held`). The error is the sentence for the
    /// explanation.
    async fn ask_peer(
        &self,
        p: &PeeringRow,
        input: &BookingInput,
        offset_ms: f64,
        budget_ms: f64,
    ) -> Result<(BorrowedRow, pb::HostedLesson), String> {
        let (mut c, answer) = self.offer_from(p, input, budget_ms).await?;
        self.take_offer(p, &mut c, input, offset_ms, answer).await
    }

    /// One peer's admitted offer (a hold there, until its expiry), or the
    /// sentence saying why there is none.
    async fn offer_from(
        &self,
        p: &PeeringRow,
        input: &BookingInput,
        budget_ms: f64,
    ) -> Result<(PeerClient, pb::OfferResponse), String> {
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
        // The lender placed by its estimate; where the school's edge has
        // measured a seat's node, the measurement decides (decision 109).
        let offset = self.school_to_region_ms() + p.rtt_ms.unwrap_or(0.0);
        let max = f64::from(b.max_rtt_ms);
        if let Some((node, ms, _)) = self
            .offered_rtts(p, input, &answer, offset)
            .into_iter()
            .find(|(_, ms, measured)| *measured && *ms > max)
        {
            let _ = c.release(self.hosted_request(input)).await;
            return Err(format!(
                "node {node} measured {ms:.1} ms from the school by its edge, above max_rtt {} ms",
                b.max_rtt_ms
            ));
        }
        Ok((c, answer))
    }

    /// Each offered seat's node, the RTT its students would see and
    /// whether it was measured: the school edge's measurement to the node
    /// where there is one, else `offset` plus the lender's site → node RTT.
    fn offered_rtts(
        &self,
        p: &PeeringRow,
        input: &BookingInput,
        answer: &pb::OfferResponse,
        offset: f64,
    ) -> Vec<(String, f64, bool)> {
        let measured = self.peer_probes.measured_from(input.site_id, p.id);
        answer
            .seats
            .iter()
            .map(|s| match measured.get(&s.node_name) {
                Some(ms) => (s.node_name.clone(), *ms, true),
                None => (
                    s.node_name.clone(),
                    offset + s.rtt.map(|r| r.ms).unwrap_or(0.0),
                    false,
                ),
            })
            .collect()
    }

    /// Takes an admitted offer: the school's vouchers hold its price with
    /// the lesson written `held`, then the lender commits.
    async fn take_offer(
        &self,
        p: &PeeringRow,
        c: &mut PeerClient,
        input: &BookingInput,
        offset_ms: f64,
        answer: pb::OfferResponse,
    ) -> Result<(BorrowedRow, pb::HostedLesson), String> {
        let seats = (answer.seats.len() as i32).max(1);
        // A price that cannot be held, or a school that cannot pay for (or
        // seat) what the peer offers: the hold goes now, not at its expiry.
        let written = match OfferPrice::from_answer(
            answer.worst_case_uah,
            &answer.seat_tiers,
            answer.seats.len(),
        ) {
            Ok(price) => match self.write_ahead(p, input, offset_ms, seats, &price).await {
                Ok(w) => w,
                Err(e) => Err(e.to_string()),
            },
            Err(why) => Err(why),
        };
        let row = match written {
            Ok(row) => row,
            Err(why) => {
                let _ = c.release(self.hosted_request(input)).await;
                return Err(why);
            }
        };
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
                Ok(h) => return Ok((row, h.into_inner())),
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
        // Not committed: let it go now rather than at its expiry, and give
        // the school's vouchers back.
        let _ = c.release(pb::HostedLessonRequest { lesson_id }).await;
        let why = format!("held but not committed: {last}");
        if let Err(e) = self.forget_held_borrowed(input.id, &why).await {
            // `reconcile_held` finds the row again and finishes this.
            tracing::warn!(lesson = %input.id, error = %e, "borrowed lesson not forgotten yet");
        }
        Err(why)
    }

    /// The borrowed lesson as the school booked it, written `held` before
    /// the commit, with the lender's worst case held on the school's
    /// vouchers in the same transaction (decision 105). The inner `Err` is
    /// the school's quota or voucher refusal, and nothing is written.
    async fn write_ahead(
        &self,
        p: &PeeringRow,
        input: &BookingInput,
        offset_ms: f64,
        seats: i32,
        price: &OfferPrice,
    ) -> Result<Result<BorrowedRow, String>, ServiceError> {
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
            answers: Vec::new(),
            residency: b.residency.as_str().to_string(),
            seat_tiers: price.seat_tiers.clone(),
        };
        let row = BorrowedRow {
            lesson_id: input.id,
            request_id: b.request_id.clone(),
            peering_id: p.id,
            school_site_id: input.site_id,
            seats,
            start_at: b.start,
            end_at: b.end(),
            rtt_offset_ms: offset_ms,
            booking: Json(serde_json::to_value(&booked).unwrap_or_default()),
            state: "held".into(),
            last_seen: None,
            last_seen_at: None,
        };
        let mut tx = self.store.begin().await?;
        if let Err(why) = self
            .hold_for_borrowed(&mut tx, &row, &p.name, price)
            .await?
        {
            return Ok(Err(why));
        }
        borrowed_store::insert(&mut tx, &row).await?;
        tx.commit().await?;
        Ok(Ok(row))
    }

    fn hosted_request(&self, input: &BookingInput) -> pb::HostedLessonRequest {
        pb::HostedLessonRequest {
            lesson_id: input.id.to_string(),
        }
    }

    /// The commit came back: the lesson is borrowed for good.
    async fn record_borrowed(
        &self,
        p: &PeeringRow,
        mut row: BorrowedRow,
        hosted: pb::HostedLesson,
        answers: Vec<String>,
    ) -> Result<LessonView, ServiceError> {
        if let Ok(mut booked) = serde_json::from_value::<BookedAs>(row.booking.0.clone()) {
            booked.answers = answers;
            row.booking = Json(serde_json::to_value(&booked).unwrap_or_default());
        }
        let seen = Seen::of(&hosted);
        self.store
            .commit_borrowed(
                row.lesson_id,
                &row.booking.0,
                &serde_json::to_value(&seen).unwrap_or_default(),
            )
            .await?;
        row.state = "committed".into();
        row.last_seen_at = Some(Utc::now());
        tracing::info!(lesson = %row.lesson_id, region = %p.name, "lesson hosted by a peer region");
        self.view_of(&row, p, &seen, None, Some(&hosted)).await
    }
}
