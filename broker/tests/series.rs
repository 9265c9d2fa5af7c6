//! Series against a real PostgreSQL: a term of weekly lessons where some
//! occurrences collide with lessons already booked, under both policies;
//! a dry run of a term that crosses a voucher's expiry; and the edits
//! (cancel one occurrence and its refund, move one, change all future
//! ones, end early).

mod common;
mod term_support;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use classgrid_broker::{
    domain::ServiceError, series::request::RawSeries, service::series::SeriesAnswer,
};
use term_support::{class, held_for, ledger, row_counts, term, voucher};
use uuid::Uuid;

const SCHOOL: &str = "north-school";

/// Weekly for 18 weeks from tomorrow (local), at 10:00, 4 quarter-T4 seats:
/// one whole T4 of the test's node each time.
fn weekly(policy: &str, tz: chrono_tz::Tz) -> RawSeries {
    let tomorrow = (Utc::now().with_timezone(&tz) + Duration::days(1)).date_naive();
    RawSeries {
        request_id: String::new(),
        lesson: class(SCHOOL, Utc::now(), 4),
        rrule: "FREQ=WEEKLY;COUNT=18".into(),
        start_time: "10:00".into(),
        term_start: tomorrow.to_string(),
        term_end: (tomorrow + Duration::weeks(20)).to_string(),
        exception_dates: Vec::new(),
        policy: policy.into(),
    }
}

/// The starts the rule gives, as the broker expands them.
fn starts(raw: &RawSeries, tz: chrono_tz::Tz) -> Vec<DateTime<Utc>> {
    let date = |s: &str| s.parse::<NaiveDate>().unwrap();
    classgrid_broker::series::rule::Rule {
        rrule: raw.rrule.clone(),
        start_time: chrono::NaiveTime::from_hms_opt(10, 0, 0).unwrap(),
        duration: Duration::minutes(40),
        term_start: date(&raw.term_start),
        term_end: date(&raw.term_end),
        exceptions: Vec::new(),
    }
    .expand(tz)
    .unwrap()
}

async fn count(pool: &sqlx::PgPool, table: &str) -> i64 {
    row_counts(pool)
        .await
        .into_iter()
        .find(|(t, _)| t == table)
        .map(|(_, n)| n)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_collisions_refuse_all_or_nothing_and_leave_fifteen_of_eighteen_otherwise() {
    let t = term("cg_series", SCHOOL, 1).await;
    let tz = t.app.cfg.time_zone;
    let v = voucher(&t.app, SCHOOL, 1000.0, Utc::now() + Duration::days(365)).await;
    let raw = weekly("all_or_nothing", tz);
    let at = starts(&raw, tz);
    assert_eq!(at.len(), 18);
    // Three lessons already booked on the node at occurrences 2, 7 and 12.
    for i in [2, 7, 12] {
        t.app.book_lesson(class(SCHOOL, at[i], 1)).await.unwrap();
    }
    let before = row_counts(&t.pool).await;
    let ledger_before = ledger(&t.pool).await;

    let Err(ServiceError::Refused(e)) = t.app.book_series(raw.clone(), false).await else {
        panic!("all or nothing with three collisions is refused whole")
    };
    assert!(
        e.summary
            .starts_with("3 of 18 occurrences cannot be booked"),
        "{}",
        e.summary
    );
    assert_eq!(
        e.filters.len(),
        3,
        "one line per collision: {:?}",
        e.filters
    );
    for (f, i) in e.filters.iter().zip([2, 7, 12]) {
        let local = at[i].with_timezone(&tz).format("%F %R").to_string();
        assert!(f.detail.starts_with(&local), "{} names {local}", f.detail);
        assert!(f.detail.contains("3/4 seats fit"), "{}", f.detail);
    }
    assert_eq!(
        row_counts(&t.pool).await,
        before,
        "nothing of it was written"
    );
    assert_eq!(ledger(&t.pool).await, ledger_before);

    let mut what_fits = raw.clone();
    what_fits.policy = "book_what_fits".into();
    let a: SeriesAnswer = t.app.book_series(what_fits, false).await.unwrap();
    assert_eq!(a.admitted(), 15);
    let refused: Vec<usize> = (0..18).filter(|i| !a.occurrences[*i].admitted).collect();
    assert_eq!(refused, [2, 7, 12]);
    for i in refused {
        let o = &a.occurrences[i];
        assert!(
            o.reason.contains("3/4 seats fit") && o.lesson_id.is_none(),
            "{o:?}"
        );
    }
    let series = a.series.clone().expect("written");
    assert_eq!(count(&t.pool, "lessons").await, 3 + 15);
    assert_eq!(count(&t.pool, "series_occurrences").await, 18);
    let booked: Vec<Uuid> = a.occurrences.iter().filter_map(|o| o.lesson_id).collect();
    let mut total = 0;
    for (o, id) in a.occurrences.iter().filter(|o| o.admitted).zip(&booked) {
        let held = held_for(&t.pool, *id).await;
        assert_eq!(
            held, o.held.amount_uah,
            "each occurrence holds what it said"
        );
        total += held;
    }
    assert_eq!(total, a.held.amount_uah, "the term's cost is the sum");
    let view = t.app.series(series.id).await.unwrap();
    assert_eq!(view.occurrences.len(), 18);
    assert_eq!(view.occurrences[2].reason, a.occurrences[2].reason);

    // Cancelling one occurrence refunds exactly its hold, and no other.
    let one = booked[4];
    let hold = held_for(&t.pool, one).await;
    let balance = t.app.voucher(v).await.unwrap().balance_uah;
    let cancelled = t
        .app
        .cancel_occurrence(series.id, one, "school trip")
        .await
        .unwrap();
    assert_eq!(cancelled.lesson.state, "cancelled");
    assert_eq!(t.app.voucher(v).await.unwrap().balance_uah, balance + hold);
    let released: i64 = ledger(&t.pool)
        .await
        .iter()
        .filter(|(_, kind, _, lesson)| kind == "release" && *lesson == Some(one))
        .map(|r| r.2)
        .sum();
    assert_eq!(released, hold);
    for other in booked.iter().filter(|id| **id != one) {
        assert_eq!(
            held_for(&t.pool, *other).await,
            a.occurrences[0].held.amount_uah
        );
    }
    // A lesson of another series (or none) is not this series' occurrence.
    let stranger = t.app.cancel_occurrence(Uuid::now_v7(), booked[5], "").await;
    assert!(matches!(stranger, Err(ServiceError::NotFound(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_of_a_term_crossing_a_vouchers_expiry_writes_nothing() {
    let t = term("cg_series", SCHOOL, 1).await;
    let tz = t.app.cfg.time_zone;
    let raw = weekly("book_what_fits", tz);
    let at = starts(&raw, tz);
    // Plenty of hours, but only until just after the ninth occurrence.
    voucher(&t.app, SCHOOL, 1000.0, at[8] + Duration::hours(2)).await;
    let before = row_counts(&t.pool).await;
    let ledger_before = ledger(&t.pool).await;

    let a = t.app.book_series(raw, true).await.unwrap();
    assert!(a.dry_run && a.series.is_none());
    assert_eq!(a.admitted(), 9);
    for o in &a.occurrences[9..] {
        assert!(
            !o.admitted && o.reason.contains("accelerator-hours needed"),
            "{o:?}"
        );
    }
    let each = a.occurrences[0].held.amount_uah;
    assert!(each > 0);
    assert_eq!(a.held.amount_uah, 9 * each);
    assert_eq!(row_counts(&t.pool).await, before, "a dry run writes no row");
    assert_eq!(ledger(&t.pool).await, ledger_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_occurrence_moves_and_a_series_ends_early() {
    let t = term("cg_series", SCHOOL, 1).await;
    let tz = t.app.cfg.time_zone;
    voucher(&t.app, SCHOOL, 1000.0, Utc::now() + Duration::days(365)).await;
    let mut raw = weekly("all_or_nothing", tz);
    raw.rrule = "FREQ=WEEKLY;COUNT=6".into();
    raw.request_id = "term-7-3".into();
    let a = t.app.book_series(raw.clone(), false).await.unwrap();
    let id = a.series.as_ref().unwrap().id;
    assert_eq!(a.admitted(), 6);
    // A retry with the same request id answers the same series.
    let again = t.app.book_series(raw, false).await.unwrap();
    assert_eq!(again.series.unwrap().id, id);
    assert_eq!(count(&t.pool, "lessons").await, 6);

    let first = a.occurrences[0].lesson_id.unwrap();
    let to = a.occurrences[0].start + Duration::hours(3);
    let moved = t.app.move_occurrence(id, first, to).await.unwrap();
    assert_eq!(moved.lesson.start_at, to);
    assert_eq!(t.app.lesson(first).await.unwrap().lesson.state, "cancelled");
    let v = t.app.series(id).await.unwrap();
    assert_eq!(v.occurrences[0].lesson_id, Some(moved.lesson.id));
    assert_eq!(v.occurrences[0].rule_start, a.occurrences[0].start);

    let from = a.occurrences[3].start;
    let v = t.app.end_series(id, Some(from)).await.unwrap();
    assert_eq!(v.series.ended_at, Some(from));
    let states: Vec<&str> = v
        .occurrences
        .iter()
        .map(|o| o.lesson_state.as_deref().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "booked",
            "booked",
            "booked",
            "cancelled",
            "cancelled",
            "cancelled"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_every_future_occurrence_replaces_them_whole_or_not_at_all() {
    let t = term("cg_series", SCHOOL, 1).await;
    let tz = t.app.cfg.time_zone;
    voucher(&t.app, SCHOOL, 1000.0, Utc::now() + Duration::days(365)).await;
    let mut raw = weekly("all_or_nothing", tz);
    raw.rrule = "FREQ=WEEKLY;COUNT=6".into();
    let a = t.app.book_series(raw, false).await.unwrap();
    let id = a.series.as_ref().unwrap().id;
    let old: Vec<Uuid> = a.occurrences.iter().filter_map(|o| o.lesson_id).collect();
    let change = |seats| classgrid_broker::service::series_edits::RawChange {
        from: Some(a.occurrences[2].start),
        seats,
        ..Default::default()
    };

    // Five seats do not fit the node's four: refused, each named, nothing changed.
    let Err(ServiceError::Refused(e)) = t.app.change_future(id, change(5)).await else {
        panic!("five seats cannot fit")
    };
    assert_eq!(e.filters.len(), 4, "{e:?}");
    let v = t.app.series(id).await.unwrap();
    let now: Vec<Uuid> = v.occurrences.iter().filter_map(|o| o.lesson_id).collect();
    assert_eq!(now, old, "nothing changed");

    // Three seats fit only once the four-seat lessons they replace are gone:
    // they are planned as if they were, and replace them in one go.
    let v = t.app.change_future(id, change(3)).await.unwrap();
    let now: Vec<Uuid> = v.occurrences.iter().filter_map(|o| o.lesson_id).collect();
    assert_eq!(now[..2], old[..2], "the first two stay");
    for (i, o) in v.occurrences.iter().enumerate().skip(2) {
        assert_ne!(o.lesson_id, Some(old[i]));
        assert_eq!(o.lesson_state.as_deref(), Some("booked"));
        assert_eq!(o.lesson_start, Some(a.occurrences[i].start));
        let l = t.app.lesson(o.lesson_id.unwrap()).await.unwrap();
        assert_eq!((l.lesson.seat_count, l.seats.len()), (3, 3));
        assert_eq!(l.lesson.series_id, Some(id));
        let was = t.app.lesson(old[i]).await.unwrap();
        assert_eq!(was.lesson.state, "cancelled");
        // The old hold refunded in full, the new one smaller.
        let net: i64 = ledger(&t.pool)
            .await
            .iter()
            .filter(|r| r.3 == Some(old[i]))
            .map(|r| r.2)
            .sum();
        assert_eq!(net, 0, "the replaced lesson's hold is released");
        let new = held_for(&t.pool, o.lesson_id.unwrap()).await;
        assert!(new > 0 && new < a.occurrences[i].held.amount_uah);
    }
    assert_eq!(v.series.template.0.seats, 3);
}

/// Two classes of a timetable in the same period on a node that holds one:
/// the preview, like the import, admits one and explains the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timetables_preview_lets_its_classes_compete_as_the_import_does() {
    let t = term("cg_series", SCHOOL, 1).await;
    let tz = t.app.cfg.time_zone;
    voucher(&t.app, SCHOOL, 1000.0, Utc::now() + Duration::days(365)).await;
    let first = (Utc::now().with_timezone(&tz) + Duration::days(1)).date_naive();
    let last = first + Duration::days(13);
    let day = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]
        [chrono::Datelike::weekday(&first).num_days_from_monday() as usize];
    let header = classgrid_broker::timetable::sheet::template();
    let header = header.lines().next().unwrap();
    let row = |class: &str| {
        format!(
            "{class},{SCHOOL},{day},10:00,40,4,cpu=500 mem=1024 gpu=nvidia/T4:2048:25,,,{first},{last},\n"
        )
    };
    let csv = format!("{header}\n{}{}", row("7-1"), row("7-2"));
    let run = classgrid_broker::domain::spec::Workload {
        command: "sleep".into(),
        ..Default::default()
    };
    let all = |_| true;
    let before = row_counts(&t.pool).await;

    let p = t
        .app
        .import_timetable(&csv, &run, "book_what_fits", true, &all)
        .await
        .unwrap();
    assert_eq!(
        (p.occurrences(), p.admitted()),
        (4, 2),
        "one class per period fits"
    );
    assert_eq!(p.rows[0].1.admitted(), 2);
    for o in &p.rows[1].1.occurrences {
        assert!(!o.admitted && o.reason.contains("calendar busy"), "{o:?}");
    }
    assert_eq!(row_counts(&t.pool).await, before);

    let whole = t
        .app
        .import_timetable(&csv, &run, "all_or_nothing", false, &all)
        .await;
    assert!(matches!(whole, Err(ServiceError::Refused(_))));
    assert_eq!(row_counts(&t.pool).await, before, "all or nothing: nothing");

    let i = t
        .app
        .import_timetable(&csv, &run, "book_what_fits", false, &all)
        .await
        .unwrap();
    assert_eq!(
        i.admitted(),
        p.admitted(),
        "the import does what the preview said"
    );
    assert_eq!(count(&t.pool, "lessons").await, 2);
}

/// A timetable one occurrence longer than a chunk of its write (decision
/// 117), whose last occurrences in time do not fit: all or nothing writes
/// none of it, though the chunk before them was written in its
/// transaction; book what fits keeps that chunk and explains the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_longer_than_a_chunk_refused_at_its_end_is_refused_whole() {
    use classgrid_broker::service::series::SET_CHUNK;
    // 30 one-seat classes every Monday (or whichever day tomorrow is) for
    // 17 weeks on 8 nodes of 4 seats: 510 occurrences, written in time
    // order, so the last 10 (week 17's classes 21-30) come after the
    // first chunk of 500.
    const CLASSES: usize = 30;
    const WEEKS: i64 = 17;
    assert_eq!(CLASSES * WEEKS as usize, SET_CHUNK + 10);
    let t = term("cg_series", SCHOOL, 8).await;
    let tz = t.app.cfg.time_zone;
    voucher(&t.app, SCHOOL, 10_000.0, Utc::now() + Duration::days(365)).await;
    let first = (Utc::now().with_timezone(&tz) + Duration::days(1)).date_naive();
    let last = first + Duration::weeks(WEEKS - 1);
    let day = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]
        [chrono::Datelike::weekday(&first).num_days_from_monday() as usize];
    let header = classgrid_broker::timetable::sheet::template();
    let header = header.lines().next().unwrap();
    let mut csv = format!("{header}\n");
    for c in 0..CLASSES {
        csv += &format!(
            "7-{c},{SCHOOL},{day},10:00,40,1,cpu=500 mem=1024 gpu=nvidia/T4:2048:25,,,{first},{last},\n"
        );
    }
    // Week 17 at 10:00 already has 12 of the 32 seats: 20 classes fit.
    let week17 = last
        .and_hms_opt(10, 0, 0)
        .unwrap()
        .and_local_timezone(tz)
        .unwrap()
        .with_timezone(&Utc);
    t.app.book_lesson(class(SCHOOL, week17, 12)).await.unwrap();
    let run = classgrid_broker::domain::spec::Workload {
        command: "sleep".into(),
        ..Default::default()
    };
    let all = |_| true;
    let before = row_counts(&t.pool).await;
    let ledger_before = ledger(&t.pool).await;

    let whole = t
        .app
        .import_timetable(&csv, &run, "all_or_nothing", false, &all)
        .await;
    let Err(ServiceError::Refused(e)) = whole else {
        panic!("all or nothing with 10 occurrences that do not fit is refused whole")
    };
    assert!(
        e.summary
            .starts_with("10 of 510 occurrences cannot be booked"),
        "{}",
        e.summary
    );
    assert_eq!(row_counts(&t.pool).await, before, "nothing was written");
    assert_eq!(ledger(&t.pool).await, ledger_before);

    let fits = t
        .app
        .import_timetable(&csv, &run, "book_what_fits", false, &all)
        .await
        .unwrap();
    assert_eq!((fits.occurrences(), fits.admitted()), (510, 500));
    for (c, (_, a)) in fits.rows.iter().enumerate() {
        let refused: Vec<usize> = (0..WEEKS as usize)
            .filter(|w| !a.occurrences[*w].admitted)
            .collect();
        let expected: &[usize] = if c < 20 { &[] } else { &[16] };
        assert_eq!(refused, expected, "class 7-{c}");
    }
    assert_eq!(count(&t.pool, "lessons").await, 1 + 500);
    assert_eq!(count(&t.pool, "series_occurrences").await, 510);
}

/// A platform that retries a series booking before the first answer came
/// gets the one series, never two (nor a refusal by its own first try).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_with_one_request_id_book_one_series() {
    let t = term("cg_series", SCHOOL, 1).await;
    let tz = t.app.cfg.time_zone;
    voucher(&t.app, SCHOOL, 1000.0, Utc::now() + Duration::days(365)).await;
    let mut raw = weekly("all_or_nothing", tz);
    raw.rrule = "FREQ=WEEKLY;COUNT=4".into();
    raw.request_id = "retry-7-3".into();
    let tries: Vec<_> = (0..3)
        .map(|_| {
            let (app, raw) = (t.app.clone(), raw.clone());
            tokio::spawn(async move { app.book_series(raw, false).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tries {
        let a = t.await.unwrap().expect("every try answers with the series");
        ids.push(a.series.unwrap().id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one series: {ids:?}");
    assert_eq!(count(&t.pool, "series").await, 1);
    assert_eq!(count(&t.pool, "lessons").await, 4);
}
