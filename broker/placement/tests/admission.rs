//! Whole-class admission, the calendar across bookings, slices and
//! preemption.

mod common;

use classgrid_placement::*;
use common::*;

fn one_site(devs: Vec<Vec<Device>>) -> (Site, Fleet, RttTable) {
    let school = site(1, SiteKind::School, "east");
    let nodes = devs
        .into_iter()
        .enumerate()
        .map(|(i, d)| node(i as u128 + 1, &school, d))
        .collect();
    let f = fleet(vec![school.clone()], nodes);
    let rtt = RttTable::new(Topology::default());
    (school, f, rtt)
}

#[test]
fn class_admitted_whole_or_not_at_all() {
    let (school, f, rtt) = one_site(vec![vec![t4(0), t4(1)]]); // 8 quarter seats
    let cal = Calendar::default();
    let e = refused(place(
        &f,
        &cal,
        &rtt,
        &lesson(&school, 9),
        &Policy::default(),
    ));
    assert!(
        e.summary
            .starts_with("only 8/9 seats fit (at least 9 needed) on 1/1 nodes"),
        "{}",
        e.summary
    );
    let a = admitted(place(
        &f,
        &cal,
        &rtt,
        &lesson(&school, 8),
        &Policy::default(),
    ));
    assert_eq!(a.seats.len(), 8);
    assert_eq!(
        a.seats.iter().map(|s| s.seat).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
}

#[test]
fn min_seats_admits_partial_class() {
    let (school, f, rtt) = one_site(vec![vec![t4(0), t4(1)]]);
    let req = Request {
        min_seats: 6,
        ..lesson(&school, 10)
    };
    let a = admitted(place(
        &f,
        &Calendar::default(),
        &rtt,
        &req,
        &Policy::default(),
    ));
    assert_eq!(a.seats.len(), 8);
    assert!(
        a.explanation.summary.starts_with("8/10 seats on 1 node"),
        "{}",
        a.explanation.summary
    );
    let req = Request {
        min_seats: 9,
        ..lesson(&school, 10)
    };
    refused(place(
        &f,
        &Calendar::default(),
        &rtt,
        &req,
        &Policy::default(),
    ));
}

#[test]
fn fractional_seats_share_a_t4() {
    let (school, f, rtt) = one_site(vec![vec![t4(0)]]);
    let a = admitted(place(
        &f,
        &Calendar::default(),
        &rtt,
        &lesson(&school, 4),
        &Policy::default(),
    ));
    for s in &a.seats {
        assert_eq!(
            s.devices,
            vec![DeviceGrant {
                index: 0,
                memory_mib: 4096,
                compute_percent: 25
            }]
        );
    }
    refused(place(
        &f,
        &Calendar::default(),
        &rtt,
        &lesson(&school, 5),
        &Policy::default(),
    ));

    // The device's slice limit binds before memory does.
    let (school, mut f, rtt) = one_site(vec![vec![t4(0)]]);
    f.nodes[0].devices[0].max_slices = 3;
    admitted(place(
        &f,
        &Calendar::default(),
        &rtt,
        &lesson(&school, 3),
        &Policy::default(),
    ));
    refused(place(
        &f,
        &Calendar::default(),
        &rtt,
        &lesson(&school, 4),
        &Policy::default(),
    ));
}

#[test]
fn fractional_seats_fill_a_used_device_before_a_fresh_one() {
    let (school, f, rtt) = one_site(vec![vec![t4(0), t4(1)]]);
    // Device 1 is half used: the two new seats go there, device 0 stays whole.
    let cal = Calendar::new(vec![reservation(
        &f.nodes[0],
        Some(1),
        Owner::Lesson(id(7)),
        8192,
        50,
    )]);
    let a = admitted(place(
        &f,
        &cal,
        &rtt,
        &lesson(&school, 2),
        &Policy::default(),
    ));
    assert!(a.seats.iter().all(|s| s.devices[0].index == 1));
}

#[test]
fn multi_device_seat() {
    let (school, f, rtt) = one_site(vec![vec![t4(0), t4(1), t4(2), t4(3)]]);
    let mut req = lesson(&school, 2);
    req.seat.gpu = Some(GpuSpec {
        memory_mib: 16384,
        compute_percent: 100,
        count: 2,
        ..quarter_t4()
    });
    let a = admitted(place(
        &f,
        &Calendar::default(),
        &rtt,
        &req,
        &Policy::default(),
    ));
    let mut all: Vec<u32> = a
        .seats
        .iter()
        .flat_map(|s| s.devices.iter().map(|d| d.index))
        .collect();
    all.sort();
    assert_eq!(all, vec![0, 1, 2, 3]);

    // Rows to persist: one per device, cpu/memory on the first only.
    let rows = a.seats[0].reservations(&req, Owner::Lesson(id(5)));
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].cpu_millis, rows[1].cpu_millis), (1000, 0));
    assert_eq!((rows[0].memory_mib, rows[1].memory_mib), (2048, 0));
    assert!(
        rows.iter()
            .all(|r| r.gpu_memory_mib == 16384 && !r.preemptible)
    );

    let mut cal = Calendar::default();
    book(&mut cal, &a, &req, Owner::Lesson(id(5)));
    assert_eq!(cal.len(), 4);
    let one = Request {
        seats: 1,
        min_seats: 1,
        ..req.clone()
    };
    refused(place(&f, &cal, &rtt, &one, &Policy::default()));
}

#[test]
fn multi_device_fractional_seats_spread_over_devices() {
    // Capacities 4,2,2 quarter slices: 4 two-device seats fit (8 slices), which
    // needs the big device in every seat.
    let (school, f, rtt) = one_site(vec![vec![t4(0), t4(1), t4(2)]]);
    let cal = Calendar::new(vec![
        reservation(&f.nodes[0], Some(1), Owner::Lesson(id(7)), 8192, 50),
        reservation(&f.nodes[0], Some(2), Owner::Lesson(id(7)), 8192, 50),
    ]);
    let mut req = lesson(&school, 4);
    req.seat.gpu.as_mut().unwrap().count = 2;
    let a = admitted(place(&f, &cal, &rtt, &req, &Policy::default()));
    for s in &a.seats {
        assert_eq!(s.devices.len(), 2);
        assert_ne!(s.devices[0].index, s.devices[1].index);
    }
    req.seats = 5;
    req.min_seats = 5;
    refused(place(&f, &cal, &rtt, &req, &Policy::default()));
}

#[test]
fn seat_without_gpu_uses_node_cpu_memory() {
    let (school, mut f, rtt) = one_site(vec![vec![]]);
    f.nodes[0].cpu_millis = 4000;
    let mut req = lesson(&school, 4);
    req.seat.gpu = None;
    let a = admitted(place(
        &f,
        &Calendar::default(),
        &rtt,
        &req,
        &Policy::default(),
    ));
    assert!(a.seats.iter().all(|s| s.devices.is_empty()));
    let rows = a.reservations(&req, Owner::Lesson(id(3)));
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter()
            .all(|r| r.device_index.is_none() && r.cpu_millis == 1000)
    );
    req.seats = 5;
    req.min_seats = 5;
    refused(place(
        &f,
        &Calendar::default(),
        &rtt,
        &req,
        &Policy::default(),
    ));
}

#[test]
fn later_booking_sees_earlier_reservation() {
    let (school, f, rtt) = one_site(vec![vec![t4(0)]]);
    let mut cal = Calendar::default();
    let req = lesson(&school, 3);
    let a = admitted(place(&f, &cal, &rtt, &req, &Policy::default()));
    book(&mut cal, &a, &req, Owner::Lesson(id(1)));
    assert_eq!(cal.len(), 3);

    let e = refused(place(
        &f,
        &cal,
        &rtt,
        &lesson(&school, 2),
        &Policy::default(),
    ));
    assert!(e.summary.contains("only 1/2 seats fit"), "{}", e.summary);
    admitted(place(
        &f,
        &cal,
        &rtt,
        &lesson(&school, 1),
        &Policy::default(),
    ));

    // The next period does not overlap.
    let next = Request {
        window: Window::new(req.window.end, req.window.end + 55 * MINUTE),
        ..lesson(&school, 4)
    };
    admitted(place(&f, &cal, &rtt, &next, &Policy::default()));
}

#[test]
fn cancel_frees_capacity() {
    let (school, f, rtt) = one_site(vec![vec![t4(0)]]);
    let mut cal = Calendar::default();
    let req = lesson(&school, 4);
    let a = admitted(place(&f, &cal, &rtt, &req, &Policy::default()));
    book(&mut cal, &a, &req, Owner::Lesson(id(1)));
    refused(place(
        &f,
        &cal,
        &rtt,
        &lesson(&school, 1),
        &Policy::default(),
    ));
    cal.remove_owner(Owner::Lesson(id(1)));
    assert!(cal.is_empty());
    admitted(place(
        &f,
        &cal,
        &rtt,
        &lesson(&school, 4),
        &Policy::default(),
    ));
}

#[test]
fn calendar_uses_peak_not_sum_over_window() {
    let (school, f, rtt) = one_site(vec![vec![t4(0)]]);
    let req = lesson(&school, 1);
    let half = |start: i64, end: i64, who: u128| Reservation {
        window: Window::new(start, end),
        ..reservation(&f.nodes[0], Some(0), Owner::Lesson(id(who)), 12288, 75)
    };
    let w = req.window;
    let mid = (w.start + w.end) / 2;
    // Back to back, each 12 GiB: never more than 12 GiB at once.
    let cal = Calendar::new(vec![
        half(w.start - MINUTE, mid, 1),
        half(mid, w.end + MINUTE, 2),
    ]);
    admitted(place(&f, &cal, &rtt, &req, &Policy::default()));
    // Overlapping by a minute: 24 GiB at the peak, no room.
    let cal = Calendar::new(vec![
        half(w.start - MINUTE, mid + MINUTE, 1),
        half(mid, w.end, 2),
    ]);
    refused(place(&f, &cal, &rtt, &req, &Policy::default()));
}

#[test]
fn lesson_preempts_batch_job_not_lesson_seat() {
    let (school, f, rtt) = one_site(vec![vec![t4(0)]]);
    let n = &f.nodes[0];
    let (job_a, job_b, seat) = (
        Owner::Job(id(11)),
        Owner::Job(id(12)),
        Owner::Lesson(id(13)),
    );
    let cal = Calendar::new(vec![
        reservation(n, Some(0), job_a, 4096, 25),
        reservation(n, Some(0), job_b, 4096, 25),
        reservation(n, Some(0), seat, 4096, 25),
    ]);
    let p = Policy::default();

    // One seat fits in free capacity: nobody is evicted.
    let a = admitted(place(&f, &cal, &rtt, &lesson(&school, 1), &p));
    assert!(a.preempted.is_empty());

    // Two seats need one job gone, and only one.
    let a = admitted(place(&f, &cal, &rtt, &lesson(&school, 2), &p));
    assert_eq!(a.preempted.len(), 1);
    assert!(matches!(a.preempted[0], Owner::Job(_)));
    assert!(
        a.seats[1].reason.contains("preempting"),
        "{}",
        a.seats[1].reason
    );

    // Three seats evict both jobs; four would need the running lesson seat.
    let a = admitted(place(&f, &cal, &rtt, &lesson(&school, 3), &p));
    let mut got = a.preempted.clone();
    got.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(got, vec![job_a, job_b]);
    refused(place(&f, &cal, &rtt, &lesson(&school, 4), &p));

    // Jobs never preempt.
    let mut j = job(&school);
    j.seats = 2;
    j.min_seats = 2;
    refused(place(&f, &cal, &rtt, &j, &p));
}

#[test]
fn preemption_is_last_resort() {
    // A near node full of jobs and a farther free one: the lesson takes the
    // free one rather than evicting.
    let school = site(1, SiteKind::School, "east");
    let f = fleet(
        vec![school.clone()],
        vec![node(1, &school, vec![t4(0)]), node(2, &school, vec![t4(0)])],
    );
    let rtt = measured(&f, &school, &[2.0, 9.0]);
    let cal = Calendar::new(vec![reservation(
        &f.nodes[0],
        Some(0),
        Owner::Job(id(11)),
        16384,
        100,
    )]);
    let a = admitted(place(
        &f,
        &cal,
        &rtt,
        &lesson(&school, 4),
        &Policy::default(),
    ));
    assert!(a.preempted.is_empty());
    assert!(a.seats.iter().all(|s| s.node_id == f.nodes[1].id));

    let eager = Policy {
        preempt_as_last_resort: false,
        ..Policy::default()
    };
    let a = admitted(place(&f, &cal, &rtt, &lesson(&school, 4), &eager));
    assert_eq!(a.preempted, vec![Owner::Job(id(11))]);
}

#[test]
fn own_site_preferred_over_district_then_cloud() {
    let school = site(1, SiteKind::School, "east");
    let pop = site(2, SiteKind::DistrictPop, "east");
    let cloud = site(3, SiteKind::Cloud, "");
    let f = fleet(
        vec![school.clone(), pop.clone(), cloud.clone()],
        vec![
            node(1, &cloud, vec![t4(0)]),
            node(2, &pop, vec![t4(0)]),
            node(3, &school, vec![t4(0)]),
        ],
    );
    // Same measured RTT everywhere: tier decides.
    let rtt = measured(&f, &school, &[10.0, 10.0, 10.0]);
    let a = admitted(place(
        &f,
        &Calendar::default(),
        &rtt,
        &lesson(&school, 12),
        &Policy::default(),
    ));
    let order: Vec<_> = a.seats.iter().map(|s| s.node_id).collect();
    assert_eq!(order[0], f.nodes[2].id);
    assert_eq!(order[4], f.nodes[1].id);
    assert_eq!(order[8], f.nodes[0].id);
    assert!(
        a.seats[0].reason.contains("the school's own site"),
        "{}",
        a.seats[0].reason
    );
    assert!(a.seats.iter().all(|s| (0.0..=1.0).contains(&s.score)));
}
