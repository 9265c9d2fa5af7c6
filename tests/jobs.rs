//! Ad-hoc jobs: run now in leftover capacity, queue when full, yield to a
//! lesson's reservation before its staging lead (SIGTERM first, then the
//! grace period), come back when capacity returns, and never push a running
//! lesson seat aside. The queue is ordered by the configured weighted sum.

use std::{path::Path, time::Duration};

use classgrid_e2e::*;
use classgrid_proto::v1::{self as pb, job_service_client::JobServiceClient};

async fn jobs(broker: &Broker) -> JobServiceClient<Ch> {
    JobServiceClient::new(broker.channel().await)
}

async fn job(broker: &Broker, id: &str) -> pb::Job {
    jobs(broker)
        .await
        .get(pb::GetJobRequest { id: id.into() })
        .await
        .expect("get job")
        .into_inner()
}

async fn wait_job(broker: &Broker, id: &str, state: &str, secs: u64) -> pb::Job {
    let ok = wait_for(Duration::from_secs(secs), || async {
        job(broker, id).await.state == state
    })
    .await;
    let j = job(broker, id).await;
    assert!(ok, "job should be {state}: {j:#?}");
    j
}

/// One node at `site`, connected; returns its CPU in millis.
async fn one_node(broker: &Broker, site: &str, dir: &Path) -> (Agent, i32) {
    broker.create_site(site).await;
    let agent = Agent::start(broker, site, "n1", dir, &[]);
    assert!(
        wait_for(Duration::from_secs(20), || async {
            broker.node_state(site, "n1").await.as_deref() == Some("connected")
        })
        .await
    );
    let node = broker
        .fleet()
        .await
        .get_node(pb::GetNodeRequest {
            id: format!("{site}/n1"),
        })
        .await
        .unwrap()
        .into_inner();
    (agent, node.capacity.unwrap().cpu_millis)
}

fn submit(site: &str, cpu: i32, script: &str) -> pb::SubmitJobRequest {
    pb::SubmitJobRequest {
        school_site: site.into(),
        name: "homework".into(),
        spec: Some(pb::SeatSpec {
            cpu_millis: cpu,
            memory_mib: 64,
            gpu: None,
            runtime: String::new(),
        }),
        workload: Some(pb::Workload {
            command: "sh".into(),
            args: vec!["-c".into(), script.into()],
            ..Default::default()
        }),
        max_runtime_seconds: 600,
        preemptible: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn submitted_job_runs_now_and_succeeds() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("job-now");
    let broker = Broker::start(&db, &dir, &[]).await;
    let (_agent, _) = one_node(&broker, "school-j", &dir).await;
    let j = jobs(&broker)
        .await
        .submit(submit("school-j", 100, "echo trained; exit 0"))
        .await
        .expect("submitted")
        .into_inner();
    assert!(
        j.state == "running" || j.state == "succeeded",
        "placed at once, not queued: {j:#?}"
    );
    assert_eq!(j.node_name, "n1");
    let done = wait_job(&broker, &j.id, "succeeded", 20).await;
    assert!(done.has_exit_code && done.exit_code == 0, "{done:#?}");
    assert!(done.output_tail.contains("trained"), "{done:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn job_queues_when_full_and_starts_when_capacity_returns() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("job-queue");
    let broker = Broker::start(&db, &dir, &[]).await;
    let (_agent, cpu) = one_node(&broker, "school-q", &dir).await;
    let mut client = jobs(&broker).await;
    let first = client
        .submit(submit("school-q", cpu, "sleep 300"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.state, "running");
    let second = client
        .submit(submit("school-q", cpu, "sleep 300"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.state, "queued", "{second:#?}");
    assert!(
        second.message.starts_with("queued:") && second.message.contains("0/1 nodes"),
        "the queue says why: {}",
        second.message
    );

    client
        .cancel(pb::CancelJobRequest {
            id: first.id.clone(),
        })
        .await
        .unwrap();
    let started = wait_job(&broker, &second.id, "running", 15).await;
    assert_eq!(started.node_name, "n1");
    client
        .cancel(pb::CancelJobRequest { id: second.id })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn lesson_preempts_batch_job_with_sigterm_first_and_job_resumes_after() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("job-preempt");
    // Capacity is held from 4 s before a lesson's start.
    let broker = Broker::start(&db, &dir, &["--staging-lead-s", "4", "--grace-s", "1"]).await;
    let (_agent, cpu) = one_node(&broker, "school-p", &dir).await;
    let log = dir.join("job.log");
    let script = format!(
        "echo started >> {log}; trap 'echo checkpointed >> {log}; exit 0' TERM; \
         while true; do sleep 0.2; done",
        log = log.display()
    );
    let mut req = submit("school-p", cpu, &script);
    req.grace_seconds = 2;
    let j = jobs(&broker).await.submit(req).await.unwrap().into_inner();
    assert_eq!(j.state, "running");

    // The lesson needs the job's CPU from its window start (start − 4 s);
    // the job must get SIGTERM a grace period before that.
    let lesson = broker
        .lessons()
        .await
        .book(web_lesson("school-p", 1, 12.0, 8))
        .await
        .expect("a lesson may preempt batch jobs")
        .into_inner();
    let preempting = job(&broker, &j.id).await;
    assert!(
        preempting.message.contains("will be preempted"),
        "{preempting:#?}"
    );
    let checkpointed = wait_for(Duration::from_secs(15), || async {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("checkpointed")
    })
    .await;
    assert!(checkpointed, "the job got SIGTERM and could checkpoint");
    let l = broker.lesson(&lesson.id).await;
    assert_ne!(
        l.state, "live",
        "preempted before the lesson, not at its bell"
    );
    let back = wait_job(&broker, &j.id, "queued", 10).await;
    // Back in the queue, saying why: first the preemption, then what it waits for.
    assert!(
        back.message.contains("preempted by a lesson") || back.message.contains("calendar busy"),
        "{back:#?}"
    );

    // The lesson runs; the job waits while it does.
    let id = lesson.id.clone();
    assert!(
        broker
            .wait_seats_running(&id, Duration::from_secs(20))
            .await
    );
    assert_eq!(job(&broker, &j.id).await.state, "queued");

    // Capacity returns at the lesson's end: the job resumes.
    assert!(
        wait_for(Duration::from_secs(30), || async {
            broker.lesson(&id).await.state == "ended"
        })
        .await
    );
    wait_job(&broker, &j.id, "running", 15).await;
    assert!(
        wait_for(Duration::from_secs(10), || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("started")
                .count()
                == 2
        })
        .await,
        "the job ran again: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    jobs(&broker)
        .await
        .cancel(pb::CancelJobRequest { id: j.id })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn running_lesson_seats_are_never_preempted_by_jobs() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("job-seat");
    let broker = Broker::start(&db, &dir, &[]).await;
    let (_agent, cpu) = one_node(&broker, "school-s", &dir).await;
    let mut req = web_lesson("school-s", 1, 1.0, 120);
    req.seat.as_mut().unwrap().cpu_millis = cpu;
    let lesson = broker.lessons().await.book(req).await.unwrap().into_inner();
    let id = lesson.id.clone();
    assert!(
        broker
            .wait_seats_running(&id, Duration::from_secs(20))
            .await
    );
    let before = broker.lesson(&id).await.seats;

    let mut high = submit("school-s", 100, "sleep 300");
    high.priority = 1000;
    let j = jobs(&broker).await.submit(high).await.unwrap().into_inner();
    assert_eq!(j.state, "queued", "{j:#?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(job(&broker, &j.id).await.state, "queued");
    let after = broker.lesson(&id).await.seats;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.state, "running");
        assert_eq!(a.assignment_id, b.assignment_id, "the seat kept running");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_order_follows_configured_weighted_factors() {
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("job-order");
    // Fair share only: the school with fewer running jobs goes first, even
    // against a higher `priority`.
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        "[job_priority]\npriority = 0.0\nwait_minutes = 0.0\nschool_share = -100.0\n",
    )
    .unwrap();
    let broker = Broker::start(&db, &dir, &["--config", config.to_str().unwrap()]).await;
    let (_agent, cpu) = one_node(&broker, "school-1", &dir).await;
    broker.create_site("school-2").await;
    let mut client = jobs(&broker).await;
    let small = client
        .submit(submit("school-1", 100, "sleep 300"))
        .await
        .unwrap()
        .into_inner();
    let big = client
        .submit(submit("school-1", cpu - 100, "sleep 300"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (small.state.as_str(), big.state.as_str()),
        ("running", "running")
    );
    let mut eager = submit("school-1", cpu - 100, "sleep 300");
    eager.priority = 1000;
    let eager = client.submit(eager).await.unwrap().into_inner();
    let fair = client
        .submit(submit("school-2", cpu - 100, "sleep 300"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (eager.state.as_str(), fair.state.as_str()),
        ("queued", "queued")
    );

    client
        .cancel(pb::CancelJobRequest { id: big.id })
        .await
        .unwrap();
    wait_job(&broker, &fair.id, "running", 15).await;
    assert_eq!(job(&broker, &eager.id).await.state, "queued");
    for id in [small.id, fair.id, eager.id] {
        let _ = client.cancel(pb::CancelJobRequest { id }).await;
    }
}
