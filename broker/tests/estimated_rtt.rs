//! A seat placed on an estimated RTT keeps the estimate's error bound: from
//! the Vivaldi estimate through placement into the seat row in PostgreSQL,
//! and out through the gRPC and REST seat, and the explanation.
//!
//! The school's edge measures only the school's own node; that node measures
//! its peer at the district pop. The pop node therefore has coordinates but
//! no site → node measurement, so its RTT from the school is estimated. The
//! school's own node is too small for the seat, so the seat lands on the pop
//! node with source `estimated`.

mod common;

use chrono::{Duration, Utc};
use classgrid_broker::{
    api::{grpc, rest},
    domain::lesson::RawBooking,
};
use classgrid_proto::v1 as pb;
use common::{TestDb, attached_node, broker, one_seat};
use uuid::Uuid;

fn cpu_only(cpu_millis: i32) -> pb::NodeCapacity {
    pb::NodeCapacity {
        cpu_millis,
        memory_mib: 8192,
        devices: vec![],
    }
}

/// An edge's report of one site → node median.
fn site_rtt(node: Uuid, median_ms: f64) -> pb::RttReport {
    pb::RttReport {
        edge_id: String::new(),
        rtts: vec![pb::SiteNodeRtt {
            node_id: node.to_string(),
            median_ms,
            variance_ms2: 0.5,
            samples: 10,
        }],
    }
}

/// One CPU-only seat (so no voucher is needed) two hours from now.
fn cpu_seat(school: &str) -> RawBooking {
    one_seat(school, "one seat", Utc::now() + Duration::hours(2), None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seat_on_an_estimated_rtt_reports_its_error_bound() {
    let db = TestDb::new("cg_est").await;
    let app = broker(&db).await;
    let school = app.create_site("school-e", "school", "d1").await.unwrap();
    app.create_site("pop-e", "district_pop", "d1")
        .await
        .unwrap();
    // Too small for a 500-millicore seat: only the pop node can take it.
    let near = attached_node(&app, "school-e", "near", cpu_only(100)).await;
    let far = attached_node(&app, "pop-e", "far", cpu_only(4000)).await;

    // A few rounds of reports, so the coordinates settle as they would
    // with probes arriving over time.
    for _ in 0..10 {
        app.report_rtt(school.id, &site_rtt(near, 4.0))
            .await
            .unwrap();
        app.peer_rtts(
            near,
            &pb::PeerRtts {
                peers: vec![pb::PeerRtt {
                    node_id: far.to_string(),
                    median_ms: 9.0,
                    variance_ms2: 0.5,
                    samples: 10,
                }],
            },
        )
        .await
        .unwrap();
    }
    let est = app
        .edge
        .estimates()
        .into_iter()
        .find(|e| e.site == school.id && e.node == far)
        .expect("the pop node has an estimated RTT from the school");

    let booked = app
        .book_lesson(cpu_seat("school-e"))
        .await
        .expect("admitted on the pop node");

    // Read back from PostgreSQL, not from what booking returned.
    let v = app.lesson(booked.lesson.id).await.unwrap();
    let row = &v.seats[0];
    assert_eq!(row.node_id, Some(far));
    assert_eq!(row.rtt_source.as_deref(), Some("estimated"), "{row:?}");
    let bound = row.rtt_error_ms.expect("an estimated seat keeps its bound");
    assert!(bound.is_finite() && bound > 0.0, "bound {bound}");
    assert_eq!(
        (row.rtt_ms, Some(bound)),
        (Some(est.ms), Some(est.error_bound_ms))
    );

    let g = grpc::convert::seat(row).rtt.unwrap();
    assert_eq!(g.source, pb::RttSource::Estimated as i32);
    assert_eq!(g.error_bound_ms, Some(bound));

    let r = serde_json::to_value(rest::lessons::seat(row, chrono_tz::Asia::Shanghai)).unwrap();
    assert_eq!(r["rtt"]["source"], "estimated");
    assert_eq!(r["rtt"]["error_bound_ms"].as_f64(), Some(bound));

    let x = grpc::lesson::explanation(&v);
    let choice = &x.seats[0];
    assert_eq!(choice.rtt.unwrap().error_bound_ms, Some(bound));
    let phrase = format!("(estimated ±{bound:.1} ms)");
    assert!(choice.reason.contains(&phrase), "{}", choice.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_measured_seat_has_no_error_bound() {
    let db = TestDb::new("cg_est").await;
    let app = broker(&db).await;
    let school = app.create_site("school-m", "school", "d1").await.unwrap();
    let near = attached_node(&app, "school-m", "near", cpu_only(4000)).await;
    app.report_rtt(school.id, &site_rtt(near, 3.0))
        .await
        .unwrap();
    let booked = app.book_lesson(cpu_seat("school-m")).await.unwrap();
    let v = app.lesson(booked.lesson.id).await.unwrap();
    let row = &v.seats[0];
    assert_eq!(row.rtt_source.as_deref(), Some("measured"));
    assert_eq!(row.rtt_error_ms, None);
    let r = serde_json::to_value(rest::lessons::seat(row, chrono_tz::Asia::Shanghai)).unwrap();
    assert!(r["rtt"]["error_bound_ms"].is_null(), "{r}");
    assert_eq!(grpc::convert::seat(row).rtt.unwrap().error_bound_ms, None);
}
