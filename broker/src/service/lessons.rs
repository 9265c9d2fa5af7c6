//! Booking, reading, listing and cancelling lessons.

use std::{sync::Arc, time::Instant};

use chrono::{DateTime, Utc};
use classgrid_placement::{self as placement, DatasetRef, Decision, Owner, Request};
use tracing::info;
use uuid::Uuid;

use super::{
    booking_writes::{Booked, BookingInput, BookingWrite},
    window_ms,
};
use crate::{
    app::Broker,
    domain::{
        ServiceError,
        lesson::{RawBooking, parse_booking},
        states::{lesson as ls, seat as ss},
    },
    store::{
        self, assignments,
        lessons::{self as lesson_store, LessonRow, SeatRow},
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
        let input = Arc::new(BookingInput {
            b,
            req,
            id,
            site_id: site.id,
            window: (window_start, window_end),
            fleet,
        });
        let (b, req, fleet) = (&input.b, &input.req, &input.fleet);
        let mut transient = store::TransientRetry::default();
        let mut attempts = 0;
        while attempts < BOOK_ATTEMPTS {
            attempts += 1;
            let (decision, hold) = self.plan(fleet, req, Some(owner)).await?;
            let (admission, hold) = match (decision, hold) {
                (Decision::Admitted(a), Some(hold)) => (a, hold),
                (Decision::Refused(e), _) => return Err(ServiceError::Refused(Box::new(e))),
                (Decision::Admitted(_), None) => {
                    return Err(ServiceError::Conflict(
                        "placement held nothing; retry".into(),
                    ));
                }
            };
            let write = Arc::new(BookingWrite {
                input: input.clone(),
                admission,
            });
            let written = self.write_booking(write.clone()).await;
            match written {
                Ok(Err(refused)) => {
                    self.abort_hold(hold).await?;
                    return Err(refused);
                }
                Ok(Ok(Booked { view, started })) => {
                    self.commit_hold(hold);
                    self.refresh_owners(&write.admission.preempted).await?;
                    if started.is_empty() {
                        self.clock.notify_one();
                    } else {
                        info!(lesson = %id, "lesson live as booked");
                        self.send_seat_assignments(&started, &b.datasets);
                        self.lesson_changed(id);
                    }
                    return Ok(view);
                }
                Err(e) if store::is_transient(&e) => {
                    // The database restarted or could not be reached, and
                    // the batch wrote nothing (or, if the link broke during
                    // COMMIT, the retry finds this lesson by its id). Try
                    // again on a fresh connection, without counting it as a
                    // capacity conflict, until the budget is spent.
                    attempts -= 1;
                    tolerate_transient(self.abort_hold(hold).await)?;
                    tracing::warn!(lesson = %id, error = %e, "booking write failed; retrying");
                    loop {
                        if !transient.pause().await {
                            return Err(ServiceError::Unavailable(
                                crate::domain::error::DATABASE_UNAVAILABLE.into(),
                            ));
                        }
                        if tolerate_transient(self.reload_calendar().await)?.is_some() {
                            break;
                        }
                    }
                    continue;
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
                    // An earlier try of this very booking committed, though
                    // its connection broke before the answer came.
                    if is_unique_violation(&e) && self.store.get_lesson(id).await?.is_some() {
                        self.reload_calendar().await?;
                        return self.lesson(id).await;
                    }
                    return Err(e.into());
                }
            }
        }
        Err(ServiceError::Conflict(
            "capacity kept changing under concurrent bookings; retry the booking".into(),
        ))
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
        self.fence(&mut tx).await?;
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

/// PostgreSQL broke a lock cycle by aborting this transaction; nothing was
/// written, so trying again is safe.
/// Passes a transient failure as `None`, for a step that is tried again.
fn tolerate_transient<T>(r: Result<T, ServiceError>) -> Result<Option<T>, ServiceError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(ServiceError::Unavailable(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

fn is_deadlock(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("40P01"))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("23505"))
}
