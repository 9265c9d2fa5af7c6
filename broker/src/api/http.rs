//! The HTTP surface: `/healthz`, `/metrics`, the REST API with
//! `/openapi.json`, and the console; one `.merge` per area.

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};

use crate::app::App;

pub fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(crate::api::rest::router())
        .merge(crate::console::router(&app))
        .with_state(app)
}

async fn healthz(State(app): State<App>) -> impl IntoResponse {
    match sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(&app.store.pool)
        .await
    {
        Ok(_) => (StatusCode::OK, "ok\n"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n"),
    }
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
}
