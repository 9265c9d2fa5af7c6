//! Federation end to end (issue 21): three regions, each its own broker,
//! database and agents, on loopback, peered by `classgrid peers offer` and
//! `classgrid peers accept`. A lesson that does not fit at home goes to the
//! nearest peer that can take it, not the biggest; a peer's lending policy
//! is honoured; a hold its home never commits (the home broker killed
//! between hold and commit) leaks nothing once it expires, and a commit
//! that arrives twice books once.

use std::{path::PathBuf, time::Duration};

use classgrid_e2e::*;
use classgrid_proto::v1::{
    self as pb, admin_service_client::AdminServiceClient,
    federation_service_client::FederationServiceClient,
};
use sqlx::Row;
use tonic::transport::Channel;

/// One GET over https with the system's Python: "STATUS BODY…".
const SEAT_GET: &str = include_str!("clients/seat_get.py");

struct Region {
    name: &'static str,
    site: &'static str,
    db: TestDb,
    dir: PathBuf,
    broker: Broker,
    _agents: Vec<Agent>,
}

/// A region with `agents` nodes at its one site (each with an L40S when
/// `gpu`). Its usage is settled 5 s after a lesson's end at the latest.
async fn region(name: &'static str, site: &'static str, agents: usize, gpu: bool) -> Region {
    region_with(name, site, agents, if gpu { &["gpu"] } else { &[] }, "").await
}

/// `region` with more of the broker's TOML, and options for its agents:
/// "gpu" (an L40S each), "cloud" (cloud-tier nodes), and any `--flag=value`
/// of `classgrid-agent run` as given.
async fn region_with(
    name: &'static str,
    site: &'static str,
    agents: usize,
    options: &[&str],
    toml: &str,
) -> Region {
    let gpu = options.contains(&"gpu");
    let db = TestDb::new().await.unwrap();
    let dir = tempdir(&format!("fed-{name}"));
    let cfg = dir.join("broker.toml");
    std::fs::write(&cfg, format!("[vouchers]\nsettle_after_s = 5\n{toml}")).unwrap();
    let cfg = cfg.display().to_string();
    let broker = Broker::start_secure(&db, &dir, &["--grace-s", "2", "--config", &cfg]).await;
    broker.create_site(site).await;
    if agents == 0 {
        return Region {
            name,
            site,
            db,
            dir,
            broker,
            _agents: Vec::new(),
        };
    }
    let token = AdminServiceClient::new(broker.channel().await)
        .create_join_token(pb::CreateJoinTokenRequest {
            site: site.into(),
            kind: "agent".into(),
            ttl_seconds: 600,
            uses: agents as i32,
            require_approval: Some(false),
        })
        .await
        .expect("join token")
        .into_inner()
        .secret;
    let tool = format!("nvidia-smi={}", fake_nvidia_smi(&dir).display());
    let mut extra: Vec<&str> = if gpu { vec!["--tool", &tool] } else { vec![] };
    if options.contains(&"cloud") {
        extra.extend(["--tier", "cloud"]);
    }
    extra.extend(options.iter().filter(|o| o.starts_with("--")));
    let agents: Vec<Agent> = (0..agents)
        .map(|i| {
            Agent::join_and_start_with(&token, &broker, &format!("{name}{i}"), &dir, &extra)
                .expect("agent joins")
        })
        .collect();
    for a in &agents {
        assert!(
            broker
                .wait_connected(site, &a.name, Duration::from_secs(60))
                .await,
            "agent {} of region {name} should connect: {}",
            a.name,
            a.proc.log_text()
        );
    }
    Region {
        name,
        site,
        db,
        dir,
        broker,
        _agents: agents,
    }
}

/// The `classgrid` CLI against a region's broker, as its district admin.
fn cli(r: &Region, args: &[&str]) -> (bool, String, String) {
    classgrid_e2e::cli(&r.broker, &r.broker.token, args)
}

/// `home` offers, `lender` accepts; each side states what it lends.
fn peer(home: &Region, lender: &Region, rtt_ms: &str, lends_home: &str) {
    peer_at(home, lender, rtt_ms, lends_home, "1")
}

/// `peer`, the lender lending home at `weight` (decision 108).
fn peer_at(home: &Region, lender: &Region, rtt_ms: &str, lends_home: &str, weight: &str) {
    let (ok, out, err) = cli(
        home,
        &[
            "peers",
            "offer",
            lender.name,
            "--as",
            home.name,
            "--url",
            &home.broker.grpc_url,
            "--site",
            home.site,
            "--rtt-ms",
            rtt_ms,
            "--lend-max-slices",
            "0",
        ],
    );
    assert!(ok, "peers offer: {out}{err}");
    let offer = out
        .lines()
        .find(|l| l.starts_with("cgpeer_"))
        .unwrap_or_else(|| panic!("the offer is printed once: {out}"))
        .to_string();
    let (ok, out, err) = cli(
        lender,
        &[
            "peers",
            "accept",
            &offer,
            "--as",
            lender.name,
            "--url",
            &lender.broker.grpc_url,
            "--site",
            lender.site,
            "--rtt-ms",
            rtt_ms,
            "--lend-max-slices",
            lends_home,
            "--lend-weight",
            weight,
        ],
    );
    assert!(ok, "peers accept: {out}{err}");
    assert!(out.contains(&format!("region {}", home.name)), "{out}");
    // The offer was for one acceptance only.
    let (ok, _, err) = cli(
        lender,
        &[
            "peers",
            "accept",
            &offer,
            "--as",
            "other",
            "--url",
            &lender.broker.grpc_url,
            "--site",
            lender.site,
        ],
    );
    assert!(
        !ok && err.contains("refused"),
        "a used offer must not work again: {err}"
    );
}

async fn pool(r: &Region) -> sqlx::PgPool {
    sqlx::PgPool::connect(&r.db.url)
        .await
        .expect("region database")
}

/// A class of `seats` seats, each half a node's CPU: two seats fill a node.
fn class(site: &str, seats: i32) -> pb::BookLessonRequest {
    class_for(site, seats, 300)
}

fn class_for(site: &str, seats: i32, duration_s: i64) -> pb::BookLessonRequest {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut r = web_lesson(site, seats, 3.0, duration_s);
    if let Some(s) = r.seat.as_mut() {
        s.cpu_millis = (cores * 1000 / 2) as i32;
    }
    r.max_rtt_ms = 100;
    r
}

async fn book(r: &Region, seats: i32) -> Result<pb::Lesson, tonic::Status> {
    r.broker
        .lessons()
        .await
        .book(class(r.site, seats))
        .await
        .map(|l| l.into_inner())
}

/// A client of `lender` with the identity `home` holds at it: what the home
/// broker itself uses, taken from its database and data folder.
async fn as_home_at(home: &Region, lender: &Region) -> FederationServiceClient<Channel> {
    let row = sqlx::query(
        "SELECT id, own_cert_pem, ca_pem, url FROM peerings WHERE name = $1 AND state <> 'removed'",
    )
    .bind(lender.name)
    .fetch_one(&pool(home).await)
    .await
    .expect("home's peering with the lender");
    let id: uuid::Uuid = row.get("id");
    let (cert, ca, url): (String, String, String) = (row.get(1), row.get(2), row.get(3));
    let key = std::fs::read_to_string(
        home.dir
            .join("broker")
            .join("peers")
            .join(format!("{}.key", id.simple())),
    )
    .expect("home's key for the lender");
    let tls = classgrid_common::tls::client_config(&url, &ca, Some((&cert, &key))).unwrap();
    let ch = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("connect to the lender over mTLS");
    FederationServiceClient::new(ch)
}

fn ask(lesson: uuid::Uuid, seats: i32, hold_s: i32) -> pb::OfferRequest {
    let c = class("ignored", seats);
    pb::OfferRequest {
        lesson_id: lesson.to_string(),
        title: "direct".into(),
        start: c.start,
        duration_seconds: c.duration_seconds,
        seats,
        seat: c.seat,
        workload: c.workload,
        max_rtt_ms: 80.0,
        hold_seconds: hold_s,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn regions_lend_to_the_nearest_peer_that_can_take_the_class_and_holds_never_leak() {
    // Home holds one node (two seats); b is near (3 ms) with two nodes but
    // lends home two slices; c is far (10 ms) and biggest, with three.
    let mut a = region("a", "a-school", 1, false).await;
    let b = region("b", "b-pop", 2, false).await;
    let c = region("c", "c-pop", 3, false).await;
    peer(&a, &b, "3", "2");
    peer(&a, &c, "10", "6");

    let (ok, out, err) = cli(&a, &["peers", "list"]);
    assert!(ok, "{err}");
    for name in ["b ", "c "] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(name) && l.contains("connected")),
            "{name}connected: {out}"
        );
    }
    let (ok, out, _) = cli(&b, &["peers", "show", "a", "-o", "json"]);
    assert!(ok && out.contains("\"max_slices\": 2"), "{out}");
    // Each step is in both regions' audit logs.
    let actions = |r: &Region| {
        let r = r.db.url.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT action || ':' || result FROM audit_log WHERE action LIKE 'peering.%' ORDER BY id",
            )
            .fetch_all(&sqlx::PgPool::connect(&r).await.unwrap())
            .await
            .unwrap()
        }
    };
    let on_a = actions(&a).await;
    for want in [
        "peering.offer:ok",
        "peering.handshake:ok",
        "peering.confirm:ok",
    ] {
        assert!(
            on_a.iter().filter(|x| *x == want).count() == 2,
            "{want} twice on a: {on_a:?}"
        );
    }
    assert!(
        on_a.contains(&"peering.handshake:error".to_string()),
        "the reused offer: {on_a:?}"
    );
    assert!(actions(&b).await.contains(&"peering.accept:ok".to_string()));

    // Home first: the first class fits at home.
    let l0 = book(&a, 2).await.expect("first class at home");
    assert!(l0.seats.iter().all(|s| s.region.is_empty()), "{l0:#?}");

    // The second does not fit at home: the nearest peer takes it, not the
    // biggest.
    let l1 = book(&a, 2).await.expect("second class borrowed");
    assert_eq!(l1.seat_count, 2);
    assert!(l1.seats.iter().all(|s| s.region == "b"), "{l1:#?}");
    let rtt = l1.seats[0].rtt.unwrap();
    // school → a (8 ms, configured topology) + a → b (3 ms) + b's site → node.
    assert!(rtt.ms >= 11.0, "{rtt:?}");
    assert_eq!(rtt.source, pb::RttSource::Estimated as i32);

    // Explain says which regions were asked and what each answered.
    let why = a
        .broker
        .lessons()
        .await
        .explain(pb::GetLessonRequest { id: l1.id.clone() })
        .await
        .expect("explain a borrowed lesson")
        .into_inner();
    assert!(
        why.admitted
            && why
                .summary
                .contains("this region: 0/1 nodes: 1 calendar busy")
            && why.summary.contains("region b: admitted"),
        "{why:#?}"
    );

    // The third: b still has two free slices, but lends home only two.
    let l2 = book(&a, 2).await.expect("third class borrowed");
    assert!(l2.seats.iter().all(|s| s.region == "c"), "{l2:#?}");

    // Seat states flow back to home, with their region.
    for l in [&l1, &l2] {
        let id = l.id.clone();
        let running = wait_for(Duration::from_secs(60), || async {
            let l = a.broker.lesson(&id).await;
            l.seats.len() == 2
                && l.seats
                    .iter()
                    .all(|s| s.state == "running" && !s.endpoint.is_empty())
        })
        .await;
        assert!(running, "{:#?}", a.broker.lesson(&id).await);
    }

    // Lists show borrowed lessons beside home's own.
    let listed = a
        .broker
        .lessons()
        .await
        .list(pb::ListLessonsRequest {
            school_site: a.site.into(),
            page_size: 50,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .lessons;
    for l in [&l0, &l1, &l2] {
        assert!(
            listed.iter().any(|x| x.id == l.id),
            "{} listed: {listed:#?}",
            l.id
        );
    }

    // Cancelling at home releases the seats on the lender.
    let cancelled = a
        .broker
        .lessons()
        .await
        .cancel(pb::CancelLessonRequest {
            id: l1.id.clone(),
            reason: "test".into(),
        })
        .await
        .expect("a borrowed lesson can be cancelled at home")
        .into_inner();
    assert_eq!(cancelled.state, "cancelled", "{cancelled:#?}");
    let b_db = pool(&b).await;
    let on_b: String = sqlx::query_scalar(
        "SELECT l.state FROM peer_holds h JOIN lessons l ON l.id = h.lesson_id WHERE h.home_lesson_id = $1",
    )
    .bind(uuid::Uuid::parse_str(&l1.id).unwrap())
    .fetch_one(&b_db)
    .await
    .unwrap();
    assert_eq!(on_b, "cancelled");

    // A class no region can take is refused with every region's answer.
    let e = book(&a, 9).await.expect_err("nine seats fit nowhere");
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(
        e.message().contains("region b") && e.message().contains("region c"),
        "{}",
        e.message()
    );
    assert!(
        e.message().contains("lends a at most 2 slices"),
        "{}",
        e.message()
    );

    // A class whose data must stay in its district is never asked of
    // another region.
    let mut resident = class(a.site, 2);
    resident.residency = "district".into();
    let e = a
        .broker
        .lessons()
        .await
        .book(resident)
        .await
        .expect_err("home is full and no peer may take district data");
    assert!(
        e.message()
            .contains("region b: not asked: the lesson's data must stay in the district"),
        "{}",
        e.message()
    );

    // Commit twice books once.
    let mut to_c = as_home_at(&a, &c).await;
    let x = uuid::Uuid::now_v7();
    let offer = to_c.offer(ask(x, 2, 30)).await.unwrap().into_inner();
    assert!(offer.admitted, "{offer:?}");
    let first = to_c
        .commit(pb::HostedLessonRequest {
            lesson_id: x.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    let again = to_c
        .commit(pb::HostedLessonRequest {
            lesson_id: x.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.hold_state, "committed");
    let seat_ids = |h: &pb::HostedLesson| {
        let l = h.lesson.clone().unwrap_or_default();
        (l.id, l.seats.into_iter().map(|s| s.id).collect::<Vec<_>>())
    };
    assert_eq!(
        seat_ids(&first),
        seat_ids(&again),
        "the same lesson, the same seats"
    );
    assert_eq!(again.hold_state, "committed");
    let c_db = pool(&c).await;
    let lent: i64 =
        sqlx::query_scalar("SELECT count(*) FROM lent_lessons WHERE home_lesson_id = $1")
            .bind(x)
            .fetch_one(&c_db)
            .await
            .unwrap();
    assert_eq!(lent, 1);
    let released = to_c
        .release(pb::HostedLessonRequest {
            lesson_id: x.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(released.hold_state, "released");

    // The home broker dies between hold and commit: the hold expires and
    // the capacity comes back.
    let y = uuid::Uuid::now_v7();
    let held = to_c.offer(ask(y, 2, 3)).await.unwrap().into_inner();
    assert!(held.admitted, "{held:?}");
    a.broker.proc.kill9();
    let z = uuid::Uuid::now_v7();
    let full = to_c.offer(ask(z, 4, 3)).await.unwrap().into_inner();
    assert!(!full.admitted, "c holds 2 + 2 of its 6: {full:?}");
    let hosted: uuid::Uuid =
        sqlx::query_scalar("SELECT lesson_id FROM peer_holds WHERE home_lesson_id = $1")
            .bind(y)
            .fetch_one(&c_db)
            .await
            .unwrap();
    let freed = wait_for(Duration::from_secs(30), || {
        let c_db = c_db.clone();
        async move {
            let state: String =
                sqlx::query_scalar("SELECT state FROM peer_holds WHERE home_lesson_id = $1")
                    .bind(y)
                    .fetch_one(&c_db)
                    .await
                    .unwrap();
            let kept: i64 =
                sqlx::query_scalar("SELECT count(*) FROM reservations WHERE owner_id = $1")
                    .bind(hosted)
                    .fetch_one(&c_db)
                    .await
                    .unwrap();
            state == "expired" && kept == 0
        }
    })
    .await;
    assert!(
        freed,
        "the uncommitted hold should expire and free its reservations"
    );
    let lesson_state: String = sqlx::query_scalar("SELECT state FROM lessons WHERE id = $1")
        .bind(hosted)
        .fetch_one(&c_db)
        .await
        .unwrap();
    assert_eq!(lesson_state, "cancelled");
    let late = to_c
        .commit(pb::HostedLessonRequest {
            lesson_id: y.to_string(),
        })
        .await
        .expect_err("a commit after the expiry is refused");
    assert!(late.message().contains("expired"), "{}", late.message());
    // What it held is free again: four seats fit where only two did.
    let after = to_c
        .offer(ask(uuid::Uuid::now_v7(), 4, 3))
        .await
        .unwrap()
        .into_inner();
    assert!(after.admitted, "{after:?}");
}

/// The settlement line of a lesson in a region's ledger: (direction, seats,
/// amount, slice-seconds), every one there is.
async fn lines(r: &Region, lesson: &str) -> Vec<(String, i32, i64, f64)> {
    sqlx::query_as(
        "SELECT direction, seats, amount_uah, slice_seconds FROM settlement_entries WHERE home_lesson_id = $1",
    )
    .bind(uuid::Uuid::parse_str(lesson).unwrap())
    .fetch_all(&pool(r).await)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lesson_hosted_across_a_cut_link_runs_to_its_end_and_is_settled_once_on_both_sides() {
    // Home has no node of its own: every class is hosted by b.
    let a = region("a", "a-school", 0, false).await;
    let mut b = region("b", "b-pop", 1, true).await;
    // b lends a at twice its voucher weights.
    peer_at(&a, &b, "3", "2", "2");
    // Quarter-L40S seats: what they use is charged in accelerator-hours.
    let mut req = class_for(a.site, 2, 25);
    req.seat.as_mut().unwrap().gpu = Some(quarter_l40s());
    // The school's vouchers at home pay for a hosted lesson: without one,
    // b's offer is let go at once and the booking refused with the reason.
    let broke = a
        .broker
        .lessons()
        .await
        .book(req.clone())
        .await
        .expect_err("no voucher at home, no borrowed GPU seats");
    assert!(
        broke.message().contains("region b: voucher balance"),
        "{}",
        broke.message()
    );
    let still_held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM peer_holds WHERE state IN ('holding', 'held', 'committed')",
    )
    .fetch_one(&pool(&b).await)
    .await
    .unwrap();
    assert_eq!(still_held, 0, "b's hold is released, not left to expire");
    issue_voucher(&a.broker, a.site, "fed-school", 10.0).await;
    let l = a
        .broker
        .lessons()
        .await
        .book(req)
        .await
        .expect("hosted by b")
        .into_inner();
    let ledger = |kind: &'static str| {
        let id = l.id.clone();
        let a = &a;
        async move {
            let (ok, out, err) = cli(
                a,
                &[
                    "vouchers", "ledger", "--lesson", &id, "--kind", kind, "-o", "json",
                ],
            );
            assert!(ok, "{err}");
            let v: serde_json::Value = serde_json::from_str(&out).expect("ledger json");
            v["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["micro_hours"].as_i64().unwrap(),
                        e["note"].as_str().unwrap().to_string(),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let holds = ledger("hold").await;
    let held: i64 = holds.iter().map(|h| -h.0).sum();
    assert!(
        held > 0 && holds.iter().all(|h| h.1.contains("hosted by region b")),
        "the lender's worst case is held at home: {holds:?}"
    );
    assert!(l.seats.iter().all(|s| s.region == "b"), "{l:#?}");
    // Watch follows the hosted seats as it follows local ones.
    let mut watch = a
        .broker
        .lessons()
        .await
        .watch(pb::GetLessonRequest { id: l.id.clone() })
        .await
        .expect("watch a borrowed lesson")
        .into_inner();
    let watched = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(m)) = watch.message().await {
            if m.seats.len() == 2
                && m.seats
                    .iter()
                    .all(|s| s.state == "running" && s.region == "b" && !s.endpoint.is_empty())
            {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(watched, "Watch should show the hosted seats running");
    let running = wait_for(Duration::from_secs(60), || async {
        let l = a.broker.lesson(&l.id).await;
        l.seats.len() == 2 && l.seats.iter().all(|s| s.state == "running")
    })
    .await;
    let live = a.broker.lesson(&l.id).await;
    assert!(running, "{live:#?}");

    // The link is cut mid-lesson: b's broker stops. Home says since when,
    // refuses what would need b, and the seats keep serving on b's node.
    b.broker.proc.kill9();
    let away = wait_for(Duration::from_secs(20), || async {
        a.broker
            .lesson(&l.id)
            .await
            .message
            .contains("unreachable since")
    })
    .await;
    assert!(away, "{:#?}", a.broker.lesson(&l.id).await);
    let shown = a.broker.lesson(&l.id).await;
    assert!(
        shown
            .seats
            .iter()
            .all(|s| s.region == "b" && s.state == "running"),
        "{shown:#?}"
    );
    for s in &live.seats {
        let (code, _) = http_get(&format!("{}/", s.endpoint))
            .await
            .expect("seat still serves");
        assert_eq!(code, 200);
    }
    let refused = a
        .broker
        .lessons()
        .await
        .book(class(a.site, 1))
        .await
        .expect_err("nothing can host while b is away");
    assert!(
        refused.message().contains("region b: unreachable"),
        "{}",
        refused.message()
    );
    let (ok, out, _) = cli(&a, &["peers", "list"]);
    assert!(ok && out.contains("disconnected since"), "{out}");

    // The link comes back: the lesson ends on b, b settles what it lent,
    // home copies the same line, once each.
    b.broker.restart().await;
    let settled = wait_for(Duration::from_secs(90), || async {
        lines(&a, &l.id).await.len() == 1 && lines(&b, &l.id).await.len() == 1
    })
    .await;
    assert!(
        settled,
        "a: {:?} b: {:?}",
        lines(&a, &l.id).await,
        lines(&b, &l.id).await
    );
    let (on_a, on_b) = (lines(&a, &l.id).await, lines(&b, &l.id).await);
    assert_eq!(on_a[0].0, "borrowed");
    assert_eq!(on_b[0].0, "lent");
    assert_eq!(
        (on_a[0].1, on_a[0].2, on_a[0].3),
        (on_b[0].1, on_b[0].2, on_b[0].3),
        "both ledgers agree"
    );
    assert_eq!(on_b[0].1, 2);
    assert!(on_b[0].2 > 0 && on_b[0].3 > 0.0, "the seats ran: {on_b:?}");
    // The line is the metered slice-seconds at the L40S's voucher weight
    // (5.5) times the lending weight (2), in micro accelerator-hours. Each
    // meter (an assignment of a seat: b's restart may start a seat again)
    // is priced and rounded to the micro-hour on its own, so the line may
    // differ from the product of the sums by up to half a micro-hour a
    // meter (CI saw 38037 against 38036.3); at weight 1 it would be half.
    let meters: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM assignments a JOIN seats s ON s.id = a.seat_id
           JOIN lent_lessons ll ON ll.lesson_id = s.lesson_id WHERE ll.home_lesson_id = $1",
    )
    .bind(uuid::Uuid::parse_str(&l.id).unwrap())
    .fetch_one(&pool(&b).await)
    .await
    .unwrap();
    let priced = on_b[0].3 * 5.5 * 2.0 / 3600.0 * 1e6;
    assert!(
        meters >= 2 && (on_b[0].2 as f64 - priced).abs() <= 0.5 * meters as f64 + 1e-6,
        "priced at the lending weight: {on_b:?}, expected {priced:.1} ± 0.5 for each of {meters} meters"
    );
    // The school's vouchers paid the same line: the hold is released and
    // the lender's amount charged in its place, within the hold.
    let charged: i64 = ledger("charge").await.iter().map(|c| -c.0).sum();
    let released: i64 = ledger("release").await.iter().map(|r| r.0).sum();
    assert_eq!(released, held, "the whole hold is released");
    assert_eq!(
        charged,
        on_a[0].2.min(held),
        "the school is charged the settlement line"
    );
    assert!(
        on_a[0].2 <= held,
        "the worst case covers the use: {on_a:?} {held}"
    );
    let ended = a.broker.lesson(&l.id).await;
    assert_eq!(ended.state, "ended", "{ended:#?}");
    // The monthly report shows the same line on both sides.
    let (ok, csv_a, err) = cli(&a, &["peers", "settlement", "--csv"]);
    assert!(ok, "{err}");
    let (ok, csv_b, err) = cli(&b, &["peers", "settlement", "--csv"]);
    assert!(ok, "{err}");
    let amounts = |csv: &str| {
        csv.lines()
            .filter(|x| x.contains(&l.id))
            .map(|x| x.split(',').skip(3).take(4).collect::<Vec<_>>().join(","))
            .collect::<Vec<_>>()
    };
    assert_eq!(amounts(&csv_a).len(), 1, "{csv_a}");
    assert_eq!(amounts(&csv_a), amounts(&csv_b), "{csv_a}\n{csv_b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn under_best_rtt_a_nearer_peer_hosts_a_class_that_would_fit_at_home() {
    // Home's only node is in the cloud (60 ms from its schools); b (3 ms
    // away) and c (5 ms) each have edge nodes at their point of presence.
    let a = region_with(
        "a",
        "a-school",
        1,
        &["cloud"],
        "[federation]\nplacement = \"best_rtt\"\n",
    )
    .await;
    let b = region("b", "b-pop", 1, false).await;
    let c = region("c", "c-pop", 1, false).await;
    peer(&a, &b, "3", "2");
    peer(&a, &c, "5", "2");
    let connected = wait_for(Duration::from_secs(30), || async {
        let (ok, out, _) = cli(&a, &["peers", "list"]);
        ok && ["b ", "c "].iter().all(|name| {
            out.lines()
                .any(|l| l.starts_with(name) && l.contains("connected") && !l.contains("dis"))
        })
    })
    .await;
    assert!(connected, "{:?}", cli(&a, &["peers", "list"]));

    // The class fits at home, but b's seats are nearer: school → a (8 ms) +
    // a → b (3 ms) + b's site → node (2 ms) against 60 ms in the cloud.
    let l = book(&a, 2).await.expect("booked");
    let why = a
        .broker
        .lessons()
        .await
        .explain(pb::GetLessonRequest { id: l.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(
        l.seats.iter().all(|s| s.region == "b"),
        "{}: {l:#?}",
        why.summary
    );
    let rtt = l.seats[0].rtt.unwrap();
    assert!(rtt.ms < 20.0, "{rtt:?}");
    for want in [
        "this region: slowest seat 60.0 ms",
        "region c: slowest seat",
        "region b: admitted (best RTT)",
    ] {
        assert!(why.summary.contains(want), "{want}: {}", why.summary);
    }
    // c's offer was let go at once, not left to expire.
    let home_lesson = uuid::Uuid::parse_str(&l.id).unwrap();
    let c_hold: String =
        sqlx::query_scalar("SELECT state FROM peer_holds WHERE home_lesson_id = $1")
            .bind(home_lesson)
            .fetch_one(&pool(&c).await)
            .await
            .unwrap();
    assert_eq!(c_hold, "released");

    // b lends a two slices, both in use: the next class goes to c, still
    // nearer than home's cloud; the one after, with both peers full, home.
    let l2 = book(&a, 2).await.expect("booked at c");
    assert!(l2.seats.iter().all(|s| s.region == "c"), "{l2:#?}");
    let l3 = book(&a, 2).await.expect("booked at home");
    assert!(l3.seats.iter().all(|s| s.region.is_empty()), "{l3:#?}");
}

/// A school edge of `r`'s site, joined with its own certificate, probing
/// every 300 ms and reporting every 500 ms. With `links`, it also serves
/// seat links over TLS with the certificate `classgrid-broker edge-cert`
/// issues; then the port they are on and the region CA's file come back.
async fn school_edge(r: &Region, links: bool) -> (Proc, u16, String) {
    let secret = join_token(&r.broker, r.site, "edge").await;
    let state = r.dir.join("edge");
    edge_join(&r.broker, &secret, &state);
    let data_dir = r.dir.join("broker");
    let tls = r.dir.join("edge-tls");
    let links_port = free_port();
    let listen = format!("127.0.0.1:{links_port}");
    let (cert, key) = (tls.join("seat-links.pem"), tls.join("seat-links.key"));
    let mut env: Vec<(&str, &str)> = Vec::new();
    if links {
        let out = std::process::Command::new(bin("classgrid-broker"))
            .args(["edge-cert", "--name", "127.0.0.1", "--out"])
            .arg(&tls)
            .args(["--database-url", &r.db.url, "--data-dir"])
            .arg(&data_dir)
            .output()
            .expect("run classgrid-broker edge-cert");
        assert!(
            out.status.success(),
            "edge-cert: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        env = vec![
            ("CLASSGRID_SEAT_LINKS_LISTEN", listen.as_str()),
            ("CLASSGRID_SEAT_LINKS_CERT", cert.to_str().unwrap()),
            ("CLASSGRID_SEAT_LINKS_KEY", key.to_str().unwrap()),
        ];
    }
    let content = format!("127.0.0.1:{}", free_port());
    let edge = Proc::spawn(
        &bin("classgrid-edge"),
        &[
            "run",
            "--state-dir",
            &state.display().to_string(),
            "--listen",
            &content,
            "--probe-interval-ms",
            "300",
            "--report-interval-ms",
            "500",
            "--log-format",
            "text",
        ]
        .map(String::from),
        r.dir.join("edge.log"),
        &env,
    );
    (
        edge,
        links_port,
        data_dir.join("ca.pem").display().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_borrowed_seat_opens_through_the_link_on_its_school_edge() {
    // Home has no node: the class runs on b's. The student's link is on
    // the school's own edge, as for a seat at home, and reaches the seat.
    let a = region("a", "a-school", 0, false).await;
    let b = region("b", "b-pop", 1, false).await;
    peer(&a, &b, "3", "2");
    let (edge, links_port, ca) = school_edge(&a, true).await;
    let l = book(&a, 1).await.expect("hosted by b");
    let base = format!("https://127.0.0.1:{links_port}/seat/");
    let linked = wait_for(Duration::from_secs(60), || async {
        let seats = a.broker.lesson(&l.id).await.seats;
        seats.len() == 1
            && seats[0].region == "b"
            && seats[0].state == "running"
            && seats[0].link.starts_with(&base)
    })
    .await;
    let shown = a.broker.lesson(&l.id).await;
    assert!(linked, "{shown:#?}\nedge log:\n{}", edge.log_text());
    let link = shown.seats[0].link.clone();
    // The seat (python3 -m http.server on b's node) answers through it.
    let opened = wait_for(Duration::from_secs(60), || async {
        let (url, ca) = (link.clone(), ca.clone());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("python3")
                .args(["-c", SEAT_GET, &url, &ca, ""])
                .output()
        })
        .await
        .unwrap()
        .expect("python3");
        let out = String::from_utf8_lossy(&out.stdout).to_string();
        out.starts_with("200") && out.contains("Directory listing")
    })
    .await;
    assert!(
        opened,
        "{link} should open the seat; edge log:\n{}",
        edge.log_text()
    );
    // A made-up token under the same edge opens nothing.
    let bad = format!("{base}{}/", "0".repeat(64));
    let out = std::process::Command::new("python3")
        .args(["-c", SEAT_GET, &bad, &ca, ""])
        .output()
        .expect("python3");
    let out = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.starts_with("404"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_school_edge_measures_the_peer_nodes_it_may_borrow_and_the_measurement_decides() {
    // Home has no node; b's one node answers its probes 60 ms late
    // (injected in its probe responder), which b's own estimate of a few
    // ms cannot know. b publishes it as a probe target; a's school edge
    // times it.
    let a = region("a", "a-school", 0, false).await;
    let b = region_with("b", "b-pop", 1, &["--probe-delay-ms=60"], "").await;
    peer(&a, &b, "3", "2");
    let (edge, ..) = school_edge(&a, false).await;
    let l = book(&a, 1).await.expect("hosted by b");
    // The seat's RTT becomes the edge's measurement, and says so.
    let measured = wait_for(Duration::from_secs(60), || async {
        let seat = a.broker.lesson(&l.id).await.seats.into_iter().next();
        seat.and_then(|s| s.rtt)
            .is_some_and(|r| r.source == pb::RttSource::Measured as i32 && r.ms >= 55.0)
    })
    .await;
    assert!(
        measured,
        "{:#?}\nedge log:\n{}",
        a.broker.lesson(&l.id).await,
        edge.log_text()
    );
    // A class whose limit the estimate meets but the measurement does not
    // is refused, naming the measurement; b's hold is let go at once.
    let mut req = class(a.site, 1);
    req.max_rtt_ms = 40;
    let refused = a
        .broker
        .lessons()
        .await
        .book(req)
        .await
        .expect_err("the measured 60 ms is above max_rtt 40");
    assert!(
        refused.message().contains("measured") && refused.message().contains("region b"),
        "{}",
        refused.message()
    );
    let held: i64 =
        sqlx::query_scalar("SELECT count(*) FROM peer_holds WHERE state IN ('holding', 'held')")
            .fetch_one(&pool(&b).await)
            .await
            .unwrap();
    assert_eq!(held, 0, "the refused offer's hold is released");
}
