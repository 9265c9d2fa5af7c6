//! What operators deploy, checked against the real tools and a real broker:
//! - the kustomize base and overlays in deploy/kubernetes render with
//!   `kubectl kustomize`, hold the expected objects and no Secret, and pass
//!   `kubernetes-validate --strict` (a misspelt field fails it);
//! - a broker started with the cluster's broker.toml, an agent and an edge,
//!   with a lesson running, each serve a /metrics that `promtool check
//!   metrics` accepts without a finding, and that together hold every series
//!   the Grafana dashboard (deploy/grafana) names; a real Prometheus scraping
//!   the three returns data for every one of the dashboard's queries, so
//!   renaming a metric in code breaks this test.
//!
//! The .deb packages are built by scripts/package.sh, not here: a release
//! build takes too long for every CI run.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use classgrid_e2e::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A tool CI must have (scripts/test.sh installs it); a bare `cargo test`
/// on a machine without it skips the check, saying so.
fn tool_or_skip(found: Option<PathBuf>, what: &str) -> Option<PathBuf> {
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must provide {what} (scripts/test.sh installs it)"
        );
        eprintln!("skipped: {what} is missing; run scripts/test.sh");
    }
    found
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// kubernetes-validate from the virtual environment scripts/test.sh makes
/// (CLASSGRID_PYTHON is its python), else from PATH.
fn kubernetes_validate() -> Option<PathBuf> {
    std::env::var_os("CLASSGRID_PYTHON")
        .map(|py| PathBuf::from(py).with_file_name("kubernetes-validate"))
        .filter(|p| p.is_file())
        .or_else(|| on_path("kubernetes-validate"))
}

fn render(dir: &str) -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join(dir))
        .output()
        .expect("kubectl is needed to render deploy/kubernetes (TESTBEDS.md: /usr/bin/kubectl)");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// (kind, metadata.name, document) of each object. kubectl writes keys in
/// order, two spaces deep, so a document's own name is its first
/// `  name:` line.
fn objects(rendered: &str) -> Vec<(String, String, String)> {
    rendered
        .split("\n---\n")
        .map(|doc| {
            let field = |prefix: &str| {
                doc.lines()
                    .find_map(|l| l.strip_prefix(prefix))
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            (field("kind: "), field("  name: "), doc.to_string())
        })
        .collect()
}

fn object<'a>(objs: &'a [(String, String, String)], kind: &str, name: &str) -> &'a str {
    &objs
        .iter()
        .find(|(k, n, _)| k == kind && n == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendering"))
        .2
}

/// kubernetes-validate's verdict on a rendering: Ok, or its report.
fn validate(tool: &Path, rendered: &str) -> Result<(), String> {
    let dir = tempdir("deploy-validate");
    let file = dir.join("rendered.yaml");
    std::fs::write(&file, rendered).unwrap();
    // The schemas of the Kubernetes that kubectl here speaks (1.32).
    let out = Command::new(tool)
        .args(["--strict", "--quiet", "-k", "1.32.0"])
        .arg(&file)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(report)
    }
}

#[test]
fn kustomize_base_and_overlays_render_the_expected_objects_and_validate() {
    let base = objects(&render("deploy/kubernetes/base"));
    let kinds: BTreeSet<(&str, &str)> = base
        .iter()
        .map(|(k, n, _)| (k.as_str(), n.as_str()))
        .collect();
    for want in [
        ("Deployment", "classgrid-broker"),
        ("Service", "classgrid-broker"),
        ("PodDisruptionBudget", "classgrid-broker"),
        ("Deployment", "classgrid-edge"),
        ("Service", "classgrid-edge"),
        ("PersistentVolumeClaim", "classgrid-edge-state"),
        ("DaemonSet", "classgrid-agent"),
    ] {
        assert!(kinds.contains(&want), "the base lacks {want:?}: {kinds:?}");
    }
    let broker = object(&base, "Deployment", "classgrid-broker");
    assert!(broker.contains("\n  replicas: 3\n"), "{broker}");
    // Startup asks /healthz (a standby answers it too), readiness /readyz
    // (only the leader is ready, so the Service reaches it alone), and
    // liveness /metrics, which needs no database.
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert!(broker.contains(&format!("{probe}:")), "no {probe}");
    }
    assert!(
        broker.contains("path: /healthz")
            && broker.contains("path: /readyz")
            && broker.contains("path: /metrics")
    );
    // Secrets are referenced, never shipped.
    assert!(broker.contains("name: classgrid-broker-database"));
    // Agents only on the nodes labelled as accelerator nodes, one per node,
    // with their metrics where Prometheus scrapes them.
    let agent = object(&base, "DaemonSet", "classgrid-agent");
    assert!(
        agent.contains("nodeSelector:\n        classgrid.io/accelerator: \"true\""),
        "{agent}"
    );
    assert!(agent.contains("CLASSGRID_METRICS_LISTEN"), "{agent}");
    let edge = object(&base, "Deployment", "classgrid-edge");
    assert!(edge.contains("path: /healthz"), "{edge}");

    let staging = objects(&render("deploy/kubernetes/overlays/staging"));
    let production = objects(&render("deploy/kubernetes/overlays/production"));
    assert!(
        object(&staging, "Deployment", "classgrid-broker").contains("\n  replicas: 1\n"),
        "staging runs one broker"
    );
    assert!(object(&production, "Deployment", "classgrid-broker").contains("\n  replicas: 3\n"));
    assert!(
        object(&production, "Service", "classgrid-broker").contains("type: LoadBalancer"),
        "production exposes the broker through a TCP load balancer"
    );
    for (name, objs) in [
        ("base", &base),
        ("staging", &staging),
        ("production", &production),
    ] {
        assert!(
            objs.iter().all(|(k, _, _)| k != "Secret"),
            "{name} renders a Secret: secrets must not be in the repository"
        );
    }

    let Some(tool) = tool_or_skip(kubernetes_validate(), "kubernetes-validate") else {
        return;
    };
    for dir in [
        "deploy/kubernetes/base",
        "deploy/kubernetes/overlays/staging",
        "deploy/kubernetes/overlays/production",
    ] {
        if let Err(report) = validate(&tool, &render(dir)) {
            panic!("{dir} does not validate against the Kubernetes schemas:\n{report}");
        }
    }
    // The validator is strict: a misspelt field is caught, not ignored.
    let wrong =
        render("deploy/kubernetes/base").replacen("failureThreshold:", "failureThreshhold:", 1);
    let report = validate(&tool, &wrong).expect_err("a misspelt field must fail validation");
    assert!(report.contains("failureThreshhold"), "{report}");
}

#[test]
fn the_image_recipe_holds_what_the_manifests_run_as_their_user() {
    // deploy/container/Containerfile builds the `classgrid` image every
    // workload of the base runs; scripts/container.sh check builds and runs
    // it with podman. Here, without a container engine: each classgrid
    // binary the rendered manifests start is copied into /usr/bin, and the
    // image's user is the pods' runAsUser.
    let recipe = std::fs::read_to_string(repo().join("deploy/container/Containerfile")).unwrap();
    let copied: BTreeSet<&str> = recipe
        .lines()
        .filter(|l| l.starts_with("COPY ") && l.trim_end().ends_with(" /usr/bin/"))
        .flat_map(|l| l.split_whitespace())
        .filter_map(|w| w.strip_prefix("/out/"))
        .collect();
    let rendered = render("deploy/kubernetes/base");
    let started: BTreeSet<String> = rendered
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| {
            w.starts_with("classgrid-")
                && ["broker", "edge", "agent"]
                    .iter()
                    .any(|b| *w == format!("classgrid-{b}"))
        })
        .map(str::to_string)
        .collect();
    assert_eq!(started.len(), 3, "the manifests start {started:?}");
    for b in &started {
        assert!(
            copied.contains(b.as_str()),
            "the image lacks {b}: it copies {copied:?}"
        );
    }
    let users: BTreeSet<&str> = rendered
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runAsUser: "))
        .collect();
    assert!(!users.is_empty());
    for u in users {
        assert!(
            recipe.contains(&format!("\nUSER {u}:{u}\n")),
            "the pods run as {u}; the image's USER differs"
        );
    }
}

/// Every `expr` in the dashboard, wherever a panel keeps it.
fn dashboard_exprs() -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let path = repo().join("deploy/grafana/classgrid-region.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut out = Vec::new();
    walk(&dash, &mut out);
    out
}

/// The classgrid series names a PromQL expression reads.
fn series_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("classgrid_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether Prometheus's instant query answers at least one sample.
async fn has_data(port: u16, query: &str) -> bool {
    let url = format!(
        "http://127.0.0.1:{port}/api/v1/query?query={}",
        percent_encode(query)
    );
    http_get(&url)
        .await
        .ok()
        .filter(|(code, _)| *code == 200)
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
        .and_then(|v| v["data"]["result"].as_array().map(|r| !r.is_empty()))
        .unwrap_or(false)
}

/// `promtool check metrics` on one exposition: its findings, or none.
fn promtool_findings(promtool: &Path, exposition: &str) -> String {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool exits 1 when it cannot parse, 3 with lint findings.
    if out.status.success() {
        String::new()
    } else {
        format!("exit {:?}: {report}", out.status.code())
    }
}

#[test]
fn promtool_reports_a_counter_without_help() {
    // The check above can fail: what the broker served before (OpenMetrics,
    // whose counter HELP names the family without `_total`) is a finding.
    let Some(promtool) = tool_or_skip(on_path("promtool"), "promtool (Debian's prometheus)") else {
        return;
    };
    let openmetrics = "# HELP classgrid_bookings_admitted Lesson bookings admitted\n\
        # TYPE classgrid_bookings_admitted counter\nclassgrid_bookings_admitted_total 1\n# EOF\n";
    let report = promtool_findings(&promtool, openmetrics);
    assert!(report.contains("no help text"), "{report}");
}

async fn scrape(url: &str) -> String {
    let (code, body) = http_get(url).await.unwrap();
    assert_eq!(code, 200, "{url}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn region_metrics_pass_promtool_and_feed_every_dashboard_query() {
    let exprs = dashboard_exprs();
    assert!(
        exprs.len() >= 10,
        "the dashboard has {} queries",
        exprs.len()
    );

    let db = TestDb::new().await.unwrap();
    let dir = tempdir("deploy-metrics");
    // The broker.toml the cluster's ConfigMap carries: the real broker must
    // accept every key of it (unknown keys are refused).
    let cluster_toml = repo().join("deploy/kubernetes/base/broker/broker.toml");
    let broker = Broker::start(&db, &dir, &["--config", cluster_toml.to_str().unwrap()]).await;
    broker.create_site("school-a").await;
    // A voucher, so the balance gauge has a school to show.
    let voucher = classgrid_proto::v1::IssueVoucherRequest {
        school_site: "school-a".into(),
        programme: "deploy".into(),
        accelerator_hours: 10.0,
        valid_until: Some(ts_in(86_400.0)),
        ..Default::default()
    };
    let mut vouchers = classgrid_proto::v1::voucher_service_client::VoucherServiceClient::new(
        broker.channel().await,
    );
    vouchers.issue(voucher).await.expect("voucher issued");
    // An agent with a GPU (a real L40S's nvidia-smi output), so the slice
    // and device gauges have series.
    let agent_metrics = format!("127.0.0.1:{}", free_port());
    let tool = format!("nvidia-smi={}", fake_nvidia_smi(&dir).display());
    let _agent = Agent::start(
        &broker,
        "school-a",
        "n1",
        &dir,
        &["--tool", &tool, "--metrics-listen", &agent_metrics],
    );
    let edge_listen = format!("127.0.0.1:{}", free_port());
    let edge_args: Vec<String> = [
        "run",
        "--broker",
        &broker.grpc_url,
        "--site",
        "school-a",
        "--name",
        "edge-1",
        "--listen",
        &edge_listen,
        "--state-dir",
        dir.join("edge").to_str().unwrap(),
        "--report-interval-ms",
        "500",
        "--log-format",
        "text",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let edge = Proc::spawn(
        &bin("classgrid-edge"),
        &edge_args,
        dir.join("edge.log"),
        &[],
    );
    assert!(
        broker
            .wait_connected("school-a", "n1", Duration::from_secs(30))
            .await,
        "agent did not connect"
    );
    let lesson = broker
        .lessons()
        .await
        .book(web_lesson("school-a", 1, 1.0, 300))
        .await
        .expect("lesson booked")
        .into_inner();
    assert!(
        broker
            .wait_seats_running(&lesson.id, Duration::from_secs(30))
            .await,
        "the lesson's seat did not start"
    );

    let targets = [
        (
            "broker",
            broker.http_url.trim_start_matches("http://").to_string(),
        ),
        ("agent", agent_metrics.clone()),
        ("edge", edge_listen.clone()),
    ];
    // The broker samples its gauges every few seconds; the edge reports its
    // link once registered.
    let ready = wait_for(Duration::from_secs(30), || async {
        let b = http_get(&format!("{}/metrics", broker.http_url)).await;
        let e = http_get(&format!("http://{edge_listen}/metrics")).await;
        matches!((b, e), (Ok((200, b)), Ok((200, e)))
            if b.contains("classgrid_slices{") && b.contains("classgrid_voucher_balance_accelerator_seconds{")
                && e.contains("classgrid_edge_link_up 1"))
    })
    .await;
    assert!(ready, "gauges not sampled; edge log:\n{}", edge.log_text());

    let mut exported: BTreeSet<String> = BTreeSet::new();
    let promtool = tool_or_skip(on_path("promtool"), "promtool (Debian's prometheus)");
    for (name, target) in &targets {
        let exposition = scrape(&format!("http://{target}/metrics")).await;
        exported.extend(
            exposition
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split(['{', ' ']).next())
                .map(str::to_string),
        );
        if let Some(promtool) = &promtool {
            let findings = promtool_findings(promtool, &exposition);
            assert!(
                findings.is_empty(),
                "promtool check metrics on the {name}'s /metrics: {findings}\n{exposition}"
            );
        }
    }
    let missing: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| series_names(e))
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard reads series nobody exports: {missing:?}\nexported: {exported:?}"
    );

    let Some(prometheus) = tool_or_skip(on_path("prometheus"), "prometheus (Debian's package)")
    else {
        return;
    };
    let port = free_port();
    let since = unix_now();
    let config = dir.join("prometheus.yml");
    let jobs: String = targets
        .iter()
        .map(|(name, target)| {
            format!(
                "  - job_name: classgrid-{name}\n    static_configs:\n      - targets: [\"{target}\"]\n"
            )
        })
        .collect();
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{jobs}"),
    )
    .unwrap();
    let _prom = Proc::spawn(
        &prometheus,
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ],
        dir.join("prometheus.log"),
        &[],
    );
    // Grafana fills in $__rate_interval; a few scrape intervals is what it
    // would choose for a 1 s scrape.
    let queries: Vec<String> = exprs
        .iter()
        .map(|e| e.replace("$__rate_interval", "10s"))
        .collect();
    // rate() needs two scrapes of a series, and Prometheus a moment to start.
    let mut without_data = queries;
    let t0 = std::time::Instant::now();
    while !without_data.is_empty() && t0.elapsed() < Duration::from_secs(40) {
        let mut still = Vec::new();
        for q in without_data {
            if !has_data(port, &q).await {
                still.push(q);
            }
        }
        without_data = still;
        if !without_data.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    assert!(
        without_data.is_empty(),
        "Prometheus returned no data for these dashboard queries: {without_data:#?}\nits log:\n{}",
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );
    if let Some(path) = std::env::var_os("CLASSGRID_DASHBOARD_DATA") {
        write_dashboard_data(Path::new(&path), port, &broker, since).await;
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// For scripts/dashboard-png.sh (CLASSGRID_DASHBOARD_DATA names the file):
/// the region above gets a few minutes of lessons — a bell of three
/// classes, a lesson booked every 15 s, a booking too large for the region
/// every 30 s — and then every panel's queries are asked over the whole
/// run through Prometheus's range API. The answers go to the file as
/// Prometheus gave them, with each panel's title, place and unit; the
/// script only draws them.
async fn write_dashboard_data(path: &Path, port: u16, broker: &Broker, since: f64) {
    let book = |req| async move { broker.lessons().await.book(req).await.is_ok() };
    let mut booked = 0;
    for _ in 0..3 {
        booked += book(web_lesson("school-a", 2, 30.0, 60)).await as u32;
    }
    // Paced load, not a wait for a condition: one step every 15 s.
    let mut every = tokio::time::interval(Duration::from_secs(15));
    let mut refused = 0;
    for i in 0..10 {
        every.tick().await;
        booked += book(web_lesson("school-a", 1, 1.0, 30)).await as u32;
        if i % 2 == 0 {
            refused += !book(web_lesson("school-a", 1000, 1.0, 30)).await as u32;
        }
    }
    every.tick().await;
    let (start, end) = (since, unix_now());
    let path_of = repo().join("deploy/grafana/classgrid-region.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path_of).unwrap()).unwrap();
    let mut panels = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        let mut targets = Vec::new();
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            let query = expr.replace("$__rate_interval", "10s");
            let url = format!(
                "http://127.0.0.1:{port}/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step=2",
                percent_encode(&query)
            );
            let (code, body) = http_get(&url).await.unwrap();
            assert_eq!(code, 200, "{query}: {body}");
            let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
            targets.push(serde_json::json!({
                "expr": expr,
                "query": query,
                "legend": t["legendFormat"],
                "result": answer["data"]["result"],
            }));
        }
        panels.push(serde_json::json!({
            "title": p["title"],
            "type": p["type"],
            "gridPos": p["gridPos"],
            "unit": p["fieldConfig"]["defaults"]["unit"],
            "targets": targets,
        }));
    }
    let data = serde_json::json!({
        "dashboard": dash["title"],
        "start": start,
        "end": end,
        "step_s": 2,
        "rate_interval": "10s",
        "setup": format!(
            "tests/deploy.rs: one broker, one agent (a fake L40S), one edge, scraped every 1 s; \
             {booked} lessons admitted (a bell of 3 classes, then one every 15 s), \
             {refused} bookings of 1000 seats not admitted"
        ),
        "panels": panels,
    });
    std::fs::write(path, serde_json::to_vec_pretty(&data).unwrap()).unwrap();
    eprintln!("dashboard data written to {}", path.display());
}
