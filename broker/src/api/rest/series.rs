//! `/v1/series`: book a recurring lesson over a term (or its dry run), read
//! and list series, and edit one: cancel or move an occurrence, end early.
//! Through the scoped service calls that gRPC's SeriesService uses.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    cost::VoucherCost,
    extract::{JsonBody, Params, idempotency_key, parse_id, parse_time},
    lessons::{BookLesson, Lesson, lesson},
    model::rfc3339,
    problem::{ApiResult, Problem},
};
use crate::{
    auth::Caller,
    series::request::RawSeries,
    service::series::{SeriesAnswer, SeriesView},
    state::App,
    store::series::SeriesRow,
};

pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/series", post(book).get(list))
        .route("/v1/series/{id}", get(read))
        .route("/v1/series/{id}/end", post(end))
        .route("/v1/series/{id}/change", post(change))
        .route(
            "/v1/series/{id}/occurrences/{lesson_id}",
            delete(cancel_occurrence),
        )
        .route(
            "/v1/series/{id}/occurrences/{lesson_id}/move",
            post(move_occurrence),
        )
}

/// A recurring lesson: the lesson every occurrence books, an RFC 5545 RRULE
/// at a local start time in the region's time zone, a term and exception
/// dates. Send `Idempotency-Key`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "lesson": {"school_site": "school-a", "title": "AI, class 7-3", "duration_seconds": 2400, "seats": 45,
        "seat": {"cpu_millis": 500, "memory_mib": 2048, "runtime": "process",
                 "gpu": {"vendors": ["nvidia"], "model": "T4", "memory_mib": 2048, "compute_percent": 10, "count": 1}},
        "workload": {"command": "jupyter", "args": ["lab", "--port", "$(PORT)"]}, "max_rtt_ms": 30},
    "rrule": "FREQ=WEEKLY;BYDAY=TU", "start_time": "10:00",
    "term_start": "2031-02-17", "term_end": "2031-06-30", "exception_dates": ["2031-05-06"],
    "policy": "all_or_nothing"
}))]
pub struct BookSeries {
    /// The lesson each occurrence books; its `start` is not used.
    #[serde(default)]
    pub lesson: BookLesson,
    /// An RFC 5545 RRULE without DTSTART, e.g. `FREQ=WEEKLY;BYDAY=TU,TH`.
    #[serde(default)]
    pub rrule: String,
    /// Local start time of every occurrence, `HH:MM`.
    #[serde(default)]
    pub start_time: String,
    /// First day of the term, `YYYY-MM-DD`, local.
    #[serde(default)]
    pub term_start: String,
    /// Last day of the term, included.
    #[serde(default)]
    pub term_end: String,
    /// Local dates with no lesson (holidays).
    #[serde(default)]
    pub exception_dates: Vec<String>,
    /// `all_or_nothing` (default) or `book_what_fits`.
    #[serde(default)]
    pub policy: String,
}

/// One occurrence: where the rule put it, and its lesson or why not.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Occurrence {
    #[schema(value_type = String, format = DateTime)]
    pub start: String,
    /// Booked (or, in a dry run, would be).
    pub admitted: bool,
    #[schema(nullable)]
    pub lesson_id: Option<Uuid>,
    /// The lesson's state (booked, …, cancelled); empty when none.
    pub lesson_state: String,
    /// The lesson's start, when it was moved; else the rule's.
    #[schema(value_type = Option<String>, format = DateTime, nullable)]
    pub lesson_start: Option<String>,
    /// Why it was not booked.
    pub reason: String,
    /// What it holds on the vouchers (in a booking's answer only).
    #[schema(nullable)]
    pub voucher_cost: Option<VoucherCost>,
}

/// A series with its occurrences.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Series {
    /// All zeros in a dry run.
    pub id: Uuid,
    pub school_site: String,
    pub title: String,
    pub rrule: String,
    pub time_zone: String,
    pub start_time: String,
    pub duration_seconds: i32,
    pub term_start: String,
    pub term_end: String,
    pub exception_dates: Vec<String>,
    pub policy: String,
    pub seats: i32,
    #[schema(value_type = Option<String>, format = DateTime, nullable)]
    pub ended: Option<String>,
    /// Empty in listings.
    pub occurrences: Vec<Occurrence>,
}

/// A series booking's answer, or its dry run's.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SeriesBooking {
    pub dry_run: bool,
    pub policy: String,
    /// Occurrences booked (in a dry run: that fit).
    pub admitted: i32,
    /// Occurrences that do not fit, each with its reason.
    pub refused: i32,
    /// Occurrences of the term already past, not booked.
    pub past: i32,
    /// The term's voucher cost: what the admitted occurrences hold.
    pub voucher_cost: VoucherCost,
    /// The occurrences, each with its outcome; a dry run's series has no id.
    pub occurrences: Vec<Occurrence>,
    #[schema(nullable)]
    pub series: Option<Series>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SeriesList {
    pub series: Vec<Series>,
}

/// Where to move an occurrence.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveOccurrence {
    /// RFC 3339 with an offset.
    #[schema(value_type = String, format = DateTime)]
    #[serde(default)]
    pub start: String,
}

/// A change of every future occurrence; zero or empty keeps the value.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"from": "2031-04-01T00:00:00+08:00", "start_time": "14:00", "seats": 40}))]
pub struct ChangeFuture {
    /// Occurrences from this time on change; empty means now.
    #[schema(value_type = String, format = DateTime)]
    #[serde(default)]
    pub from: String,
    /// New local start time, HH:MM.
    #[serde(default)]
    pub start_time: String,
    #[serde(default)]
    pub duration_seconds: i64,
    #[serde(default)]
    pub seats: i64,
    #[serde(default)]
    pub max_rtt_ms: i64,
}

/// When to end a series.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndSeries {
    /// Occurrences from this time on are cancelled; empty means now.
    #[schema(value_type = String, format = DateTime)]
    #[serde(default)]
    pub from: String,
}

pub fn series(app: &App, r: &SeriesRow) -> Series {
    Series {
        id: r.id,
        school_site: r.school_site.clone(),
        title: r.title.clone(),
        rrule: r.rrule.clone(),
        time_zone: r.time_zone.clone(),
        start_time: r.start_time.format("%H:%M").to_string(),
        duration_seconds: r.duration_s,
        term_start: r.term_start.to_string(),
        term_end: r.term_end.to_string(),
        exception_dates: r.exception_dates.iter().map(|d| d.to_string()).collect(),
        policy: r.policy.clone(),
        seats: r.template.0.seats as i32,
        ended: r.ended_at.map(|t| rfc3339(t, app.cfg.time_zone)),
        occurrences: Vec::new(),
    }
}

fn view(app: &App, v: &SeriesView) -> Series {
    let tz = app.cfg.time_zone;
    Series {
        occurrences: v
            .occurrences
            .iter()
            .map(|o| Occurrence {
                start: rfc3339(o.rule_start, tz),
                admitted: o.lesson_id.is_some(),
                lesson_id: o.lesson_id,
                lesson_state: o.lesson_state.clone().unwrap_or_default(),
                lesson_start: o.lesson_start.map(|t| rfc3339(t, tz)),
                reason: o.reason.clone(),
                voucher_cost: None,
            })
            .collect(),
        ..series(app, &v.series)
    }
}

pub fn booking(app: &App, a: &SeriesAnswer) -> SeriesBooking {
    let tz = app.cfg.time_zone;
    let occurrences = a
        .occurrences
        .iter()
        .map(|o| Occurrence {
            start: rfc3339(o.start, tz),
            admitted: o.admitted,
            lesson_id: o.lesson_id,
            lesson_state: o.lesson_state().into(),
            lesson_start: None,
            reason: o.reason.clone(),
            voucher_cost: Some(VoucherCost::of(&o.held)),
        })
        .collect();
    let admitted = a.admitted() as i32;
    SeriesBooking {
        dry_run: a.dry_run,
        policy: a.policy.as_str().into(),
        admitted,
        refused: a.occurrences.len() as i32 - admitted,
        past: a.past as i32,
        voucher_cost: VoucherCost::of(&a.held),
        occurrences,
        series: a.series.as_ref().map(|s| series(app, s)),
    }
}

/// Book a series: every occurrence of the term admitted against the
/// calendar, RTT, staging and the vouchers (each occurrence's own window),
/// all or nothing or book what fits. Refused whole (409, one `filters` line
/// per occurrence that does not fit) under all-or-nothing. With
/// `dry_run=true`, the same decision and nothing written.
#[utoipa::path(post, operation_id = "book_series", path = "/v1/series", tag = "series", request_body = BookSeries,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first result"),
        ("dry_run" = Option<bool>, Query, description = "Decide, write nothing, hold nothing"),
    ),
    responses(
        (status = 201, description = "Booked", body = SeriesBooking),
        (status = 200, description = "Dry run: what a booking would do", body = SeriesBooking),
    ))]
pub async fn book(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    q: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    JsonBody(b): JsonBody<BookSeries>,
) -> ApiResult<Response> {
    let dry_run = Params::from_query(q, &["dry_run"])?.bool("dry_run")?;
    let raw = RawSeries {
        request_id: idempotency_key(&headers)?,
        lesson: b.lesson.raw(String::new())?,
        rrule: b.rrule,
        start_time: b.start_time,
        term_start: b.term_start,
        term_end: b.term_end,
        exception_dates: b.exception_dates,
        policy: b.policy,
    };
    let a = app.scoped(&caller).book_series(raw, dry_run).await?;
    let code = if dry_run {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((code, Json(booking(&app, &a))).into_response())
}

/// Read a series with its occurrences, each with its lesson's state.
#[utoipa::path(get, operation_id = "get_series", path = "/v1/series/{id}", tag = "series",
    params(("id" = Uuid, Path, description = "Series id")),
    responses((status = 200, description = "The series", body = Series)))]
pub async fn read(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Series>> {
    let id = parse_id("id", &id)?;
    let v = app.scoped(&caller).series(id).await?;
    Ok(Json(view(&app, &v)))
}

/// An RFC 3339 time, or None when empty.
fn optional_time(field: &str, s: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, Problem> {
    if s.is_empty() {
        Ok(None)
    } else {
        parse_time(field, s).map(Some)
    }
}

fn date(p: &Params, name: &str) -> Result<Option<NaiveDate>, Problem> {
    p.get(name)
        .map(|d| {
            NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|_| Problem::field(name, "must be a date, YYYY-MM-DD"))
        })
        .transpose()
}

/// List series (at most 500) by school and term.
#[utoipa::path(get, operation_id = "list_series", path = "/v1/series", tag = "series",
    params(
        ("school" = Option<String>, Query, description = "School site name or id"),
        ("from" = Option<String>, Query, format = Date, description = "Terms ending on or after (YYYY-MM-DD)"),
        ("to" = Option<String>, Query, format = Date, description = "Terms starting on or before (YYYY-MM-DD)"),
    ),
    responses((status = 200, description = "Series, by term start", body = SeriesList)))]
pub async fn list(
    State(app): State<App>,
    caller: Caller,
    q: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<SeriesList>> {
    let p = Params::from_query(q, &["school", "from", "to"])?;
    let rows = app
        .scoped(&caller)
        .list_series(&p.str("school"), date(&p, "from")?, date(&p, "to")?)
        .await?;
    Ok(Json(SeriesList {
        series: rows.iter().map(|r| series(&app, r)).collect(),
    }))
}

/// Cancel one occurrence: its lesson is cancelled and its voucher hold
/// refunded, as for any lesson.
#[utoipa::path(delete, operation_id = "cancel_occurrence", path = "/v1/series/{id}/occurrences/{lesson_id}", tag = "series",
    params(
        ("id" = Uuid, Path, description = "Series id"),
        ("lesson_id" = Uuid, Path, description = "The occurrence's lesson"),
        ("reason" = Option<String>, Query, description = "Shown in the lesson's message"),
    ),
    responses((status = 200, description = "The cancelled lesson", body = Lesson)))]
pub async fn cancel_occurrence(
    State(app): State<App>,
    caller: Caller,
    Path((id, lesson_id)): Path<(String, String)>,
    q: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Lesson>> {
    let (id, lesson_id) = (parse_id("id", &id)?, parse_id("lesson_id", &lesson_id)?);
    let reason = Params::from_query(q, &["reason"])?.str("reason");
    if reason.len() > 500 {
        return Err(Problem::field("reason", "must be at most 500 characters"));
    }
    let v = app
        .scoped(&caller)
        .cancel_occurrence(id, lesson_id, &reason)
        .await?;
    Ok(Json(lesson(&app, &v)))
}

/// Move one occurrence: the lesson at the new time is booked first (or
/// refused, and nothing changes), then the old one cancelled.
#[utoipa::path(post, operation_id = "move_occurrence", path = "/v1/series/{id}/occurrences/{lesson_id}/move", tag = "series",
    request_body = MoveOccurrence,
    params(
        ("id" = Uuid, Path, description = "Series id"),
        ("lesson_id" = Uuid, Path, description = "The occurrence's lesson"),
    ),
    responses((status = 200, description = "The occurrence's new lesson", body = Lesson)))]
pub async fn move_occurrence(
    State(app): State<App>,
    caller: Caller,
    Path((id, lesson_id)): Path<(String, String)>,
    JsonBody(b): JsonBody<MoveOccurrence>,
) -> ApiResult<Json<Lesson>> {
    let (id, lesson_id) = (parse_id("id", &id)?, parse_id("lesson_id", &lesson_id)?);
    if b.start.is_empty() {
        return Err(Problem::field("start", "is required (RFC 3339 time)"));
    }
    let start = parse_time("start", &b.start)?;
    let v = app
        .scoped(&caller)
        .move_occurrence(id, lesson_id, start)
        .await?;
    Ok(Json(lesson(&app, &v)))
}

/// Change every future occurrence: all replaced by lessons of the changed
/// template in one transaction (their holds refunded, the new ones held),
/// or, when one would not fit, none (409, one `filters` line each).
#[utoipa::path(post, operation_id = "change_future", path = "/v1/series/{id}/change", tag = "series",
    request_body = ChangeFuture,
    params(("id" = Uuid, Path, description = "Series id")),
    responses((status = 200, description = "The series", body = Series)))]
pub async fn change(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ChangeFuture>,
) -> ApiResult<Json<Series>> {
    let id = parse_id("id", &id)?;
    let change = crate::service::series_edits::RawChange {
        from: optional_time("from", &b.from)?,
        start_time: b.start_time,
        duration_seconds: b.duration_seconds,
        seats: b.seats,
        max_rtt_ms: b.max_rtt_ms,
    };
    let v = app.scoped(&caller).change_future(id, change).await?;
    Ok(Json(view(&app, &v)))
}

/// End a series early: every occurrence from `from` (default now) on is
/// cancelled and its hold refunded.
#[utoipa::path(post, operation_id = "end_series", path = "/v1/series/{id}/end", tag = "series",
    request_body = EndSeries,
    params(("id" = Uuid, Path, description = "Series id")),
    responses((status = 200, description = "The series", body = Series)))]
pub async fn end(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<EndSeries>,
) -> ApiResult<Json<Series>> {
    let id = parse_id("id", &id)?;
    let from = optional_time("from", &b.from)?;
    let v = app.scoped(&caller).end_series(id, from).await?;
    Ok(Json(view(&app, &v)))
}
