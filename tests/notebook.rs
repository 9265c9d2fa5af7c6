//! Notebook seats through the whole product (issue 22): a 3-seat notebook
//! lesson with a small dataset is booked through the broker; the school's
//! edge stages the data, the agent starts every JupyterLab *before* the
//! bell, and at the bell each seat's link — the broker's, served by the
//! edge over TLS with a certificate from the region CA (`classgrid-broker
//! edge-cert`) — runs a kernel (`sum(range(10))` is 45) through the edge's
//! WebSocket proxy. The dataset is readable under data/ and not writable; a
//! made-up token and another seat's token are refused; the teacher's pause
//! closes the class's links and resume opens them again; once the lesson is
//! over its links say so.
//!
//! Needs root (seats run as their own users) and the PyPI index, or a
//! notebook environment built before (the agent builds it once per node).
//!
//! Command seats go through the same links (decision 103): a seat running
//! `python3 -m http.server` answers through its link, with the prefix taken
//! off and its redirects kept under the link; a course platform's view of
//! it (gRPC, REST, `classgrid lessons get`) carries the link and no node
//! address; a seat the teacher stopped reads "stopped by your teacher", and
//! "ended" once the lesson is over.

use std::{path::Path, process::Command, time::Duration};

use classgrid_e2e::*;
use classgrid_proto::v1::{self as pb, admin_service_client::AdminServiceClient};

const KERNEL: &str = include_str!("clients/seat_kernel.py");
const GET: &str = include_str!("clients/seat_get.py");
/// The agent's default environment (agent/src/runtime/notebook.rs).
const ENVS: &str = "/var/lib/classgrid/notebook-envs";
const VERSION: &str = "4.4.10";

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs one of the clients with the notebook environment's Python (it has
/// tornado for the kernel's WebSocket).
async fn py(script: &'static str, args: Vec<String>) -> String {
    let python = Path::new(ENVS)
        .join(format!("jupyterlab-{VERSION}"))
        .join("bin/python");
    tokio::task::spawn_blocking(move || sh(Command::new(python).arg("-c").arg(script).args(args)))
        .await
        .unwrap()
}

/// Whether `url` answers with `status` (e.g. "200 ") within `limit`,
/// through the edge's TLS with the region CA `ca`.
async fn answers(url: String, ca: &str, status: &'static str, limit: Duration) -> bool {
    wait_for(limit, || {
        let (url, ca) = (url.clone(), ca.to_string());
        async move {
            py(GET, vec![url, ca, String::new()])
                .await
                .starts_with(status)
        }
    })
    .await
}

/// The `classgrid` CLI against `broker`, as a district admin.
fn cli(broker: &Broker) -> Command {
    cli_as(broker, &broker.token)
}

/// The `classgrid` CLI against `broker` with `token`.
fn cli_as(broker: &Broker, token: &str) -> Command {
    let mut c = Command::new(bin("classgrid"));
    c.args(["--context", "/nonexistent/classgrid-context.toml"])
        .args(["--grpc-url", &broker.grpc_url, "--token", token]);
    c
}

/// One GET through a seat link with the system's Python (the client needs
/// only its standard library): "STATUS BODY…". Redirects are followed.
async fn get(url: String, ca: &str) -> String {
    let ca = ca.to_string();
    tokio::task::spawn_blocking(
        move || sh(Command::new("python3").args(["-c", GET, &url, &ca, ""])),
    )
    .await
    .unwrap()
}

/// Whether `url` answers "`status` …`body`…" within `limit`.
async fn answers_with(url: &str, ca: &str, status: &str, body: &str, limit: Duration) -> bool {
    wait_for(limit, || async move {
        let out = get(url.to_string(), ca).await;
        out.starts_with(status) && out.contains(body)
    })
    .await
}

/// Checks that every seat's link is on the edge's TLS address for links
/// (`links_port`), one per seat; returns that address's `…/seat/`.
fn links_on(links_port: u16, seats: &[pb::Seat]) -> String {
    let base = format!("https://127.0.0.1:{links_port}/seat/");
    for s in seats {
        assert!(
            s.link.starts_with(&base),
            "seat {} link {:?}",
            s.number,
            s.link
        );
    }
    let mut links: Vec<&str> = seats.iter().map(|s| s.link.as_str()).collect();
    links.sort();
    links.dedup();
    assert_eq!(links.len(), seats.len(), "one link per seat");
    base
}

/// Whether, within `limit`, every seat of lesson `id` is `ok`.
async fn all_seats(
    broker: &Broker,
    id: &str,
    limit: Duration,
    ok: impl Fn(&pb::Seat) -> bool,
) -> bool {
    let ok = &ok;
    wait_for(limit, || async move {
        broker.lesson(id).await.seats.iter().all(ok)
    })
    .await
}

/// Ends lesson `id` the platform's way: cancelled.
async fn cancel(broker: &Broker, id: &str) {
    broker
        .lessons()
        .await
        .cancel(pb::CancelLessonRequest {
            id: id.into(),
            reason: "e2e done".into(),
        })
        .await
        .expect("the lesson is cancelled");
}

/// One school with seat links: a broker with a data folder (for the region
/// CA), the school's site, one agent, and the school's edge serving seat
/// links over TLS with the certificate `classgrid-broker edge-cert` issues.
struct School {
    db: TestDb,
    dir: std::path::PathBuf,
    broker: Broker,
    agent: Agent,
    edge: Proc,
    /// The region CA, which the students' browsers trust.
    ca: String,
    links_port: u16,
}

impl School {
    async fn start(
        name: &str,
        site: &str,
        node: &str,
        broker_args: &[&str],
        agent_args: &[&str],
    ) -> Self {
        let db = TestDb::new().await.unwrap();
        let dir = tempdir(name);
        let data_dir = dir.join("broker");
        let data_dir_s = data_dir.display().to_string();
        let mut args = vec!["--data-dir", data_dir_s.as_str()];
        args.extend_from_slice(broker_args);
        let broker = Broker::start(&db, &dir, &args).await;
        broker.create_site(site).await;
        let tls = dir.join("edge-tls");
        let out = sh(Command::new(bin("classgrid-broker")).args([
            "edge-cert",
            "--name",
            "127.0.0.1",
            "--out",
            &tls.display().to_string(),
            "--database-url",
            &db.url,
            "--data-dir",
            &data_dir_s,
        ]));
        assert!(out.contains("CLASSGRID_SEAT_LINKS_CERT="), "{out}");
        let ca = data_dir.join("ca.pem").display().to_string();
        let agent = Agent::start(&broker, site, node, &dir, agent_args);
        let links_port = free_port();
        let links_listen = format!("127.0.0.1:{links_port}");
        let (cert, key) = (tls.join("seat-links.pem"), tls.join("seat-links.key"));
        let edge = start_edge(
            &broker,
            site,
            free_port(),
            300,
            &dir,
            &[
                ("CLASSGRID_SEAT_LINKS_LISTEN", links_listen.as_str()),
                ("CLASSGRID_SEAT_LINKS_CERT", cert.to_str().unwrap()),
                ("CLASSGRID_SEAT_LINKS_KEY", key.to_str().unwrap()),
            ],
        );
        assert!(
            broker
                .wait_connected(site, node, Duration::from_secs(30))
                .await
        );
        Self {
            db,
            dir,
            broker,
            agent,
            edge,
            ca,
            links_port,
        }
    }
}

/// The console's lesson page and class sheet in Chromium
/// (tests/console/class_sheet.mjs); its screenshots and PDF go to
/// `dir/console`.
async fn class_sheet_in_chromium(broker: &Broker, db: &TestDb, dir: &Path, id: &str, seats: usize) {
    const PASSWORD: &str = "sheet-Password-1";
    console_admin(&db.url, PASSWORD);
    let shots = dir.join("console");
    std::fs::create_dir_all(&shots).unwrap();
    let node_dir = std::env::var_os("CLASSGRID_CONSOLE_NODE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/classgrid/console-node")
        });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/console/class_sheet.mjs");
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .env("CONSOLE_URL", &broker.http_url)
        .env("CONSOLE_NODE_DIR", node_dir)
        .env("ADMIN_PASSWORD", PASSWORD)
        .env("LESSON_ID", id)
        .env("SEATS", seats.to_string())
        .env("SHOT_DIR", &shots);
    let out = tokio::task::spawn_blocking(move || sh(&mut cmd))
        .await
        .unwrap();
    assert!(out.contains("ok class sheet"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn notebook_seats_warm_before_the_bell_and_open_through_the_edge() {
    let School {
        db,
        dir,
        broker,
        mut agent,
        edge,
        ca,
        links_port,
    } = School::start(
        "notebook",
        "school-n",
        "nb1",
        &["--staging-lead-s", "40", "--grace-s", "2"],
        &["--runtimes", "notebook"],
    )
    .await;
    // The agent builds the node's notebook environment once, in the
    // background, from PyPI; the bell below must not wait on a download.
    let ready = Path::new(ENVS)
        .join(format!("jupyterlab-{VERSION}"))
        .join(".classgrid-ready");
    assert!(
        wait_for(Duration::from_secs(600), || {
            let ready = ready.clone();
            async move { ready.exists() }
        })
        .await,
        "the notebook environment was not built; agent log:\n{}",
        agent.proc.log_text()
    );

    // A small dataset from an origin on loopback.
    let origin = dir.join("origin");
    std::fs::create_dir_all(&origin).unwrap();
    std::fs::write(origin.join("small.csv"), b"a,b\n1,2\n").unwrap();
    let sha = sh(Command::new("sha256sum").arg(origin.join("small.csv")))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let origin_port = free_port();
    let _origin = Proc::spawn(
        Path::new("python3"),
        &[
            "-m".into(),
            "http.server".into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--directory".into(),
            origin.display().to_string(),
            origin_port.to_string(),
        ],
        dir.join("origin.log"),
        &[],
    );

    let start_in = 35.0;
    let bell = std::time::Instant::now() + Duration::from_secs_f64(start_in);
    let req = pb::BookLessonRequest {
        request_id: "nb-e2e".into(),
        school_site: "school-n".into(),
        title: "notebooks".into(),
        start: Some(ts_in(start_in)),
        duration_seconds: 120,
        seats: 3,
        seat: Some(pb::SeatSpec {
            cpu_millis: 100,
            memory_mib: 256,
            gpu: None,
            runtime: "notebook".into(),
        }),
        datasets: vec![pb::Dataset {
            name: "small.csv".into(),
            url: format!("http://127.0.0.1:{origin_port}/small.csv"),
            sha256: sha,
            size_bytes: 8,
        }],
        ..Default::default()
    };
    // Booking with a dataset needs the edge's link rate: retry until the
    // edge has reported once.
    let lesson = broker
        .book_once_admitted(&req, Duration::from_secs(20))
        .await;
    let lesson = lesson.unwrap_or_else(|| panic!("never booked; edge log:\n{}", edge.log_text()));
    let id = lesson.id.clone();

    // Before the bell: every seat's server is up, the lesson not yet live.
    let warm = all_seats(&broker, &id, Duration::from_secs(120), |s| {
        s.state == "running"
    })
    .await;
    let l = broker.lesson(&id).await;
    assert!(
        warm,
        "seats not running: {:#?}\nagent log:\n{}",
        l.seats,
        agent.proc.log_text()
    );
    // (A loaded machine may have taken until the bell to get here.)
    if std::time::Instant::now() + Duration::from_secs(1) < bell {
        assert_ne!(l.state, "live", "warm seats, and the bell has not rung");
    }
    // The links: the broker's, on the edge's TLS address, one per seat.
    let base = links_on(links_port, &l.seats);
    let links_cli = sh(cli(&broker).args(["lessons", "links", &id, "--csv"]));
    assert!(
        links_cli.starts_with("seat,link\n0,https://"),
        "{links_cli}"
    );

    // At the bell, each link runs a kernel through the edge.
    assert!(
        wait_for(Duration::from_secs(60), || {
            let (b, id) = (&broker, id.clone());
            async move { b.lesson(&id).await.state == "live" }
        })
        .await
    );
    let answer = |link: &str, code: &str| py(KERNEL, vec![link.into(), ca.clone(), code.into()]);
    // The edge learns the links at its next sync; then the kernels answer.
    assert!(
        answers(
            format!("{}api/status", l.seats[0].link),
            &ca,
            "200 ",
            Duration::from_secs(30)
        )
        .await,
        "the first link never answered; edge log:\n{}",
        edge.log_text()
    );
    for s in &l.seats {
        assert_eq!(
            answer(&s.link, "sum(range(10))").await,
            "45",
            "seat {}",
            s.number
        );
    }
    let data = "r = open('data/small.csv').read()\ntry:\n    open('data/small.csv', 'a').write('x'); w = 'written'\nexcept PermissionError:\n    w = 'refused'\n(r.splitlines()[0], w)";
    assert_eq!(answer(&l.seats[0].link, data).await, "('a,b', 'refused')");

    // The teacher sees who is in: every link has opened its seat.
    assert!(
        all_seats(&broker, &id, Duration::from_secs(30), |s| {
            s.link_opened.is_some()
        })
        .await,
        "the edge never reported the links opened"
    );
    class_sheet_in_chromium(&broker, &db, &dir, &id, l.seats.len()).await;

    // A made-up token opens nothing.
    let made_up = format!("{base}{}/api/status", "0".repeat(64));
    let out = py(GET, vec![made_up, ca.clone(), String::new()]).await;
    assert!(out.starts_with("404 "), "{out}");
    // Another seat's token on a seat's own address: its server refuses it.
    let (a, b) = (&l.seats[0], &l.seats[1]);
    let token_of = |s: &pb::Seat| {
        s.link
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap()
            .to_string()
    };
    let direct = format!("{}/seat/{}/api/contents", b.endpoint, token_of(b));
    let out = py(
        GET,
        vec![direct, String::new(), format!("token {}", token_of(a))],
    )
    .await;
    assert!(out.starts_with("403 "), "{out}");

    // The teacher resets seat 1 keeping its work: a fresh server behind the
    // same link, with the student's file still there.
    let b_link = b.link.clone();
    assert_eq!(
        answer(&b_link, "open('mywork.txt', 'w').write('hello')").await,
        "5"
    );
    let out = sh(cli(&broker).args(["lessons", "reset-seat", &id, "1"]));
    assert!(out.contains("seat 1 reset"), "{out}");
    let old_assignment = b.assignment_id.clone();
    assert!(
        wait_for(Duration::from_secs(60), || {
            let (br, id, old) = (&broker, id.clone(), old_assignment.clone());
            async move {
                let l = br.lesson(&id).await;
                let s = &l.seats[1];
                s.state == "running" && s.assignment_id != old
            }
        })
        .await,
        "seat 1 never ran again after its reset: {:#?}",
        broker.lesson(&id).await.seats[1]
    );
    // The edge learns the new server's address at its next sync.
    assert!(
        answers(
            format!("{b_link}api/contents/mywork.txt"),
            &ca,
            "200 ",
            Duration::from_secs(30)
        )
        .await,
        "the reset seat never answered"
    );
    assert_eq!(
        answer(&b_link, "open('mywork.txt').read()").await,
        "'hello'"
    );

    // The teacher pauses the class, then resumes it.
    let teacher = |verb: &'static str| {
        let mut args = vec!["lessons", "pause-links", &id];
        if verb == "resume" {
            args.push("--resume");
        }
        sh(cli(&broker).args(args))
    };
    assert!(teacher("pause").contains("paused"));
    let status = format!("{}api/status", a.link);
    assert!(
        answers(status.clone(), &ca, "403 ", Duration::from_secs(30)).await,
        "pause never reached the edge"
    );
    assert!(teacher("resume").contains("resumed"));
    assert!(
        answers(status.clone(), &ca, "200 ", Duration::from_secs(30)).await,
        "resume never reached the edge"
    );

    // Ended (here: cancelled by the platform), the links say so.
    cancel(&broker, &id).await;
    assert!(
        answers(status.clone(), &ca, "410 ", Duration::from_secs(30)).await,
        "an ended link still opens"
    );
    drop(edge);
    agent.proc.kill9();
}

#[tokio::test(flavor = "multi_thread")]
async fn command_seats_open_through_the_edge_and_platforms_never_see_nodes() {
    // Bound, not `..`: the database lives as long as the broker.
    let School {
        db: _db,
        dir: _dir,
        broker,
        mut agent,
        edge,
        ca,
        links_port,
    } = School::start("command-links", "school-c", "c1", &["--grace-s", "2"], &[]).await;
    let platform = AdminServiceClient::new(broker.channel().await)
        .create_api_token(pb::CreateApiTokenRequest {
            name: "platform-c".into(),
            role: "platform".into(),
            sites: vec!["school-c".into()],
            ttl_seconds: 0,
        })
        .await
        .expect("create a platform token")
        .into_inner()
        .secret;

    // Any HTTP app serving at `/`: here python's file server, over a folder
    // with a sub-folder (a redirect to `/sub/`) and the link path the agent
    // hands the seat.
    let script = "cd \"$CLASSGRID_WORK_DIR\" && mkdir -p sub && echo hello > sub/hello.txt \
                  && printf %s \"$CLASSGRID_SEAT_LINK_PATH\" > sub/path.txt \
                  && exec python3 -m http.server --bind 127.0.0.1 \"$PORT\"";
    let mut req = web_lesson("school-c", 2, 3.0, 120);
    req.request_id = "command-links".into();
    req.workload = Some(pb::Workload {
        command: "sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    });
    let id = broker
        .lessons()
        .await
        .book(req)
        .await
        .expect("booking admitted")
        .into_inner()
        .id;

    // The district admin sees both: each seat's link, and its node address.
    let ready = all_seats(&broker, &id, Duration::from_secs(60), |s| {
        s.state == "running" && !s.endpoint.is_empty() && !s.link.is_empty()
    })
    .await;
    let l = broker.lesson(&id).await;
    assert!(
        ready,
        "seats not running with links: {:#?}\nagent log:\n{}\nedge log:\n{}",
        l.seats,
        agent.proc.log_text(),
        edge.log_text()
    );
    let base = links_on(links_port, &l.seats);
    // The node's address as a platform would spot it: host:port.
    let addresses: Vec<String> = l
        .seats
        .iter()
        .map(|s| s.endpoint.trim_start_matches("http://").to_string())
        .collect();
    let no_address = |what: &str, text: &str| {
        for a in &addresses {
            assert!(
                !text.contains(a.as_str()),
                "{what} shows node address {a}: {text}"
            );
        }
    };

    // A course platform sees the links and no node address: gRPC, REST, CLI.
    let seen =
        pb::lesson_service_client::LessonServiceClient::new(broker.channel_with(&platform).await)
            .get(pb::GetLessonRequest { id: id.clone() })
            .await
            .expect("the platform reads its lesson")
            .into_inner();
    for (s, own) in seen.seats.iter().zip(&l.seats) {
        assert_eq!(s.link, own.link, "seat {}", s.number);
        assert_eq!(s.endpoint, "", "seat {} endpoint for a platform", s.number);
    }
    no_address("gRPC Seat", &format!("{seen:?}"));
    let (code, body) = http_get_as(
        &format!("{}/v1/lessons/{id}", broker.http_url),
        Some(&platform),
    )
    .await
    .expect("REST answers");
    assert_eq!(code, 200, "{body}");
    let rest: serde_json::Value = serde_json::from_str(&body).expect("REST lesson JSON");
    for s in rest["seats"].as_array().expect("seats") {
        assert_eq!(s["endpoint"], "", "{s}");
        assert!(s["link"].as_str().unwrap().starts_with(&base), "{s}");
    }
    no_address("REST lesson", &body);
    let got = sh(cli_as(&broker, &platform).args(["lessons", "get", &id]));
    assert!(got.contains(&l.seats[0].link), "{got}");
    no_address("classgrid lessons get", &got);
    let got = sh(cli_as(&broker, &platform).args(["lessons", "get", &id, "-o", "json"]));
    no_address("classgrid lessons get -o json", &got);

    // Through its link, the app answers at its root, its redirect to
    // `/sub/` stays under the link, and it was told its link path.
    let (a, b) = (&l.seats[0], &l.seats[1]);
    let limit = Duration::from_secs(30);
    assert!(
        answers_with(&a.link, &ca, "200 ", "Directory listing for /<", limit).await,
        "the command seat never answered through its link: {}\nedge log:\n{}",
        get(a.link.clone(), &ca).await,
        edge.log_text()
    );
    let out = get(format!("{}sub", a.link), &ca).await;
    assert!(
        out.starts_with("200 ") && out.contains("Directory listing for /sub/<"),
        "{out}"
    );
    assert_eq!(
        get(format!("{}sub/hello.txt", a.link), &ca).await,
        "200 hello"
    );
    let path = a
        .link
        .trim_start_matches(&format!("https://127.0.0.1:{links_port}"));
    assert_eq!(
        get(format!("{}sub/path.txt", a.link), &ca).await,
        format!("200 {path}")
    );

    // The teacher stops seat 1: its link says so; seat 0 goes on.
    let out = sh(cli(&broker).args(["lessons", "stop-seat", &id, "1"]));
    assert!(out.contains("seat 1 stopped"), "{out}");
    assert!(
        answers_with(&b.link, &ca, "423 ", "stopped this seat", limit).await,
        "a stopped seat's link never said so: {}",
        get(b.link.clone(), &ca).await
    );
    assert!(get(a.link.clone(), &ca).await.starts_with("200 "));

    // Over (here: cancelled), every link, the stopped one too, reads "ended".
    cancel(&broker, &id).await;
    for s in [a, b] {
        assert!(
            answers_with(&s.link, &ca, "410 ", "has ended", limit).await,
            "seat {}'s link still opens after the end",
            s.number
        );
    }
    drop(edge);
    agent.proc.kill9();
}
