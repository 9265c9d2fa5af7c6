//! `/v1/jobs`: submit, read and cancel ad-hoc jobs, through the same scoped
//! service calls as gRPC's JobService.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    extract::{JsonBody, Params, idempotency_key, parse_id},
    model::{SeatSpec, Workload, rfc3339},
    problem::ApiResult,
};
use crate::{auth::Caller, domain::lesson::RawJob, state::App, store::jobs::JobRow};

pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(read).delete(cancel))
}

/// An ad-hoc job, e.g. a homework training run. Send `Idempotency-Key`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "school_site": "school-a", "name": "homework-cnn",
    "spec": {"cpu_millis": 1000, "memory_mib": 4096, "runtime": "process",
             "gpu": {"vendors": ["nvidia"], "memory_mib": 4096, "compute_percent": 50, "count": 1}},
    "workload": {"command": "python3", "args": ["train.py"]},
    "max_runtime_seconds": 3600, "priority": 10, "preemptible": true, "grace_seconds": 60
}))]
pub struct SubmitJob {
    #[serde(default)]
    pub school_site: String,
    #[serde(default)]
    pub name: String,
    #[schema(nullable)]
    #[serde(default)]
    pub spec: Option<SeatSpec>,
    #[schema(nullable)]
    #[serde(default)]
    pub workload: Option<Workload>,
    /// 0 means 3600.
    #[serde(default)]
    pub max_runtime_seconds: i64,
    /// -1000..1000.
    #[serde(default)]
    pub priority: i64,
    /// A lesson may take its capacity, after `grace_seconds` to checkpoint.
    #[serde(default)]
    pub preemptible: bool,
    /// 0 means 60.
    #[serde(default)]
    pub grace_seconds: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Job {
    pub id: Uuid,
    pub school_site: String,
    pub name: String,
    /// queued, running, succeeded, failed, preempted or cancelled.
    pub state: String,
    pub spec: SeatSpec,
    pub workload: Workload,
    pub priority: i32,
    pub preemptible: bool,
    pub grace_seconds: i32,
    pub max_runtime_seconds: i32,
    #[schema(nullable)]
    pub node_id: Option<Uuid>,
    #[schema(nullable)]
    pub node_name: Option<String>,
    pub endpoint: String,
    #[schema(nullable)]
    pub exit_code: Option<i32>,
    pub output_tail: String,
    pub message: String,
    #[schema(value_type = String, format = DateTime)]
    pub created: String,
}

pub fn job(app: &App, j: &JobRow) -> Job {
    Job {
        id: j.id,
        school_site: j.school_site.clone(),
        name: j.name.clone(),
        state: j.state.clone(),
        spec: SeatSpec::of(&j.spec.0),
        workload: Workload::of(&j.workload.0),
        priority: j.priority,
        preemptible: j.preemptible,
        grace_seconds: j.grace_s,
        max_runtime_seconds: j.max_runtime_s,
        node_id: j.node_id,
        node_name: j.node_name.clone(),
        endpoint: j.endpoint.clone(),
        exit_code: j.exit_code,
        output_tail: j.output_tail.clone(),
        message: j.message.clone(),
        created: rfc3339(j.created_at, app.cfg.time_zone),
    }
}

/// Submit a job; it queues until capacity that lessons leave is free.
#[utoipa::path(post, operation_id = "submit_job", path = "/v1/jobs", tag = "jobs", request_body = SubmitJob,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first result")),
    responses((status = 201, description = "Submitted", body = Job)))]
pub async fn submit(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(b): JsonBody<SubmitJob>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let raw = RawJob {
        request_id: idempotency_key(&headers)?,
        school_site: b.school_site,
        name: b.name,
        spec: b.spec.as_ref().map(SeatSpec::raw),
        workload: b.workload.as_ref().map(Workload::raw).unwrap_or_default(),
        max_runtime_seconds: b.max_runtime_seconds,
        priority: b.priority,
        preemptible: b.preemptible,
        grace_seconds: b.grace_seconds,
    };
    let j = app.scoped(&caller).submit_job(raw).await?;
    Ok((StatusCode::CREATED, Json(job(&app, &j))))
}

/// The caller's jobs, newest first (at most 200).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<Job>,
}

/// List the caller's jobs, newest first, optionally in one state.
#[utoipa::path(get, operation_id = "list_jobs", path = "/v1/jobs", tag = "jobs",
    params(("state" = Option<String>, Query, description = "queued, running, succeeded, failed or cancelled")),
    responses((status = 200, description = "At most 200 jobs, newest first", body = JobList)))]
pub async fn list(
    State(app): State<App>,
    caller: Caller,
    q: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<JobList>> {
    let p = Params::from_query(q, &["state"])?;
    let state = p.str("state");
    let state = Some(state.as_str()).filter(|s| !s.is_empty());
    let rows = app.scoped(&caller).console_jobs(state).await?;
    Ok(Json(JobList {
        jobs: rows.iter().map(|j| job(&app, j)).collect(),
    }))
}

#[utoipa::path(get, operation_id = "get_job", path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, description = "The job", body = Job)))]
pub async fn read(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    let id = parse_id("id", &id)?;
    Ok(Json(job(&app, &app.scoped(&caller).job(id).await?)))
}

/// Cancel a job; a running one is stopped.
#[utoipa::path(delete, operation_id = "cancel_job", path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, description = "The cancelled job", body = Job)))]
pub async fn cancel(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    let id = parse_id("id", &id)?;
    Ok(Json(job(&app, &app.scoped(&caller).cancel_job(id).await?)))
}
