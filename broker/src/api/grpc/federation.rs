//! `FederationService` (broker ↔ broker, mutual TLS) and `PeeringService`
//! (district admins): decode → federation call → encode.

use classgrid_proto::v1::{
    self as pb, federation_service_server::FederationService,
    peering_service_server::PeeringService,
};
use tonic::{Request, Response, Status};

use super::{convert, status};
use crate::{
    auth::gate::{caller, source_of_request},
    domain::ServiceError,
    federation::{
        lend::{Hosted, Lent},
        peering::PeeringTerms,
        policy::LendingTerms,
    },
    seats::links::LinkKey,
    state::App,
    store::{peers::PeeringRow, settlement::SettlementRow},
};

pub struct Federation(pub App);
pub struct Peerings(pub App);

fn month_range(
    month: &str,
) -> Result<
    (
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
        String,
    ),
    ServiceError,
> {
    use chrono::{Datelike, NaiveDate, TimeZone, Utc};
    let first = if month.is_empty() {
        let now = Utc::now();
        NaiveDate::from_ymd_opt(now.year(), now.month(), 1)
    } else {
        NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").ok()
    }
    .ok_or_else(|| ServiceError::field("month", "must be YYYY-MM"))?;
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .ok_or_else(|| ServiceError::field("month", "is out of range"))?;
    let at =
        |d: chrono::NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default());
    Ok((at(first), at(next), first.format("%Y-%m").to_string()))
}

fn settlement(month: String, rows: Vec<SettlementRow>) -> pb::SettlementReport {
    let mut r = pb::SettlementReport {
        month,
        ..Default::default()
    };
    for l in rows {
        if l.direction == "lent" {
            r.lent_uah += l.amount_uah;
        } else {
            r.borrowed_uah += l.amount_uah;
        }
        r.lines.push(pb::SettlementLine {
            peer: l.peer,
            direction: l.direction,
            lesson_id: l.home_lesson_id.to_string(),
            seats: l.seats,
            amount_uah: l.amount_uah,
            recorded: Some(convert::ts(l.recorded_at)),
            slice_seconds: l.slice_seconds,
        });
    }
    r
}

fn lending(t: &LendingTerms) -> pb::LendingPolicy {
    pb::LendingPolicy {
        max_slices: t.max_slices as i32,
        tiers: t.tiers.clone(),
        vendors: t.vendors.clone(),
        hours: t.hours_text(),
        weight: t.weight,
    }
}

pub fn peering(p: &PeeringRow, (lent, borrowed): (i64, i64)) -> pb::Peering {
    pb::Peering {
        id: p.id.to_string(),
        name: p.name.clone(),
        local_name: p.local_name.clone(),
        url: p.url.clone(),
        state: p.state.clone(),
        disconnected_since: p.disconnected_since.map(convert::ts),
        rtt: p.rtt_ms.map(|ms| pb::Rtt {
            ms,
            source: convert::rtt_source(p.rtt_source.as_deref()),
            error_bound_ms: None,
        }),
        lending: Some(lending(&LendingTerms::from_json(&p.lending.0))),
        site: p.site.clone(),
        ca_fingerprint: rustls_pki_types::pem::PemObject::from_pem_slice(p.ca_pem.as_bytes())
            .map(|c: rustls_pki_types::CertificateDer<'_>| crate::auth::pki::fingerprint(&c))
            .unwrap_or_default(),
        created: Some(convert::ts(p.created_at)),
        message: p.message.clone(),
        lent_lessons: lent as i32,
        borrowed_lessons: borrowed as i32,
    }
}

fn terms(
    local_name: String,
    url: String,
    site: String,
    rtt_ms: f64,
    l: Option<pb::LendingPolicy>,
) -> Result<PeeringTerms, ServiceError> {
    let l = l.unwrap_or_default();
    Ok(PeeringTerms {
        local_name,
        url,
        site,
        rtt_ms,
        lending: LendingTerms::parse(l.max_slices, &l.tiers, &l.vendors, &l.hours, l.weight)?,
    })
}

fn hosted(h: Hosted, region: &str, links: &LinkKey) -> pb::HostedLesson {
    // The seats' link tokens go to the home region, whose school edge
    // serves the students' links (decision 110).
    let seat_links = h
        .view
        .iter()
        .flat_map(|v| &v.seats)
        .map(|s| pb::HostedSeatLink {
            seat_id: s.id.to_string(),
            token: links.token(s.id),
        })
        .collect();
    let lesson = h.view.as_ref().map(|v| {
        let mut l = convert::lesson(v);
        // The home region knows the lesson by its own id.
        l.id = h.hold.home_lesson_id.to_string();
        for s in &mut l.seats {
            s.region = region.to_string();
            // Node ids are this region's business.
            s.node_id.clear();
            s.assignment_id.clear();
        }
        l
    });
    pb::HostedLesson {
        region: region.to_string(),
        hold_state: h.hold.state,
        expires: Some(convert::ts(h.hold.expires_at)),
        lesson,
        used_uah: h.settled.map(|s| s.amount_uah).unwrap_or(0),
        settled: h.settled.is_some(),
        slice_seconds: h.settled.map(|s| s.slice_seconds).unwrap_or(0.0),
        seat_links,
    }
}

impl Federation {
    async fn peer<T>(&self, req: &Request<T>) -> Result<PeeringRow, Status> {
        let der = req.peer_certs().and_then(|c| c.first().map(|d| d.to_vec()));
        let p = self.0.peer_identity(der.as_deref()).await.map_err(status)?;
        // Peer calls share the per-caller rate limit with tokens. Resource
        // exhausted, not unavailable: a busy peer is not an unreachable one.
        if self
            .0
            .limiter
            .check_key(&format!("peer:{}", p.name))
            .is_err()
        {
            return Err(Status::resource_exhausted(format!(
                "rate limit: region {} calls too often; slow down and retry",
                p.name
            )));
        }
        Ok(p)
    }
}

fn lesson_id(s: &str) -> Result<uuid::Uuid, Status> {
    convert::parse_id("lesson_id", s).map_err(status)
}

#[tonic::async_trait]
impl FederationService for Federation {
    async fn handshake(
        &self,
        req: Request<pb::HandshakeRequest>,
    ) -> Result<Response<pb::HandshakeResponse>, Status> {
        let source = source_of_request(&req);
        // Only the offer's secret authenticates this call: rate-limited by
        // source, so secrets cannot be guessed in bulk.
        if self
            .0
            .limiter
            .check_key(&format!("handshake:{source}"))
            .is_err()
        {
            return Err(Status::resource_exhausted("too many handshakes; slow down"));
        }
        let r = self
            .0
            .peering_handshake(&source, req.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(r))
    }

    async fn confirm(
        &self,
        req: Request<pb::ConfirmRequest>,
    ) -> Result<Response<pb::ConfirmResponse>, Status> {
        let p = self.peer(&req).await?;
        let source = source_of_request(&req);
        self.0
            .peering_confirm(&p, &source, &req.get_ref().client_cert_pem)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ConfirmResponse {}))
    }

    async fn ping(
        &self,
        req: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        let p = self.peer(&req).await?;
        Ok(Response::new(pb::PingResponse {
            name: p.local_name,
            now: Some(convert::ts(chrono::Utc::now())),
        }))
    }

    async fn capacity(
        &self,
        req: Request<pb::CapacityRequest>,
    ) -> Result<Response<pb::CapacitySummary>, Status> {
        let p = self.peer(&req).await?;
        let w = req.into_inner().window.unwrap_or_default();
        let start = convert::from_ts("window.start", w.start.as_ref()).map_err(status)?;
        let end = convert::from_ts("window.end", w.end.as_ref()).map_err(status)?;
        let (Some(start), Some(end)) = (start, end) else {
            return Err(status(ServiceError::field(
                "window",
                "needs a start and an end",
            )));
        };
        let s = self
            .0
            .capacity_summary(&p, start, end)
            .await
            .map_err(status)?;
        Ok(Response::new(s))
    }

    async fn offer(
        &self,
        req: Request<pb::OfferRequest>,
    ) -> Result<Response<pb::OfferResponse>, Status> {
        let p = self.peer(&req).await?;
        let r = req.into_inner();
        let home = lesson_id(&r.lesson_id)?;
        if !(r.max_rtt_ms.is_finite() && r.max_rtt_ms >= 1.0) {
            return Err(status(ServiceError::field(
                "max_rtt_ms",
                "must be at least 1",
            )));
        }
        let raw = convert::raw_booking(
            &pb::BookLessonRequest {
                title: r.title.chars().take(200).collect(),
                start: r.start,
                duration_seconds: r.duration_seconds,
                seats: r.seats,
                min_seats: r.min_seats,
                seat: r.seat.clone(),
                workload: r.workload.clone(),
                datasets: r.datasets.clone(),
                max_rtt_ms: r.max_rtt_ms.floor() as i32,
                residency: r.residency.clone(),
                ..Default::default()
            },
            true,
        )
        .map_err(status)?;
        let answer = self
            .0
            .lend_offer(&p, home, raw, i64::from(r.hold_seconds))
            .await
            .map_err(status)?;
        let region = p.local_name.clone();
        Ok(Response::new(match answer {
            Lent::Held { hold, view } => {
                let price = self.0.lent_price(&view, hold.weight);
                let l = convert::lesson(&view);
                pb::OfferResponse {
                    admitted: true,
                    region,
                    expires: Some(convert::ts(hold.expires_at)),
                    seats: l
                        .seats
                        .iter()
                        .map(|s| pb::SeatChoice {
                            seat: s.number,
                            node_name: s.node_name.clone(),
                            device_indexes: s.device_indexes.clone(),
                            rtt: s.rtt,
                            ..Default::default()
                        })
                        .collect(),
                    explanation: Some(pb::Explanation {
                        lesson_id: r.lesson_id,
                        admitted: true,
                        summary: format!("{} seats held in region {}", l.seat_count, p.local_name),
                        ..Default::default()
                    }),
                    worst_case_uah: price.worst_case_uah,
                    seat_tiers: price.seat_tiers,
                }
            }
            Lent::Refused(e) => pb::OfferResponse {
                worst_case_uah: 0,
                seat_tiers: Vec::new(),
                admitted: false,
                region,
                expires: None,
                seats: Vec::new(),
                explanation: Some(pb::Explanation {
                    lesson_id: r.lesson_id,
                    admitted: false,
                    summary: e.summary.clone(),
                    filters: e
                        .filters
                        .iter()
                        .map(|f| pb::FilterCount {
                            filter: f.filter.to_string(),
                            removed: f.removed as i32,
                            detail: f.detail.clone(),
                        })
                        .collect(),
                    seats: Vec::new(),
                    nodes_considered: e.nodes_considered as i32,
                }),
            },
        }))
    }

    async fn commit(
        &self,
        req: Request<pb::HostedLessonRequest>,
    ) -> Result<Response<pb::HostedLesson>, Status> {
        let p = self.peer(&req).await?;
        let id = lesson_id(&req.get_ref().lesson_id)?;
        let h = self.0.lend_commit(&p, id).await.map_err(status)?;
        Ok(Response::new(hosted(h, &p.local_name, &self.0.links)))
    }

    async fn release(
        &self,
        req: Request<pb::HostedLessonRequest>,
    ) -> Result<Response<pb::HostedLesson>, Status> {
        let p = self.peer(&req).await?;
        let id = lesson_id(&req.get_ref().lesson_id)?;
        let h = self.0.lend_release(&p, id).await.map_err(status)?;
        Ok(Response::new(hosted(h, &p.local_name, &self.0.links)))
    }

    async fn get_hosted(
        &self,
        req: Request<pb::HostedLessonRequest>,
    ) -> Result<Response<pb::HostedLesson>, Status> {
        let p = self.peer(&req).await?;
        let id = lesson_id(&req.get_ref().lesson_id)?;
        let h = self.0.lend_get(&p, id).await.map_err(status)?;
        Ok(Response::new(hosted(h, &p.local_name, &self.0.links)))
    }

    async fn settlement(
        &self,
        req: Request<pb::SettlementRequest>,
    ) -> Result<Response<pb::SettlementReport>, Status> {
        let p = self.peer(&req).await?;
        let (from, to, month) = month_range(&req.get_ref().month).map_err(status)?;
        let rows = self
            .0
            .store
            .settlement_lines(Some(p.id), (from, to))
            .await
            .map_err(|e| status(e.into()))?;
        Ok(Response::new(settlement(month, rows)))
    }

    async fn probe_targets(
        &self,
        req: Request<pb::PeerProbeTargetsRequest>,
    ) -> Result<Response<pb::PeerProbeTargets>, Status> {
        let p = self.peer(&req).await?;
        let targets = self
            .0
            .lendable_probe_targets(&p)
            .await
            .map_err(status)?
            .into_iter()
            .map(|(node_name, addr)| pb::PeerProbeTarget { node_name, addr })
            .collect();
        Ok(Response::new(pb::PeerProbeTargets { targets }))
    }
}

#[tonic::async_trait]
impl PeeringService for Peerings {
    async fn create_offer(
        &self,
        req: Request<pb::CreatePeeringOfferRequest>,
    ) -> Result<Response<pb::PeeringOffer>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let t = terms(r.local_name, r.url, r.site, r.rtt_ms, r.lending).map_err(status)?;
        let (row, offer, expires) = self
            .0
            .create_peering_offer(&c, &r.peer, t, r.ttl_seconds)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::PeeringOffer {
            peering: Some(peering(&row, (0, 0))),
            offer,
            expires: Some(convert::ts(expires)),
        }))
    }

    async fn accept_offer(
        &self,
        req: Request<pb::AcceptPeeringOfferRequest>,
    ) -> Result<Response<pb::Peering>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let t = terms(r.local_name, r.url, r.site, r.rtt_ms, r.lending).map_err(status)?;
        let row = self
            .0
            .accept_peering_offer(&c, &r.offer, t)
            .await
            .map_err(status)?;
        Ok(Response::new(peering(&row, (0, 0))))
    }

    async fn list(
        &self,
        req: Request<pb::ListPeeringsRequest>,
    ) -> Result<Response<pb::ListPeeringsResponse>, Status> {
        let c = caller(&req)?;
        let rows = self.0.list_peerings(&c).await.map_err(status)?;
        Ok(Response::new(pb::ListPeeringsResponse {
            peerings: rows.iter().map(|(p, n)| peering(p, *n)).collect(),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::GetPeeringRequest>,
    ) -> Result<Response<pb::Peering>, Status> {
        let c = caller(&req)?;
        let (p, n) = self
            .0
            .get_peering(&c, &req.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(peering(&p, n)))
    }

    async fn remove(
        &self,
        req: Request<pb::GetPeeringRequest>,
    ) -> Result<Response<pb::Peering>, Status> {
        let c = caller(&req)?;
        let p = self
            .0
            .remove_peering(&c, &req.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(peering(&p, (0, 0))))
    }

    async fn settlement(
        &self,
        req: Request<pb::SettlementRequest>,
    ) -> Result<Response<pb::SettlementReport>, Status> {
        let c = caller(&req)?;
        if !c.is_district_admin() {
            return Err(status(ServiceError::Forbidden(
                "only a district admin may read the settlement ledger".into(),
            )));
        }
        let (from, to, month) = month_range(&req.get_ref().month).map_err(status)?;
        let rows = self
            .0
            .store
            .settlement_lines(None, (from, to))
            .await
            .map_err(|e| status(e.into()))?;
        Ok(Response::new(settlement(month, rows)))
    }
}
