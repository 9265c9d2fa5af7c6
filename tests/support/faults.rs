//! Shared by the fault and high-availability suites: platforms that book
//! with the same request id until answered, the contract checked by SQL,
//! and a bell of one-seat lessons.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use classgrid_proto::v1::{self as pb, lesson_service_client::LessonServiceClient};
use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::Mutex;

use crate::{
    Agent, Broker, TestDb,
    invariants::{self, Acked},
    ts_in, wait_for,
};

/// A seat that costs next to nothing: 150 of them run on the 2-core machine
/// beside the broker, PostgreSQL and the rest of the suite. It counts as
/// running once the agent's listen wait has passed.
pub fn sleeper(
    site: &str,
    start_in: f64,
    duration_s: i64,
    request_id: String,
) -> pb::BookLessonRequest {
    pb::BookLessonRequest {
        request_id,
        school_site: site.into(),
        title: "fault".into(),
        start: Some(ts_in(start_in)),
        duration_seconds: duration_s,
        seats: 1,
        seat: Some(pb::SeatSpec {
            // Small enough that the long form's bells (6 × 150 seats of
            // 15-minute lessons) still fit two agents of a 2-core machine.
            cpu_millis: 2,
            memory_mib: 8,
            gpu: None,
            runtime: String::new(),
        }),
        workload: Some(pb::Workload {
            command: "sleep".into(),
            args: vec!["3600".into()],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Books with the platform's rule: the same request id until an answer
/// comes. A broker that is down, restarting or briefly without its database
/// is retried; anything else (a 500 above all) is an error for the test.
pub async fn book_until_answered(
    url: &str,
    token: &str,
    req: &pb::BookLessonRequest,
    retried: &AtomicUsize,
) -> anyhow::Result<pb::Lesson> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let answer = async {
            let ch = tonic::transport::Endpoint::from_shared(url.to_string())?
                .connect_timeout(Duration::from_secs(2))
                .connect()
                .await?;
            let auth: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
            let mut c =
                LessonServiceClient::with_interceptor(ch, move |mut r: tonic::Request<()>| {
                    r.metadata_mut().insert("authorization", auth.clone());
                    Ok(r)
                });
            Ok::<_, anyhow::Error>(c.book(req.clone()).await)
        }
        .await;
        match answer {
            Ok(Ok(l)) => return Ok(l.into_inner()),
            Ok(Err(s))
                if !matches!(
                    s.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                        | tonic::Code::ResourceExhausted
                ) =>
            {
                anyhow::bail!(
                    "booking {} answered {:?}: {}",
                    req.request_id,
                    s.code(),
                    s.message()
                )
            }
            // Unavailable (the broker is down or its database is), the
            // connection broke mid-call, or the token's rate limit said to
            // slow down: the same request again.
            _ => {}
        }
        retried.fetch_add(1, Ordering::Relaxed);
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("booking {} got no answer within 180 s", req.request_id);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Platforms booking future lessons, each one after another, until told to
/// stop; every acknowledged booking is recorded.
pub struct Stream {
    acked: Arc<Mutex<Vec<Acked>>>,
    count: Arc<AtomicUsize>,
    retried: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Stream {
    /// `platforms` platforms booking through `broker`'s gRPC address.
    pub fn start(broker: &Broker, site: &str, platforms: usize) -> Self {
        Self::start_at(&broker.grpc_url, &broker.token, site, platforms)
    }

    /// The same through any address (a load balancer in front of replicas).
    pub fn start_at(url: &str, token: &str, site: &str, platforms: usize) -> Self {
        let s = Stream {
            acked: Arc::default(),
            count: Arc::default(),
            retried: Arc::default(),
            stop: Arc::default(),
            tasks: Vec::new(),
        };
        let tasks = (0..platforms)
            .map(|p| {
                let (url, token, site) = (url.to_string(), token.to_string(), site.to_string());
                let (acked, count, retried, stop) = (
                    s.acked.clone(),
                    s.count.clone(),
                    s.retried.clone(),
                    s.stop.clone(),
                );
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let rid = format!("fault-{p}-{i}");
                        // Starts spread over the day after tomorrow's
                        // morning, so a stream of them fits the nodes.
                        let start = 2.0 * 86_400.0 + (i % 40) as f64 * 3_600.0;
                        let req = sleeper(&site, start, 600, rid.clone());
                        let l = book_until_answered(&url, &token, &req, &retried).await?;
                        acked.lock().await.push(Acked {
                            lesson_id: l.id.parse()?,
                            request_id: rid,
                            seats: 1,
                        });
                        count.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        Stream { tasks, ..s }
    }

    /// Waits until `more` further bookings were acknowledged.
    pub async fn wait_acks(&self, more: usize) {
        let target = self.count.load(Ordering::Relaxed) + more;
        assert!(
            wait_for(Duration::from_secs(120), || async {
                self.count.load(Ordering::Relaxed) >= target
            })
            .await,
            "the booking stream stalled at {} acknowledged",
            self.count.load(Ordering::Relaxed)
        );
    }

    /// Stops the platforms; each finishes the booking it is in.
    pub async fn finish(self) -> (Vec<Acked>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await
                .expect("platform task")
                .expect("a booking got a final error");
        }
        let acked = self.acked.lock().await.clone();
        (acked, self.retried.load(Ordering::Relaxed))
    }
}

pub async fn pool(db: &TestDb) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db.url)
        .await
        .expect("test pool")
}

/// The contract after a fault: nothing acknowledged lost, nothing
/// over-committed, no seat assigned twice.
pub async fn check_contract(pool: &PgPool, acked: &[Acked]) {
    let lost = invariants::lost(pool, acked).await.unwrap();
    assert!(lost.is_empty(), "acknowledged bookings lost: {lost:#?}");
    let over = invariants::over_committed(pool).await.unwrap();
    assert!(over.is_empty(), "over-committed: {over:#?}");
    let twice = invariants::double_assigned(pool).await.unwrap();
    assert!(
        twice.is_empty(),
        "seats with two live assignments: {twice:#?}"
    );
}

/// Waits until every seat of every live lesson is running or failed with a
/// reason.
pub async fn assert_none_stranded(pool: &PgPool, what: &str) {
    let last = std::sync::Mutex::new(Vec::new());
    let settled = wait_for(Duration::from_secs(120), || async {
        match invariants::stranded(pool).await {
            Ok(s) if s.is_empty() => true,
            Ok(s) => {
                *last.lock().unwrap() = s;
                false
            }
            Err(_) => false,
        }
    })
    .await;
    let left = last.into_inner().unwrap();
    assert!(
        settled,
        "{what}: {} seats of live lessons neither running nor failed with a reason after 120 s: {:#?}",
        left.len(),
        &left[..left.len().min(20)]
    );
}

pub async fn connected_agents(
    broker: &Broker,
    site: &str,
    names: &[&str],
    dir: &std::path::Path,
) -> Vec<Agent> {
    let agents: Vec<Agent> = names
        .iter()
        .map(|n| Agent::start(broker, site, n, dir, &[]))
        .collect();
    for n in names {
        assert!(
            broker
                .wait_connected(site, n, Duration::from_secs(60))
                .await,
            "agent {n} did not connect"
        );
    }
    agents
}

/// Books `n` one-seat lessons whose bell rings `start_in` seconds from now.
pub async fn book_bell(
    broker: &Broker,
    site: &str,
    n: usize,
    start_in: f64,
    tag: &str,
) -> Vec<Acked> {
    let retried = AtomicUsize::new(0);
    let reqs: Vec<pb::BookLessonRequest> = (0..n)
        .map(|i| sleeper(site, start_in, 900, format!("bell-{tag}-{i}")))
        .collect();
    // Eight platforms at once, as at a real bell.
    let results: Vec<(String, anyhow::Result<pb::Lesson>)> = futures::stream::iter(reqs.iter())
        .map(|r| {
            let (url, token, retried) = (&broker.grpc_url, &broker.token, &retried);
            async move {
                (
                    r.request_id.clone(),
                    book_until_answered(url, token, r, retried).await,
                )
            }
        })
        .buffered(8)
        .collect()
        .await;
    let mut acked = Vec::new();
    for (rid, r) in results {
        let l = r.unwrap_or_else(|e| panic!("bell booking {rid}: {e:#}"));
        acked.push(Acked {
            lesson_id: l.id.parse().unwrap(),
            request_id: rid,
            seats: 1,
        });
    }
    acked
}

/// Waits until the first of `lessons` has gone live (the bell is ringing),
/// polling the database directly.
pub async fn wait_bell(pool: &PgPool, lessons: &[Acked]) {
    let ids: Vec<uuid::Uuid> = lessons.iter().map(|a| a.lesson_id).collect();
    let rung = wait_for(Duration::from_secs(120), || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM lessons WHERE id = ANY($1) AND state = 'live')",
        )
        .bind(&ids)
        .fetch_one(pool)
        .await
        .unwrap_or(false)
    })
    .await;
    assert!(rung, "the bell never rang");
}

/// Rounds of each case: `CLASSGRID_FAULT_ROUNDS`, or `ci` as CI runs it.
pub fn rounds(ci: usize) -> usize {
    std::env::var("CLASSGRID_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ci)
}

/// 5 to 200 ms: where in a bell a fault lands.
pub fn into_the_bell() -> Duration {
    Duration::from_millis(5 + (uuid::Uuid::new_v4().as_u128() % 196) as u64)
}
