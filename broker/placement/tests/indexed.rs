//! Property: on random fleets, `place` (which reads calendars only as far as
//! its rank order needs) chooses the same nodes, with the same scores, as the
//! full scan that reads every node's calendar first, and its explanation
//! still accounts for every node of the fleet.
//!
//! A seeded generator rather than proptest: the crate has no proptest, and
//! a fixed seed replays any failure exactly (the case number is printed).

mod common;

use classgrid_placement::*;
use common::*;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

struct Case {
    fleet: Fleet,
    calendar: Calendar,
    rtt: RttTable,
    reqs: Vec<Request>,
    policy: Policy,
}

fn case(rng: &mut StdRng) -> Case {
    let districts = ["east", "west"];
    let mut sites = vec![
        site(1, SiteKind::DistrictPop, "east"),
        site(2, SiteKind::DistrictPop, "west"),
        site(3, SiteKind::Cloud, ""),
    ];
    let n_schools = rng.random_range(2..=6);
    for s in 0..n_schools {
        sites.push(site(
            10 + s as u128,
            SiteKind::School,
            districts[rng.random_range(0..2)],
        ));
    }
    let schools: Vec<Site> = sites
        .iter()
        .filter(|s| s.kind == SiteKind::School)
        .cloned()
        .collect();
    let mut nodes = Vec::new();
    let mut rows = Vec::new();
    // Sizes where ties are common (same site, same devices): the rank order
    // must then keep reading until the tie is settled.
    for i in 0..rng.random_range(1..=60) {
        let site = &sites[rng.random_range(0..sites.len())];
        let devices: Vec<Device> = (0..rng.random_range(0..=4))
            .map(|d| {
                let mut dev = if rng.random_bool(0.7) {
                    t4(d)
                } else {
                    ascend(d)
                };
                dev.max_slices = rng.random_range(1..=8);
                dev.healthy = rng.random_bool(0.95);
                dev
            })
            .collect();
        let mut n = node(i as u128, site, devices);
        n.cpu_millis = rng.random_range(1..=16) * 1000;
        n.approved = rng.random_bool(0.95);
        if rng.random_bool(0.05) {
            n.liveness = Liveness::Disconnected;
        }
        if rng.random_bool(0.1) {
            n.runtimes = vec!["container".into()];
        }
        random_rows(rng, &n, 0..=3, &mut rows);
        nodes.push(n);
    }
    // Fleet order is not id order (the broker's snapshot comes from a hash
    // map): a tie must be settled by the rank key, not by reading order.
    nodes.shuffle(rng);
    let mut rtt = RttTable::new(Topology::default());
    for s in &schools {
        for n in &nodes {
            match rng.random_range(0..4) {
                // Whole milliseconds make equal RTTs, hence equal scores, likely.
                0 => rtt.set_measured(s.id, n.id, rng.random_range(1..50) as f64),
                1 => rtt.set_estimated(s.id, n.id, rng.random_range(1..50) as f64, 2.0),
                _ => {}
            }
        }
    }
    let reqs = (0..4)
        .map(|_| {
            let school = &schools[rng.random_range(0..schools.len())];
            let seats = rng.random_range(1..=30);
            let mut r = lesson(school, seats);
            r.min_seats = if rng.random_bool(0.3) {
                rng.random_range(1..=seats)
            } else {
                seats
            };
            r.max_rtt_ms = [10.0, 30.0, 100.0][rng.random_range(0..3)];
            r.may_preempt = rng.random_bool(0.5);
            r.seat.gpu = match rng.random_range(0..6) {
                0 => None,
                1 => Some(GpuSpec {
                    count: 2,
                    ..quarter_t4()
                }),
                2 => Some(GpuSpec {
                    vendors: vec![],
                    memory_mib: 8192,
                    ..quarter_t4()
                }),
                _ => Some(quarter_t4()),
            };
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

fn seats(d: &Decision) -> Vec<(NodeId, Vec<u32>, u64)> {
    d.admission()
        .map(|a| {
            a.seats
                .iter()
                .map(|s| {
                    (
                        s.node_id,
                        s.devices.iter().map(|g| g.index).collect(),
                        s.score.to_bits(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn indexed_placement_chooses_what_the_full_scan_chooses() {
    let mut rng = StdRng::seed_from_u64(25);
    let mut skipped_some = 0;
    for n in 0..600 {
        let mut c = case(&mut rng);
        let index = FleetIndex::new(std::sync::Arc::new(c.fleet.clone()));
        for req in c.reqs.clone() {
            let full = place_with(&c.fleet, &c.calendar, &c.rtt, &req, &c.policy, Scan::Full);
            let fast = place(&c.fleet, &c.calendar, &c.rtt, &req, &c.policy);
            // The fleet index (decision 101) decides exactly what `place` does.
            let grouped = place_indexed(&index, &c.calendar, &c.rtt, &req, &c.policy);
            assert_eq!(format!("{fast:?}"), format!("{grouped:?}"), "case {n}");
            assert_eq!(
                full.is_admitted(),
                fast.is_admitted(),
                "case {n}: full: {} / indexed: {}",
                full.explanation().summary,
                fast.explanation().summary
            );
            // Same nodes, devices and scores, seat for seat: the rank order
            // is a total order, so "equally good" is "the same" here.
            assert_eq!(seats(&full), seats(&fast), "case {n}");
            let (fe, xe) = (full.explanation(), fast.explanation());
            assert_eq!(fe.nodes_considered, xe.nodes_considered, "case {n}");
            match (&full, &fast) {
                (Decision::Refused(_), Decision::Refused(_)) => {
                    // A refusal read every calendar: word for word the same.
                    assert_eq!(fe.summary, xe.summary, "case {n}");
                }
                (Decision::Admitted(a), Decision::Admitted(b)) => {
                    assert_eq!(a.preempted, b.preempted, "case {n}");
                    // Static filters count the whole fleet in both.
                    let statics = |e: &Explanation| -> Vec<(&str, u32)> {
                        e.filters
                            .iter()
                            .filter(|f| f.filter != "calendar")
                            .map(|f| (f.filter, f.removed))
                            .collect()
                    };
                    assert_eq!(statics(fe), statics(xe), "case {n}");
                    // Every node is accounted for: fit, removed, or not read.
                    let removed: u32 = xe.filters.iter().map(|f| f.removed).sum();
                    let unread = xe
                        .summary
                        .split("; ")
                        .find_map(|p| p.strip_suffix(" not read (none could rank higher)"))
                        .map(|p| p.split(' ').next().unwrap().parse::<u32>().unwrap())
                        .unwrap_or(0);
                    skipped_some += (unread > 0) as u32;
                    let fit: u32 = xe
                        .summary
                        .split("; ")
                        .nth(1)
                        .and_then(|p| p.split('/').next())
                        .unwrap()
                        .parse()
                        .unwrap();
                    assert_eq!(
                        fit + removed + unread,
                        xe.nodes_considered,
                        "case {n}: {}",
                        xe.summary
                    );
                }
                _ => unreachable!(),
            }
            // Book it, so later requests meet a fuller calendar.
            if let Decision::Admitted(a) = &fast {
                book(&mut c.calendar, a, &req, Owner::Lesson(id(5_000_000 + n)));
            }
        }
    }
    // The property is only interesting if the index did skip nodes.
    assert!(
        skipped_some > 100,
        "only {skipped_some} admissions skipped any node"
    );
}

#[test]
fn cpu_only_refusal_counts_the_filters() {
    let school = site(1, SiteKind::School, "east");
    let far = site(2, SiteKind::School, "west");
    let mut small = node(1, &school, vec![]);
    small.cpu_millis = 500;
    let mut off = node(2, &school, vec![]);
    off.liveness = Liveness::Disconnected;
    let f = fleet(
        vec![school.clone(), far.clone()],
        vec![small, off, node(3, &far, vec![])],
    );
    let mut req = lesson(&school, 2);
    req.seat.gpu = None;
    req.max_rtt_ms = 10.0;
    let e = refused(place(
        &f,
        &Calendar::default(),
        &RttTable::new(Topology::default()),
        &req,
        &Policy::default(),
    ));
    let got: Vec<(&str, u32)> = e.filters.iter().map(|c| (c.filter, c.removed)).collect();
    assert_eq!(got, vec![("health", 1), ("rtt", 1), ("cpu/memory", 1)]);
    assert_eq!(
        e.summary,
        "0/3 nodes: 1 not ready (disconnected), 1 rtt > 10 ms (configured), \
         1 cpu/memory < 1000 m/2048 MiB"
    );
}
