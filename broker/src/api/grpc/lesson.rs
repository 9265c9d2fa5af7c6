use std::pin::Pin;

use classgrid_proto::v1::{self as pb, lesson_service_server::LessonService};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{convert, dry_run, status};
use crate::auth::gate::caller;
use crate::{service::seat_controls::SeatAction, state::App};

pub struct Lessons(pub App);

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Lesson, Status>> + Send>>;

#[tonic::async_trait]
impl LessonService for Lessons {
    async fn book(
        &self,
        req: Request<pb::BookLessonRequest>,
    ) -> Result<Response<pb::Lesson>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let raw = convert::raw_booking(&r, true).map_err(status)?;
        if r.dry_run {
            let p = self
                .0
                .scoped(&c)
                .dry_run_lesson(raw)
                .await
                .map_err(status)?;
            return Ok(Response::new(dry_run::lesson(&p)));
        }
        let v = self.0.scoped(&c).book_lesson(raw).await.map_err(status)?;
        Ok(Response::new(convert::lesson(&v)))
    }

    async fn get(
        &self,
        req: Request<pb::GetLessonRequest>,
    ) -> Result<Response<pb::Lesson>, Status> {
        let c = caller(&req)?;
        let id = convert::parse_id("id", &req.get_ref().id).map_err(status)?;
        let scoped = self.0.scoped(&c);
        let v = scoped.lesson(id).await.map_err(status)?;
        let tails = scoped.seat_output_tails(&v).await.map_err(status)?;
        Ok(Response::new(convert::with_output_tails(
            convert::lesson(&v),
            &tails,
        )))
    }

    async fn list(
        &self,
        req: Request<pb::ListLessonsRequest>,
    ) -> Result<Response<pb::ListLessonsResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let from = convert::from_ts("from", r.from.as_ref()).map_err(status)?;
        let to = convert::from_ts("to", r.to.as_ref()).map_err(status)?;
        let size = if r.page_size == 0 {
            50
        } else {
            r.page_size as i64
        };
        let offset: i64 = if r.page_token.is_empty() {
            0
        } else {
            r.page_token.parse().map_err(|_| {
                status(crate::domain::ServiceError::field(
                    "page_token",
                    "is not a token from a previous page",
                ))
            })?
        };
        let rows = self
            .0
            .scoped(&c)
            .list_lessons(Some(&r.school_site), from, to, size, offset)
            .await
            .map_err(status)?;
        let next = if rows.len() as i64 == size {
            (offset + size).to_string()
        } else {
            String::new()
        };
        let ids: Vec<uuid::Uuid> = rows.iter().map(|l| l.id).collect();
        let rollups = self.0.scoped(&c).seat_rollups(&ids).await.map_err(status)?;
        let mut lessons = Vec::with_capacity(rows.len());
        for l in rows {
            let (failed, running) = rollups.get(&l.id).copied().unwrap_or_default();
            let mut pl = convert::lesson(&crate::service::lessons::LessonView {
                lesson: l,
                seats: Vec::new(),
            });
            pl.failed_seats = failed as i32;
            pl.running_seats = running as i32;
            lessons.push(pl);
        }
        Ok(Response::new(pb::ListLessonsResponse {
            lessons,
            next_page_token: next,
        }))
    }

    async fn cancel(
        &self,
        req: Request<pb::CancelLessonRequest>,
    ) -> Result<Response<pb::Lesson>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let id = convert::parse_id("id", &r.id).map_err(status)?;
        let v = self
            .0
            .scoped(&c)
            .cancel_lesson(id, &r.reason)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::lesson(&v)))
    }

    async fn pause_links(
        &self,
        req: Request<pb::PauseLinksRequest>,
    ) -> Result<Response<pb::Lesson>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let id = convert::parse_id("id", &r.id).map_err(status)?;
        let v = self
            .0
            .scoped(&c)
            .pause_links(id, r.paused)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::lesson(&v)))
    }

    async fn control_seat(
        &self,
        req: Request<pb::ControlSeatRequest>,
    ) -> Result<Response<pb::Lesson>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let id = convert::parse_id("id", &r.id).map_err(status)?;
        let action = SeatAction::parse(&r.action, r.wipe_work).map_err(status)?;
        let v = self
            .0
            .scoped(&c)
            .control_seat(id, r.seat, action)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::lesson(&v)))
    }

    async fn explain(
        &self,
        req: Request<pb::GetLessonRequest>,
    ) -> Result<Response<pb::Explanation>, Status> {
        let c = caller(&req)?;
        let id = convert::parse_id("id", &req.get_ref().id).map_err(status)?;
        let v = self.0.scoped(&c).lesson(id).await.map_err(status)?;
        Ok(Response::new(explanation(&v)))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::GetLessonRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let c = caller(&req)?;
        let id = convert::parse_id("id", &req.get_ref().id).map_err(status)?;
        // The same scoped watch REST's event stream uses; gRPC only drops
        // updates that look the same on the wire.
        let views = self.0.watch_lesson(&c, id).await.map_err(status)?;
        let mut last: Option<pb::Lesson> = None;
        let stream = views.filter_map(move |v| {
            let next = convert::lesson(&v);
            let out = if last.as_ref() == Some(&next) {
                None
            } else {
                last = Some(next.clone());
                Some(Ok(next))
            };
            futures::future::ready(out)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

pub fn explanation(v: &crate::service::lessons::LessonView) -> pb::Explanation {
    let e = v.lesson.explanation();
    let adm = &e["admission"];
    let ex = &adm["explanation"];
    let filters = ex["filters"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|f| pb::FilterCount {
                    filter: f["filter"].as_str().unwrap_or_default().into(),
                    removed: f["removed"].as_u64().unwrap_or(0) as i32,
                    detail: f["detail"].as_str().unwrap_or_default().into(),
                })
                .collect()
        })
        .unwrap_or_default();
    let names: std::collections::HashMap<String, String> = v
        .seats
        .iter()
        .filter_map(|s| Some((s.node_id?.to_string(), s.node_name.clone()?)))
        .collect();
    let seats = adm["seats"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let node_id = s["node_id"].as_str().unwrap_or_default().to_string();
                    pb::SeatChoice {
                        seat: s["seat"].as_i64().unwrap_or(0) as i32,
                        node_name: names.get(&node_id).cloned().unwrap_or_default(),
                        node_id,
                        device_indexes: s["devices"]
                            .as_array()
                            .map(|d| {
                                d.iter()
                                    .map(|d| d["index"].as_i64().unwrap_or(0) as i32)
                                    .collect()
                            })
                            .unwrap_or_default(),
                        rtt: Some(pb::Rtt {
                            ms: s["rtt"]["ms"].as_f64().unwrap_or(0.0),
                            source: convert::rtt_source(
                                s["rtt"]["source"]
                                    .as_str()
                                    .map(|x| x.to_ascii_lowercase())
                                    .as_deref(),
                            ),
                            error_bound_ms: s["rtt"]["error_ms"].as_f64(),
                        }),
                        score: s["score"].as_f64().unwrap_or(0.0),
                        scores: s["parts"]
                            .as_array()
                            .map(|p| {
                                p.iter()
                                    .map(|p| pb::ScorePart {
                                        name: p["name"].as_str().unwrap_or_default().into(),
                                        value: p["value"].as_f64().unwrap_or(0.0),
                                        weight: p["weight"].as_f64().unwrap_or(0.0),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                        reason: s["reason"].as_str().unwrap_or_default().into(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    pb::Explanation {
        lesson_id: v.lesson.id.to_string(),
        admitted: e["admitted"].as_bool().unwrap_or(false),
        summary: ex["summary"].as_str().unwrap_or_default().into(),
        filters,
        seats,
        nodes_considered: ex["nodes_considered"].as_u64().unwrap_or(0) as i32,
    }
}
