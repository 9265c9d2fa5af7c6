//! A lesson booked once its bell has rung, with nothing to stage, starts in
//! the booking itself: the answer shows it live, every seat's assignment is
//! already on its way to the agent (no clock runs in these tests), and the
//! answer is exactly what a later read returns.

mod common;

use std::{collections::HashSet, time::Duration};

use chrono::Utc;
use classgrid_broker::{app::App, service::lessons::LessonView};
use classgrid_proto::v1::{self as pb, broker_message::Msg};
use common::{AgentInbox, TestDb, agent_session, broker, one_seat};
use sqlx::types::Json;

fn node_capacity() -> pb::NodeCapacity {
    pb::NodeCapacity {
        cpu_millis: 8000,
        memory_mib: 16_384,
        devices: vec![],
    }
}

/// A broker (no clock running) with one school and one node on it.
async fn school_with_node() -> (TestDb, App, AgentInbox) {
    let db = TestDb::new("cg_bell").await;
    let app = broker(&db).await;
    app.create_site("bell-school", "school", "d1")
        .await
        .unwrap();
    let (_node, rx) = agent_session(&app, "bell-school", "n1", node_capacity()).await;
    (db, app, rx)
}

/// Assignment ids the agent received within `wait`.
async fn assigns(rx: &mut AgentInbox, want: usize, wait: Duration) -> HashSet<String> {
    let mut got = HashSet::new();
    let deadline = tokio::time::Instant::now() + wait;
    while got.len() < want {
        let Ok(Some(m)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            break;
        };
        if let Some(Msg::Assign(a)) = m.msg {
            got.insert(a.assignment_id);
        }
    }
    got
}

/// JSON with every number cut to 9 decimals: serde_json reads floats back
/// to within one unit in the last place, not always exactly.
fn rounded(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => n
            .as_f64()
            .map(|f| serde_json::json!((f * 1e9).round() / 1e9))
            .unwrap_or_else(|| v.clone()),
        Value::Array(a) => Value::Array(a.iter().map(rounded).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), rounded(v))).collect()),
        _ => v.clone(),
    }
}

/// The booking's answer equals a fresh read of the lesson, field by field.
/// The explanation is compared as JSON (PostgreSQL keeps object keys in its
/// own order).
fn assert_same(answered: &LessonView, read: &LessonView) {
    assert_eq!(
        read.lesson.explanation()["admitted"],
        true,
        "a stored explanation"
    );
    assert_eq!(
        rounded(&answered.lesson.explanation()),
        rounded(&read.lesson.explanation())
    );
    let blank = |v: &LessonView| {
        let mut l = v.lesson.clone();
        l.explanation = Json(Default::default());
        format!("{l:?}")
    };
    assert_eq!(blank(answered), blank(read));
    assert_eq!(
        format!("{:?}", answered.seats),
        format!("{:?}", read.seats),
        "the seats answered are the seats written"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lesson_booked_after_its_bell_is_live_in_the_answer_and_its_agent_has_every_seat() {
    let (_db, app, mut rx) = school_with_node().await;

    let mut b = one_seat("bell-school", "late class", Utc::now(), None);
    b.seats = 3;
    let booked = app.book_lesson(b).await.unwrap();

    assert_eq!(booked.lesson.state, "live");
    assert_eq!(booked.seats.len(), 3);
    for s in &booked.seats {
        assert_eq!(s.state, "starting", "{s:?}");
        assert!(s.assignment_id.is_some(), "{s:?}");
        assert_eq!(s.generation, Some(1), "{s:?}");
        assert_eq!(s.node_name.as_deref(), Some("n1"));
    }
    let want: HashSet<String> = booked
        .seats
        .iter()
        .filter_map(|s| s.assignment_id.map(|a| a.to_string()))
        .collect();
    assert_eq!(
        assigns(&mut rx, 3, Duration::from_secs(5)).await,
        want,
        "the booking itself sends every seat's Assign"
    );
    let read = app.lesson(booked.lesson.id).await.unwrap();
    assert_same(&booked, &read);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lesson_booked_before_its_bell_waits_for_it() {
    let (_db, app, mut rx) = school_with_node().await;

    let start = Utc::now() + chrono::Duration::hours(1);
    let booked = app
        .book_lesson(one_seat("bell-school", "later class", start, None))
        .await
        .unwrap();

    assert_eq!(booked.lesson.state, "booked");
    assert!(
        booked
            .seats
            .iter()
            .all(|s| s.state == "planned" && s.assignment_id.is_none())
    );
    assert!(
        assigns(&mut rx, 1, Duration::from_millis(300))
            .await
            .is_empty(),
        "nothing is sent before the bell"
    );
    let read = app.lesson(booked.lesson.id).await.unwrap();
    assert_same(&booked, &read);
}

/// An agent's RUNNING report changes its assignment's and its seat's
/// state, but no column an index names, so PostgreSQL updates both rows
/// in place without new index entries (HOT; migration 0028, decision
/// 122). An index or predicate on `state` would turn every report of a
/// bell back into an insert into every index of both tables.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_report_updates_the_seat_and_its_assignment_on_the_page() {
    use classgrid_broker::store::assignments::{Progress, record_progress};
    use sqlx::{Connection, PgConnection};

    let (db, app, _rx) = school_with_node().await;
    let mut b = one_seat("bell-school", "hot class", Utc::now(), None);
    b.seats = 2;
    let booked = app.book_lesson(b).await.unwrap();
    assert_eq!(booked.lesson.state, "live");
    let mut c = PgConnection::connect(&db.url).await.unwrap();
    let (node_id,): (uuid::Uuid,) = sqlx::query_as("SELECT id FROM nodes WHERE name = 'n1'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let reports: Vec<Progress> = booked
        .seats
        .iter()
        .map(|s| Progress {
            node_id,
            id: s.assignment_id.unwrap(),
            generation: 1,
            state: "running",
            endpoint: format!("http://10.0.0.1:{}", 8000 + s.number),
            output_tail: String::new(),
            slice_seconds: 0.0,
        })
        .collect();

    let mut tx = c.begin().await.unwrap();
    let rows = record_progress(&mut tx, &reports.iter().collect::<Vec<_>>())
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "both reports apply");
    // This transaction's own counts: exact, not the collector's sampled ones.
    let counts: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables
          WHERE relname IN ('assignments', 'seats') ORDER BY relname",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    assert_eq!(
        counts,
        vec![("assignments".into(), 2, 2), ("seats".into(), 2, 2)],
        "(table, updated, updated on the page)"
    );
    let states: Vec<(String, bool)> =
        sqlx::query_as("SELECT state, staged FROM seats ORDER BY number")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    assert_eq!(states, vec![("running".into(), false); 2]);
    let live: Vec<(String, bool, bool)> =
        sqlx::query_as("SELECT state, live, unreported FROM assignments")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    assert_eq!(live, vec![("running".into(), true, false); 2]);
}
