//! SeriesService: recurring lessons, through the same scoped service calls
//! as REST's `/v1/series`.

use chrono::NaiveDate;
use classgrid_proto::v1::{self as pb, series_service_server::SeriesService};
use tonic::{Request, Response, Status};

use super::{convert, status};
use crate::{
    auth::gate::caller,
    domain::ServiceError,
    series::request::RawSeries,
    service::series::{SeriesAnswer, SeriesView},
    state::App,
    store::series::SeriesRow,
    vouchers::{Held, hours},
};

pub struct SeriesApi(pub App);

pub fn cost(h: &Held) -> pb::VoucherCost {
    pb::VoucherCost {
        accelerator_hours: hours(h.amount_uah),
        amount_uah: h.amount_uah,
        vouchers: h
            .takes
            .iter()
            .map(|(v, t)| pb::VoucherTake {
                voucher_id: v.to_string(),
                accelerator_hours: hours(*t),
            })
            .collect(),
    }
}

fn series(r: &SeriesRow) -> pb::Series {
    pb::Series {
        id: r.id.to_string(),
        school_site: r.school_site.clone(),
        title: r.title.clone(),
        rrule: r.rrule.clone(),
        time_zone: r.time_zone.clone(),
        start_time: r.start_time.format("%H:%M").to_string(),
        duration_seconds: i64::from(r.duration_s),
        term_start: r.term_start.to_string(),
        term_end: r.term_end.to_string(),
        exception_dates: r.exception_dates.iter().map(|d| d.to_string()).collect(),
        policy: r.policy.clone(),
        seats: r.template.0.seats as i32,
        ended: r.ended_at.map(convert::ts),
        occurrences: Vec::new(),
    }
}

fn view(v: &SeriesView) -> pb::Series {
    pb::Series {
        occurrences: v
            .occurrences
            .iter()
            .map(|o| pb::Occurrence {
                start: Some(convert::ts(o.rule_start)),
                admitted: o.lesson_id.is_some(),
                lesson_id: o.lesson_id.map(|l| l.to_string()).unwrap_or_default(),
                lesson_state: o.lesson_state.clone().unwrap_or_default(),
                lesson_start: o.lesson_start.map(convert::ts),
                reason: o.reason.clone(),
                cost: None,
            })
            .collect(),
        ..series(&v.series)
    }
}

pub fn booking(a: &SeriesAnswer) -> pb::SeriesBooking {
    let admitted = a.admitted() as i32;
    pb::SeriesBooking {
        dry_run: a.dry_run,
        admitted,
        refused: a.occurrences.len() as i32 - admitted,
        past: a.past as i32,
        cost: Some(cost(&a.held)),
        occurrences: a
            .occurrences
            .iter()
            .map(|o| pb::Occurrence {
                start: Some(convert::ts(o.start)),
                admitted: o.admitted,
                lesson_id: o.lesson_id.map(|l| l.to_string()).unwrap_or_default(),
                lesson_state: o.lesson_state().into(),
                lesson_start: None,
                reason: o.reason.clone(),
                cost: Some(cost(&o.held)),
            })
            .collect(),
        series: a.series.as_ref().map(series),
    }
}

fn date(field: &str, s: &str) -> Result<Option<NaiveDate>, Status> {
    if s.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| status(ServiceError::field(field, "must be a date, YYYY-MM-DD")))
}

#[tonic::async_trait]
impl SeriesService for SeriesApi {
    async fn book(
        &self,
        req: Request<pb::BookSeriesRequest>,
    ) -> Result<Response<pb::SeriesBooking>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let lesson = match &r.lesson {
            Some(l) => convert::raw_booking(l, false).map_err(status)?,
            None => Default::default(),
        };
        let raw = RawSeries {
            request_id: r.request_id,
            lesson: crate::domain::lesson::RawBooking {
                request_id: String::new(),
                ..lesson
            },
            rrule: r.rrule,
            start_time: r.start_time,
            term_start: r.term_start,
            term_end: r.term_end,
            exception_dates: r.exception_dates,
            policy: r.policy,
        };
        let a = self
            .0
            .scoped(&c)
            .book_series(raw, r.dry_run)
            .await
            .map_err(status)?;
        Ok(Response::new(booking(&a)))
    }

    async fn get(
        &self,
        req: Request<pb::GetSeriesRequest>,
    ) -> Result<Response<pb::Series>, Status> {
        let c = caller(&req)?;
        let id = convert::parse_id("id", &req.get_ref().id).map_err(status)?;
        let v = self.0.scoped(&c).series(id).await.map_err(status)?;
        Ok(Response::new(view(&v)))
    }

    async fn list(
        &self,
        req: Request<pb::ListSeriesRequest>,
    ) -> Result<Response<pb::ListSeriesResponse>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let rows = self
            .0
            .scoped(&c)
            .list_series(&r.school_site, date("from", &r.from)?, date("to", &r.to)?)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListSeriesResponse {
            series: rows.iter().map(series).collect(),
        }))
    }

    async fn cancel_occurrence(
        &self,
        req: Request<pb::OccurrenceRequest>,
    ) -> Result<Response<pb::Lesson>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let id = convert::parse_id("series_id", &r.series_id).map_err(status)?;
        let lesson = convert::parse_id("lesson_id", &r.lesson_id).map_err(status)?;
        let v = self
            .0
            .scoped(&c)
            .cancel_occurrence(id, lesson, &r.reason)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::lesson(&v)))
    }

    async fn move_occurrence(
        &self,
        req: Request<pb::MoveOccurrenceRequest>,
    ) -> Result<Response<pb::Lesson>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let id = convert::parse_id("series_id", &r.series_id).map_err(status)?;
        let lesson = convert::parse_id("lesson_id", &r.lesson_id).map_err(status)?;
        let start = convert::from_ts("start", r.start.as_ref())
            .map_err(status)?
            .ok_or_else(|| status(ServiceError::field("start", "is required")))?;
        let v = self
            .0
            .scoped(&c)
            .move_occurrence(id, lesson, start)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::lesson(&v)))
    }

    async fn change_future(
        &self,
        req: Request<pb::ChangeFutureRequest>,
    ) -> Result<Response<pb::Series>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let id = convert::parse_id("id", &r.id).map_err(status)?;
        let change = crate::service::series_edits::RawChange {
            from: convert::from_ts("from", r.from.as_ref()).map_err(status)?,
            start_time: r.start_time,
            duration_seconds: r.duration_seconds,
            seats: i64::from(r.seats),
            max_rtt_ms: i64::from(r.max_rtt_ms),
        };
        let v = self
            .0
            .scoped(&c)
            .change_future(id, change)
            .await
            .map_err(status)?;
        Ok(Response::new(view(&v)))
    }

    async fn end(
        &self,
        req: Request<pb::EndSeriesRequest>,
    ) -> Result<Response<pb::Series>, Status> {
        let c = caller(&req)?;
        let r = req.into_inner();
        let id = convert::parse_id("id", &r.id).map_err(status)?;
        let from = convert::from_ts("from", r.from.as_ref()).map_err(status)?;
        let v = self
            .0
            .scoped(&c)
            .end_series(id, from)
            .await
            .map_err(status)?;
        Ok(Response::new(view(&v)))
    }
}
