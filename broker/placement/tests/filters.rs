//! Hard constraints, seen from outside: each test books against a tiny
//! district and checks what was refused and why.

mod common;

use classgrid_placement::*;
use common::*;

#[test]
fn seat_never_placed_beyond_max_rtt() {
    let school = site(1, SiteKind::School, "east");
    let pop = site(2, SiteKind::DistrictPop, "east");
    let nodes = vec![
        node(1, &pop, vec![t4(0)]),
        node(2, &pop, vec![t4(0), t4(1)]),
        node(3, &pop, vec![t4(0), t4(1), t4(2), t4(3)]),
    ];
    let f = fleet(vec![school.clone(), pop], nodes);
    let rtt = measured(&f, &school, &[5.0, 29.9, 31.0]);
    let cal = Calendar::new(vec![]);
    let far = f.nodes[2].id;

    // 12 seats fit on the two near nodes; the far one is never touched.
    let a = admitted(place(
        &f,
        &cal,
        &rtt,
        &lesson(&school, 12),
        &Policy::default(),
    ));
    assert_eq!(a.seats.len(), 12);
    assert!(a.seats.iter().all(|s| s.node_id != far && s.rtt.ms <= 30.0));

    // 13 seats would need the far node: refused, not placed beyond the limit.
    let e = refused(place(
        &f,
        &cal,
        &rtt,
        &lesson(&school, 13),
        &Policy::default(),
    ));
    assert!(
        e.summary.contains("1 rtt > 30 ms (measured)"),
        "{}",
        e.summary
    );
}

#[test]
fn refusal_counts_nodes_per_filter() {
    let school = site(1, SiteKind::School, "east");
    let pop = site(2, SiteKind::DistrictPop, "east");
    let cloud = site(3, SiteKind::Cloud, "");
    let mut nodes = Vec::new();
    let mut n = 0;
    let mut add =
        |nodes: &mut Vec<Node>, s: &Site, devs: Vec<Device>, tweak: &dyn Fn(&mut Node)| {
            n += 1;
            let mut x = node(n, s, devs);
            tweak(&mut x);
            nodes.push(x);
        };
    // 2 disconnected, 1 cordoned
    for _ in 0..2 {
        add(&mut nodes, &pop, vec![t4(0)], &|x| {
            x.liveness = Liveness::Disconnected
        });
    }
    add(&mut nodes, &pop, vec![t4(0)], &|x| x.cordoned = true);
    // 1 without the runtime
    add(&mut nodes, &pop, vec![t4(0)], &|x| {
        x.runtimes = vec!["slurm".into()]
    });
    // 3 in the cloud: configured 60 ms > 30 ms
    for _ in 0..3 {
        add(&mut nodes, &cloud, vec![t4(0)], &|_| {});
    }
    // 2 with only Ascend devices
    for _ in 0..2 {
        add(&mut nodes, &pop, vec![ascend(0)], &|_| {});
    }
    // 1 with a T4 too small for an 8 GiB... made small here: 2 GiB "T4"
    add(&mut nodes, &pop, vec![t4(0)], &|x| {
        x.devices[0].memory_mib = 2048
    });
    // 1 full for the window
    add(&mut nodes, &pop, vec![t4(0)], &|_| {});
    let busy = nodes.last().unwrap().clone();
    let f = fleet(vec![school.clone(), pop, cloud], nodes);
    let cal = Calendar::new(vec![reservation(
        &busy,
        Some(0),
        Owner::Lesson(id(9)),
        16384,
        100,
    )]);
    let rtt = RttTable::new(Topology::default());

    let e = refused(place(
        &f,
        &cal,
        &rtt,
        &lesson(&school, 45),
        &Policy::default(),
    ));
    assert_eq!(e.nodes_considered, 11);
    let got: Vec<(&str, u32)> = e.filters.iter().map(|c| (c.filter, c.removed)).collect();
    assert_eq!(
        got,
        vec![
            ("health", 3),
            ("runtime", 1),
            ("rtt", 3),
            ("device", 2),
            ("gpu memory", 1),
            ("calendar", 1)
        ]
    );
    assert_eq!(
        e.summary,
        "0/11 nodes: 3 not ready (2 disconnected, 1 cordoned), 1 no runtime jupyter, \
         3 rtt > 30 ms (configured), 2 no healthy device (nvidia, isolation >= soft), \
         1 gpu memory < 4096 MiB, 1 calendar busy"
    );
}

#[test]
fn unapproved_node_is_never_placed_and_counted_as_not_approved() {
    let school = site(1, SiteKind::School, "east");
    let pop = site(2, SiteKind::DistrictPop, "east");
    let mut waiting = node(1, &pop, vec![t4(0), t4(1)]);
    waiting.approved = false;
    // Also disconnected: approval is what the admin must act on first.
    let mut waiting_off = node(2, &pop, vec![t4(0)]);
    waiting_off.approved = false;
    waiting_off.liveness = Liveness::Disconnected;
    let approved = node(3, &pop, vec![t4(0)]);
    let approved_id = approved.id;
    let f = fleet(
        vec![school.clone(), pop],
        vec![waiting, waiting_off, approved],
    );
    let cal = Calendar::new(vec![]);
    let rtt = RttTable::new(Topology::default());

    // 4 quarter-T4 seats fit on the one approved device.
    let a = admitted(place(
        &f,
        &cal,
        &rtt,
        &lesson(&school, 4),
        &Policy::default(),
    ));
    assert!(a.seats.iter().all(|s| s.node_id == approved_id));

    // 5 would need the waiting node: refused, and the refusal says why.
    let e = refused(place(
        &f,
        &cal,
        &rtt,
        &lesson(&school, 5),
        &Policy::default(),
    ));
    let got: Vec<(&str, u32)> = e.filters.iter().map(|c| (c.filter, c.removed)).collect();
    assert_eq!(got, vec![("approval", 2)]);
    assert!(
        e.summary.ends_with("on 1/3 nodes: 2 not approved"),
        "{}",
        e.summary
    );
}

#[test]
fn rtt_source_in_explanation() {
    let school = site(1, SiteKind::School, "east");
    let other = site(2, SiteKind::School, "west");
    let f = fleet(
        vec![school.clone(), other.clone()],
        vec![
            node(1, &other, vec![t4(0)]),
            node(2, &other, vec![t4(0)]),
            node(3, &other, vec![t4(0)]),
            node(4, &school, vec![t4(0)]),
        ],
    );
    let mut rtt = RttTable::new(Topology::default());
    rtt.set_measured(school.id, f.nodes[0].id, 45.0);
    rtt.set_estimated(school.id, f.nodes[1].id, 33.0, 4.0);
    // node 3: configured cross-district 25 ms; node 4: own site, measured.
    rtt.set_measured(school.id, f.nodes[3].id, 1.5);
    let cal = Calendar::new(vec![]);
    let req = Request {
        max_rtt_ms: 20.0,
        ..lesson(&school, 4)
    };

    let a = admitted(place(&f, &cal, &rtt, &req, &Policy::default()));
    assert!(a.seats.iter().all(|s| s.rtt.source == RttSource::Measured));
    assert!(
        a.seats[0].reason.contains("rtt 1.5 ms (measured)"),
        "{}",
        a.seats[0].reason
    );
    assert!(
        a.explanation
            .summary
            .contains("3 rtt > 20 ms (1 configured, 1 estimated, 1 measured)"),
        "{}",
        a.explanation.summary
    );

    // Configured RTT follows the topology classes when nothing is known.
    let bare = RttTable::new(Topology::default());
    let own = bare.lookup(&school, &f.nodes[3], Some(&school));
    assert_eq!((own.ms, own.source), (2.0, RttSource::Configured));
    let cross = bare.lookup(&school, &f.nodes[0], Some(&other));
    assert_eq!(cross.ms, 25.0);
}

#[test]
fn estimated_rtt_carries_its_error_bound_into_the_explanation() {
    let school = site(1, SiteKind::School, "east");
    let other = site(2, SiteKind::School, "west");
    let f = fleet(
        vec![school.clone(), other.clone()],
        vec![node(1, &other, vec![t4(0)])],
    );
    let n = &f.nodes[0];
    let mut rtt = RttTable::new(Topology::default());
    rtt.set_estimated(school.id, n.id, 14.2, 3.1);
    let req = Request {
        max_rtt_ms: 20.0,
        ..lesson(&school, 1)
    };

    let a = admitted(place(
        &f,
        &Calendar::new(vec![]),
        &rtt,
        &req,
        &Policy::default(),
    ));
    let seat = &a.seats[0];
    assert_eq!(seat.rtt.source, RttSource::Estimated);
    assert_eq!((seat.rtt.ms, seat.rtt.error_ms), (14.2, Some(3.1)));
    assert!(
        seat.reason.contains("rtt 14.2 ms (estimated ±3.1 ms)"),
        "{}",
        seat.reason
    );

    // The filter tests the centre, not the centre plus the bound: 14.2 + 6.5
    // is over the limit, 14.2 is not.
    rtt.set_estimated(school.id, n.id, 14.2, 6.5);
    let a = admitted(place(
        &f,
        &Calendar::new(vec![]),
        &rtt,
        &req,
        &Policy::default(),
    ));
    assert_eq!(a.seats[0].rtt.error_ms, Some(6.5));

    // Measured and configured values have no bound.
    let bare = RttTable::new(Topology::default());
    assert_eq!(bare.lookup(&school, n, Some(&other)).error_ms, None);

    // A broken bound drops the estimate whole: the pair falls back to its
    // configured class (cross-district, 25 ms) instead.
    for bad in [f64::NAN, f64::INFINITY, -1.0] {
        let mut t = RttTable::new(Topology::default());
        t.set_estimated(school.id, n.id, 14.2, bad);
        let r = t.lookup(&school, n, Some(&other));
        assert_eq!(
            (r.ms, r.source, r.error_ms),
            (25.0, RttSource::Configured, None),
            "bound {bad}"
        );
    }
}

#[test]
fn lending_policy_keeps_node_for_owner() {
    let owner = site(1, SiteKind::School, "east");
    let guest = site(2, SiteKind::School, "east");
    let mut n = node(1, &owner, vec![t4(0)]);
    n.lending = Some(LendingPolicy {
        owner_site: owner.id,
        utc_offset_minutes: 8 * 60,
        weekdays: 0b001_1111,
        start_minute: 8 * 60,
        end_minute: 17 * 60,
    });
    let f = fleet(vec![owner.clone(), guest.clone()], vec![n]);
    let rtt = RttTable::new(Topology::default());
    let cal = Calendar::new(vec![]);
    let p = Policy::default();

    // Monday 10:00 local: the owner gets it, the guest does not.
    admitted(place(&f, &cal, &rtt, &lesson(&owner, 2), &p));
    let e = refused(place(&f, &cal, &rtt, &lesson(&guest, 2), &p));
    assert_eq!(e.filters[0].filter, "lending");
    assert!(
        e.summary.contains("1 kept for owner school's classes"),
        "{}",
        e.summary
    );

    // Monday 19:00 local: lent out.
    let evening = Request {
        window: Window::new(T0 + 9 * 60 * MINUTE, T0 + 10 * 60 * MINUTE),
        ..lesson(&guest, 2)
    };
    admitted(place(&f, &cal, &rtt, &evening, &p));
}

#[test]
fn staging_infeasible_when_dataset_too_big_for_lead() {
    let school = site(1, SiteKind::School, "east");
    let mut n = node(1, &school, vec![t4(0)]);
    n.staging_bytes_per_sec = Some(100e6); // 60 GB in a 10-minute lead
    let f = fleet(vec![school.clone()], vec![n]);
    let rtt = RttTable::new(Topology::default());
    let cal = Calendar::new(vec![]);
    let p = Policy::default();
    let with = |bytes: u64| Request {
        datasets: vec![DatasetRef {
            sha256: "AB12".into(),
            size_bytes: bytes,
        }],
        ..lesson(&school, 1)
    };

    admitted(place(&f, &cal, &rtt, &with(50_000_000_000), &p));
    let e = refused(place(&f, &cal, &rtt, &with(100_000_000_000), &p));
    assert_eq!(e.summary, "0/1 nodes: 1 staging > 10 min lead (too slow)");

    // Cached (digest compared case-insensitively): no staging needed.
    let mut g = f.clone();
    g.nodes[0].cached = vec!["ab12".into()];
    let a = admitted(place(&g, &cal, &rtt, &with(100_000_000_000), &p));
    assert!(
        a.seats[0]
            .parts
            .iter()
            .any(|s| s.name == "cached" && s.value == 1.0)
    );

    // No bandwidth measured: only cached content is trusted.
    let mut h = f.clone();
    h.nodes[0].staging_bytes_per_sec = None;
    let e = refused(place(&h, &cal, &rtt, &with(1), &p));
    assert!(e.summary.contains("no bandwidth measured"), "{}", e.summary);
}

#[test]
fn unhealthy_or_weak_isolation_devices_are_skipped() {
    let school = site(1, SiteKind::School, "east");
    let mut sick = t4(0);
    sick.healthy = false;
    let mut shared = t4(1);
    shared.isolation = Isolation::None;
    let f = fleet(
        vec![school.clone()],
        vec![node(1, &school, vec![sick, shared, t4(2)])],
    );
    let rtt = RttTable::new(Topology::default());
    let a = admitted(place(
        &f,
        &Calendar::default(),
        &rtt,
        &lesson(&school, 4),
        &Policy::default(),
    ));
    assert!(a.seats.iter().all(|s| s.devices[0].index == 2));
    refused(place(
        &f,
        &Calendar::default(),
        &rtt,
        &lesson(&school, 5),
        &Policy::default(),
    ));
}

#[test]
fn check_possible_names_the_field() {
    let school = site(1, SiteKind::School, "east");
    let f = fleet(
        vec![school.clone()],
        vec![node(1, &school, vec![t4(0), t4(1)])],
    );
    let mut seat = lesson(&school, 1).seat;
    assert_eq!(check_possible(&f, &seat), Ok(()));

    seat.gpu.as_mut().unwrap().memory_mib = 20_000;
    assert_eq!(
        check_possible(&f, &seat).unwrap_err().field,
        "seat.gpu.memory_mib"
    );

    let mut seat = lesson(&school, 1).seat;
    seat.gpu.as_mut().unwrap().vendors = vec!["cambricon".into()];
    assert_eq!(
        check_possible(&f, &seat).unwrap_err().field,
        "seat.gpu.vendors"
    );

    let mut seat = lesson(&school, 1).seat;
    seat.gpu.as_mut().unwrap().count = 3;
    assert_eq!(
        check_possible(&f, &seat).unwrap_err().field,
        "seat.gpu.count"
    );

    let mut seat = lesson(&school, 1).seat;
    seat.gpu.as_mut().unwrap().compute_percent = 150;
    let e = check_possible(&f, &seat).unwrap_err();
    assert_eq!(
        (e.field, e.rule.as_str()),
        ("seat.gpu.compute_percent", "must be between 1 and 100")
    );

    let mut seat = lesson(&school, 1).seat;
    seat.runtime = "slurm".into();
    assert_eq!(check_possible(&f, &seat).unwrap_err().field, "seat.runtime");
}

#[test]
fn invalid_request_is_refused_naming_the_field() {
    let school = site(1, SiteKind::School, "east");
    let f = fleet(vec![school.clone()], vec![node(1, &school, vec![t4(0)])]);
    let rtt = RttTable::new(Topology::default());
    let bad = Request {
        min_seats: 5,
        ..lesson(&school, 2)
    };
    let e = refused(place(
        &f,
        &Calendar::default(),
        &rtt,
        &bad,
        &Policy::default(),
    ));
    assert_eq!(
        e.summary,
        "invalid request: min_seats: must not exceed seats"
    );
    let long = Request {
        window: Window::new(T0, T0 + 30 * 24 * 60 * MINUTE),
        ..lesson(&school, 2)
    };
    let e = refused(place(
        &f,
        &Calendar::default(),
        &rtt,
        &long,
        &Policy::default(),
    ));
    assert!(
        e.summary.starts_with("invalid request: window:"),
        "{}",
        e.summary
    );
}
