//! The HTTP surface: `/healthz`, `/metrics`, the REST API with
//! `/openapi.json`, and the console; one `.merge` per area.

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use crate::state::App;

pub fn router(app: App) -> Router {
    crate::telemetry::gauges::spawn(app.clone());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::api::rest::router())
        .merge(crate::console::router(&app))
        .with_state(app)
}

/// Whether the database answers: for a leader, its last lease renewal
/// (through the lease's own connections, never queued behind the bell);
/// for a broker without a lease (tools, tests), a ping.
async fn database_reachable(app: &App) -> bool {
    match app.leader.get() {
        Some(l) => l.fresh(app.cfg.lease),
        None => app.store.ping().await,
    }
}

async fn healthz(State(app): State<App>) -> impl IntoResponse {
    if database_reachable(&app).await {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n")
    }
}

/// Ready to serve: this replica leads and reaches the database. A standby
/// answers 503 from its own router (`leader`), so a load balancer sends
/// traffic only here.
async fn readyz(State(app): State<App>) -> impl IntoResponse {
    let db = database_reachable(&app).await;
    let l = app.leader.get();
    let body = serde_json::json!({
        "ready": db, "role": "leader", "database": if db { "reachable" } else { "unreachable" },
        "replica": l.map(|l| l.replica.name.clone()), "epoch": l.map(|l| l.epoch),
        "since": l.map(|l| l.since),
    });
    let code = if db {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body))
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    // The classic text format has no closing `# EOF`: the replica's role
    // follows the rest.
    let body = app.metrics.render();
    let epoch = app.leader.get().map(|l| l.epoch).unwrap_or(0);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            classgrid_common::exposition::CONTENT_TYPE,
        )],
        format!("{body}{}", crate::leader::role_metrics(true, epoch)),
    )
}
