//! `classgrid bench failover`: how long a region is without a leader when
//! its leader dies, and what a stream of bookings loses meanwhile.
//!
//! Everything is real and on this machine: `--replicas` processes of
//! `classgrid-broker serve` on a fresh database of the local PostgreSQL,
//! HAProxy in front of them (TCP mode, `/readyz` checks, as
//! deploy/haproxy/haproxy.cfg), real `classgrid-agent` processes and
//! platforms booking through HAProxy with the platform's rule (the same
//! Idempotency-Key until answered). Each round books lessons due a few
//! seconds later, SIGKILLs the leader mid-stream, times until another
//! replica's `/readyz` answers 200, and brings the killed one back as a
//! standby. The database is then checked by SQL. Its last line is
//! `failover replicas=N rounds=R … acknowledged=A lost=L double_booked=D
//! failover_ms_p50=… failover_ms_max=… late_starts=… late_start_ms_p50=…
//! late_start_ms_max=… not_started=…`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use classgrid_proto::v1::{
    self as pb, fleet_service_client::FleetServiceClient,
    lesson_service_client::LessonServiceClient,
};
use sqlx::Connection;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::Mutex,
};
use tonic::transport::{Channel, Endpoint};

use crate::client::Auth;

#[derive(Debug, Clone, clap::Args)]
pub struct FailoverArgs {
    /// Broker replicas on the one database (2–9).
    #[arg(long, default_value_t = 3)]
    pub replicas: u32,
    /// Leader kills (1–100).
    #[arg(long, default_value_t = 10)]
    pub rounds: u32,
    /// The replicas' `--lease-s`: a standby takes over once the dead
    /// leader's lease has run out (1–60).
    #[arg(long, default_value_t = 2)]
    pub lease_s: u64,
    /// Real agents (`classgrid-agent`) serving the lessons (1–20).
    #[arg(long, default_value_t = 2)]
    pub agents: u32,
    /// Platforms booking at once, each one booking after another (1–64).
    #[arg(long, default_value_t = 4)]
    pub platforms: u32,
    /// Lessons booked each round to start a few seconds later, whose start
    /// is timed (1–100).
    #[arg(long, default_value_t = 5)]
    pub due_per_round: u32,
    /// The `classgrid-broker` program. Default: beside this one.
    #[arg(long)]
    pub broker_bin: Option<PathBuf>,
    /// The `classgrid-agent` program. Default: beside this one.
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// The `haproxy` program. Default: /usr/sbin/haproxy or /usr/bin/haproxy.
    #[arg(long)]
    pub haproxy: Option<PathBuf>,
    /// PostgreSQL server; a fresh database is created on it, and dropped after.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub database_url: String,
}

const SITE: &str = "failover-school";
/// A lesson due this long after it was booked: it is planned before the
/// leader dies and its bell rings around the failover.
const DUE_IN_S: i64 = 12;
/// Bookings acknowledged between two events of a round (before the kill,
/// after the failover), so every kill lands in a stream.
const ACKS_BETWEEN: u64 = 15;

fn check(a: &FailoverArgs) -> anyhow::Result<()> {
    let range = |flag: &str, v: u64, lo: u64, hi: u64| {
        if !(lo..=hi).contains(&v) {
            anyhow::bail!("--{flag}: must be between {lo} and {hi}, not {v}");
        }
        Ok(())
    };
    range("replicas", a.replicas.into(), 2, 9)?;
    range("rounds", a.rounds.into(), 1, 100)?;
    range("lease-s", a.lease_s, 1, 60)?;
    range("agents", a.agents.into(), 1, 20)?;
    range("platforms", a.platforms.into(), 1, 64)?;
    range("due-per-round", a.due_per_round.into(), 1, 100)
}

pub async fn run(a: FailoverArgs) -> anyhow::Result<()> {
    check(&a)?;
    let progs = Programs::find(&a)?;
    let (db_url, db_name) = crate::bench_db::create_database(&a.database_url).await?;
    let dir = std::env::temp_dir().join(format!("classgrid-bench-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut region = Region {
        dir: dir.clone(),
        replicas: Vec::new(),
        lb: None,
        agents: Vec::new(),
    };
    let result = bench(&a, &progs, &db_url, &mut region).await;
    region.stop();
    crate::bench_db::drop_database(&a.database_url, &db_name).await;
    match result {
        Ok(line) => {
            let _ = std::fs::remove_dir_all(&dir);
            println!("{line}");
            Ok(())
        }
        Err(e) => Err(e.context(format!("the processes' logs are in {}", dir.display()))),
    }
}

/// The programs the bench runs.
pub(crate) struct Programs {
    pub(crate) broker: PathBuf,
    agent: PathBuf,
    pub(crate) haproxy: PathBuf,
}

impl Programs {
    fn find(a: &FailoverArgs) -> anyhow::Result<Self> {
        Self::find_given(&a.broker_bin, &a.agent_bin, &a.haproxy)
    }

    /// The programs named, or found beside this one and in Debian's places.
    pub(crate) fn find_given(
        broker_bin: &Option<PathBuf>,
        agent_bin: &Option<PathBuf>,
        haproxy: &Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let here = std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let beside = |given: &Option<PathBuf>, flag: &str, name: &str| {
            let p = given.clone().unwrap_or_else(|| here.join(name));
            if !p.is_file() {
                anyhow::bail!(
                    "--{flag}: {} is not a program (build it with `cargo build --release --bins`, or name it)",
                    p.display()
                );
            }
            Ok(p)
        };
        let haproxy = match haproxy {
            Some(p) if p.is_file() => p.clone(),
            Some(p) => anyhow::bail!("--haproxy: {} is not a program", p.display()),
            None => ["/usr/sbin/haproxy", "/usr/bin/haproxy"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--haproxy: HAProxy is not installed (apt-get install haproxy), or name it"
                    )
                })?,
        };
        Ok(Self {
            broker: beside(broker_bin, "broker-bin", "classgrid-broker")?,
            agent: beside(agent_bin, "agent-bin", "classgrid-agent")?,
            haproxy,
        })
    }
}

/// One broker replica: its process, ports and log.
pub(crate) struct Replica {
    pub(crate) name: String,
    pub(crate) child: Option<Child>,
    pub(crate) grpc_port: u16,
    pub(crate) http_port: u16,
    pub(crate) starts: u32,
}

struct Region {
    dir: PathBuf,
    replicas: Vec<Replica>,
    lb: Option<(Child, u16, u16)>,
    agents: Vec<(Child, PathBuf)>,
}

impl Region {
    /// Kills every process the bench started, and the agents' seats, which
    /// outlive their agent by design.
    fn stop(&mut self) {
        for (child, state_dir) in &mut self.agents {
            kill(child);
            for pid in seat_pids(state_dir) {
                // SAFETY: kill has no memory preconditions; a seat is the
                // leader of its own process group.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        }
        if let Some((child, ..)) = &mut self.lb {
            kill(child);
        }
        for r in &mut self.replicas {
            if let Some(c) = &mut r.child {
                kill(c);
            }
        }
    }
}

pub(crate) fn kill(c: &mut Child) {
    let _ = c.kill();
    let _ = c.wait();
}

/// Seat process ids from an agent's state file.
fn seat_pids(state_dir: &Path) -> Vec<i32> {
    let Ok(text) = std::fs::read_to_string(state_dir.join("assignments.json")) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["pid"].as_i64())
        .map(|p| p as i32)
        .collect()
}

/// A port free now, below Linux's ephemeral range (32768 and up), where the
/// kernel could hand it to an outgoing connection before a restarted
/// replica binds it again.
pub(crate) fn free_port() -> u16 {
    loop {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub(crate) fn spawn(program: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    Command::new(program)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", program.display()))
}

/// The status code of `GET path` on 127.0.0.1:`port` (HTTP/1.0), or None
/// when nothing answers.
pub(crate) async fn http_status(port: u16, path: &str) -> Option<u16> {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .ok()?
        .ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Polls `f` every `every` until it is true; false after `limit`.
pub(crate) async fn until<F, Fut>(limit: Duration, every: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    loop {
        if f().await {
            return true;
        }
        if t0.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

impl Replica {
    /// A replica not started yet, on two free ports.
    pub(crate) fn new(name: String) -> Self {
        Self {
            name,
            child: None,
            grpc_port: free_port(),
            http_port: free_port(),
            starts: 0,
        }
    }

    pub(crate) fn start(
        &mut self,
        progs: &Programs,
        db_url: &str,
        lease_s: u64,
        dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<()> {
        let mut args: Vec<String> = [
            "serve",
            "--database-url",
            db_url,
            "--grpc-addr",
            &format!("127.0.0.1:{}", self.grpc_port),
            "--http-addr",
            &format!("127.0.0.1:{}", self.http_port),
            "--lease-s",
            &lease_s.to_string(),
            "--replica-name",
            &self.name,
            "--log-format",
            "text",
            // Loopback only; the bench measures failover, not TLS.
            "--insecure-dev",
        ]
        .map(String::from)
        .to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        self.starts += 1;
        let log = dir.join(format!("{}-{}.log", self.name, self.starts));
        self.child = Some(spawn(&progs.broker, &args, &log)?);
        Ok(())
    }

    /// Waits until this replica answers `path` with 200 (`/readyz`: it
    /// leads; `/healthz`: it serves, as a standby or leader).
    pub(crate) async fn wait(&mut self, path: &str, dir: &Path) -> anyhow::Result<()> {
        let port = self.http_port;
        if until(
            Duration::from_secs(60),
            Duration::from_millis(50),
            || async { http_status(port, path).await == Some(200) },
        )
        .await
        {
            return Ok(());
        }
        let log = dir.join(format!("{}-{}.log", self.name, self.starts));
        anyhow::bail!(
            "replica {} never answered {path} with 200 (log {})",
            self.name,
            log.display()
        )
    }
}

/// The index of the replica that leads, looking every few milliseconds for
/// up to `limit`.
async fn leader(replicas: &[Replica], limit: Duration) -> Option<usize> {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        for (i, r) in replicas.iter().enumerate() {
            if r.child.is_some() && http_status(r.http_port, "/readyz").await == Some(200) {
                return Some(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// HAProxy's configuration: TCP mode and `/readyz` checks, as
/// deploy/haproxy/haproxy.cfg, with checks every 250 ms so the bench's
/// failover is the lease's, not the checks'.
pub(crate) fn haproxy_config(replicas: &[Replica], grpc: u16, http: u16) -> String {
    let servers = |port: fn(&Replica) -> u16| -> String {
        replicas
            .iter()
            .map(|r| {
                format!(
                    "    server {} 127.0.0.1:{} check port {}\n",
                    r.name,
                    port(r),
                    r.http_port
                )
            })
            .collect()
    };
    let backend = |name: &str, port: fn(&Replica) -> u16| {
        format!(
            "backend {name}\n    option httpchk GET /readyz\n    http-check expect status 200\n    \
             default-server inter 250ms fall 2 rise 1 on-marked-down shutdown-sessions\n{}",
            servers(port)
        )
    };
    format!(
        "global\n    maxconn 4096\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 1h\n    timeout server 1h\n    \
         timeout check 1s\n    option redispatch\n    retries 3\n\
         frontend classgrid_grpc\n    bind 127.0.0.1:{grpc}\n    default_backend broker_grpc\n\
         frontend classgrid_http\n    bind 127.0.0.1:{http}\n    default_backend broker_http\n{}{}",
        backend("broker_grpc", |r| r.grpc_port),
        backend("broker_http", |r| r.http_port),
    )
}

/// A one-seat lesson of next to nothing (`sleep`), so that the agents of a
/// 2-core machine hold every lesson of the stream.
fn lesson(request_id: String, start: chrono::DateTime<chrono::Utc>) -> pb::BookLessonRequest {
    pb::BookLessonRequest {
        request_id,
        school_site: SITE.into(),
        title: "failover bench".into(),
        start: Some(prost_types::Timestamp {
            seconds: start.timestamp(),
            nanos: 0,
        }),
        duration_seconds: 600,
        seats: 1,
        seat: Some(pb::SeatSpec {
            cpu_millis: 2,
            memory_mib: 8,
            ..Default::default()
        }),
        workload: Some(pb::Workload {
            command: "sleep".into(),
            args: vec!["3600".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

type Lessons = LessonServiceClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

/// Books `req` with the platform's rule: the same request id until an answer
/// comes. Unavailable, a connection broken mid-call and a rate limit are
/// retried; any other error is the bench's failure.
async fn book(client: &mut Lessons, req: &pb::BookLessonRequest) -> anyhow::Result<uuid::Uuid> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match client.book(req.clone()).await {
            Ok(l) => return Ok(l.into_inner().id.parse()?),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                        | tonic::Code::ResourceExhausted
                ) && Instant::now() < deadline => {}
            Err(s) => anyhow::bail!(
                "booking {} answered {:?}: {}",
                req.request_id,
                s.code(),
                s.message()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An acknowledged booking.
struct Acked {
    request_id: String,
    lesson_id: uuid::Uuid,
}

struct Stream {
    acked: Arc<Mutex<Vec<Acked>>>,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Stream {
    /// Platforms booking lessons for the day after tomorrow, spread over
    /// its hours, each one booking after another until stopped.
    fn start(platforms: u32, client: &Lessons) -> Self {
        let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
        let count: Arc<AtomicU64> = Arc::default();
        let stop: Arc<AtomicBool> = Arc::default();
        let day = chrono::Utc::now() + chrono::Duration::days(2);
        let tasks = (0..platforms)
            .map(|p| {
                let (acked, count, stop, mut client) =
                    (acked.clone(), count.clone(), stop.clone(), client.clone());
                tokio::spawn(async move {
                    let mut i = 0i64;
                    while !stop.load(Ordering::Relaxed) {
                        let rid = format!("failover-{p}-{i}");
                        let start = day + chrono::Duration::hours(i % 40);
                        let id = book(&mut client, &lesson(rid.clone(), start)).await?;
                        acked.lock().await.push(Acked {
                            request_id: rid,
                            lesson_id: id,
                        });
                        count.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        Self {
            acked,
            count,
            stop,
            tasks,
        }
    }

    async fn wait_acks(&self, more: u64) -> anyhow::Result<()> {
        let target = self.count.load(Ordering::Relaxed) + more;
        let count = self.count.clone();
        if !until(Duration::from_secs(120), Duration::from_millis(20), || {
            let n = count.load(Ordering::Relaxed);
            async move { n >= target }
        })
        .await
        {
            anyhow::bail!(
                "the booking stream stalled at {} acknowledged",
                self.count.load(Ordering::Relaxed)
            );
        }
        Ok(())
    }

    async fn finish(self) -> anyhow::Result<Vec<Acked>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await??;
        }
        Ok(std::mem::take(&mut *self.acked.lock().await))
    }
}

async fn bench(
    a: &FailoverArgs,
    progs: &Programs,
    db_url: &str,
    region: &mut Region,
) -> anyhow::Result<String> {
    let dir = region.dir.clone();
    // The first replica leads (it migrates the fresh database); the others
    // wait as standbys.
    for i in 0..a.replicas {
        let mut r = Replica::new(format!("r{i}"));
        r.start(progs, db_url, a.lease_s, &dir, &[])?;
        r.wait(if i == 0 { "/readyz" } else { "/healthz" }, &dir)
            .await?;
        region.replicas.push(r);
    }
    let (lb_grpc, lb_http) = (free_port(), free_port());
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, haproxy_config(&region.replicas, lb_grpc, lb_http))?;
    let lb = spawn(
        &progs.haproxy,
        &["-f".into(), cfg.display().to_string(), "-db".into()],
        &dir.join("haproxy.log"),
    )?;
    region.lb = Some((lb, lb_grpc, lb_http));
    if !until(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { http_status(lb_http, "/readyz").await == Some(200) },
    )
    .await
    {
        anyhow::bail!("HAProxy never reached the leader (haproxy.log)");
    }

    // The bench is the district admin, with a token minted as an operator
    // does on the server.
    let out = Command::new(&progs.broker)
        .args(["admin-token", "--database-url", db_url, "--insecure-dev"])
        .args(["--log-format", "text"])
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "classgrid-broker admin-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let lb_url = format!("http://127.0.0.1:{lb_grpc}");
    let ch = Endpoint::from_shared(lb_url.clone())?
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    let auth = Auth(Some(format!("Bearer {token}").parse()?));
    let mut fleet = FleetServiceClient::with_interceptor(ch.clone(), auth.clone());
    fleet
        .create_site(pb::CreateSiteRequest {
            name: SITE.into(),
            kind: "school".into(),
            district: "bench".into(),
        })
        .await?;

    for i in 0..a.agents {
        let state_dir = dir.join(format!("agent-{i}"));
        let args: Vec<String> = [
            "run",
            "--broker",
            &lb_url,
            "--site",
            SITE,
            "--name",
            &format!("node-{i}"),
            "--state-dir",
            &state_dir.display().to_string(),
            "--probe-addr",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ]
        .map(String::from)
        .to_vec();
        let child = spawn(&progs.agent, &args, &dir.join(format!("agent-{i}.log")))?;
        region.agents.push((child, state_dir));
    }
    let connected = || {
        let mut fleet = fleet.clone();
        async move {
            fleet
                .list_nodes(pb::ListNodesRequest { site: SITE.into() })
                .await
                .map(|r| {
                    r.into_inner()
                        .nodes
                        .iter()
                        .filter(|n| n.state == "connected")
                        .count()
                })
                .unwrap_or(0)
        }
    };
    let agents = a.agents as usize;
    if !until(
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async { connected().await == agents },
    )
    .await
    {
        anyhow::bail!("the agents never all connected (agent-*.log)");
    }

    let client = LessonServiceClient::with_interceptor(ch, auth);
    let stream = Stream::start(a.platforms, &client);
    let mut due: Vec<Acked> = Vec::new();
    let mut failover_ms = Vec::new();
    for round in 0..a.rounds {
        // Lessons whose bell rings around the failover: they must start.
        let mut c = client.clone();
        for i in 0..a.due_per_round {
            let rid = format!("failover-due-{round}-{i}");
            let start = chrono::Utc::now() + chrono::Duration::seconds(DUE_IN_S);
            let id = book(&mut c, &lesson(rid.clone(), start)).await?;
            due.push(Acked {
                request_id: rid,
                lesson_id: id,
            });
        }
        stream.wait_acks(ACKS_BETWEEN).await?;
        let old = leader(&region.replicas, Duration::from_secs(10))
            .await
            .ok_or_else(|| anyhow::anyhow!("round {round}: no replica leads"))?;
        if let Some(c) = &mut region.replicas[old].child {
            kill(c);
        }
        region.replicas[old].child = None;
        let killed = Instant::now();
        let new = leader(&region.replicas, Duration::from_secs(30))
            .await
            .ok_or_else(|| anyhow::anyhow!("round {round}: no standby took over within 30 s"))?;
        failover_ms.push(killed.elapsed().as_millis() as u64);
        eprintln!(
            "failover: round {round}: {} leads {} ms after {} was killed",
            region.replicas[new].name,
            killed.elapsed().as_millis(),
            region.replicas[old].name
        );
        // Bookings go on through HAProxy to the new leader.
        stream.wait_acks(ACKS_BETWEEN).await?;
        // The dead one comes back on its ports, as a standby.
        let r = &mut region.replicas[old];
        r.start(progs, db_url, a.lease_s, &dir, &[])?;
        r.wait("/healthz", &dir).await?;
    }
    let acked = stream.finish().await?;

    let mut db = sqlx::PgConnection::connect(db_url).await?;
    let due_ids: Vec<uuid::Uuid> = due.iter().map(|d| d.lesson_id).collect();
    // Every lesson due around a failover goes live; the ones that do not
    // within two minutes of the last bell are counted.
    let mut live = 0i64;
    let last_bell = Instant::now() + Duration::from_secs(DUE_IN_S as u64);
    while Instant::now() < last_bell + Duration::from_secs(120) {
        live = sqlx::query_scalar(
            "SELECT count(*) FROM lessons WHERE id = ANY($1) AND state = 'live'",
        )
        .bind(&due_ids)
        .fetch_one(&mut db)
        .await?;
        if live == due_ids.len() as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let not_started = due_ids.len() as i64 - live;

    let mut all = acked;
    all.extend(due);
    let lost = lost(&mut db, &all).await?;
    let double_booked = over_capacity(&mut db).await?;
    // How late each due lesson started: its first assignment against its
    // bell (0 when planned ahead of it).
    let mut late_ms: Vec<i64> = sqlx::query_scalar(
        "SELECT GREATEST(0, extract(epoch FROM min(a.created_at) - l.start_at) * 1000)::bigint
           FROM lessons l JOIN seats s ON s.lesson_id = l.id JOIN assignments a ON a.seat_id = s.id
          WHERE l.id = ANY($1) GROUP BY l.id, l.start_at",
    )
    .bind(&due_ids)
    .fetch_all(&mut db)
    .await?;
    late_ms.sort();
    failover_ms.sort();
    let late_starts = late_ms.iter().filter(|&&ms| ms > LATE_MS).count();
    let p50 = |v: &[u64]| v.get(v.len() / 2).copied().unwrap_or(0);
    let late: Vec<u64> = late_ms.iter().map(|&m| m as u64).collect();
    Ok(format!(
        "failover replicas={} rounds={} lease_s={} acknowledged={} lost={lost} double_booked={double_booked} \
         failover_ms_p50={} failover_ms_max={} late_starts={late_starts} late_start_ms_p50={} late_start_ms_max={} \
         not_started={not_started}",
        a.replicas,
        a.rounds,
        a.lease_s,
        all.len(),
        p50(&failover_ms),
        failover_ms.last().copied().unwrap_or(0),
        p50(&late),
        late.last().copied().unwrap_or(0),
    ))
}

/// A lesson whose first seat was assigned more than this after its bell
/// started late.
const LATE_MS: i64 = 1000;

/// Acknowledged bookings missing from the database, short of their seat,
/// or whose request id made more than one lesson.
async fn lost(db: &mut sqlx::PgConnection, acked: &[Acked]) -> anyhow::Result<usize> {
    let rids: Vec<&str> = acked.iter().map(|a| a.request_id.as_str()).collect();
    let ids: Vec<uuid::Uuid> = acked.iter().map(|a| a.lesson_id).collect();
    let whole: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::text[], $2::uuid[]) AS k(rid, id)
          WHERE (SELECT count(*) FROM lessons l WHERE l.request_id = k.rid) = 1
            AND (SELECT count(*) FROM seats s WHERE s.lesson_id = k.id) = 1
            AND EXISTS (SELECT 1 FROM lessons l WHERE l.id = k.id AND l.request_id = k.rid)",
    )
    .bind(&rids)
    .bind(&ids)
    .fetch_one(db)
    .await?;
    Ok(acked.len() - whole as usize)
}

/// Nodes and devices whose reservations exceed their capacity at some
/// instant: the load rises only where a reservation begins, so the
/// beginnings are the instants to check.
async fn over_capacity(db: &mut sqlx::PgConnection) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "WITH node_load AS (
             SELECT n.id FROM nodes n
               JOIN (SELECT DISTINCT node_id, lower(during) AS t FROM reservations) b ON b.node_id = n.id
               JOIN reservations r ON r.node_id = n.id AND r.during @> b.t
              GROUP BY n.id, b.t, n.cpu_millis, n.memory_mib
             HAVING sum(r.cpu_millis) > n.cpu_millis OR sum(r.memory_mib) > n.memory_mib),
         device_load AS (
             SELECT d.node_id FROM devices d
               JOIN (SELECT DISTINCT node_id, device_idx, lower(during) AS t FROM reservations
                      WHERE device_idx IS NOT NULL) b ON b.node_id = d.node_id AND b.device_idx = d.idx
               JOIN reservations r ON r.node_id = d.node_id AND r.device_idx = d.idx AND r.during @> b.t
              GROUP BY d.node_id, d.idx, b.t, d.memory_mib, d.max_slices
             HAVING sum(r.gpu_memory_mib) > d.memory_mib OR sum(r.gpu_compute_pct) > 100
                 OR count(*) > d.max_slices)
         SELECT (SELECT count(*) FROM node_load) + (SELECT count(*) FROM device_load)",
    )
    .fetch_one(db)
    .await?)
}
