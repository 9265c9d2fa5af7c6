//! Harness for end-to-end tests: a fresh PostgreSQL database per test, and
//! the real `classgrid-broker`, `classgrid-agent` and `classgrid-edge`
//! binaries as child processes on loopback.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use classgrid_proto::v1::{
    self as pb, fleet_service_client::FleetServiceClient,
    lesson_service_client::LessonServiceClient,
};
use tonic::transport::Channel;

pub mod faults;
pub mod haproxy;
pub mod invariants;
pub mod pg;

/// The PostgreSQL server tests use; `.ci/run` and `scripts/test.sh` make sure it runs.
pub fn admin_url() -> String {
    std::env::var("CLASSGRID_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test, dropped afterwards.
pub struct TestDb {
    pub name: String,
    pub url: String,
    /// The server's maintenance database, where it is created and dropped.
    admin: String,
}

impl TestDb {
    pub async fn new() -> anyhow::Result<Self> {
        Self::on(&admin_url()).await
    }

    /// A database of its own on the server that `admin` (a URL of its
    /// maintenance database) names.
    pub async fn on(admin: &str) -> anyhow::Result<Self> {
        let name = format!("cg_e2e_{}", uuid::Uuid::new_v4().simple());
        let admin = admin.to_string();
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
            .await
            .map_err(|e| {
                anyhow::anyhow!("PostgreSQL at {admin} is needed for end-to-end tests: {e}")
            })?;
        sqlx::Executor::execute(
            &mut conn,
            sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
        )
        .await?;
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .unwrap_or(admin.clone());
        Ok(Self {
            url: format!("{base}/{name}"),
            name,
            admin,
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, admin) = (self.name.clone(), self.admin.clone());
        // Best effort, outside any runtime that may be shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .ok()?;
                sqlx::Executor::execute(
                    &mut conn,
                    sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")),
                )
                .await
                .ok()
            })
        })
        .join();
    }
}

/// target/debug (or release), where the workspace binaries are.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        p.display()
    );
    p
}

/// A port free now, from below Linux's ephemeral range (32768+): a port
/// the kernel hands out there can be taken by any outgoing connection
/// (PostgreSQL clients, agents) before the process under test binds it.
pub fn free_port() -> u16 {
    loop {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A child process killed (SIGKILL) when dropped, its output in a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(program: &Path, args: &[String], log: PathBuf, env: &[(&str, &str)]) -> Self {
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn");
        Self { child, log }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Adds the harness's district-admin token to every call.
#[derive(Clone)]
pub struct Bearer(pub Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel that authenticates as the harness's admin.
pub type Ch = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

pub struct Broker {
    pub proc: Proc,
    pub grpc_url: String,
    pub http_url: String,
    /// A district-admin token minted with `classgrid-broker admin-token`.
    pub token: String,
    grpc_port: u16,
    http_port: u16,
    db_url: String,
    dir: PathBuf,
    extra: Vec<String>,
    /// TLS with the broker's own CA (in `dir/broker`) instead of --insecure-dev.
    pub secure: bool,
}

impl Broker {
    pub async fn start(db: &TestDb, dir: &Path, extra: &[&str]) -> Self {
        Self::start_with(db, dir, extra, false).await
    }

    /// A broker as deployed: TLS, node certificates, no plain text.
    pub async fn start_secure(db: &TestDb, dir: &Path, extra: &[&str]) -> Self {
        Self::start_with(db, dir, extra, true).await
    }

    /// One more replica of a region whose leader runs already: it serves
    /// as a standby (`/healthz` answers, `/readyz` does not) until it leads.
    pub async fn start_replica(db: &TestDb, dir: &Path, extra: &[&str]) -> Self {
        Self::start_as(db, dir, extra, false, false).await
    }

    /// One more TLS replica of the region `leader` leads: it gets the
    /// leader's data folder (region CA, server certificate, seat-link key),
    /// as every replica must (decision 078), and serves as a standby.
    pub async fn start_replica_secure(
        db: &TestDb,
        dir: &Path,
        extra: &[&str],
        leader: &Broker,
    ) -> Self {
        std::fs::create_dir_all(dir.join("broker")).unwrap();
        let copied = Command::new("cp")
            .arg("-a")
            .arg(leader.dir.join("broker").join("."))
            .arg(dir.join("broker"))
            .status()
            .expect("cp the leader's data folder");
        assert!(copied.success(), "copy the leader's data folder");
        Self::start_as(db, dir, extra, true, false).await
    }

    async fn start_with(db: &TestDb, dir: &Path, extra: &[&str], secure: bool) -> Self {
        Self::start_as(db, dir, extra, secure, true).await
    }

    async fn start_as(db: &TestDb, dir: &Path, extra: &[&str], secure: bool, leads: bool) -> Self {
        let mut failed = String::new();
        // A port found free can still be taken before the broker binds it
        // (by another test): then the broker is started again on other
        // ports.
        for _ in 0..3 {
            let (g, h) = (free_port(), free_port());
            let scheme = if secure { "https" } else { "http" };
            let mut b = Self {
                proc: Proc::spawn(Path::new("/bin/true"), &[], dir.join("unused.log"), &[]),
                grpc_url: format!("{scheme}://127.0.0.1:{g}"),
                http_url: format!("{scheme}://127.0.0.1:{h}"),
                secure,
                token: String::new(),
                grpc_port: g,
                http_port: h,
                db_url: db.url.clone(),
                dir: dir.to_path_buf(),
                extra: extra.iter().map(|s| s.to_string()).collect(),
            };
            match b.try_start(leads).await {
                Ok(()) => {
                    b.token = mint_admin_token(&db.url);
                    return b;
                }
                Err(log) if log.contains("Address already in use") => failed = log,
                Err(log) => panic!("broker did not become healthy; log:\n{log}"),
            }
        }
        panic!("broker did not become healthy; log:\n{failed}");
    }

    /// (Re)starts the broker process on the same ports and database, and
    /// waits until it leads again (a killed one's lease must expire first).
    pub async fn restart(&mut self) {
        if let Err(log) = self.try_start(true).await {
            panic!("broker did not become healthy; log:\n{log}");
        }
    }

    /// Restarts a replica on the same ports as a standby (or the leader,
    /// should its lease be free): it only has to answer `/healthz`.
    pub async fn restart_replica(&mut self) {
        if let Err(log) = self.try_start(false).await {
            panic!("broker replica did not come back; log:\n{log}");
        }
    }

    /// Starts the broker process and waits until it serves: as the leader
    /// (`/readyz`) when `leads`, else as a standby or leader (`/healthz`);
    /// its log when it does not.
    async fn try_start(&mut self, leads: bool) -> Result<(), String> {
        self.proc.kill9();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--database-url".into(),
            self.db_url.clone(),
            "--grpc-addr".into(),
            format!("127.0.0.1:{}", self.grpc_port),
            "--http-addr".into(),
            format!("127.0.0.1:{}", self.http_port),
            "--log-format".into(),
            "text".into(),
        ];
        if self.secure {
            args.extend([
                "--data-dir".into(),
                self.dir.join("broker").display().to_string(),
            ]);
        } else {
            // Most tests exercise scheduling, not TLS; tests/security.rs runs
            // the broker with certificates.
            args.push("--insecure-dev".into());
        }
        args.extend(self.extra.iter().cloned());
        let n = std::fs::read_dir(&self.dir).map(|d| d.count()).unwrap_or(0);
        self.proc = Proc::spawn(
            &bin("classgrid-broker"),
            &args,
            self.dir.join(format!("broker-{n}.log")),
            &[],
        );
        let url = format!(
            "{}/{}",
            self.http_url,
            if leads { "readyz" } else { "healthz" }
        );
        let secure = self.secure;
        let log = self.proc.log.clone();
        let failed =
            |log: &Path| std::fs::read_to_string(log).is_ok_and(|l| l.contains("broker failed"));
        // Done when it serves, or when it has said it failed.
        let ok = wait_for(Duration::from_secs(60), || {
            let (url, log) = (url.clone(), log.clone());
            async move {
                failed(&log)
                    || if secure {
                        // Plain HTTP cannot reach a TLS broker; its log says when it serves.
                        std::fs::read_to_string(&log).is_ok_and(|l| {
                            l.contains("broker serving") || (!leads && l.contains("standby:"))
                        })
                    } else {
                        http_get(&url).await.map(|(c, _)| c == 200).unwrap_or(false)
                    }
            }
        })
        .await;
        if ok && !failed(&log) {
            Ok(())
        } else {
            Err(self.proc.log_text())
        }
    }

    pub fn grpc_port(&self) -> u16 {
        self.grpc_port
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }

    /// True while this replica leads (its `/readyz` answers 200).
    pub async fn leads(&self) -> bool {
        http_get(&format!("{}/readyz", self.http_url))
            .await
            .is_ok_and(|(c, _)| c == 200)
    }

    /// A plain channel without credentials.
    pub async fn raw_channel(&self) -> Channel {
        let mut ep = tonic::transport::Endpoint::from_shared(self.grpc_url.clone()).unwrap();
        if self.secure {
            let ca = std::fs::read_to_string(self.ca_file()).expect("broker CA");
            ep = ep
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                        .domain_name("localhost"),
                )
                .unwrap();
        }
        ep.connect().await.expect("connect broker")
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("broker").join("ca.pem")
    }

    /// A channel that carries `token`.
    pub async fn channel_with(&self, token: &str) -> Ch {
        let v = format!("Bearer {token}").parse().ok();
        tonic::service::interceptor::InterceptedService::new(self.raw_channel().await, Bearer(v))
    }

    /// A channel that carries the harness's district-admin token.
    pub async fn channel(&self) -> Ch {
        self.channel_with(&self.token.clone()).await
    }

    pub async fn lessons(&self) -> LessonServiceClient<Ch> {
        LessonServiceClient::new(self.channel().await)
    }

    pub async fn fleet(&self) -> FleetServiceClient<Ch> {
        FleetServiceClient::new(self.channel().await)
    }

    pub async fn create_site(&self, name: &str) {
        self.fleet()
            .await
            .create_site(pb::CreateSiteRequest {
                name: name.into(),
                kind: "school".into(),
                district: "d1".into(),
            })
            .await
            .expect("create site");
    }

    /// The node SITE/NAME as `FleetService.GetNode` returns it.
    pub async fn node(&self, site: &str, name: &str) -> Option<pb::Node> {
        let n = self
            .fleet()
            .await
            .get_node(pb::GetNodeRequest {
                id: format!("{site}/{name}"),
            })
            .await
            .ok()?;
        Some(n.into_inner())
    }

    pub async fn node_state(&self, site: &str, name: &str) -> Option<String> {
        Some(self.node(site, name).await?.state)
    }

    /// Waits up to `limit` for the node SITE/NAME to be connected.
    pub async fn wait_connected(&self, site: &str, name: &str, limit: Duration) -> bool {
        wait_for(limit, || async {
            self.node_state(site, name).await.as_deref() == Some("connected")
        })
        .await
    }

    /// Waits up to `limit` for every seat of lesson `id` to be running.
    pub async fn wait_seats_running(&self, id: &str, limit: Duration) -> bool {
        wait_for(limit, || async {
            self.lesson(id)
                .await
                .seats
                .iter()
                .all(|s| s.state == "running")
        })
        .await
    }

    /// Books `req`, trying again until it is admitted or `limit` passes: a
    /// booking with a dataset needs the site's edge to have reported its
    /// link rate once, which it does on its own schedule.
    pub async fn book_once_admitted(
        &self,
        req: &pb::BookLessonRequest,
        limit: Duration,
    ) -> Option<pb::Lesson> {
        let booked = std::sync::Mutex::new(None);
        let booked_ref = &booked;
        wait_for(limit, || async move {
            match self.lessons().await.book(req.clone()).await {
                Ok(l) => {
                    *booked_ref.lock().unwrap() = Some(l.into_inner());
                    true
                }
                Err(_) => false,
            }
        })
        .await;
        booked.into_inner().unwrap()
    }

    pub async fn lesson(&self, id: &str) -> pb::Lesson {
        self.lessons()
            .await
            .get(pb::GetLessonRequest { id: id.into() })
            .await
            .expect("get lesson")
            .into_inner()
    }
}

/// The `classgrid` CLI against `broker` with `token` (no context file);
/// (success, stdout, stderr).
pub fn cli(broker: &Broker, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("classgrid"))
        .args(["--context", "/nonexistent/classgrid-context.toml"])
        .args(["--grpc-url", &broker.grpc_url, "--token", token])
        .arg("--ca")
        .arg(broker.ca_file())
        .args(args)
        .output()
        .expect("run classgrid");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Mints a district-admin token the way an operator does on the server.
pub fn mint_admin_token(db_url: &str) -> String {
    let out = Command::new(bin("classgrid-broker"))
        .args([
            "admin-token",
            "--database-url",
            db_url,
            "--insecure-dev",
            "--log-format",
            "text",
        ])
        .output()
        .expect("run classgrid-broker admin-token");
    assert!(
        out.status.success(),
        "admin-token failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub struct Agent {
    pub proc: Proc,
    pub name: String,
    pub state_dir: PathBuf,
    args: Vec<String>,
}

impl Agent {
    pub fn start(broker: &Broker, site: &str, name: &str, dir: &Path, extra: &[&str]) -> Self {
        Self::start_at(&broker.grpc_url, site, name, dir, extra)
    }

    /// `start` with the broker's address given (a load balancer's, say).
    pub fn start_at(url: &str, site: &str, name: &str, dir: &Path, extra: &[&str]) -> Self {
        let state_dir = dir.join(format!("agent-{name}"));
        let mut args: Vec<String> = vec![
            "run".into(),
            "--broker".into(),
            url.to_string(),
            "--site".into(),
            site.into(),
            "--name".into(),
            name.into(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--log-format".into(),
            "text".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut a = Self {
            proc: Proc::spawn(Path::new("/bin/true"), &[], dir.join("unused.log"), &[]),
            name: name.into(),
            state_dir,
            args,
        };
        a.restart();
        a
    }

    pub fn restart(&mut self) {
        self.proc.kill9();
        let n = std::fs::read_dir(self.state_dir.parent().unwrap())
            .map(|d| d.count())
            .unwrap_or(0);
        let log = self
            .state_dir
            .parent()
            .unwrap()
            .join(format!("agent-{}-{n}.log", self.name));
        self.proc = Proc::spawn(&bin("classgrid-agent"), &self.args, log, &[]);
    }

    /// Joins a TLS broker with a join token, then runs with only --state-dir
    /// (broker, site and name come from the join).
    pub fn join_and_start(
        token: &str,
        broker: &Broker,
        name: &str,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::join_and_start_full(token, &broker.grpc_url, name, dir, &[], &[])
    }

    /// [`Agent::join_and_start`], with `extra` arguments for `run`.
    pub fn join_and_start_with(
        token: &str,
        broker: &Broker,
        name: &str,
        dir: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::join_and_start_full(token, &broker.grpc_url, name, dir, &[], extra)
    }

    /// `join_and_start` with the broker's URL and extra `join` flags (such
    /// as `--relay`) given; `run` still gets only --state-dir.
    pub fn join_and_start_at(
        token: &str,
        broker_url: &str,
        name: &str,
        dir: &Path,
        join_extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::join_and_start_full(token, broker_url, name, dir, join_extra, &[])
    }

    fn join_and_start_full(
        token: &str,
        broker_url: &str,
        name: &str,
        dir: &Path,
        join_extra: &[&str],
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let state_dir = dir.join(format!("agent-{name}"));
        let out = Command::new(bin("classgrid-agent"))
            .args([
                "join",
                "--broker",
                broker_url,
                "--token",
                token,
                "--name",
                name,
                "--state-dir",
            ])
            .arg(&state_dir)
            .args(join_extra)
            .output()?;
        if !out.status.success() {
            anyhow::bail!(
                "join failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut args: Vec<String> = vec![
            "run".into(),
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--log-format".into(),
            "text".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut a = Self {
            proc: Proc::spawn(Path::new("/bin/true"), &[], dir.join("unused.log"), &[]),
            name: name.into(),
            state_dir,
            args,
        };
        a.restart();
        Ok(a)
    }

    /// Pids of the seat processes this agent's state file lists.
    pub fn seat_pids(&self) -> Vec<i32> {
        let Ok(text) = std::fs::read_to_string(self.state_dir.join("assignments.json")) else {
            return vec![];
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r["pid"].as_i64().map(|p| p as i32))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.proc.kill9();
        // Seats outlive their agent by design; the test cleans up after itself.
        for pid in self.seat_pids() {
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

/// An edge of `site` for `broker`, its content server on loopback port
/// `port`, reporting every `report_ms`, its state in `dir/edge` and its
/// log in `dir/edge.log`; `env` adds variables (its seat links, say).
pub fn start_edge(
    broker: &Broker,
    site: &str,
    port: u16,
    report_ms: u32,
    dir: &Path,
    env: &[(&str, &str)],
) -> Proc {
    Proc::spawn(
        &bin("classgrid-edge"),
        &[
            "run",
            "--broker",
            &broker.grpc_url,
            "--site",
            site,
            "--name",
            "edge-1",
            "--state-dir",
            &dir.join("edge").display().to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--report-interval-ms",
            &report_ms.to_string(),
            "--log-format",
            "text",
        ]
        .map(String::from),
        dir.join("edge.log"),
        env,
    )
}

/// A one-use join token of `kind` (agent or edge) for `site`, made by the
/// region's district admin.
pub async fn join_token(broker: &Broker, site: &str, kind: &str) -> String {
    classgrid_proto::v1::admin_service_client::AdminServiceClient::new(broker.channel().await)
        .create_join_token(classgrid_proto::v1::CreateJoinTokenRequest {
            site: site.into(),
            kind: kind.into(),
            ttl_seconds: 600,
            uses: 1,
            ..Default::default()
        })
        .await
        .expect("join token")
        .into_inner()
        .secret
}

/// `classgrid-edge join` as school IT runs it: edge `edge-1` of the token's
/// site gets its certificate into `state`.
pub fn edge_join(broker: &Broker, token: &str, state: &Path) {
    let out = Command::new(bin("classgrid-edge"))
        .args(["join", "--broker", &broker.grpc_url, "--token", token])
        .args(["--name", "edge-1", "--state-dir"])
        .arg(state)
        .output()
        .expect("run classgrid-edge join");
    assert!(
        out.status.success(),
        "edge join: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first console admin, `admin`, made the way an operator makes it
/// (`classgrid-broker admin-user`).
pub fn console_admin(db_url: &str, password: &str) {
    let out = Command::new(bin("classgrid-broker"))
        .args(["admin-user", "admin", "--database-url", db_url])
        .args(["--insecure-dev", "--log-format", "text"])
        .env("CLASSGRID_ADMIN_PASSWORD", password)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "admin-user: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `f` until it is true or `limit` passes.
pub async fn wait_for<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A minimal HTTP/1.0 GET over a TCP socket; returns the status and body.
pub async fn http_get(url: &str) -> anyhow::Result<(u16, String)> {
    http_get_as(url, None).await
}

/// `http_get` with a bearer token.
pub async fn http_get_as(url: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    http_get_with(url, &auth).await
}

/// `http_get` with extra header lines (each ending in CRLF).
pub async fn http_get_with(url: &str, headers: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("not http"))?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(host))
        .await??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n{headers}\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Issues `hours` accelerator-hours to `school`, valid for a day, as the
/// district admin does.
pub async fn issue_voucher(b: &Broker, school: &str, request_id: &str, hours: f64) {
    pb::voucher_service_client::VoucherServiceClient::new(b.channel().await)
        .issue(pb::IssueVoucherRequest {
            request_id: request_id.into(),
            school_site: school.into(),
            programme: "e2e".into(),
            issued_by: "district".into(),
            accelerator_hours: hours,
            valid_until: Some(ts_in(86_400.0)),
            ..Default::default()
        })
        .await
        .expect("voucher issued");
}

pub fn ts_in(secs: f64) -> prost_types::Timestamp {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        + Duration::from_secs_f64(secs.max(0.0));
    prost_types::Timestamp {
        seconds: t.as_secs() as i64,
        nanos: t.subsec_nanos() as i32,
    }
}

/// A booking of `seats` small web servers starting in `start_in` seconds.
pub fn web_lesson(site: &str, seats: i32, start_in: f64, duration_s: i64) -> pb::BookLessonRequest {
    pb::BookLessonRequest {
        school_site: site.into(),
        title: "e2e".into(),
        start: Some(ts_in(start_in)),
        duration_seconds: duration_s,
        seats,
        seat: Some(pb::SeatSpec {
            cpu_millis: 100,
            memory_mib: 64,
            gpu: None,
            runtime: String::new(),
        }),
        workload: Some(pb::Workload {
            command: "python3".into(),
            args: vec![
                "-m".into(),
                "http.server".into(),
                "--bind".into(),
                "127.0.0.1".into(),
                "$(PORT)".into(),
            ],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A quarter of an L40S (the device `fake_nvidia_smi` shows) per seat.
pub fn quarter_l40s() -> pb::GpuSpec {
    pb::GpuSpec {
        vendors: vec!["nvidia".into()],
        memory_mib: 4096,
        compute_percent: 25,
        count: 1,
        ..Default::default()
    }
}

/// A stand-in `nvidia-smi` that prints a real L40S's output (the fixtures
/// in agent/devices), for agents started with `--tool nvidia-smi=PATH`, so a
/// node has a GPU to place slices on (and a discovery warning: `-q -x`
/// fails).
pub fn fake_nvidia_smi(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let fx = concat!(env!("CARGO_MANIFEST_DIR"), "/../agent/devices/fixtures");
    let p = dir.join("nvidia-smi");
    std::fs::write(
        &p,
        format!("#!/bin/sh\ncase \"$1\" in\n  --query-gpu=*) cat '{fx}/nvidia-smi-query.l40s.csv' ;;\n  -L) cat '{fx}/nvidia-smi-L.l40s.txt' ;;\n  *) exit 9 ;;\nesac\n"),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

pub fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "classgrid-e2e-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
