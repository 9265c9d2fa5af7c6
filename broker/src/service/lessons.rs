//! Booking, reading, listing and cancelling lessons.

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use chrono::{DateTime, Utc};
use classgrid_placement::{self as placement, Admission, DatasetRef, Decision, Owner, Request};
use tracing::info;
use uuid::Uuid;

use super::{new_seat, window_ms};
use crate::{
    app::Broker,
    dispatch::SeatBinding,
    domain::{
        ServiceError,
        lesson::{Booking, RawBooking, parse_booking},
        states::{lesson as ls, seat as ss},
    },
    store::{
        self,
        assignments::{self, AssignmentRow},
        lessons::{self as lesson_store, LessonRow, NewLesson, NewSeat, SeatRow},
        reservations,
    },
};

/// A lesson with its seats, as every transport shows it.
#[derive(Debug, Clone)]
pub struct LessonView {
    pub lesson: LessonRow,
    pub seats: Vec<SeatRow>,
}

const BOOK_ATTEMPTS: usize = 8;

impl Broker {
    pub async fn book_lesson(&self, raw: RawBooking) -> Result<LessonView, ServiceError> {
        let t0 = Instant::now();
        let result = self.book_inner(raw).await;
        self.metrics
            .booking_seconds
            .observe(t0.elapsed().as_secs_f64());
        match &result {
            Ok(_) => self.metrics.bookings_admitted.inc(),
            Err(ServiceError::Refused(_)) => self.metrics.bookings_refused.inc(),
            Err(_) => 0,
        };
        result
    }

    async fn book_inner(&self, raw: RawBooking) -> Result<LessonView, ServiceError> {
        let now = Utc::now();
        let b = parse_booking(raw, now, &self.limits())?;
        if let Some(rid) = &b.request_id {
            if let Some(id) = self.store.lesson_by_request_id(rid).await? {
                return self.lesson(id).await;
            }
        }
        let site = self.fleet.site(&b.school_site).ok_or_else(|| {
            ServiceError::field("school_site", format!("unknown site `{}`", b.school_site))
        })?;
        let seat = b.seat.to_placement();
        let fleet = self.fleet.snapshot();
        placement::check_possible(&fleet, &seat).map_err(|e| {
            ServiceError::field(
                format!("seat.{}", e.field.trim_start_matches("seat.")),
                e.rule,
            )
        })?;

        let lead = chrono::Duration::from_std(self.cfg.staging_lead).unwrap_or_default();
        let grace = chrono::Duration::from_std(self.cfg.grace).unwrap_or_default();
        let window_start = b.start - lead;
        let window_end = b.end() + grace;
        let req = Request {
            school_site: site.id,
            window: window_ms(window_start, window_end),
            seats: b.seats,
            min_seats: b.min_seats,
            seat,
            max_rtt_ms: b.max_rtt_ms as f64,
            datasets: b
                .datasets
                .iter()
                .map(|d| DatasetRef {
                    sha256: d.sha256.clone(),
                    size_bytes: d.size_bytes,
                })
                .collect(),
            staging_lead_ms: (b.start - now.max(window_start)).num_milliseconds().max(0),
            may_preempt: true,
        };

        let id = Uuid::now_v7();
        let owner = Owner::Lesson(id);
        for _ in 0..BOOK_ATTEMPTS {
            let (decision, hold) = self.plan(&fleet, &req, Some(owner)).await?;
            let (admission, hold) = match (decision, hold) {
                (Decision::Admitted(a), Some(hold)) => (a, hold),
                (Decision::Refused(e), _) => return Err(ServiceError::Refused(Box::new(e))),
                (Decision::Admitted(_), None) => {
                    return Err(ServiceError::Conflict(
                        "placement held nothing; retry".into(),
                    ));
                }
            };
            let written = self
                .write_booking(
                    &b,
                    &req,
                    id,
                    site.id,
                    (window_start, window_end),
                    &admission,
                    &fleet,
                )
                .await;
            match written {
                Ok(Err(refused)) => {
                    self.abort_hold(hold).await?;
                    return Err(refused);
                }
                Ok(Ok(Booked { view, started })) => {
                    self.commit_hold(hold);
                    self.refresh_owners(&admission.preempted).await?;
                    if started.is_empty() {
                        self.clock.notify_one();
                    } else {
                        info!(lesson = %id, "lesson live as booked");
                        self.send_seat_assignments(&started, &b.datasets);
                        self.lesson_changed(id);
                    }
                    return Ok(view);
                }
                Err(e) => {
                    self.abort_hold(hold).await?;
                    // Someone else booked the same capacity since our
                    // snapshot: the database refused and nothing was written.
                    // Re-read the calendar and plan again.
                    if store::is_capacity_conflict(&e) {
                        self.reload_calendar().await?;
                        continue;
                    }
                    if is_deadlock(&e) {
                        continue;
                    }
                    // A concurrent retry with the same request_id won the
                    // race: answer with its lesson, as for any retry.
                    if let (true, Some(rid)) = (is_unique_violation(&e), b.request_id.as_deref())
                        && let Some(existing) = self.store.lesson_by_request_id(rid).await?
                    {
                        return self.lesson(existing).await;
                    }
                    return Err(e.into());
                }
            }
        }
        Err(ServiceError::Conflict(
            "capacity kept changing under concurrent bookings; retry the booking".into(),
        ))
    }

    /// Writes the lesson row, its seats, their reservations and any
    /// preemption in one transaction of a few statements, whatever the class
    /// size: all or nothing. A voucher or quota refusal comes back as the
    /// inner error, with nothing written.
    ///
    /// A lesson whose bell has already rung and that has nothing to stage is
    /// started in the same transaction: it is written live, with its seats'
    /// assignments, which come back for the caller to send after commit. At a
    /// district's bell this is most of the classes, and going through the
    /// clock cost each one two more transactions and a read.
    #[allow(clippy::too_many_arguments)]
    async fn write_booking(
        &self,
        b: &Booking,
        req: &Request,
        id: Uuid,
        site_id: Uuid,
        (window_start, window_end): (DateTime<Utc>, DateTime<Utc>),
        admission: &Admission,
        fleet: &placement::Fleet,
    ) -> sqlx::Result<Result<Booked, ServiceError>> {
        let starts_now = b.datasets.is_empty() && b.start <= Utc::now();
        let mut tx = self.store.pool.begin().await?;
        // The school's bookings queue here, before they lock any node.
        let school = self.lock_school_vouchers(&mut tx, site_id).await?;
        let explanation = serde_json::json!({ "admitted": true, "admission": admission });
        let lesson = NewLesson {
            id,
            request_id: b.request_id.as_deref(),
            school_site_id: site_id,
            title: &b.title,
            start_at: b.start,
            duration_s: b.duration.num_seconds() as i32,
            seat_count: b.seats as i32,
            min_seats: b.min_seats as i32,
            seat_spec: &b.seat,
            workload: &b.workload,
            datasets: &b.datasets,
            max_rtt_ms: b.max_rtt_ms as i32,
            window_start,
            window_end,
            explanation,
            state: if starts_now { ls::LIVE } else { ls::BOOKED },
            created_at: Utc::now(),
        };
        lesson_store::insert_lesson(&mut tx, &lesson).await?;
        let owner = Owner::Lesson(id);
        let mut seats = Vec::with_capacity(admission.seats.len());
        let mut rows = Vec::new();
        let mut row_seats = Vec::new();
        for p in &admission.seats {
            let seat_id = Uuid::now_v7();
            seats.push(new_seat(seat_id, p));
            for r in p.reservations(req, owner) {
                rows.push(r);
                row_seats.push(Some(seat_id));
            }
        }
        // Reservations first, node by node in one order: the capacity
        // trigger locks each node row, and a seat's foreign key would take a
        // weaker lock on it first, which two bookings could deadlock on.
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.sort_by_key(|&i| rows[i].node_id);
        let rows: Vec<_> = order.iter().map(|&i| rows[i].clone()).collect();
        let row_seats: Vec<_> = order.iter().map(|&i| row_seats[i]).collect();
        // Jobs in the way give up their capacity first, or the trigger
        // would count it against the new seats.
        // The rows' windows are whole milliseconds; cut the jobs there.
        let cut = reservations::to_time(req.window.start);
        self.preempt_jobs(&mut tx, &admission.preempted, cut, id)
            .await?;
        reservations::insert_many(&mut tx, &rows, &row_seats).await?;
        let seat_state = if starts_now {
            ss::STARTING
        } else {
            ss::PLANNED
        };
        lesson_store::insert_seats(&mut tx, id, &seats, seat_state).await?;
        let started = if starts_now {
            self.seat_assignments(id, b, &seats)
        } else {
            Vec::new()
        };
        if !started.is_empty() {
            assignments::insert_seats(&mut tx, &started).await?;
        }
        // Voucher hold and seat quota, locked in this same transaction.
        if let Some(refused) = self
            .hold_for_lesson(
                &mut tx,
                school,
                id,
                site_id,
                (b.start, b.end()),
                &admission.seats,
            )
            .await?
        {
            return Ok(Err(refused));
        }
        tx.commit().await?;
        let view = LessonView {
            lesson: lesson.into_written(&b.school_site),
            seats: seats_as_written(id, &seats, seat_state, &started, fleet),
        };
        Ok(Ok(Booked { view, started }))
    }

    /// The assignments (generation 1) of a lesson started as it is booked.
    fn seat_assignments(&self, id: Uuid, b: &Booking, seats: &[NewSeat]) -> Vec<AssignmentRow> {
        let bind = SeatBinding {
            lesson_id: id,
            spec: &b.seat,
            workload: &b.workload,
            ends_at: b.end(),
            grace_seconds: self.grace_seconds(),
        };
        seats
            .iter()
            .map(|s| {
                bind.assignment(
                    s.id,
                    s.node_id,
                    &s.device_indexes,
                    s.gpu_memory_mib,
                    s.gpu_compute_pct,
                )
            })
            .collect()
    }

    /// Shortens the reservations of jobs a lesson needs so that they end when
    /// the lesson's window begins, and schedules their stop with their grace.
    pub(crate) async fn preempt_jobs(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        owners: &[Owner],
        window_start: DateTime<Utc>,
        lesson_id: Uuid,
    ) -> sqlx::Result<()> {
        for o in owners {
            let Owner::Job(job_id) = o else { continue };
            sqlx::query(
                "DELETE FROM reservations WHERE owner_kind = 'job' AND owner_id = $1 AND lower(during) >= $2",
            )
            .bind(job_id)
            .bind(window_start)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "UPDATE reservations SET during = tstzrange(lower(during), $2)
                 WHERE owner_kind = 'job' AND owner_id = $1 AND upper(during) > $2",
            )
            .bind(job_id)
            .bind(window_start)
            .execute(&mut **tx)
            .await?;
            sqlx::query(
                "UPDATE jobs SET preempt_at = LEAST(COALESCE(preempt_at, 'infinity'), $2 - make_interval(secs => grace_s)),
                    message = $3 WHERE id = $1",
            )
            .bind(job_id)
            .bind(window_start)
            .bind(format!("will be preempted for lesson {lesson_id}"))
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    pub async fn lesson(&self, id: Uuid) -> Result<LessonView, ServiceError> {
        let lesson = self
            .store
            .get_lesson(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("lesson {id}")))?;
        let seats = self.store.seats_of(id).await?;
        Ok(LessonView { lesson, seats })
    }

    pub async fn list_lessons(
        &self,
        school_site: Option<&str>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        page_size: i64,
        offset: i64,
    ) -> Result<Vec<LessonRow>, ServiceError> {
        let site_id = match school_site.filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(
                self.fleet
                    .site(s)
                    .ok_or_else(|| {
                        ServiceError::field("school_site", format!("unknown site `{s}`"))
                    })?
                    .id,
            ),
        };
        if !(1..=500).contains(&page_size) {
            return Err(ServiceError::field(
                "page_size",
                "must be between 1 and 500",
            ));
        }
        Ok(self
            .store
            .list_lessons(site_id, from, to, page_size, offset)
            .await?)
    }

    pub async fn cancel_lesson(&self, id: Uuid, reason: &str) -> Result<LessonView, ServiceError> {
        let view = self.lesson(id).await?;
        if ls::is_final(&view.lesson.state) {
            return Err(ServiceError::Conflict(format!(
                "lesson {id} is already {}",
                view.lesson.state
            )));
        }
        let mut tx = self.store.pool.begin().await?;
        let msg = if reason.is_empty() {
            "cancelled".to_string()
        } else {
            format!("cancelled: {reason}")
        };
        let changed = lesson_store::set_lesson_state(
            &mut tx,
            id,
            &[ls::BOOKED, ls::STAGING, ls::READY, ls::LIVE],
            ls::CANCELLED,
            Some(&msg),
        )
        .await?;
        if !changed {
            return Err(ServiceError::Conflict(format!(
                "lesson {id} changed state; read it again"
            )));
        }
        let released = assignments::release_lesson(&mut tx, id).await?;
        lesson_store::set_seats_state(
            &mut tx,
            id,
            &[ss::PLANNED, ss::STAGED, ss::STARTING, ss::RUNNING],
            ss::RELEASED,
        )
        .await?;
        reservations::delete_owner(&mut tx, Owner::Lesson(id)).await?;
        self.settle_vouchers(&mut tx, Owner::Lesson(id), false)
            .await?;
        tx.commit().await?;
        self.refresh_owners(&[Owner::Lesson(id)]).await?;
        self.send_releases(&released, "lesson cancelled");
        self.lesson_changed(id);
        self.clock.notify_one();
        self.lesson(id).await
    }
}

/// A committed booking: the lesson as written, and the assignments to send
/// when it started as it was booked.
struct Booked {
    view: LessonView,
    started: Vec<AssignmentRow>,
}

/// The seats as `write_booking` wrote them, in seat order, named by node.
fn seats_as_written(
    lesson_id: Uuid,
    seats: &[NewSeat],
    state: &str,
    started: &[AssignmentRow],
    fleet: &placement::Fleet,
) -> Vec<SeatRow> {
    let ids: HashSet<Uuid> = seats.iter().map(|s| s.node_id).collect();
    let names: HashMap<Uuid, &str> = fleet
        .nodes
        .iter()
        .filter(|n| ids.contains(&n.id))
        .map(|n| (n.id, n.name.as_str()))
        .collect();
    let assigned: HashMap<Uuid, (Uuid, i64)> = started
        .iter()
        .filter_map(|a| Some((a.seat_id?, (a.id, a.generation))))
        .collect();
    let mut rows: Vec<SeatRow> = seats
        .iter()
        .map(|s| {
            let name = names.get(&s.node_id).map(|n| n.to_string());
            s.as_written(lesson_id, state, name, assigned.get(&s.id).copied())
        })
        .collect();
    rows.sort_by_key(|s| s.number);
    rows
}

/// PostgreSQL broke a lock cycle by aborting this transaction; nothing was
/// written, so trying again is safe.
fn is_deadlock(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("40P01"))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}
