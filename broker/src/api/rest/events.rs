//! `GET /v1/lessons/{id}/events`: Server-Sent Events carrying the lesson,
//! its seat states and endpoints, after every change, like gRPC Watch. The
//! stream ends after the lesson has ended or was cancelled.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::{Path, State},
    response::sse::{Event, KeepAlive, Sse},
};
use futures::{Stream, StreamExt};

use super::{extract::parse_id, lessons::lesson, problem::ApiResult};
use crate::{auth::Caller, state::App};

/// Watch a lesson as Server-Sent Events: `event: lesson`, `data:` the
/// lesson as JSON (the `Lesson` schema), first now and then on each change.
#[utoipa::path(get, operation_id = "watch_lesson_events", path = "/v1/lessons/{id}/events", tag = "lessons",
    params(("id" = Uuid, Path, description = "Lesson id")),
    responses((status = 200, description = "A text/event-stream of `lesson` events, each carrying a Lesson", content_type = "text/event-stream", body = String)))]
pub async fn events(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let id = parse_id("id", &id)?;
    let views = app.watch_lesson(&caller, id).await?;
    let mut last = String::new();
    let stream = views.filter_map(move |v| {
        let json = serde_json::to_string(&lesson(&app, &v)).unwrap_or_default();
        // Only real changes: an event that left this lesson as it was is not sent.
        let out = (json != last).then(|| {
            last = json.clone();
            Ok(Event::default().event("lesson").data(json))
        });
        std::future::ready(out)
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
