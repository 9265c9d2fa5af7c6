//! A series' next occurrence on its previous occurrence's nodes (decision
//! 111): the same engine on just those nodes, or nothing.

mod common;

use classgrid_placement::*;
use common::*;

const WEEK: i64 = 7 * 24 * 60 * MINUTE;

/// Ten nodes of one T4 each (four quarter seats) at one school.
fn ten_nodes() -> (Site, Fleet, RttTable) {
    let school = site(1, SiteKind::School, "east");
    let nodes = (0..10).map(|i| node(i + 1, &school, vec![t4(0)])).collect();
    (
        school.clone(),
        fleet(vec![school], nodes),
        RttTable::new(Topology::default()),
    )
}

fn next_week(req: &Request) -> Request {
    Request {
        window: Window::new(req.window.start + WEEK, req.window.end + WEEK),
        ..req.clone()
    }
}

fn nodes_of(a: &Admission) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = a.seats.iter().map(|s| s.node_id).collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn the_next_week_lands_on_the_same_nodes_and_says_so() {
    let (school, f, rtt) = ten_nodes();
    let mut cal = Calendar::default();
    let policy = Policy::default();
    let week1 = lesson(&school, 8);
    let a1 = admitted(place(&f, &cal, &rtt, &week1, &policy));
    book(&mut cal, &a1, &week1, Owner::Lesson(id(1)));
    let week2 = next_week(&week1);
    let a2 = admitted(place_again(&a1, &f, &cal, &rtt, &week2, &policy).expect("fits again"));
    assert_eq!(nodes_of(&a2), nodes_of(&a1));
    assert_eq!(a2.seats.len(), 8);
    assert!(
        a2.explanation.summary.contains("earlier occurrence"),
        "{}",
        a2.explanation.summary
    );
}

#[test]
fn nodes_taken_at_the_new_hour_leave_it_to_the_whole_fleet() {
    let (school, f, rtt) = ten_nodes();
    let mut cal = Calendar::default();
    let policy = Policy::default();
    let week1 = lesson(&school, 8);
    let a1 = admitted(place(&f, &cal, &rtt, &week1, &policy));
    // Another class takes those nodes in week 2 first.
    let week2 = next_week(&week1);
    let other = admitted(place(&f, &cal, &rtt, &week2, &policy));
    assert_eq!(nodes_of(&other), nodes_of(&a1), "the same nodes rank first");
    book(&mut cal, &other, &week2, Owner::Lesson(id(2)));
    assert!(
        place_again(&a1, &f, &cal, &rtt, &week2, &policy).is_none(),
        "the earlier nodes are full at that hour: no partial answer"
    );
    // The whole fleet still has room.
    let a2 = admitted(place(&f, &cal, &rtt, &week2, &policy));
    assert!(nodes_of(&a2).iter().all(|n| !nodes_of(&a1).contains(n)));
}

#[test]
fn a_node_gone_from_the_fleet_leaves_it_to_the_whole_fleet() {
    let (school, f, rtt) = ten_nodes();
    let cal = Calendar::default();
    let policy = Policy::default();
    let week1 = lesson(&school, 8);
    let a1 = admitted(place(&f, &cal, &rtt, &week1, &policy));
    let gone = nodes_of(&a1)[0];
    let smaller = Fleet {
        sites: f.sites.clone(),
        nodes: f.nodes.iter().filter(|n| n.id != gone).cloned().collect(),
    };
    assert!(place_again(&a1, &smaller, &cal, &rtt, &next_week(&week1), &policy).is_none());
}

#[test]
fn the_same_shape_is_everything_but_the_window() {
    let (school, ..) = ten_nodes();
    let a = lesson(&school, 8);
    assert!(same_shape(&a, &next_week(&a)));
    assert!(!same_shape(&a, &lesson(&school, 9)));
    let other_school = site(2, SiteKind::School, "east");
    assert!(!same_shape(&a, &lesson(&other_school, 8)));
    let tighter = Request {
        max_rtt_ms: a.max_rtt_ms / 2.0,
        ..a.clone()
    };
    assert!(!same_shape(&a, &tighter));
}
