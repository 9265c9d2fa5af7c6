//! Data residency (issue 21): a lesson whose data must stay in the school,
//! the district or the education network is never placed outside it, and a
//! refusal counts the nodes the rule removed.

mod common;

use classgrid_placement::*;
use common::*;

#[test]
fn seat_never_placed_where_its_data_may_not_go() {
    let school = site(1, SiteKind::School, "east");
    let other_school = site(2, SiteKind::School, "east");
    let west = site(3, SiteKind::DistrictPop, "west");
    let cloud = site(4, SiteKind::Cloud, "");
    let sites = vec![
        school.clone(),
        other_school.clone(),
        west.clone(),
        cloud.clone(),
    ];
    let nodes = vec![
        node(1, &school, vec![t4(0)]),
        node(2, &other_school, vec![t4(0)]),
        node(3, &west, vec![t4(0)]),
        node(4, &cloud, vec![t4(0), t4(1), t4(2), t4(3)]),
    ];
    let f = fleet(sites, nodes);
    let rtt = measured(&f, &school, &[1.0, 2.0, 3.0, 4.0]);
    let cal = Calendar::new(vec![]);
    let on = |r: Residency, seats: u32| {
        let mut req = lesson(&school, seats);
        req.residency = r;
        place(&f, &cal, &rtt, &req, &Policy::default())
    };
    let node_ids = |a: &Admission| {
        let mut v: Vec<_> = a.seats.iter().map(|s| s.node_id).collect();
        v.sort();
        v.dedup();
        v
    };

    // In the school: only its own node, whose T4 takes four quarter seats.
    let a = admitted(on(Residency::School, 4));
    assert_eq!(node_ids(&a), vec![f.nodes[0].id]);
    let e = refused(on(Residency::School, 5));
    let r = e
        .filters
        .iter()
        .find(|c| c.filter == "residency")
        .expect("counted");
    assert_eq!(r.removed, 3);
    assert!(r.detail.contains("school"), "{}", r.detail);

    // In the district: both east schools, never west or the cloud.
    let a = admitted(on(Residency::District, 8));
    assert!(
        a.seats
            .iter()
            .all(|s| s.node_id == f.nodes[0].id || s.node_id == f.nodes[1].id)
    );
    let e = refused(on(Residency::District, 9));
    assert!(e.summary.contains("district east"), "{}", e.summary);

    // In the education network: anything but the cloud site.
    let a = admitted(on(Residency::EducationNetwork, 12));
    assert!(a.seats.iter().all(|s| s.node_id != f.nodes[3].id));
    assert!(
        refused(on(Residency::EducationNetwork, 13))
            .summary
            .contains("education network")
    );

    // No rule: the cloud takes the rest.
    assert_eq!(admitted(on(Residency::Anywhere, 28)).seats.len(), 28);
    assert_eq!(Residency::parse("district"), Some(Residency::District));
    assert_eq!(Residency::parse("moon"), None);
}
