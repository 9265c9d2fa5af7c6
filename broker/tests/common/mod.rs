//! What the service-level tests share: a fresh PostgreSQL database per test,
//! a broker on it, and nodes registered with an open (fake) agent session.
// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use classgrid_broker::{
    app::App,
    config::{BrokerConfig, ServeArgs},
    domain::{
        lesson::RawBooking,
        spec::{RawGpu, RawSeat, Workload},
    },
};
use classgrid_proto::v1 as pb;
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

pub fn admin_url() -> String {
    std::env::var("CLASSGRID_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database, dropped afterwards.
pub struct TestDb {
    name: String,
    pub url: String,
}

impl TestDb {
    /// The test's own connections to this database, for reading rows
    /// directly; the broker's store runs only its own statements.
    #[allow(dead_code)]
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.url).await.unwrap()
    }

    /// `prefix` names the test file's databases, e.g. `cg_cap`.
    pub async fn new(prefix: &str) -> Self {
        let name = format!("{prefix}_{}", Uuid::new_v4().simple());
        let mut c = PgConnection::connect(&admin_url())
            .await
            .expect("PostgreSQL is needed for this test (scripts/test.sh starts it)");
        c.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .unwrap();
        let base = admin_url().rsplit_once('/').unwrap().0.to_string();
        TestDb {
            url: format!("{base}/{name}"),
            name,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut c = PgConnection::connect(&admin_url()).await.ok()?;
                c.execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await
                .ok()
            })
        })
        .join();
    }
}

/// A broker on `db` with the default configuration, migrated.
pub async fn broker(db: &TestDb) -> App {
    let cfg = BrokerConfig::resolve(&ServeArgs {
        database_url: Some(db.url.clone()),
        ..Default::default()
    })
    .unwrap();
    let store = classgrid_broker::store::Store::connect(&cfg.database_url)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    classgrid_broker::app::open(cfg, store).await.unwrap()
}

/// Registers a node on `app` and keeps its session open; returns its id.
pub async fn attached_node(app: &App, site: &str, name: &str, cap: pb::NodeCapacity) -> Uuid {
    let (id, rx) = agent_session(app, site, name, cap).await;
    std::mem::forget(rx);
    id
}

/// What the broker sends a node's agent.
pub type AgentInbox = tokio::sync::mpsc::Receiver<Box<pb::BrokerMessage>>;

/// Registers a node on `app` with an open session; returns its id and what
/// the broker sends its agent.
pub async fn agent_session(
    app: &App,
    site: &str,
    name: &str,
    cap: pb::NodeCapacity,
) -> (Uuid, AgentInbox) {
    let live = app
        .register_node(&pb::Register {
            site: site.into(),
            name: name.into(),
            capacity: Some(cap),
            ..Default::default()
        })
        .await
        .unwrap();
    let id = live.id;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let sid = app.fleet.attach(live, tx);
    // As the agent's first heartbeat would: it has nothing queued.
    app.fleet.caught_up(id, sid);
    (id, rx)
}

/// A one-seat, 40-minute lesson of 500 millicores and 1 GiB (and `gpu` if
/// given) running `sleep`, with an RTT limit far above any RTT here.
pub fn one_seat(
    school: &str,
    title: &str,
    start: DateTime<Utc>,
    gpu: Option<RawGpu>,
) -> RawBooking {
    RawBooking {
        school_site: school.into(),
        title: title.into(),
        start: Some(start),
        duration_seconds: 2400,
        seats: 1,
        seat: Some(RawSeat {
            cpu_millis: 500,
            memory_mib: 1024,
            gpu,
            runtime: String::new(),
        }),
        workload: Workload {
            command: "sleep".into(),
            args: vec!["3600".into()],
            ..Default::default()
        },
        max_rtt_ms: 1000,
        ..Default::default()
    }
}
