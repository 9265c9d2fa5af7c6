//! The district admin console at `/console`: server-rendered pages over the
//! same scoped service layer as the APIs, live through Server-Sent Events,
//! in zh-CN and English. Every asset is embedded in the broker binary, and
//! the Content-Security-Policy forbids any other origin.

pub mod assets;
pub mod bootstrap;
pub mod events;
pub mod html;
pub mod i18n;
pub mod pages;
pub mod reads;
pub mod sampler;
pub mod session;
/// The console's reads live in the store, beside every other statement.
pub use crate::store::console as store;
pub mod svg;
pub mod tz;

use std::sync::OnceLock;

use axum::{
    Router,
    http::{HeaderValue, header},
    middleware,
    response::Response,
    routing::{get, post},
};

use crate::state::App;

static ZONE: OnceLock<tz::Zone> = OnceLock::new();

/// The region's time zone (see `tz`).
pub fn zone() -> &'static tz::Zone {
    ZONE.get_or_init(|| {
        tz::Zone::from_env().unwrap_or_else(|e| {
            tracing::error!("{e}; the console shows Asia/Shanghai time");
            tz::Zone::default()
        })
    })
}

/// The console's routes, to merge into the broker's HTTP router. Starts
/// the utilisation sampler when a runtime is running.
pub fn router(app: &App) -> Router<App> {
    let _ = zone();
    if tokio::runtime::Handle::try_current().is_ok() {
        sampler::spawn(app.clone());
    }
    use pages::*;
    Router::new()
        .route("/console", get(overview::page))
        .route("/console/", get(overview::page))
        .route("/console/login", get(login::form).post(login::submit))
        .route("/console/logout", post(login::logout))
        .route("/console/lang", get(login::lang))
        .route("/console/nodes", get(nodes::list))
        .route("/console/nodes/{id}", get(node::detail))
        .route("/console/nodes/{id}/{action}", post(node::act))
        .route("/console/timetable", get(timetable::page))
        .route(
            "/console/timetable/import",
            get(term::page).post(term::submit),
        )
        .route("/console/series/{id}", get(term::series))
        .route("/console/lessons/{id}", get(lesson::detail))
        .route("/console/lessons/{id}/cancel", post(lesson::cancel))
        .route("/console/lessons/{id}/sheet", get(class_sheet::sheet))
        .route(
            "/console/lessons/{id}/links/{action}",
            post(class_sheet::links),
        )
        .route(
            "/console/lessons/{id}/seats/{seat}/{action}",
            post(class_sheet::seat),
        )
        .route("/console/jobs", get(jobs::page))
        .route("/console/vouchers", get(vouchers::page))
        .route("/console/tokens", get(tokens::page))
        .route("/console/tokens/{kind}", post(tokens::create))
        .route("/console/tokens/{kind}/{id}/revoke", post(tokens::revoke))
        .route("/console/audit", get(audit::page))
        .route("/console/regions", get(regions::page))
        .route("/console/events", get(events::stream))
        .route("/console/assets/{name}", get(assets::serve))
        .layer(axum::extract::DefaultBodyLimit::max(
            pages::term::MAX_FORM_BYTES,
        ))
        .layer(middleware::map_response(harden))
}

/// Same-origin only: no script, style, image or connection may come from
/// another host, and no other site may frame the console.
async fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: browsers then send `Origin: null`, and the origin
    // check on forms could not tell the console from anyone else.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}
