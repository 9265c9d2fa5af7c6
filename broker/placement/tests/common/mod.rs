//! Small builders for placement tests: a district with sites, T4 and 910B
//! nodes, and lesson requests.
#![allow(dead_code)]

use classgrid_placement::*;
use uuid::Uuid;

pub const MINUTE: i64 = 60_000;
/// Monday 2024-01-08 02:00 UTC = 10:00 at UTC+8, inside school hours.
pub const T0: i64 = 1_704_679_200_000;

pub fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

pub fn site(n: u128, kind: SiteKind, district: &str) -> Site {
    Site {
        id: id(n),
        name: format!("site-{n}"),
        kind,
        district: district.into(),
    }
}

pub fn t4(index: u32) -> Device {
    Device {
        index,
        vendor: "nvidia".into(),
        model: "Tesla T4".into(),
        memory_mib: 16384,
        healthy: true,
        max_slices: 8,
        isolation: Isolation::Soft,
    }
}

pub fn ascend(index: u32) -> Device {
    Device {
        index,
        vendor: "ascend".into(),
        model: "Ascend 910B".into(),
        memory_mib: 65536,
        healthy: true,
        max_slices: 8,
        isolation: Isolation::Hard,
    }
}

pub fn node(n: u128, site: &Site, devices: Vec<Device>) -> Node {
    Node {
        id: id(1_000 + n),
        name: format!("node-{n}"),
        site_id: site.id,
        tier: if site.kind == SiteKind::Cloud {
            Tier::Cloud
        } else {
            Tier::Edge
        },
        liveness: Liveness::Connected,
        healthy: true,
        cordoned: false,
        approved: true,
        runtimes: vec!["jupyter".into()],
        cpu_millis: 64_000,
        memory_mib: 262_144,
        devices,
        cached: vec![],
        staging_bytes_per_sec: Some(100e6),
        lending: None,
    }
}

pub fn quarter_t4() -> GpuSpec {
    GpuSpec {
        vendors: vec!["nvidia".into()],
        model: None,
        memory_mib: 4096,
        compute_percent: 25,
        count: 1,
        min_isolation: Isolation::Soft,
    }
}

pub fn lesson(school: &Site, seats: u32) -> Request {
    Request {
        school_site: school.id,
        window: Window::new(T0 - 10 * MINUTE, T0 + 45 * MINUTE),
        seats,
        min_seats: seats,
        seat: SeatSpec {
            cpu_millis: 1000,
            memory_mib: 2048,
            gpu: Some(quarter_t4()),
            runtime: "jupyter".into(),
        },
        max_rtt_ms: 30.0,
        datasets: vec![],
        staging_lead_ms: 10 * MINUTE,
        may_preempt: true,
        residency: Default::default(),
    }
}

pub fn job(school: &Site) -> Request {
    Request {
        may_preempt: false,
        residency: Default::default(),
        ..lesson(school, 1)
    }
}

pub fn fleet(sites: Vec<Site>, nodes: Vec<Node>) -> Fleet {
    Fleet { sites, nodes }
}

pub fn measured(fleet: &Fleet, school: &Site, ms: &[f64]) -> RttTable {
    let mut t = RttTable::new(Topology::default());
    for (n, &m) in fleet.nodes.iter().zip(ms) {
        t.set_measured(school.id, n.id, m);
    }
    t
}

pub fn admitted(d: Decision) -> Admission {
    match d {
        Decision::Admitted(a) => a,
        Decision::Refused(e) => panic!("refused: {}", e.summary),
    }
}

pub fn refused(d: Decision) -> Explanation {
    match d {
        Decision::Refused(e) => e,
        Decision::Admitted(a) => panic!("admitted: {}", a.explanation.summary),
    }
}

/// Books an admission into the calendar, as the broker would.
pub fn book(cal: &mut Calendar, a: &Admission, req: &Request, owner: Owner) {
    for o in &a.preempted {
        cal.remove_owner(*o);
    }
    for r in a.reservations(req, owner) {
        cal.insert(r);
    }
}

pub fn reservation(
    node: &Node,
    device: Option<u32>,
    owner: Owner,
    gmem: u64,
    compute: u32,
) -> Reservation {
    Reservation {
        owner,
        node_id: node.id,
        device_index: device,
        window: Window::new(T0 - 60 * MINUTE, T0 + 60 * MINUTE),
        cpu_millis: 1000,
        memory_mib: 1024,
        gpu_memory_mib: gmem,
        gpu_compute_percent: compute,
        preemptible: matches!(owner, Owner::Job(_)),
    }
}

/// Random weights for the property tests: the defaults, packing alone
/// (every bound equal, nothing can be skipped) or RTT alone.
pub fn random_policy(rng: &mut rand::rngs::StdRng) -> Policy {
    use rand::Rng;
    Policy {
        weights: match rng.random_range(0..3) {
            0 => Weights::default(),
            1 => Weights {
                rtt: 0.0,
                cached: 0.0,
                tier: 0.0,
                packing: 1.0,
            },
            _ => Weights {
                rtt: 1.0,
                cached: 0.0,
                tier: 0.0,
                packing: 0.0,
            },
        },
        preempt_as_last_resort: rng.random_bool(0.5),
        ..Policy::default()
    }
}

/// `per_device` random reservations on each of `n`'s devices around T0,
/// about a third of them preemptible jobs.
pub fn random_rows(
    rng: &mut rand::rngs::StdRng,
    n: &Node,
    per_device: std::ops::RangeInclusive<u32>,
    rows: &mut Vec<Reservation>,
) {
    use rand::Rng;
    for d in &n.devices {
        for _ in 0..rng.random_range(per_device.clone()) {
            let start = T0 + rng.random_range(-90..60) * MINUTE;
            let job = rng.random_bool(0.3);
            rows.push(Reservation {
                owner: if job {
                    Owner::Job(id(rng.random_range(0..1_000_000)))
                } else {
                    Owner::Lesson(id(rng.random_range(0..1_000_000)))
                },
                node_id: n.id,
                device_index: Some(d.index),
                window: Window::new(start, start + rng.random_range(10..120) * MINUTE),
                cpu_millis: 500,
                memory_mib: 1024,
                gpu_memory_mib: rng.random_range(1..=4) * 2048,
                gpu_compute_percent: rng.random_range(1..=4) * 10,
                preemptible: job,
            });
        }
    }
}
