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
//! sites the fleet does not list, a school the fleet does not list, a node
//! listed twice, and RTT tables that measure or estimate none, some or all of
//! each school's pairs (whole and fractional milliseconds, so RTTs tie and
//! do not). Half the cases sort every school's RTTs up front
//! (`FleetIndex::sort_rtts`); in the others a school is sorted the second
//! time it is placed; and the table sometimes changes between requests,
//! which must drop what was sorted. A seeded generator, as in
//! `tests/indexed.rs`: the case number replays a failure.

mod common;

use std::collections::{HashMap, HashSet};
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

/// Measures or estimates `node` from `school`: whole milliseconds (many
/// ties) or not, sometimes both a measurement and an estimate.
fn pin(rng: &mut StdRng, rtt: &mut RttTable, school: SiteId, node: NodeId, whole: bool) {
    let mut ms = || {
        if whole {
            rng.random_range(1..50) as f64
        } else {
            rng.random_range(0.0..50.0)
        }
    };
    let (m, e, err) = (ms(), ms(), [0.0, 2.0, 7.5][rng.random_range(0..3)]);
    match rng.random_range(0..5) {
        0 | 1 => rtt.set_measured(school, node, m),
        2 | 3 => rtt.set_estimated(school, node, e, err),
        _ => {
            rtt.set_estimated(school, node, e, err);
            rtt.set_measured(school, node, m);
        }
    }
}

struct Case {
    fleet: Fleet,
    calendar: Calendar,
    rtt: RttTable,
    /// How many nodes the table pins per school.
    pinned: HashMap<SiteId, usize>,
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
    if rng.random_bool(0.05) && !nodes.is_empty() {
        // A node listed twice, on another site: both copies share its RTTs.
        let mut again = nodes[rng.random_range(0..nodes.len())].clone();
        again.site_id = sites[rng.random_range(0..sites.len())].id;
        nodes.push(again);
    }
    nodes.shuffle(rng);
    if rng.random_bool(0.1) {
        // A site listed twice: lookups find the last entry.
        let mut again = sites[rng.random_range(0..sites.len())].clone();
        again.district = "north".into();
        sites.push(again);
    }
    let mut rtt = RttTable::new(Topology::default());
    let whole = rng.random_bool(0.5);
    let mut pinned = HashMap::new();
    for s in schools.iter().chain([&unlisted]) {
        let share = [0.0, 0.1, 0.3, 0.45, 0.8, 1.0][rng.random_range(0..6)];
        for n in &nodes {
            if rng.random_bool(share) {
                pin(rng, &mut rtt, s.id, n.id, whole);
                *pinned.entry(s.id).or_insert(0) += 1;
            }
        }
    }
    // Requests at a few of the schools, so that schools come back.
    let mut at: Vec<&Site> = schools.iter().chain([&unlisted]).collect();
    at.shuffle(rng);
    at.truncate(rng.random_range(1..=3));
    let reqs = (0..6)
        .map(|_| {
            let school = at[rng.random_range(0..at.len())];
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
        pinned,
        reqs,
        policy,
    }
}

#[test]
fn indexed_fleet_decides_what_place_decides() {
    let mut rng = StdRng::seed_from_u64(101);
    let (mut grouped, mut skipped) = (0, 0);
    // Decisions that read pinned nodes sorted, and of those, the ones that
    // admitted and left nodes unread.
    let (mut sorted, mut sorted_skipped, mut table_changes) = (0, 0, 0);
    for n in 0..800 {
        let mut c = case(&mut rng);
        let index = FleetIndex::new(Arc::new(c.fleet.clone()));
        grouped += (index.groups() < c.fleet.nodes.len()) as u32;
        // Which schools hold their pins sorted under the current table.
        let mut held: HashSet<SiteId> = HashSet::new();
        let mut seen: HashSet<SiteId> = HashSet::new();
        if rng.random_bool(0.5) {
            let k = index.sort_rtts(&c.rtt);
            assert_eq!(k, c.pinned.len(), "case {n}");
            held.extend(c.pinned.keys());
        }
        for (r, req) in c.reqs.clone().into_iter().enumerate() {
            let school = req.school_site;
            let pins = c.pinned.get(&school).copied().unwrap_or(0);
            let reads_sorted = pins > 0 && (held.contains(&school) || seen.contains(&school));
            if pins > 0 {
                if seen.contains(&school) {
                    held.insert(school);
                }
                seen.insert(school);
            }
            let scan = place(&c.fleet, &c.calendar, &c.rtt, &req, &c.policy);
            let fast = place_indexed(&index, &c.calendar, &c.rtt, &req, &c.policy);
            // Debug covers every seat (node, devices, rtt, score, parts,
            // reason), the preempted jobs, and the explanation: counts, tags
            // and summary.
            assert_eq!(
                format!("{scan:?}"),
                format!("{fast:?}"),
                "case {n} request {r}"
            );
            assert_eq!(
                index.sorted_schools(&c.rtt),
                held.len(),
                "case {n} request {r}"
            );
            let unread = fast
                .explanation()
                .summary
                .contains("not read (none could rank higher)");
            skipped += unread as u32;
            sorted += reads_sorted as u32;
            sorted_skipped += (reads_sorted && unread) as u32;
            if let Decision::Admitted(a) = &fast {
                book(&mut c.calendar, a, &req, Owner::Lesson(id(5_000_000 + n)));
            }
            if rng.random_bool(0.15) && !c.fleet.nodes.is_empty() {
                // A new probe result: a new table, so nothing sorted for
                // the old one may be used.
                let node = c.fleet.nodes[rng.random_range(0..c.fleet.nodes.len())].id;
                pin(&mut rng, &mut c.rtt, school, node, false);
                *c.pinned.entry(school).or_insert(0) += 1;
                held.clear();
                seen.clear();
                table_changes += 1;
            }
        }
    }
    // Only interesting if nodes were grouped and whole groups left unread.
    assert!(grouped > 400, "only {grouped} fleets grouped any nodes");
    assert!(skipped > 200, "only {skipped} decisions left nodes unread");
    assert!(sorted > 1500, "only {sorted} decisions read sorted pins");
    assert!(
        sorted_skipped > 300,
        "only {sorted_skipped} decisions on sorted pins left nodes unread"
    );
    assert!(table_changes > 300, "only {table_changes} table changes");
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
