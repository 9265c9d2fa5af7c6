//! Server-Sent Events: one `changed` event whenever a lesson or seat
//! changes, or the fleet view does (a node's state, cordon, approval or
//! devices). The
//! page then fetches itself again; events carry no data, so nothing leaks
//! across tenants through this stream.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::session::Session;
use crate::state::App;

/// A cheap summary of what the fleet pages show; a change means redraw.
fn fleet_fingerprint(app: &App) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for n in app.fleet.nodes() {
        (n.id, n.state, n.cordoned, n.approved).hash(&mut h);
        for d in &n.devices {
            (d.idx, d.utilization_percent, d.memory_used_mib, d.healthy).hash(&mut h);
        }
    }
    h.finish()
}

pub async fn stream(
    State(app): State<App>,
    s: Session,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut lessons = app.lesson_events.subscribe();
    let sees_all = s.caller.is_district_admin();
    let caller = s.caller;
    let stream = async_stream(move |tx| async move {
        let mut last = fleet_fingerprint(&app);
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            let changed = tokio::select! {
                r = lessons.recv() => match r {
                    Ok(id) => sees_all || app.store.get_lesson(id).await.ok().flatten().is_some_and(|l| caller.sees_site(l.school_site_id)),
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    let now = fleet_fingerprint(&app);
                    std::mem::replace(&mut last, now) != now
                }
            };
            if changed
                && tx
                    .send(Ok(Event::default().event("changed").data("")))
                    .await
                    .is_err()
            {
                return;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// A stream fed by a task, ending when the client goes away.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
