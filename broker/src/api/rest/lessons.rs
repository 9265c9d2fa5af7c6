//! `/v1/lessons`: book, read, list, cancel and explain, through the same
//! scoped service calls as gRPC's LessonService.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    cost::VoucherCost,
    extract::{JsonBody, Params, idempotency_key, parse_id, parse_time},
    model::{Dataset, SeatSpec, Workload, rfc3339},
    problem::ApiResult,
};
use crate::{
    auth::Caller,
    domain::lesson::RawBooking,
    service::{
        dry_run::{DRY_RUN_MESSAGE, Preview},
        lessons::LessonView,
    },
    state::App,
    store::lessons::SeatRow,
};

pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/lessons", get(list).post(book))
        .route("/v1/lessons/{id}", get(read).delete(cancel))
        .route("/v1/lessons/{id}/explain", get(explain))
        .route("/v1/lessons/{id}/links/pause", post(pause_links))
        .route("/v1/lessons/{id}/links/resume", post(resume_links))
        .route("/v1/lessons/{id}/seats/{seat}/{action}", post(control_seat))
}

/// A lesson booking. Send `Idempotency-Key` so that a retry never books twice.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "school_site": "school-a",
    "title": "AI 101, class 7-2",
    "start": "2030-09-01T08:00:00+08:00",
    "duration_seconds": 2400,
    "seats": 45,
    "seat": {"cpu_millis": 500, "memory_mib": 2048, "runtime": "process",
             "gpu": {"vendors": ["nvidia"], "model": "T4", "memory_mib": 2048, "compute_percent": 10, "count": 1, "min_isolation": "soft"}},
    "workload": {"command": "jupyter", "args": ["lab", "--ip", "0.0.0.0", "--port", "$(PORT)"]},
    "max_rtt_ms": 30
}))]
pub struct BookLesson {
    /// The school's site name or id.
    #[serde(default)]
    pub school_site: String,
    #[serde(default)]
    pub title: String,
    /// RFC 3339 with an offset.
    #[schema(value_type = String, format = DateTime)]
    #[serde(default)]
    pub start: String,
    /// 0 means 2400 (40 minutes).
    #[serde(default)]
    pub duration_seconds: i64,
    #[serde(default)]
    pub seats: i64,
    /// Admit with at least this many seats; 0 means all or nothing.
    #[serde(default)]
    pub min_seats: i64,
    #[schema(nullable)]
    #[serde(default)]
    pub seat: Option<SeatSpec>,
    #[schema(nullable)]
    #[serde(default)]
    pub workload: Option<Workload>,
    #[serde(default)]
    pub datasets: Vec<Dataset>,
    /// Largest acceptable school→node RTT; 0 means the region's default.
    #[serde(default)]
    pub max_rtt_ms: i64,
    /// Where the lesson's data must stay: "" (anywhere), "school",
    /// "district" or "education_network".
    #[serde(default)]
    pub residency: String,
}

impl BookLesson {
    /// The booking as the domain takes it, under `request_id`.
    pub fn raw(self, request_id: String) -> Result<RawBooking, super::problem::Problem> {
        Ok(RawBooking {
            request_id,
            school_site: self.school_site,
            title: self.title,
            start: if self.start.is_empty() {
                None
            } else {
                Some(parse_time("start", &self.start)?)
            },
            duration_seconds: self.duration_seconds,
            seats: self.seats,
            min_seats: self.min_seats,
            seat: self.seat.as_ref().map(SeatSpec::raw),
            workload: self
                .workload
                .as_ref()
                .map(Workload::raw)
                .unwrap_or_default(),
            datasets: self.datasets.iter().map(Dataset::raw).collect(),
            max_rtt_ms: self.max_rtt_ms,
            residency: self.residency,
        })
    }
}

/// A round-trip time and where it came from: measured, estimated or configured.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Rtt {
    pub ms: f64,
    pub source: String,
    /// For an estimated RTT, its error bound: the true value is expected
    /// within `ms ± error_bound_ms`. Null for measured and configured RTTs.
    /// Placement uses `ms` alone; the bound is for reading.
    #[schema(nullable)]
    pub error_bound_ms: Option<f64>,
}

/// One student's allocation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Seat {
    pub id: Uuid,
    pub number: i32,
    /// planned, staged, starting, running, released, failed or replaced.
    pub state: String,
    #[schema(nullable)]
    pub node_id: Option<Uuid>,
    #[schema(nullable)]
    pub node_name: Option<String>,
    pub device_indexes: Vec<i32>,
    /// The seat's own address on its node (`http://host:port`) once it
    /// runs, for district and school admins (debugging). Empty for course
    /// platforms whenever the seat has a `link`: students open every seat,
    /// notebook or command, through its link on the school's edge. A
    /// platform sees it only for a seat with no link (one a peer region
    /// hosts, or at a school whose edge serves no seat links).
    pub endpoint: String,
    #[schema(nullable)]
    pub rtt: Option<Rtt>,
    pub message: String,
    /// The last output of the seat's program (up to 4 KiB), as its agent
    /// reported it when the program ended; empty while it runs and in
    /// listings.
    pub output_tail: String,
    /// The student's private link on the school's edge,
    /// `https://EDGE/seat/TOKEN/`: the same for the seat's whole life. Empty
    /// while the school has no edge serving seat links.
    pub link: String,
    /// When the student first opened the link (the seat answered through
    /// the school's edge); null until then.
    #[schema(value_type = Option<String>, format = DateTime, nullable)]
    pub link_opened: Option<String>,
}

/// A lesson with its seats.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Lesson {
    pub id: Uuid,
    pub school_site: String,
    pub title: String,
    #[schema(value_type = String, format = DateTime, example = "2030-09-01T08:00:00+08:00")]
    pub start: String,
    #[schema(value_type = String, format = DateTime, example = "2030-09-01T08:40:00+08:00")]
    pub end: String,
    pub duration_seconds: i32,
    /// booked, staging, ready, live, ended or cancelled.
    pub state: String,
    pub seat_count: i32,
    pub min_seats: i32,
    pub seat: SeatSpec,
    pub workload: Workload,
    pub datasets: Vec<Dataset>,
    pub max_rtt_ms: i32,
    /// Empty in listings; read one lesson for its seats.
    pub seats: Vec<Seat>,
    #[schema(value_type = String, format = DateTime)]
    pub created: String,
    pub message: String,
    /// Seats now failed. `state` is the lifecycle only: a `live` lesson
    /// with failed seats is degraded, and with every seat failed it has no
    /// working seat at all.
    pub failed_seats: i32,
    /// Seats now running.
    pub running_seats: i32,
    /// The series this lesson is an occurrence of (`/v1/series/{id}`).
    #[schema(nullable)]
    pub series_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LessonPage {
    pub lessons: Vec<Lesson>,
    /// Pass as `page_token` for the next page; empty on the last.
    pub next_page_token: String,
}

pub fn seat(s: &SeatRow, tz: chrono_tz::Tz) -> Seat {
    Seat {
        id: s.id,
        number: s.number,
        state: s.state.clone(),
        node_id: s.node_id,
        node_name: s.node_name.clone(),
        device_indexes: s.device_indexes.clone(),
        endpoint: s.endpoint.clone(),
        rtt: s.rtt_ms.map(|ms| Rtt {
            ms,
            source: s.rtt_source.clone().unwrap_or_default(),
            error_bound_ms: s.rtt_error_ms,
        }),
        message: s.message.clone(),
        output_tail: String::new(),
        link: s.link.clone(),
        link_opened: s.link_opened_at.map(|t| rfc3339(t, tz)),
    }
}

pub fn lesson(app: &App, v: &LessonView) -> Lesson {
    let l = &v.lesson;
    let tz = app.cfg.time_zone;
    Lesson {
        id: l.id,
        school_site: l.school_site.clone(),
        title: l.title.clone(),
        start: rfc3339(l.start_at, tz),
        end: rfc3339(l.end_at(), tz),
        duration_seconds: l.duration_s,
        state: l.state.clone(),
        seat_count: l.seat_count,
        min_seats: l.min_seats,
        seat: SeatSpec::of(&l.seat_spec.0),
        workload: Workload::of(&l.workload.0),
        datasets: l.datasets.0.iter().map(Dataset::of).collect(),
        max_rtt_ms: l.max_rtt_ms,
        seats: v.seats.iter().map(|s| seat(s, tz)).collect(),
        created: rfc3339(l.created_at, tz),
        message: l.message.clone(),
        failed_seats: v.seats.iter().filter(|s| s.state == "failed").count() as i32,
        running_seats: v.seats.iter().filter(|s| s.state == "running").count() as i32,
        series_id: l.series_id,
    }
}

/// What a booking would do, from `POST /v1/lessons?dry_run=true`: nothing
/// was written and nothing held.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LessonPreview {
    /// Always true: this is a dry run.
    pub dry_run: bool,
    /// The lesson as it would be booked: its seats' nodes, devices and
    /// RTTs. Its `id` is all zeros and its `state` is `dry_run`, unless the
    /// Idempotency-Key already booked a lesson, which is then shown as it is.
    pub lesson: Lesson,
    /// The admission, as `/v1/lessons/{id}/explain` would show it.
    pub explanation: Explanation,
    /// What it would hold on the school's vouchers.
    pub voucher_cost: VoucherCost,
}

/// Book a lesson: admitted whole (or by `min_seats`), or refused with the
/// reason per placement filter. With `dry_run=true`, the same decision
/// (admission, explanation, voucher cost, or the same refusal) with nothing
/// written and nothing held.
#[utoipa::path(post, operation_id = "book_lesson", path = "/v1/lessons", tag = "lessons", request_body = BookLesson,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first result"),
        ("dry_run" = Option<bool>, Query, description = "Decide, write nothing, hold nothing"),
    ),
    responses(
        (status = 201, description = "Booked", body = Lesson),
        (status = 200, description = "Dry run: what a booking would do", body = LessonPreview),
    ))]
pub async fn book(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    q: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    JsonBody(b): JsonBody<BookLesson>,
) -> ApiResult<Response> {
    let dry_run = Params::from_query(q, &["dry_run"])?.bool("dry_run")?;
    let raw = b.raw(idempotency_key(&headers)?)?;
    if dry_run {
        let p = app.scoped(&caller).dry_run_lesson(raw).await?;
        return Ok(Json(preview(&app, &p)).into_response());
    }
    let v = app.scoped(&caller).book_lesson(raw).await?;
    Ok((StatusCode::CREATED, Json(lesson(&app, &v))).into_response())
}

/// A dry run as REST shows it.
pub fn preview(app: &App, p: &Preview) -> LessonPreview {
    let mut l = lesson(app, &p.view);
    if l.message == DRY_RUN_MESSAGE {
        l.id = Uuid::nil();
        l.state = "dry_run".into();
    }
    LessonPreview {
        dry_run: true,
        lesson: l,
        explanation: explanation_of(&p.view),
        voucher_cost: VoucherCost::of(&p.held),
    }
}

/// Read one lesson with its seats and their endpoints.
#[utoipa::path(get, operation_id = "get_lesson", path = "/v1/lessons/{id}", tag = "lessons",
    params(("id" = Uuid, Path, description = "Lesson id")),
    responses((status = 200, description = "The lesson", body = Lesson)))]
pub async fn read(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Lesson>> {
    let id = parse_id("id", &id)?;
    let scoped = app.scoped(&caller);
    let v = scoped.lesson(id).await?;
    let tails = scoped.seat_output_tails(&v).await?;
    let mut l = lesson(&app, &v);
    for s in &mut l.seats {
        if let Some(t) = tails.get(&s.id) {
            s.output_tail = t.clone();
        }
    }
    Ok(Json(l))
}

/// List lessons by school and start time, a page at a time.
#[utoipa::path(get, operation_id = "list_lessons", path = "/v1/lessons", tag = "lessons",
    params(
        ("school" = Option<String>, Query, description = "School site name or id"),
        ("from" = Option<String>, Query, format = DateTime, description = "Lessons starting at or after (RFC 3339)"),
        ("to" = Option<String>, Query, format = DateTime, description = "Lessons starting before (RFC 3339)"),
        ("page_size" = Option<i64>, Query, minimum = 1, maximum = 500, description = "Default 50"),
        ("page_token" = Option<String>, Query, description = "From the previous page's next_page_token"),
    ),
    responses((status = 200, description = "A page of lessons", body = LessonPage)))]
pub async fn list(
    State(app): State<App>,
    caller: Caller,
    q: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<LessonPage>> {
    let p = Params::from_query(q, &["school", "from", "to", "page_size", "page_token"])?;
    let (from, to) = (p.time("from")?, p.time("to")?);
    let size = p.int("page_size", 50)?;
    let offset: i64 = match p.get("page_token") {
        None => 0,
        Some(t) => t.parse().map_err(|_| {
            super::problem::Problem::field("page_token", "is not a token from a previous page")
        })?,
    };
    let school = p.str("school");
    let rows = app
        .scoped(&caller)
        .list_lessons(Some(&school), from, to, size, offset)
        .await?;
    let next = if rows.len() as i64 == size {
        (offset + size).to_string()
    } else {
        String::new()
    };
    let ids: Vec<Uuid> = rows.iter().map(|l| l.id).collect();
    let rollups = app.scoped(&caller).seat_rollups(&ids).await?;
    let lessons = rows
        .into_iter()
        .map(|l| {
            let (failed, running) = rollups.get(&l.id).copied().unwrap_or_default();
            let mut out = lesson(
                &app,
                &LessonView {
                    lesson: l,
                    seats: Vec::new(),
                },
            );
            out.failed_seats = failed as i32;
            out.running_seats = running as i32;
            out
        })
        .collect();
    Ok(Json(LessonPage {
        lessons,
        next_page_token: next,
    }))
}

/// Cancel a lesson: its seats are released and its capacity freed.
#[utoipa::path(delete, operation_id = "cancel_lesson", path = "/v1/lessons/{id}", tag = "lessons",
    params(("id" = Uuid, Path, description = "Lesson id"), ("reason" = Option<String>, Query, description = "Shown in the lesson's message")),
    responses((status = 200, description = "The cancelled lesson", body = Lesson)))]
pub async fn cancel(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Lesson>> {
    let id = parse_id("id", &id)?;
    let p = Params::from_query(q, &["reason"])?;
    let reason = p.str("reason");
    if reason.len() > 500 {
        return Err(super::problem::Problem::field(
            "reason",
            "must be at most 500 characters",
        ));
    }
    let v = app.scoped(&caller).cancel_lesson(id, &reason).await?;
    Ok(Json(lesson(&app, &v)))
}

/// Pause the class's seat links: each shows "paused by your teacher" until
/// resumed. The school's edge applies it within seconds. Audited.
#[utoipa::path(post, operation_id = "pause_lesson_links", path = "/v1/lessons/{id}/links/pause", tag = "lessons",
    params(("id" = Uuid, Path, description = "Lesson id")),
    responses((status = 200, description = "The lesson", body = Lesson)))]
pub async fn pause_links(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Lesson>> {
    let id = parse_id("id", &id)?;
    let v = app.scoped(&caller).pause_links(id, true).await?;
    Ok(Json(lesson(&app, &v)))
}

/// Resume the class's seat links after a pause. Audited.
#[utoipa::path(post, operation_id = "resume_lesson_links", path = "/v1/lessons/{id}/links/resume", tag = "lessons",
    params(("id" = Uuid, Path, description = "Lesson id")),
    responses((status = 200, description = "The lesson", body = Lesson)))]
pub async fn resume_links(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Lesson>> {
    let id = parse_id("id", &id)?;
    let v = app.scoped(&caller).pause_links(id, false).await?;
    Ok(Json(lesson(&app, &v)))
}

/// Reset one student's seat (`reset`: a fresh server; the work folder is
/// kept unless `wipe_work=true`) or stop it (`stop`). The seat's link stays
/// the same. Audited.
#[utoipa::path(post, operation_id = "control_seat", path = "/v1/lessons/{id}/seats/{seat}/{action}", tag = "lessons",
    params(
        ("id" = Uuid, Path, description = "Lesson id"),
        ("seat" = i32, Path, description = "The seat's number in the lesson"),
        ("action" = String, Path, description = "reset or stop"),
        ("wipe_work" = Option<bool>, Query, description = "For reset: start from an empty work folder"),
    ),
    responses((status = 200, description = "The lesson", body = Lesson)))]
pub async fn control_seat(
    State(app): State<App>,
    caller: Caller,
    Path((id, seat, action)): Path<(String, String, String)>,
    q: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Lesson>> {
    let id = parse_id("id", &id)?;
    let seat: i32 = seat.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
        super::problem::Problem::field("seat", "must be a seat number (0 or more)")
    })?;
    let p = Params::from_query(q, &["wipe_work"])?;
    let wipe_work = match p.str("wipe_work").as_str() {
        "" | "false" => false,
        "true" => true,
        _ => {
            return Err(super::problem::Problem::field(
                "wipe_work",
                "must be true or false",
            ));
        }
    };
    let action = crate::service::seat_controls::SeatAction::parse(&action, wipe_work)?;
    let v = app.scoped(&caller).control_seat(id, seat, action).await?;
    Ok(Json(lesson(&app, &v)))
}

/// Why a placement filter removed nodes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FilterCount {
    pub filter: String,
    pub removed: i32,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ScorePart {
    pub name: String,
    pub value: f64,
    pub weight: f64,
}

/// Why a seat went where it went.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SeatChoice {
    pub seat: i32,
    pub node_id: String,
    pub node_name: String,
    pub device_indexes: Vec<i32>,
    pub rtt: Rtt,
    pub score: f64,
    pub scores: Vec<ScorePart>,
    pub reason: String,
}

/// How the lesson was placed.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"lesson_id": "0190f0c2-7d1e-7c3a-9f0e-2b1d4c5e6f70", "admitted": true,
    "summary": "45/45 seats on 2 nodes", "nodes_considered": 12,
    "filters": [{"filter": "rtt", "removed": 8, "detail": "rtt > 30 ms (measured)"}], "seats": []}))]
pub struct Explanation {
    pub lesson_id: String,
    pub admitted: bool,
    pub summary: String,
    pub nodes_considered: i32,
    pub filters: Vec<FilterCount>,
    pub seats: Vec<SeatChoice>,
}

/// Explain the lesson's placement: nodes removed by each filter, and why
/// each seat's node was chosen.
#[utoipa::path(get, operation_id = "explain_lesson", path = "/v1/lessons/{id}/explain", tag = "lessons",
    params(("id" = Uuid, Path, description = "Lesson id")),
    responses((status = 200, description = "The placement explanation", body = Explanation)))]
pub async fn explain(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Explanation>> {
    let id = parse_id("id", &id)?;
    let v = app.scoped(&caller).lesson(id).await?;
    Ok(Json(explanation_of(&v)))
}

/// The lesson's stored explanation, read as gRPC reads it.
pub fn explanation_of(v: &LessonView) -> Explanation {
    let e = crate::api::grpc::lesson::explanation(v);
    Explanation {
        lesson_id: e.lesson_id,
        admitted: e.admitted,
        summary: e.summary,
        nodes_considered: e.nodes_considered,
        filters: e
            .filters
            .into_iter()
            .map(|f| FilterCount {
                filter: f.filter,
                removed: f.removed,
                detail: f.detail,
            })
            .collect(),
        seats: e
            .seats
            .into_iter()
            .map(|s| {
                let rtt = s.rtt.unwrap_or_default();
                SeatChoice {
                    seat: s.seat,
                    node_id: s.node_id,
                    node_name: s.node_name,
                    device_indexes: s.device_indexes,
                    rtt: Rtt {
                        ms: rtt.ms,
                        source: classgrid_proto::v1::RttSource::try_from(rtt.source)
                            .map(|x| {
                                x.as_str_name()
                                    .trim_start_matches("RTT_SOURCE_")
                                    .to_ascii_lowercase()
                            })
                            .unwrap_or_default(),
                        error_bound_ms: rtt.error_bound_ms,
                    },
                    score: s.score,
                    scores: s
                        .scores
                        .into_iter()
                        .map(|p| ScorePart {
                            name: p.name,
                            value: p.value,
                            weight: p.weight,
                        })
                        .collect(),
                    reason: s.reason,
                }
            })
            .collect(),
    }
}
