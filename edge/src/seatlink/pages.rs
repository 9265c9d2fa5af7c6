//! The pages a student sees when a link does not open a seat: short, in
//! plain words, saying what to do. Never an error code alone.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:36rem;\
         margin:4rem auto;padding:0 1rem;line-height:1.5}}h1{{font-size:1.4rem}}</style></head>\
         <body><h1>{title}</h1><p>{text}</p></body></html>"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

pub fn unknown() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "This seat link is not open here",
        "The link is not one of this school's seats, or its lesson has not started yet. \
         Check that you typed or scanned the whole link from your class sheet; \
         if it is right, open it again when the lesson begins.",
    )
}

pub fn ended() -> Response {
    page(
        StatusCode::GONE,
        "This lesson has ended",
        "The seat behind this link was open until the end of its lesson and is now closed. \
         Ask your teacher for the link of your next lesson.",
    )
}

/// 423 Locked: the seat is closed by the teacher, not gone with the lesson
/// (410) and not the class paused (403); a reset opens it again.
pub fn stopped() -> Response {
    page(
        StatusCode::LOCKED,
        "Your teacher has stopped this seat",
        "The lesson goes on, but your teacher has stopped the seat behind this link. \
         Ask your teacher: if they start it again, this link opens it; reload this page then.",
    )
}

pub fn paused() -> Response {
    page(
        StatusCode::FORBIDDEN,
        "Your teacher has paused the class's seats",
        "Your work is kept. This page opens your seat again as soon as your teacher resumes the class: reload it then.",
    )
}

pub fn not_ready() -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Your seat is starting",
        "Your seat is being prepared. Reload this page in a few seconds.",
    )
}

pub fn unreachable() -> Response {
    page(
        StatusCode::BAD_GATEWAY,
        "Your seat does not answer",
        "The school's gateway cannot reach your seat right now. It restarts on its own if it stopped; \
         reload this page in a few seconds, and tell your teacher if it keeps happening.",
    )
}
