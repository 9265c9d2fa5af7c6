//! The process runtime puts each seat in its own cgroup v2 with cpu.max and
//! memory.max from the assignment, where the host allows it. Hosts without a
//! writable cgroup2 mount offering cpu and memory skip, saying why (the agent
//! then runs seats without limits and reports a node warning).

use std::time::Duration;

use classgrid_agent::runtime::{
    Handle, Probe, Runtime, StartSpec, cgroup::Cgroups, process::ProcessRuntime,
};
use classgrid_proto::v1 as pb;

fn spec(id: &str, dir: &std::path::Path) -> StartSpec {
    StartSpec {
        assign: pb::Assign {
            assignment_id: id.into(),
            generation: 1,
            kind: "seat".into(),
            workload: Some(pb::Workload {
                command: "sleep".into(),
                args: vec!["30".into()],
                ..Default::default()
            }),
            cpu_millis: 500,
            memory_mib: 64,
            grace_seconds: 1,
            ..Default::default()
        },
        work_dir: dir.to_path_buf(),
        env: vec![],
        port: 0,
        slices: vec![],
    }
}

#[tokio::test]
async fn seat_runs_in_its_own_cgroup_with_cpu_and_memory_limits() {
    let cg = match Cgroups::probe() {
        Ok(c) => c,
        Err(reason) => {
            eprintln!("SKIPPED: cgroup v2 limits are not available on this host: {reason}");
            return;
        }
    };
    let id = format!("test-{}", uuid::Uuid::new_v4().simple());
    let dir = std::env::temp_dir().join(&id);
    let rt = ProcessRuntime::new(Some(cg.clone()));
    let h = rt.start(spec(&id, &dir)).await.expect("seat starts");
    let Handle::Process { pid, .. } = h else {
        panic!("{h:?}")
    };
    let seat = cg.seat_dir(&id);
    let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        membership.contains(&format!("/classgrid/{id}")),
        "the seat joined its cgroup before exec: {membership}"
    );
    assert_eq!(
        std::fs::read_to_string(seat.join("cpu.max"))
            .unwrap()
            .trim(),
        "50000 100000"
    );
    assert_eq!(
        std::fs::read_to_string(seat.join("memory.max"))
            .unwrap()
            .trim(),
        (64u64 * 1024 * 1024).to_string()
    );
    rt.stop(&h, Duration::from_secs(1)).await.unwrap();
    for _ in 0..50 {
        if matches!(rt.probe(&h).await, Probe::Exited(_)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rt.cleanup(&h, &id).await;
    assert!(!seat.exists(), "the seat's cgroup is removed after it ends");
}

#[tokio::test]
async fn seat_without_cgroups_still_runs() {
    let id = format!("test-{}", uuid::Uuid::new_v4().simple());
    let dir = std::env::temp_dir().join(&id);
    let rt = ProcessRuntime::new(None);
    let h = rt.start(spec(&id, &dir)).await.expect("seat starts");
    assert!(matches!(rt.probe(&h).await, Probe::Running { .. }));
    rt.stop(&h, Duration::from_secs(1)).await.unwrap();
    let mut ended = false;
    for _ in 0..50 {
        if matches!(rt.probe(&h).await, Probe::Exited(_)) {
            ended = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ended, "a stopped seat ends");
}
