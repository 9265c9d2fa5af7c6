//! REST/JSON for course platforms that do not speak gRPC: the same
//! operations and rules as the gRPC services, through the same scoped
//! service calls. Thin adapters: decode → `Broker::scoped(&caller)` → encode.

// A `Problem` is the HTTP answer itself, built once per failed request;
// boxing it would only add an allocation to every error path.
#![allow(clippy::result_large_err, clippy::large_enum_variant)]

pub mod cost;
pub mod events;
pub mod extract;
pub mod fleet;
pub mod jobs;
pub mod lessons;
pub mod model;
pub mod openapi;
pub mod problem;
pub mod series;
pub mod timetable;
pub mod vouchers;

use axum::{Router, extract::DefaultBodyLimit, http::StatusCode, routing::get};

use crate::state::App;

/// Every `/v1` route and `/openapi.json`.
pub fn router() -> Router<App> {
    Router::new()
        .merge(lessons::router())
        // Beside, not inside, the lessons' router: the stream encodes with
        // the lessons' model, and the two files would import each other.
        .route("/v1/lessons/{id}/events", get(events::events))
        .merge(jobs::router())
        .merge(fleet::router())
        .merge(vouchers::router())
        .merge(series::router())
        .merge(timetable::router())
        .route(
            "/v1/{*rest}",
            get(unknown)
                .post(unknown)
                .put(unknown)
                .delete(unknown)
                .patch(unknown),
        )
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .route("/openapi.json", get(openapi::serve))
}

async fn unknown() -> problem::Problem {
    problem::Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "No such endpoint",
        "no such endpoint; /openapi.json lists them all",
    )
}
