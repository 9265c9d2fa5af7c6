//! A lesson booking's dry run against a real PostgreSQL: the same decision
//! as the booking (seats, explanation, voucher cost, or refusal), and every
//! table as it was afterwards.

mod common;
mod term_support;

use chrono::{Duration, Utc};
use classgrid_broker::domain::ServiceError;
use term_support::{class, held_for, ledger, row_counts, term, voucher};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_decides_as_the_booking_and_leaves_every_table_as_it_was() {
    let t = term("cg_dryrun", "north-school", 2).await;
    voucher(
        &t.app,
        "north-school",
        10.0,
        Utc::now() + Duration::days(90),
    )
    .await;
    let start = Utc::now() + Duration::hours(2);
    let before = row_counts(&t.pool).await;
    let ledger_before = ledger(&t.pool).await;
    let calendar_before = t.app.reserver.len();

    let p = t
        .app
        .dry_run_lesson(class("north-school", start, 6))
        .await
        .expect("six quarter-T4 seats fit two T4s");
    assert_eq!(p.view.seats.len(), 6);
    assert!(p.view.seats.iter().all(|s| s.node_id.is_some()));
    assert!(p.held.amount_uah > 0, "accelerator seats cost hours");
    assert!(p.view.lesson.explanation()["admitted"].as_bool().unwrap());

    assert_eq!(row_counts(&t.pool).await, before, "a dry run writes no row");
    assert_eq!(ledger(&t.pool).await, ledger_before, "nor any ledger entry");
    assert_eq!(
        t.app.reserver.len(),
        calendar_before,
        "and holds no capacity"
    );

    // The booking itself costs exactly what its dry run said, on the same
    // vouchers, with as many seats on the same nodes.
    let v = t
        .app
        .book_lesson(class("north-school", start, 6))
        .await
        .unwrap();
    assert_eq!(held_for(&t.pool, v.lesson.id).await, p.held.amount_uah);
    let nodes = |seats: &[classgrid_broker::store::lessons::SeatRow]| {
        let mut n: Vec<_> = seats.iter().filter_map(|s| s.node_id).collect();
        n.sort();
        n
    };
    assert_eq!(nodes(&v.seats), nodes(&p.view.seats));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_is_refused_as_the_booking_would_be() {
    let t = term("cg_dryrun", "north-school", 1).await;
    let start = Utc::now() + Duration::hours(2);
    let before = row_counts(&t.pool).await;

    // No room: five quarter-T4 seats on one T4.
    match t.app.dry_run_lesson(class("north-school", start, 5)).await {
        Err(ServiceError::Refused(e)) => {
            assert!(e.summary.contains("only 4/5 seats fit"), "{e:?}")
        }
        other => panic!(
            "expected a placement refusal, got {:?}",
            other.map(|p| p.held)
        ),
    }
    // Room, but no voucher: refused by the voucher check, with the numbers,
    // exactly as the booking is.
    let dry = t.app.dry_run_lesson(class("north-school", start, 2)).await;
    let real = t.app.book_lesson(class("north-school", start, 2)).await;
    for r in [dry.map(|p| p.view), real] {
        match r {
            Err(ServiceError::Refused(e)) => {
                assert!(
                    e.summary.contains("accelerator-hours needed"),
                    "{}",
                    e.summary
                )
            }
            other => panic!(
                "expected a voucher refusal, got {:?}",
                other.map(|v| v.lesson.id)
            ),
        }
    }
    // Bad input is named by field, as for a booking.
    let mut bad = class("north-school", start, 0);
    bad.max_rtt_ms = -3;
    match t.app.dry_run_lesson(bad).await {
        Err(ServiceError::Invalid(f)) => {
            let fields: Vec<_> = f.iter().map(|f| f.field.as_str()).collect();
            assert!(
                fields.contains(&"seats") && fields.contains(&"max_rtt_ms"),
                "{fields:?}"
            );
        }
        other => panic!("expected invalid input, got {:?}", other.map(|p| p.held)),
    }
    assert_eq!(row_counts(&t.pool).await, before);
}
