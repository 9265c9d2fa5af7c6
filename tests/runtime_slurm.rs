//! The slurm runtime runs a seat end to end through a real slurmctld and
//! slurmd (the one-machine cluster scripts/test.sh starts): the agent stands
//! for the cluster with its capacity, the seat is a batch job serving on its
//! PORT, and the job is cancelled at the lesson's end.

use std::time::Duration;

use classgrid_e2e::*;
use classgrid_proto::v1 as pb;

fn slurm_ready() -> bool {
    std::env::var_os("SLURM_CONF").is_some()
        && std::process::Command::new("scontrol")
            .arg("ping")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("UP"))
            .unwrap_or(false)
}

fn squeue(job: &str) -> String {
    std::process::Command::new("squeue")
        .args(["-h", "-j", job, "-o", "%T"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Seats outlive their agent by design, so a failed run would leave its job
/// queued: cancel every classgrid job of the test cluster whatever happens.
struct CancelJobs;

impl Drop for CancelJobs {
    fn drop(&mut self) {
        let out = std::process::Command::new("squeue")
            .args(["-h", "-o", "%i %j"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for line in out.lines() {
            if let Some((id, name)) = line.split_once(' ')
                && name.starts_with("classgrid-")
            {
                let _ = std::process::Command::new("scancel").arg(id).status();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slurm_seat_runs_as_a_batch_job_and_is_cancelled_at_the_end() {
    if !slurm_ready() {
        eprintln!(
            "SKIPPED: no Slurm cluster answers (SLURM_CONF unset or slurmctld down); scripts/test.sh starts one with ensure_slurm"
        );
        return;
    }
    let _cleanup = CancelJobs;
    let db = TestDb::new().await.unwrap();
    let dir = tempdir("slurm");
    let broker = Broker::start(&db, &dir, &["--grace-s", "2"]).await;
    broker.create_site("hpc-centre").await;
    let agent = Agent::start(
        &broker,
        "hpc-centre",
        "cluster",
        &dir,
        &["--runtimes", "slurm", "--tier", "cloud"],
    );
    // The node stands for the cluster: the capacity is Slurm's (the test
    // cluster declares 64 CPUs), and it offers only the slurm runtime.
    let node = wait_for(Duration::from_secs(30), || async {
        broker
            .fleet()
            .await
            .get_node(pb::GetNodeRequest {
                id: "hpc-centre/cluster".into(),
            })
            .await
            .map(|n| n.into_inner())
            .is_ok_and(|n| {
                n.runtimes == vec!["slurm".to_string()]
                    && n.capacity.is_some_and(|c| c.cpu_millis >= 64_000)
            })
    })
    .await;
    assert!(
        node,
        "the agent should stand for the Slurm cluster; log:\n{}",
        agent.proc.log_text()
    );

    let mut req = web_lesson("hpc-centre", 1, 2.0, 30);
    req.seat.as_mut().unwrap().runtime = "slurm".into();
    // A cloud-tier HPC centre is further away than the school's own edge.
    req.max_rtt_ms = 200;
    req.workload.as_mut().unwrap().args = vec![
        "-m".into(),
        "http.server".into(),
        "--bind".into(),
        "0.0.0.0".into(),
        "$(PORT)".into(),
    ];
    let booked = broker
        .lessons()
        .await
        .book(req)
        .await
        .expect("booking admitted")
        .into_inner();
    let id = booked.id.clone();

    let running = broker
        .wait_seats_running(&id, Duration::from_secs(60))
        .await;
    let l = broker.lesson(&id).await;
    assert!(
        running,
        "the seat should run as a Slurm job: {:#?}\nagent log:\n{}",
        l.seats,
        agent.proc.log_text()
    );
    let state = std::fs::read_to_string(agent.state_dir.join("assignments.json")).unwrap();
    let recs: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(recs[0]["runtime"], "slurm", "{state}");
    let job = recs[0]["job_id"]
        .as_str()
        .expect("a Slurm job id")
        .to_string();
    assert_eq!(squeue(&job), "RUNNING");
    let endpoint = l.seats[0].endpoint.clone();
    let (code, _) = http_get(&format!("{endpoint}/"))
        .await
        .expect("seat endpoint on the batch host");
    assert_eq!(code, 200);

    let ended = wait_for(Duration::from_secs(60), || async {
        broker.lesson(&id).await.state == "ended"
    })
    .await;
    let l = broker.lesson(&id).await;
    assert!(ended, "lesson should end: {l:#?}");
    assert!(
        l.seats.iter().all(|s| s.state == "released"),
        "{:#?}",
        l.seats
    );
    let cancelled = wait_for(Duration::from_secs(30), || async {
        squeue(&job).is_empty()
    })
    .await;
    assert!(
        cancelled,
        "the job should leave the queue at the end: {}",
        squeue(&job)
    );
}
