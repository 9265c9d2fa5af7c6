//! `classgrid bench storm`: the bell rings for a whole district at once.
//!
//! Starts the real broker in this process (or uses `--grpc-url`), connects N
//! simulated nodes as real `AgentService.Connect` streams with synthetic T4
//! and 910B devices that answer every Assign with RUNNING and an endpoint,
//! books every class concurrently through the real `LessonService.Book`, and
//! reports how long placement and the start took. Its last line is
//! `storm seats=N placed_s=X running_s=Y book_p50_ms=A book_p99_ms=B`.
//! `--ladder` runs four sizes, each on a fresh broker and database, and
//! says how the time grew against the work. A storm that places no seat
//! fails, naming the broker's reason on stderr.

use crate::bench_db::{create_database, drop_database};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use classgrid_broker::{
    config::{BrokerConfig, ServeArgs},
    server,
};
use classgrid_proto::v1::{
    self as pb, agent_message, agent_service_client::AgentServiceClient, broker_message,
    fleet_service_client::FleetServiceClient, lesson_service_client::LessonServiceClient,
    voucher_service_client::VoucherServiceClient,
};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use sqlx::Connection;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use crate::client::Global;

#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    /// Simulated nodes, each with 1–4 T4-class or 910B-class devices.
    #[arg(long, default_value_t = 2000)]
    pub nodes: u32,
    /// Seats to book in all.
    #[arg(long, default_value_t = 10_000)]
    pub seats: u32,
    /// Seats per class (one booking each).
    #[arg(long, default_value_t = 45)]
    pub class_size: u32,
    /// PostgreSQL server; a fresh database is created on it (and dropped
    /// after) unless --keep-database names one to use as is.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub database_url: String,
    /// Use the database in --database-url as given, and keep it. In
    /// process, the URL must name a database of the storm's own, not the
    /// server's `postgres`.
    #[arg(long)]
    pub keep_database: bool,
    /// Seconds to wait for every seat to run before giving up.
    #[arg(long, default_value_t = 120)]
    pub timeout_s: u64,
    /// Run 1,000/200, 10,000/2,000, 50,000/10,000 and 100,000/20,000
    /// seats/nodes, each on a fresh in-process broker and database, and
    /// print each line and how the time grew (ignores --seats/--nodes).
    #[arg(long)]
    pub ladder: bool,
    /// Install the broker's log subscriber in this process as
    /// `classgrid-broker serve` does (JSON lines on stderr, `RUST_LOG`,
    /// default info). Without it or --otlp-endpoint the bench installs no
    /// tracing at all.
    #[arg(long)]
    pub logs: bool,
    /// Export the in-process broker's spans over OTLP/gRPC to this endpoint,
    /// as `classgrid-broker --otlp-endpoint` does (implies --logs): the
    /// storm with tracing on.
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Compare the storm through this many real broker replicas behind
    /// HAProxy (2–9) with the storm on one real broker process, in
    /// alternating runs on fresh databases; prints each run and the
    /// medians.
    #[arg(long)]
    pub replicas: Option<u32>,
    /// Pairs of runs for --replicas (1–50).
    #[arg(long, default_value_t = 5)]
    pub pairs: u32,
    /// The `classgrid-broker` program for --replicas. Default: beside this one.
    #[arg(long)]
    pub broker_bin: Option<std::path::PathBuf>,
    /// The `haproxy` program for --replicas. Default: /usr/sbin/haproxy.
    #[arg(long)]
    pub haproxy: Option<std::path::PathBuf>,
}

/// `--ladder`'s steps: (seats, nodes), a district growing into a city.
const LADDER: [(u32, u32); 4] = [
    (1_000, 200),
    (10_000, 2_000),
    (50_000, 10_000),
    (100_000, 20_000),
];

/// One storm's figures.
pub(crate) struct Outcome {
    pub(crate) line: String,
    seats: u64,
    pub(crate) running_s: f64,
}

pub(crate) fn check(a: &StormArgs) -> anyhow::Result<()> {
    if !(1..=100_000).contains(&a.nodes) {
        anyhow::bail!("--nodes: must be between 1 and 100000, not {}", a.nodes);
    }
    if !(1..=1_000_000).contains(&a.seats) {
        anyhow::bail!("--seats: must be between 1 and 1000000, not {}", a.seats);
    }
    if !(1..=1000).contains(&a.class_size) {
        anyhow::bail!(
            "--class-size: must be between 1 and 1000, not {}",
            a.class_size
        );
    }
    Ok(())
}

/// In process, --keep-database fills the database the URL names with the
/// storm's tables and leaves them there. The default URL names the server's
/// maintenance database, `postgres`, which other tools expect to be empty.
fn check_kept(a: &StormArgs, in_process: bool) -> anyhow::Result<()> {
    if !(a.keep_database && in_process) {
        return Ok(());
    }
    let opts: sqlx::postgres::PgConnectOptions = a
        .database_url
        .parse()
        .map_err(|e| anyhow::anyhow!("--database-url: not a PostgreSQL URL: {e}"))?;
    match opts.get_database() {
        Some(db) if !["postgres", "template0", "template1"].contains(&db) => Ok(()),
        named => anyhow::bail!(
            "--keep-database: --database-url must name a database of the storm's own \
             (…/classgrid_storm), not {}: the storm's tables would stay in the server's \
             maintenance database",
            named.unwrap_or("none (the user's default)")
        ),
    }
}

/// Schools in the storm; every class belongs to one, and nodes sit at the
/// schools and at the district point of presence.
const SCHOOLS: u32 = 50;
/// Simulated agents per HTTP/2 connection: servers cap concurrent streams.
const NODES_PER_CONNECTION: u32 = 100;

pub async fn storm(global: &Global, a: StormArgs) -> anyhow::Result<()> {
    check(&a)?;
    let traced = a.logs || a.otlp_endpoint.is_some();
    if traced && global.grpc_url.is_some() {
        anyhow::bail!(
            "--logs, --otlp-endpoint: they trace the broker in this process; \
             with --grpc-url the broker is another process, started with its own flags"
        );
    }
    check_kept(&a, global.grpc_url.is_none())?;
    // Flushes the spans when the storm ends.
    let _telemetry = traced.then(|| {
        classgrid_common::telemetry::init_sampled(
            "classgrid-broker",
            classgrid_common::telemetry::LogFormat::Json,
            a.otlp_endpoint.as_deref(),
            None,
        )
    });
    if !a.ladder {
        let o = storm_once(global, &a).await?;
        println!("{}", o.line);
        return Ok(());
    }
    if global.grpc_url.is_some() || a.keep_database {
        // Each step needs an empty fleet: an external broker keeps the
        // nodes of the step before, so step 2 would measure 2,200 nodes.
        anyhow::bail!(
            "--ladder: starts a fresh broker and database for each step; \
             it cannot be combined with --grpc-url or --keep-database"
        );
    }
    let mut done: Vec<Outcome> = Vec::new();
    for (seats, nodes) in LADDER {
        let step = StormArgs {
            seats,
            nodes,
            ..a.clone()
        };
        let o = storm_once(global, &step).await?;
        println!("{} nodes={nodes}", o.line);
        if let Some(p) = done.last() {
            println!("{}", growth(p, &o));
        }
        done.push(o);
    }
    if let [first, .., last] = done.as_slice() {
        println!("ladder {}", growth(first, last));
    }
    Ok(())
}

/// `growth seats=1000->10000 work_x=10.0 time_x=4.40 per_seat_x=0.44`:
/// per_seat_x above 1 means the time grew faster than the work.
fn growth(from: &Outcome, to: &Outcome) -> String {
    let work = to.seats as f64 / from.seats.max(1) as f64;
    let time = to.running_s / from.running_s;
    format!(
        "growth seats={}->{} work_x={work:.1} time_x={time:.2} per_seat_x={:.2}",
        from.seats,
        to.seats,
        time / work
    )
}

async fn storm_once(global: &Global, a: &StormArgs) -> anyhow::Result<Outcome> {
    let (tx_stop, rx_stop) = tokio::sync::watch::channel(false);
    let mut fresh_db = None;
    let (grpc_url, db_url, in_process) = match &global.grpc_url {
        Some(url) => (url.clone(), a.database_url.clone(), None),
        None => {
            let db_url = if a.keep_database {
                a.database_url.clone()
            } else {
                let (url, name) = create_database(&a.database_url).await?;
                fresh_db = Some(name);
                url
            };
            let cfg = BrokerConfig::resolve(&ServeArgs {
                database_url: Some(db_url.clone()),
                grpc_addr: Some("127.0.0.1:0".parse()?),
                http_addr: Some("127.0.0.1:0".parse()?),
                log_format: Some("text".into()),
                security: classgrid_broker::auth::config::SecurityArgs {
                    insecure_dev: true,
                    rate_limit_per_s: Some(1_000_000),
                    ..Default::default()
                },
                ..Default::default()
            })?;
            let started = server::start(cfg).await?;
            let addr = started.grpc.local_addr()?;
            let app = started.app.clone();
            tokio::spawn(server::run(started, rx_stop.clone()));
            (format!("http://{addr}"), db_url, Some(app))
        }
    };
    let result = storm_on(global, a, &grpc_url, &db_url, in_process).await;
    let _ = tx_stop.send(true);
    if let Some(name) = fresh_db {
        drop_database(&a.database_url, &name).await;
    }
    result
}

pub(crate) async fn storm_on(
    global: &Global,
    a: &StormArgs,
    grpc_url: &str,
    db_url: &str,
    app: Option<classgrid_broker::app::App>,
) -> anyhow::Result<Outcome> {
    let channel = |url: String| async move {
        Endpoint::from_shared(url.clone())?
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the broker at {url}: {e}"))
    };
    let ch = channel(grpc_url.to_string()).await?;
    // In process, the bench is the district admin of its own broker.
    let bearer = Bearer(match (&global.token, &app) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(app)) => Some(
            classgrid_broker::service::admin::bootstrap_admin_token(&app.store, "storm-bench")
                .await?,
        ),
        (None, None) => None,
    });
    district(&ch, &bearer, grpc_url).await?;

    // Nodes: real agent streams, grouped on a few connections.
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>8} [{bar:40}] {pos}/{len} {msg}")?
        .progress_chars("=> ");
    let node_bar = bars.add(ProgressBar::new(a.nodes as u64).with_style(style.clone()));
    node_bar.set_prefix("nodes");
    let acked = Arc::new(AtomicU64::new(0));
    let mut registered = Vec::new();
    // Agents never share the platform's connection: real ones are other
    // machines. (Sharing it held booking answers behind agent traffic.)
    let mut agent_ch = channel(grpc_url.to_string()).await?;
    for i in 0..a.nodes {
        if i > 0 && i.is_multiple_of(NODES_PER_CONNECTION) {
            agent_ch = channel(grpc_url.to_string()).await?;
        }
        let (tx_reg, rx_reg) = tokio::sync::oneshot::channel();
        let site = if i % 5 == 0 {
            "storm-pop".to_string()
        } else {
            format!("storm-school-{}", i % SCHOOLS)
        };
        let node = SimNode {
            i,
            site,
            name: format!("sim-{i}"),
        };
        tokio::spawn(sim_node(agent_ch.clone(), node, acked.clone(), tx_reg));
        registered.push(rx_reg);
    }
    for r in registered {
        r.await
            .map_err(|_| anyhow::anyhow!("a simulated node could not register"))??;
        node_bar.inc(1);
    }
    node_bar.finish_with_message("connected");

    // The storm: every class booked at once, starting now.
    let classes = a.seats.div_ceil(a.class_size);
    let seats_bar = bars.add(ProgressBar::new(a.seats as u64).with_style(style.clone()));
    seats_bar.set_prefix("placed");
    let run_bar = bars.add(ProgressBar::new(a.seats as u64).with_style(style));
    run_bar.set_prefix("running");
    let t0 = Instant::now();
    let bar = seats_bar.clone();
    let answers = book_all(&ch, &bearer, a.seats, a.class_size, move |n| bar.inc(n)).await?;
    let mut latencies = Vec::new();
    let mut placed = 0u64;
    let mut lessons = Vec::new();
    let mut refusals = Vec::new();
    for (lat, r) in answers {
        latencies.push(lat);
        match r {
            Ok(l) => {
                placed += l.seats.len() as u64;
                lessons.push(lesson_id(&l)?);
            }
            Err(e) => refusals.push(e),
        }
    }
    let placed_s = t0.elapsed().as_secs_f64();
    seats_bar.finish();
    if !refusals.is_empty() {
        // On stderr, not the progress display: that is hidden when the
        // output is redirected, and a refusal is what a log must keep.
        let msg = format!(
            "{} of {classes} classes were not admitted; first: {}",
            refusals.len(),
            refusals[0]
        );
        bars.suspend(|| eprintln!("{msg}"));
        if placed == 0 {
            anyhow::bail!("the storm placed no seat: {msg}");
        }
    }

    // Running: the broker has recorded every seat's RUNNING from its agent.
    // Counting the seats in PostgreSQL every few milliseconds would load the
    // database under test, so wait first for the agents to have sent every
    // RUNNING (a counter here), then for the broker to have recorded them.
    let mut db = sqlx::PgConnection::connect(db_url).await?;
    let deadline = t0 + Duration::from_secs(a.timeout_s);
    while acked.load(Ordering::Relaxed) < placed && Instant::now() < deadline {
        run_bar.set_position(acked.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let running_s = loop {
        // This storm's lessons only: a kept database has earlier storms'.
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM seats WHERE state = 'running' AND lesson_id = ANY($1)",
        )
        .bind(&lessons)
        .fetch_one(&mut db)
        .await?;
        run_bar.set_position(n as u64);
        if n as u64 >= placed {
            break t0.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "only {n} of {placed} seats running after {} s (agents acknowledged {})",
                a.timeout_s,
                acked.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    run_bar.finish();
    Ok(Outcome {
        line: format!(
            "storm seats={placed} placed_s={placed_s:.3} running_s={running_s:.3} book_p50_ms={:.1} book_p99_ms={:.1}",
            percentile_ms(&mut latencies, 0.50),
            percentile_ms(&mut latencies, 0.99)
        ),
        seats: placed,
        running_s,
    })
}

/// The bench's platform credential: a bearer token on every call (none
/// for an insecure-dev broker given without --token).
#[derive(Clone)]
pub(crate) struct Bearer(pub(crate) Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            if let Ok(v) = format!("Bearer {t}").parse() {
                r.metadata_mut().insert("authorization", v);
            }
        }
        Ok(r)
    }
}

/// The storm's district on the broker at `ch`: its point of presence and
/// schools, each school with a voucher that pays for every storm class.
pub(crate) async fn district(ch: &Channel, bearer: &Bearer, grpc_url: &str) -> anyhow::Result<()> {
    // Sites: one district point of presence and the schools.
    let mut fleet = FleetServiceClient::with_interceptor(ch.clone(), bearer.clone());
    let site = |name: String, kind: &str| pb::CreateSiteRequest {
        name,
        kind: kind.into(),
        district: "storm".into(),
    };
    // A kept database or an external broker may have the sites already.
    let create = |r: Result<tonic::Response<pb::Site>, tonic::Status>, name: &str| match r {
        Ok(_) => Ok(()),
        Err(e) if e.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow::anyhow!(
            "the broker at {grpc_url} would not create site {name}: {}",
            e.message()
        )),
    };
    create(
        fleet
            .create_site(site("storm-pop".into(), "district_pop"))
            .await,
        "storm-pop",
    )?;
    // Through the API, not the broker's internals, so an external broker
    // gets the same budgets an in-process one does.
    let mut vouchers = VoucherServiceClient::with_interceptor(ch.clone(), bearer.clone());
    let run = uuid::Uuid::new_v4().simple().to_string();
    let until = chrono::Utc::now() + chrono::Duration::days(1);
    for s in 0..SCHOOLS {
        let name = format!("storm-school-{s}");
        create(fleet.create_site(site(name.clone(), "school")).await, &name)?;
        // The storm measures placement, not budgets: every school can pay.
        vouchers
            .issue(pb::IssueVoucherRequest {
                request_id: format!("storm-{run}-{s}"),
                school_site: name.clone(),
                programme: "storm".into(),
                issued_by: "bench".into(),
                accelerator_hours: 1_000_000.0,
                valid_until: Some(prost_types::Timestamp {
                    seconds: until.timestamp(),
                    nanos: 0,
                }),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "the broker at {grpc_url} would not issue a voucher for {name} ({:?}: {}); \
                     every storm class is paid from its school's voucher, so the storm needs \
                     a --token of a district admin who may issue them",
                    e.code(),
                    e.message()
                )
            })?;
    }
    Ok(())
}

/// Books `seats` seats in classes of `class_size`, every class at once and
/// starting now, through `LessonService.Book`; each answer with its
/// latency. `placed(n)` is told each admitted class's seats as it lands.
pub(crate) async fn book_all(
    ch: &Channel,
    bearer: &Bearer,
    seats: u32,
    class_size: u32,
    placed: impl Fn(u64) + Clone + Send + 'static,
) -> anyhow::Result<Vec<(Duration, Result<pb::Lesson, String>)>> {
    let classes = seats.div_ceil(class_size);
    let now = chrono::Utc::now();
    let start = prost_types::Timestamp {
        seconds: now.timestamp(),
        nanos: now.timestamp_subsec_nanos() as i32,
    };
    let mut tasks = Vec::new();
    for c in 0..classes {
        let n = class_size.min(seats - c * class_size);
        let mut client = LessonServiceClient::with_interceptor(ch.clone(), bearer.clone());
        let req = class(c, n, start.clone());
        let placed = placed.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = client.book(req).await;
            if r.is_ok() {
                placed(n as u64);
            }
            (
                t.elapsed(),
                r.map(|l| l.into_inner())
                    .map_err(|e| format!("{:?}: {}", e.code(), e.message())),
            )
        }));
    }
    let mut answers = Vec::with_capacity(tasks.len());
    for t in tasks {
        answers.push(t.await?);
    }
    Ok(answers)
}

/// An admitted lesson's id.
pub(crate) fn lesson_id(l: &pb::Lesson) -> anyhow::Result<uuid::Uuid> {
    uuid::Uuid::parse_str(&l.id)
        .map_err(|e| anyhow::anyhow!("the broker answered a lesson id {:?}: {e}", l.id))
}

/// The `p` quantile of `latencies` in ms (sorts them; 0 for none).
pub(crate) fn percentile_ms(latencies: &mut [Duration], p: f64) -> f64 {
    if latencies.is_empty() {
        return 0.0;
    }
    latencies.sort();
    let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
    latencies[i].as_secs_f64() * 1000.0
}

/// Class `c`: a quarter of a T4 (or the same share of a 910B) per student.
fn class(c: u32, seats: u32, start: prost_types::Timestamp) -> pb::BookLessonRequest {
    pb::BookLessonRequest {
        school_site: format!("storm-school-{}", c % SCHOOLS),
        title: format!("storm class {c}"),
        start: Some(start),
        duration_seconds: 2400,
        seats: seats as i32,
        seat: Some(pb::SeatSpec {
            cpu_millis: 500,
            memory_mib: 2048,
            gpu: Some(pb::GpuSpec {
                memory_mib: 4096,
                compute_percent: 25,
                count: 1,
                ..Default::default()
            }),
            runtime: String::new(),
        }),
        workload: Some(pb::Workload {
            command: "jupyter".into(),
            args: vec!["lab".into(), "--port=$(PORT)".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Node `i`'s devices: 1–4 of one kind, alternating T4 and 910B.
pub(crate) fn devices(i: u32) -> Vec<pb::DeviceInfo> {
    let (vendor, model, mib) = if i % 2 == 0 {
        ("nvidia", "Tesla T4", 16_384)
    } else {
        ("ascend", "Ascend 910B", 65_536)
    };
    (0..(i % 4 + 1) as i32)
        .map(|index| pb::DeviceInfo {
            index,
            vendor: vendor.into(),
            model: model.into(),
            uuid: format!("storm-{i}-{index}"),
            memory_mib: mib,
            healthy: true,
            max_slices: 4,
            isolation: pb::Isolation::Soft as i32,
            ..Default::default()
        })
        .collect()
}

/// Seats of the storm's class spec that node `i`'s devices hold: four
/// quarter slices per device.
pub(crate) fn seats_of(i: u32) -> u32 {
    4 * (i % 4 + 1)
}

/// Who a simulated node is: its number (which picks its devices) and the
/// site and name it registers as (a joined node's must match its
/// certificate).
pub(crate) struct SimNode {
    pub(crate) i: u32,
    pub(crate) site: String,
    pub(crate) name: String,
}

/// One simulated node: registers, heartbeats at the interval the broker
/// gives it, and answers every Assign with RUNNING and an endpoint, as a
/// real agent does once the seat is up.
pub(crate) async fn sim_node(
    ch: Channel,
    node: SimNode,
    acked: Arc<AtomicU64>,
    registered: tokio::sync::oneshot::Sender<anyhow::Result<()>>,
) {
    let (tx, rx) = mpsc::channel(256);
    let SimNode { i, site, name } = node;
    let reg = pb::AgentMessage {
        msg: Some(agent_message::Msg::Register(pb::Register {
            site,
            name: name.clone(),
            agent_version: "storm".into(),
            capacity: Some(pb::NodeCapacity {
                cpu_millis: 64_000,
                memory_mib: 256 * 1024,
                devices: devices(i),
            }),
            runtimes: vec!["process".into()],
            tier: "edge".into(),
            ..Default::default()
        })),
    };
    let _ = tx.send(reg).await;
    let mut client = AgentServiceClient::new(ch);
    let mut inbound = match client
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => {
            let _ = registered.send(Err(anyhow::anyhow!("node {name}: {}", e.message())));
            return;
        }
    };
    let mut registered = Some(registered);
    let mut beat = tokio::time::interval(Duration::from_secs(2));
    let mut seq = 0;
    loop {
        tokio::select! {
            m = inbound.message() => {
                let Ok(Some(m)) = m else { return };
                match m.msg {
                    Some(broker_message::Msg::Registered(r)) => {
                        beat = classgrid_agent::connect::heartbeat_timer(r.heartbeat_interval_ms, seq > 0);
                        if let Some(r) = registered.take() {
                            let _ = r.send(Ok(()));
                        }
                    }
                    Some(broker_message::Msg::Assign(a)) => {
                        let st = pb::AssignmentStatus {
                            assignment_id: a.assignment_id,
                            generation: a.generation,
                            state: pb::AssignmentState::Running as i32,
                            endpoint: format!("http://10.{}.{}.{}:8888", i / 65536, (i / 256) % 256, i % 256),
                            ..Default::default()
                        };
                        let msg = pb::AgentMessage { msg: Some(agent_message::Msg::Status(st)) };
                        if tx.send(msg).await.is_err() {
                            return;
                        }
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            _ = beat.tick() => {
                seq += 1;
                let hb = pb::Heartbeat { seq, sent_unix_ms: chrono::Utc::now().timestamp_millis(), capacity: None, warnings: None, commands: None };
                if tx.send(pb::AgentMessage { msg: Some(agent_message::Msg::Heartbeat(hb)) }).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        storm: StormArgs,
    }

    fn args(flags: &[&str]) -> StormArgs {
        Cli::try_parse_from(std::iter::once("storm").chain(flags.iter().copied()))
            .expect("valid flags")
            .storm
    }

    #[test]
    fn a_kept_database_must_be_the_storms_own() {
        let err = check_kept(&args(&["--keep-database"]), true).unwrap_err();
        assert!(err.to_string().starts_with("--keep-database:"), "{err}");
        assert!(err.to_string().contains("not postgres"), "{err}");
        let own = args(&[
            "--keep-database",
            "--database-url",
            "postgres://postgres@127.0.0.1:5432/classgrid_storm",
        ]);
        check_kept(&own, true).unwrap();
        let bare = args(&[
            "--keep-database",
            "--database-url",
            "postgres://postgres@127.0.0.1:5432",
        ]);
        assert!(
            check_kept(&bare, true)
                .unwrap_err()
                .to_string()
                .contains("none")
        );
        // Against an external broker the URL is that broker's database.
        check_kept(&args(&["--keep-database"]), false).unwrap();
        // Without --keep-database a fresh database is made and dropped.
        check_kept(&args(&[]), true).unwrap();
    }
}
