//! `cargo bench -p classgrid-placement`: a city of 10,000 and then 100,000
//! nodes with 1–4 T4-class or 910B-class devices, 1,000,000 existing
//! reservations over one school day, then many 45-seat quarter-T4 lessons
//! booked one after another (each admitted lesson is written into the
//! calendar, as the broker does). Each lesson is placed twice on the same
//! calendar: by `place` (static filters on every node) and by
//! `place_indexed` on a `FleetIndex` built once for the city; the two
//! decisions must be equal. Prints per-seat latency of each: the time of one
//! call divided by its seats, and the 100k/10k ratio of the p99s.
//!
//! A bigger city has more schools, not bigger ones: sites grow with the
//! nodes (about 24 nodes a site, 21 sites a district). Edge probes measure
//! what the network gives, which follows the topology (own site a few ms,
//! the district about 10, elsewhere 20–40, cloud 50–80), not a uniform draw
//! over the whole city. 40 schools measured every node; one lesson in ten
//! is at one of them. Their RTTs are sorted once for the table
//! (`FleetIndex::sort_rtts`, timed apart, as the index build is).
//! `cargo bench -p classgrid-placement -- NODES...` runs other sizes.

use std::time::Instant;

use classgrid_placement::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

const RESERVATIONS: usize = 1_000_000;
const LESSONS: usize = 400;
const SEATS: u32 = 45;
const NODES_PER_SITE: usize = 24;
const SITES_PER_DISTRICT: usize = 21;
const MIN: i64 = 60_000;
/// Monday 2024-01-08 00:00 UTC.
const DAY0: i64 = 1_704_672_000_000;

fn uid(rng: &mut StdRng) -> Uuid {
    Uuid::from_u128(rng.random())
}

fn device(rng: &mut StdRng, index: u32, ascend: bool) -> Device {
    let _ = rng;
    if ascend {
        Device {
            index,
            vendor: "ascend".into(),
            model: "Ascend 910B".into(),
            memory_mib: 65536,
            healthy: true,
            max_slices: 8,
            isolation: Isolation::Hard,
        }
    } else {
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
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10_000, 100_000]
    } else {
        sizes
    };
    let mut p99s = Vec::new();
    for nodes in sizes {
        p99s.push((nodes, run(nodes)));
    }
    if let [(n0, (a, ai)), .., (n1, (b, bi))] = p99s.as_slice() {
        println!(
            "growth place nodes={n0}->{n1} p99_per_seat_ratio={:.2}",
            b / a
        );
        println!(
            "growth place_indexed nodes={n0}->{n1} p99_per_seat_ratio={:.2}",
            bi / ai
        );
    }
}

/// p50 and p99 of `v`, sorted in place.
fn quantiles(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (q(0.50), q(0.99))
}

/// One city of `n_nodes` nodes; returns the per-seat p99 in µs of `place`
/// and of `place_indexed`.
fn run(n_nodes: usize) -> (f64, f64) {
    let schools_n = (n_nodes / NODES_PER_SITE).max(1);
    let n_districts = (schools_n / SITES_PER_DISTRICT).max(1);
    let n_schools = schools_n - n_districts.min(schools_n - 1);
    let mut rng = StdRng::seed_from_u64(42);
    let mut sites = Vec::new();
    for d in 0..n_districts {
        sites.push(Site {
            id: uid(&mut rng),
            name: format!("pop-{d}"),
            kind: SiteKind::DistrictPop,
            district: format!("d{d}"),
        });
    }
    for s in 0..n_schools {
        sites.push(Site {
            id: uid(&mut rng),
            name: format!("school-{s}"),
            kind: SiteKind::School,
            district: format!("d{}", s % n_districts),
        });
    }
    let cloud = Site {
        id: uid(&mut rng),
        name: "cloud".into(),
        kind: SiteKind::Cloud,
        district: String::new(),
    };
    sites.push(cloud.clone());

    let mut nodes = Vec::with_capacity(n_nodes);
    for i in 0..n_nodes {
        let site = &sites[rng.random_range(0..sites.len())];
        let ascend = rng.random_bool(0.3);
        let n_dev = rng.random_range(1..=4);
        nodes.push(Node {
            id: uid(&mut rng),
            name: format!("node-{i}"),
            site_id: site.id,
            tier: if site.kind == SiteKind::Cloud {
                Tier::Cloud
            } else {
                Tier::Edge
            },
            liveness: if rng.random_bool(0.97) {
                Liveness::Connected
            } else {
                Liveness::Disconnected
            },
            healthy: true,
            cordoned: false,
            approved: true,
            runtimes: vec!["jupyter".into(), "container".into()],
            cpu_millis: 64_000,
            memory_mib: 262_144,
            devices: (0..n_dev).map(|d| device(&mut rng, d, ascend)).collect(),
            cached: vec![],
            staging_bytes_per_sec: Some(100e6),
            lending: None,
        });
    }
    let fleet = std::sync::Arc::new(Fleet { sites, nodes });
    let t = Instant::now();
    let index = FleetIndex::new(fleet.clone());
    let index_ms = t.elapsed().as_secs_f64() * 1e3;

    // Existing load: lesson-length slices over an 8-hour day, a fifth of
    // them preemptible jobs.
    let mut rows = Vec::with_capacity(RESERVATIONS);
    for _ in 0..RESERVATIONS {
        let n = &fleet.nodes[rng.random_range(0..n_nodes)];
        let d = rng.random_range(0..n.devices.len()) as u32;
        let start = DAY0 + rng.random_range(0..96) * 5 * MIN;
        let job = rng.random_bool(0.2);
        rows.push(Reservation {
            owner: if job {
                Owner::Job(uid(&mut rng))
            } else {
                Owner::Lesson(uid(&mut rng))
            },
            node_id: n.id,
            device_index: Some(d),
            window: Window::new(start, start + 55 * MIN),
            cpu_millis: 1000,
            memory_mib: 2048,
            gpu_memory_mib: 4096,
            gpu_compute_percent: 25,
            preemptible: job,
        });
    }
    let mut calendar = Calendar::new(rows);

    // Edge probes measured a few schools; the rest rely on topology classes.
    let mut rtt = RttTable::new(Topology::default());
    for s in fleet
        .sites
        .iter()
        .filter(|s| s.kind == SiteKind::School)
        .take(40)
    {
        let by_id: std::collections::HashMap<_, _> =
            fleet.sites.iter().map(|x| (x.id, x)).collect();
        for n in &fleet.nodes {
            let ns = by_id[&n.site_id];
            let ms = if ns.kind == SiteKind::Cloud {
                rng.random_range(50.0..80.0)
            } else if ns.id == s.id {
                rng.random_range(0.5..4.0)
            } else if ns.district == s.district {
                rng.random_range(5.0..14.0)
            } else {
                rng.random_range(20.0..40.0)
            };
            rtt.set_measured(s.id, n.id, ms);
        }
    }

    let t = Instant::now();
    let sorted_schools = index.sort_rtts(&rtt);
    let sort_ms = t.elapsed().as_secs_f64() * 1e3;

    let schools: Vec<&Site> = fleet
        .sites
        .iter()
        .filter(|s| s.kind == SiteKind::School)
        .collect();
    let policy = Policy::default();
    let mut per_seat_us = Vec::with_capacity(LESSONS);
    let mut indexed_us = Vec::with_capacity(LESSONS);
    // Lessons at the schools whose RTT table pins every node, apart.
    let pinned: std::collections::HashSet<_> = fleet
        .sites
        .iter()
        .filter(|s| s.kind == SiteKind::School)
        .take(40)
        .map(|s| s.id)
        .collect();
    let (mut at_pinned, mut elsewhere) = (Vec::new(), Vec::new());
    let (mut scan_pinned, mut scan_elsewhere) = (Vec::new(), Vec::new());
    let mut admitted = 0;
    for i in 0..LESSONS {
        let mut school = schools[rng.random_range(0..schools.len())];
        if i % 10 == 9 {
            // One lesson in ten at a school whose table measures every node
            // (at 100,000 nodes a random draw almost never picks one).
            school = schools[i / 10 % 40];
        }
        let start = DAY0 + rng.random_range(0..96) * 5 * MIN;
        let req = Request {
            school_site: school.id,
            window: Window::new(start - 10 * MIN, start + 45 * MIN),
            seats: SEATS,
            min_seats: SEATS,
            seat: SeatSpec {
                cpu_millis: 1000,
                memory_mib: 2048,
                gpu: Some(GpuSpec {
                    vendors: vec!["nvidia".into()],
                    model: None,
                    memory_mib: 4096,
                    compute_percent: 25,
                    count: 1,
                    min_isolation: Isolation::Soft,
                }),
                runtime: "jupyter".into(),
            },
            max_rtt_ms: 30.0,
            datasets: vec![],
            staging_lead_ms: 10 * MIN,
            may_preempt: true,
            residency: Default::default(),
        };
        let t = Instant::now();
        let d = place(&fleet, &calendar, &rtt, &req, &policy);
        let us = t.elapsed().as_secs_f64() * 1e6;
        per_seat_us.push(us / SEATS as f64);
        if pinned.contains(&school.id) {
            scan_pinned.push(us / SEATS as f64);
        } else {
            scan_elsewhere.push(us / SEATS as f64);
        }
        let t = Instant::now();
        let di = place_indexed(&index, &calendar, &rtt, &req, &policy);
        let us = t.elapsed().as_secs_f64() * 1e6;
        indexed_us.push(us / SEATS as f64);
        if pinned.contains(&school.id) {
            at_pinned.push(us / SEATS as f64);
        } else {
            elsewhere.push(us / SEATS as f64);
        }
        assert_eq!(format!("{d:?}"), format!("{di:?}"), "indexed != scan");
        if let Decision::Admitted(a) = d {
            admitted += 1;
            let owner = Owner::Lesson(uid(&mut rng));
            for o in &a.preempted {
                calendar.remove_owner(*o);
            }
            for r in a.reservations(&req, owner) {
                calendar.insert(r);
            }
        }
    }
    let (p50, p99) = quantiles(&mut per_seat_us);
    let (i50, i99) = quantiles(&mut indexed_us);
    let (e50, e99) = quantiles(&mut elsewhere);
    let (m50, m99) = quantiles(&mut at_pinned);
    let (se50, se99) = quantiles(&mut scan_elsewhere);
    let (sm50, sm99) = quantiles(&mut scan_pinned);
    println!(
        "lessons={LESSONS} admitted={admitted} calendar_rows_after={}",
        calendar.len()
    );
    println!(
        "place nodes={n_nodes} sites={} reservations={RESERVATIONS} seats={SEATS} p50_us={p50:.1} p99_us={p99:.1} per_seat",
        fleet.sites.len(),
    );
    println!(
        "place_indexed nodes={n_nodes} kinds={} groups={} index_build_ms={index_ms:.1} rtt_sort_ms={sort_ms:.1} (schools={sorted_schools}) p50_us={i50:.1} p99_us={i99:.1} per_seat",
        index.kinds(),
        index.groups(),
    );
    for (name, (p50m, p99m), (p50e, p99e)) in [
        ("place", (sm50, sm99), (se50, se99)),
        ("place_indexed", (m50, m99), (e50, e99)),
    ] {
        println!(
            "{name} nodes={n_nodes} lessons_at_schools_with_every_node_measured={} p50_us={p50m:.1} p99_us={p99m:.1}; other_lessons={} p50_us={p50e:.1} p99_us={p99e:.1} per_seat",
            at_pinned.len(),
            elsewhere.len(),
        );
    }
    (p99, i99)
}
