//! Property: `place_indexed` (static filters once per group of equal nodes,
//! from a `FleetIndex` built once per fleet) decides exactly what `place`
//! decides: the same seats (node, devices, score bits), the same preempted
//! jobs, the same per-filter counts and tags, word for word the same
//! explanation. And `place` itself is held to the full scan by
//! `tests/indexed.rs`.
//!
//! The fleets here are made of few node kinds on many sites of several
//! districts, so groups hold many nodes; with residency rules, lending
//! hours, datasets and caches, unhealthy and unapproved nodes, nodes on
//! sites the fleet does not list, a school the fleet does not list, and RTT
//! tables that measure or estimate none, some or all of the pairs. A seeded
//! generator, as in `tests/indexed.rs`: the case number replays a failure.

mod common;

use std::sync::Arc;

use classgrid_placement::*;
use common::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// A node kind from a small palette, so that groups hold many nodes.
fn kind(rng: &mut StdRng, i: u128, site: &Site, schools: &[Site]) -> Node {
    let k = rng.random_range(0..8);
    let devices: Vec<Device> = match k {
        0 => vec![],
        1 | 2 => (0..2).map(t4).collect(),
        3 => (0..4).map(t4).collect(),
        4 => vec![ascend(0)],
        5 => {
            let mut d = t4(0);
            d.max_slices = 2;
            vec![d, t4(1)]
        }
        _ => vec![t4(0)],
    };
    let mut n = node(i, site, devices);
    if k == 6 {
        n.cpu_millis = 2_000;
    }
    if rng.random_bool(0.05) {
        n.approved = false;
    }
    match rng.random_range(0..40) {
        0 => n.liveness = Liveness::Disconnected,
        1 => n.liveness = Liveness::Lost,
        2 => n.healthy = false,
        3 => n.cordoned = true,
        _ => {}
    }
    if rng.random_bool(0.1) {
        n.runtimes = vec!["container".into()];
    }
    if rng.random_bool(0.2) {
        n.cached = vec!["aa".repeat(32)];
    }
    if rng.random_bool(0.1) {
        n.staging_bytes_per_sec = None;
    }
    if site.kind == SiteKind::School && rng.random_bool(0.3) {
        // Most lend outside their own school's hours; a few are someone else's.
        let owner = if rng.random_bool(0.9) {
            site.id
        } else {
            schools[rng.random_range(0..schools.len())].id
        };
        n.lending = Some(LendingPolicy {
            owner_site: owner,
            utc_offset_minutes: 8 * 60,
            weekdays: 0b001_1111,
            start_minute: 8 * 60,
            end_minute: 17 * 60,
        });
    }
    if site.kind != SiteKind::Cloud && rng.random_bool(0.05) {
        n.tier = Tier::Cloud;
    }
    n
}

struct Case {
    fleet: Fleet,
    calendar: Calendar,
    rtt: RttTable,
    reqs: Vec<Request>,
    policy: Policy,
}

fn case(rng: &mut StdRng) -> Case {
    let districts = ["east", "west", "north", ""];
    let mut sites = vec![
        site(1, SiteKind::DistrictPop, "east"),
        site(2, SiteKind::DistrictPop, "west"),
        site(3, SiteKind::Cloud, ""),
    ];
    for s in 0..rng.random_range(2..=10) {
        sites.push(site(
            10 + s as u128,
            SiteKind::School,
            districts[rng.random_range(0..districts.len())],
        ));
    }
    let schools: Vec<Site> = sites
        .iter()
        .filter(|s| s.kind == SiteKind::School)
        .cloned()
        .collect();
    // A site the fleet does not list: its nodes are checked one by one.
    let unlisted = site(99, SiteKind::School, "east");
    let mut nodes = Vec::new();
    let mut rows = Vec::new();
    for i in 0..rng.random_range(1..=120) {
        let s = if rng.random_bool(0.03) {
            &unlisted
        } else {
            &sites[rng.random_range(0..sites.len())]
        };
        let n = kind(rng, i as u128, s, &schools);
        random_rows(rng, &n, 0..=2, &mut rows);
        nodes.push(n);
    }
    nodes.shuffle(rng);
    if rng.random_bool(0.1) {
        // A site listed twice: lookups find the last entry.
        let mut again = sites[rng.random_range(0..sites.len())].clone();
        again.district = "north".into();
        sites.push(again);
    }
    let mut rtt = RttTable::new(Topology::default());
    let share = [0.0, 0.1, 0.3, 0.45, 1.0][rng.random_range(0..5)];
    for s in schools.iter().chain([&unlisted]) {
        for n in &nodes {
            if rng.random_bool(share) {
                if rng.random_bool(0.5) {
                    rtt.set_measured(s.id, n.id, rng.random_range(1..50) as f64);
                } else {
                    rtt.set_estimated(s.id, n.id, rng.random_range(1..50) as f64, 2.0);
                }
            }
        }
    }
    let reqs = (0..4)
        .map(|_| {
            let school = if rng.random_bool(0.05) {
                &unlisted
            } else {
                &schools[rng.random_range(0..schools.len())]
            };
            let seats = rng.random_range(1..=40);
            let mut r = lesson(school, seats);
            r.min_seats = if rng.random_bool(0.3) {
                rng.random_range(1..=seats)
            } else {
                seats
            };
            r.max_rtt_ms = [5.0, 10.0, 30.0, 100.0][rng.random_range(0..4)];
            r.may_preempt = rng.random_bool(0.5);
            r.residency = [
                Residency::Anywhere,
                Residency::School,
                Residency::District,
                Residency::EducationNetwork,
            ][rng.random_range(0..4)];
            if rng.random_bool(0.3) {
                r.datasets = vec![DatasetRef {
                    sha256: "AA".repeat(32),
                    size_bytes: rng.random_range(1..=200) * 1_000_000_000,
                }];
            }
            r.seat.gpu = match rng.random_range(0..6) {
                0 => None,
                1 => Some(GpuSpec {
                    count: 2,
                    ..quarter_t4()
                }),
                2 => Some(GpuSpec {
                    vendors: vec![],
                    memory_mib: 32768,
                    ..quarter_t4()
                }),
                _ => Some(quarter_t4()),
            };
            if rng.random_bool(0.1) {
                r.seat.runtime = "container".into();
            }
            r
        })
        .collect();
    let policy = random_policy(rng);
    Case {
        fleet: fleet(sites, nodes),
        calendar: Calendar::new(rows),
        rtt,
        reqs,
        policy,
    }
}

#[test]
fn indexed_fleet_decides_what_place_decides() {
    let mut rng = StdRng::seed_from_u64(101);
    let (mut grouped, mut skipped) = (0, 0);
    for n in 0..800 {
        let mut c = case(&mut rng);
        let index = FleetIndex::new(Arc::new(c.fleet.clone()));
        grouped += (index.groups() < c.fleet.nodes.len()) as u32;
        for req in c.reqs.clone() {
            let scan = place(&c.fleet, &c.calendar, &c.rtt, &req, &c.policy);
            let fast = place_indexed(&index, &c.calendar, &c.rtt, &req, &c.policy);
            // Debug covers every seat (node, devices, rtt, score, parts,
            // reason), the preempted jobs, and the explanation: counts, tags
            // and summary.
            assert_eq!(format!("{scan:?}"), format!("{fast:?}"), "case {n}");
            skipped += fast
                .explanation()
                .summary
                .contains("not read (none could rank higher)") as u32;
            if let Decision::Admitted(a) = &fast {
                book(&mut c.calendar, a, &req, Owner::Lesson(id(5_000_000 + n)));
            }
        }
    }
    // Only interesting if nodes were grouped and whole groups left unread.
    assert!(grouped > 400, "only {grouped} fleets grouped any nodes");
    assert!(skipped > 200, "only {skipped} decisions left nodes unread");
}

/// The index counts a whole group under the filter that rules it out, and
/// says so in the same words as checking each node.
#[test]
fn a_far_group_is_counted_whole() {
    let school = site(10, SiteKind::School, "east");
    let pop = site(1, SiteKind::DistrictPop, "east");
    let cloud = site(3, SiteKind::Cloud, "");
    let mut nodes = Vec::new();
    for i in 0..4 {
        nodes.push(node(i, &school, vec![t4(0)]));
    }
    for i in 4..10 {
        nodes.push(node(i, &pop, vec![t4(0), t4(1)]));
    }
    for i in 10..1940 {
        nodes.push(node(i, &cloud, vec![t4(0)]));
    }
    nodes[12].liveness = Liveness::Disconnected;
    let f = Arc::new(fleet(vec![school.clone(), pop, cloud], nodes));
    let index = FleetIndex::new(f.clone());
    assert_eq!(index.kinds(), 3);
    let mut rtt = RttTable::new(Topology::default());
    // One cloud node measured close: it alone passes.
    rtt.set_measured(school.id, f.nodes[20].id, 12.0);
    let req = lesson(&school, 4);
    let d = place_indexed(
        &index,
        &Calendar::new(vec![]),
        &rtt,
        &req,
        &Policy::default(),
    );
    let e = d.explanation();
    assert_eq!(
        e.summary,
        "4/4 seats on 1 node, mean rtt 2.0 ms; 4/1940 nodes: 1 not ready (disconnected), \
         1928 rtt > 30 ms (configured); 7 other nodes not read (none could rank higher)"
    );
    let scan = place(&f, &Calendar::new(vec![]), &rtt, &req, &Policy::default());
    assert_eq!(format!("{scan:?}"), format!("{d:?}"));
}
