//! Booking, reading, listing and cancelling lessons.

use std::{collections::HashSet, sync::Arc, time::Instant};

use chrono::{DateTime, Utc};
use classgrid_placement::{self as placement, DatasetRef, Owner, Request};
use tracing::info;
use uuid::Uuid;

use super::window_ms;
pub use crate::store::lessons::LessonView;
use crate::{
    domain::{
        ServiceError,
        lesson::{Booking, RawBooking, parse_booking},
        states::{lesson as ls, seat as ss},
    },
    reserve::{
        Plan, Reserved,
        queue::{Booked, BookingInput, BookingWrite, CommandCheck},
    },
    seats::links::link_url,
    state::Broker,
    store::{
        self, assignments,
        lessons::{self as lesson_store, LessonRow},
        reservations,
    },
};

const BOOK_ATTEMPTS: usize = 8;

/// How a booking is made: a school's own (the default), or one this region
/// hosts for a peer region.
#[derive(Default)]
pub(crate) struct BookOptions {
    /// The lesson's id, when the caller chose it before booking (a lender
    /// writes its hold first, naming the lesson).
    pub lesson_id: Option<Uuid>,
    /// Hosted for a peer: its home region's vouchers pay, so none are held
    /// here, and a refusal is final (a lender does not borrow in turn).
    pub hosted: bool,
    /// Only these nodes may take seats (a lending policy's tiers and vendors).
    pub nodes: Option<Box<dyn Fn(&placement::Node) -> bool + Send + Sync>>,
}

impl Broker {
    pub async fn book_lesson(&self, raw: RawBooking) -> Result<LessonView, ServiceError> {
        let t0 = Instant::now();
        let mut result = self.book_inner(raw).await;
        if let Ok(view) = &mut result {
            self.fill_links(view).await?;
        }
        self.metrics
            .booking_seconds
            .observe(t0.elapsed().as_secs_f64());
        match &result {
            Ok(_) => self.metrics.bookings_admitted.inc(),
            Err(ServiceError::Refused(why)) => {
                self.metrics.refused(why);
                self.metrics.bookings_refused.inc()
            }
            Err(_) => 0,
        };
        result
    }

    async fn book_inner(&self, raw: RawBooking) -> Result<LessonView, ServiceError> {
        self.book_with(raw, BookOptions::default()).await
    }

    /// Books `raw` as `opts` says: a school's own booking (which may borrow
    /// from a peer region when it does not fit here), or a lesson this
    /// region hosts for a peer (`federation::lend`).
    pub(crate) async fn book_with(
        &self,
        raw: RawBooking,
        opts: BookOptions,
    ) -> Result<LessonView, ServiceError> {
        let now = Utc::now();
        let b = parse_booking(raw, now, &self.limits())?;
        if let Some(rid) = &b.request_id {
            if let Some(id) = self.store.lesson_by_request_id(rid).await? {
                return self.lesson(id).await;
            }
            if let Some(id) = self.store.borrowed_by_request_id(rid).await? {
                return self.lesson(id).await;
            }
        }
        self.book_valid_with(b, now, opts).await
    }

    /// Books a validated booking (a platform's, or a series occurrence
    /// moved to another time).
    pub(crate) async fn book_valid(
        &self,
        b: Booking,
        now: DateTime<Utc>,
    ) -> Result<LessonView, ServiceError> {
        self.book_valid_with(b, now, BookOptions::default()).await
    }

    async fn book_valid_with(
        &self,
        b: Booking,
        now: DateTime<Utc>,
        opts: BookOptions,
    ) -> Result<LessonView, ServiceError> {
        let id = opts.lesson_id.unwrap_or_else(Uuid::now_v7);
        let input = self.booking_input_with(b, now, id, &opts)?;
        if !opts.hosted
            && let Some(view) = self.borrow_if_nearer(&input).await?
        {
            return Ok(view);
        }
        let owner = Owner::Lesson(id);
        let (b, req, fleet) = (&input.b, &input.req, &input.fleet);
        let plan = Plan {
            fleet,
            rtt: self.rtt_table(),
            req,
            owner,
            attempts: BOOK_ATTEMPTS,
            reload_on_refusal: true,
            wait_out_outages: true,
        };
        let reserved = self
            .reserver
            .reserve(plan, false, |admission| {
                self.write_booking(Arc::new(BookingWrite {
                    input: input.clone(),
                    admission,
                }))
            })
            .await?;
        match reserved {
            Reserved::Done(Booked { view, started, .. }) => {
                if started.is_empty() {
                    self.clock.notify_one();
                } else {
                    info!(lesson = %id, "lesson live as booked");
                    self.send_seat_assignments(&started, &b.datasets);
                    self.lesson_changed(id);
                }
                Ok(view)
            }
            Reserved::Refused(mut e) => {
                if let Some(c) = &input.command {
                    e.filters.push(c.count());
                    if c.removed > 0 {
                        e.summary = format!("{}; {}", e.summary, c.count().detail);
                    }
                }
                if opts.hosted {
                    return Err(ServiceError::Refused(e));
                }
                // Home first: only what does not fit here is asked of peers.
                self.borrow_or_refuse(&input, e).await
            }
            Reserved::Declined(refused) => Err(refused),
            Reserved::Failed(e) => {
                // A concurrent retry with the same request_id won the race:
                // answer with its lesson, as for any retry.
                if let (true, Some(rid)) = (store::is_unique_violation(&e), b.request_id.as_deref())
                    && let Some(existing) = self.store.lesson_by_request_id(rid).await?
                {
                    return self.lesson(existing).await;
                }
                // An earlier try of this very booking committed, though its
                // connection broke before the answer came.
                if store::is_unique_violation(&e) && self.store.get_lesson(id).await?.is_some() {
                    self.reserver.reload_calendar().await?;
                    return self.lesson(id).await;
                }
                Err(e.into())
            }
            Reserved::Exhausted => Err(ServiceError::Conflict(
                "capacity kept changing under concurrent bookings; retry the booking".into(),
            )),
        }
    }

    /// A validated booking made ready to plan as lesson `id`: its school,
    /// the fleet now, and the placement request for its window (the start
    /// less the staging lead, the end plus grace). The same for a booking,
    /// its dry run and each occurrence of a series.
    pub(crate) fn booking_input(
        &self,
        b: Booking,
        now: DateTime<Utc>,
        id: Uuid,
    ) -> Result<Arc<BookingInput>, ServiceError> {
        self.booking_input_with(b, now, id, &BookOptions::default())
    }

    fn booking_input_with(
        &self,
        b: Booking,
        now: DateTime<Utc>,
        id: Uuid,
        opts: &BookOptions,
    ) -> Result<Arc<BookingInput>, ServiceError> {
        let site = self.fleet.site(&b.school_site).ok_or_else(|| {
            ServiceError::field("school_site", format!("unknown site `{}`", b.school_site))
        })?;
        let seat = b.seat.to_placement();
        let mut fleet = self.fleet.snapshot();
        if let Some(keep) = &opts.nodes {
            // A lender plans on the nodes its lending policy opens to the
            // peer, and nothing else.
            let mut only = (*fleet).clone();
            only.nodes.retain(|n| keep(n));
            fleet = Arc::new(only);
        }
        // Nodes whose agent says the command is not installed are left out,
        // and counted for the explanation (issue 23).
        let lacking = match b.workload.path_program(&b.seat.runtime) {
            Some(program) => {
                let out: HashSet<Uuid> = self.fleet.lacking_command(program).into_iter().collect();
                let mut removed = 0;
                // The shared snapshot is copied only when a node goes: its
                // identity is what the fleet index is kept by (decision 101).
                if !out.is_empty() && fleet.nodes.iter().any(|n| out.contains(&n.id)) {
                    let mut only = (*fleet).clone();
                    only.nodes.retain(|n| !out.contains(&n.id));
                    removed = (fleet.nodes.len() - only.nodes.len()) as u32;
                    fleet = Arc::new(only);
                }
                Some(CommandCheck {
                    program: program.to_string(),
                    removed,
                })
            }
            None => None,
        };
        self.possible.check(&fleet, &seat).map_err(|e| {
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
            residency: b.residency,
        };
        Ok(Arc::new(BookingInput {
            b,
            req,
            id,
            site_id: site.id,
            window: (window_start, window_end),
            fleet,
            hosted: opts.hosted,
            command: lacking,
        }))
    }

    pub async fn lesson(&self, id: Uuid) -> Result<LessonView, ServiceError> {
        let Some(lesson) = self.store.get_lesson(id).await? else {
            // A lesson of this region's school that a peer region hosts.
            return self.borrowed_lesson(id).await;
        };
        let seats = self.store.seats_of(id).await?;
        let mut view = LessonView { lesson, seats };
        self.fill_links(&mut view).await?;
        Ok(view)
    }

    /// Puts each seat's private link in the view (decision 089): derived
    /// from the seat's id, so it is known from the booking on, but only
    /// once the school's edge has said where it serves links.
    async fn fill_links(&self, view: &mut LessonView) -> sqlx::Result<()> {
        if let Some(base) = self
            .store
            .seat_link_base(view.lesson.school_site_id)
            .await?
        {
            // A borrowed lesson's links come with its lender's answer
            // (federation/borrowed.rs, decision 110).
            for s in view.seats.iter_mut().filter(|s| s.region.is_empty()) {
                s.link = link_url(&base, &self.links.token(s.id));
            }
        }
        Ok(())
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

    /// Cancels lesson `id` in `tx`: its state, its seats and assignments
    /// released, its reservations gone, its voucher holds released (the
    /// refund). The assignments released come back, to send after commit.
    pub(crate) async fn cancel_in(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        id: Uuid,
        msg: &str,
    ) -> Result<Vec<assignments::AssignmentRow>, ServiceError> {
        let changed = lesson_store::set_lesson_state(
            tx,
            id,
            &[ls::BOOKED, ls::STAGING, ls::READY, ls::LIVE],
            ls::CANCELLED,
            Some(msg),
        )
        .await?;
        if !changed {
            return Err(ServiceError::Conflict(format!(
                "lesson {id} changed state; read it again"
            )));
        }
        let released = assignments::release_lesson(tx, id).await?;
        lesson_store::set_seats_state(
            tx,
            id,
            &[ss::PLANNED, ss::STAGED, ss::STARTING, ss::RUNNING],
            ss::RELEASED,
        )
        .await?;
        reservations::delete_owner(tx, Owner::Lesson(id)).await?;
        self.settle_vouchers(tx, Owner::Lesson(id), false).await?;
        Ok(released)
    }

    pub async fn cancel_lesson(&self, id: Uuid, reason: &str) -> Result<LessonView, ServiceError> {
        if self.store.get_lesson(id).await?.is_none() && self.store.borrowed(id).await?.is_some() {
            // A peer region hosts it: its lender releases the seats.
            return self.cancel_borrowed(id, reason).await;
        }
        let view = self.lesson(id).await?;
        if ls::is_final(&view.lesson.state) {
            return Err(ServiceError::Conflict(format!(
                "lesson {id} is already {}",
                view.lesson.state
            )));
        }
        let mut tx = self.store.begin().await?;
        self.fence(&mut tx).await?;
        let msg = if reason.is_empty() {
            "cancelled".to_string()
        } else {
            format!("cancelled: {reason}")
        };
        let released = self.cancel_in(&mut tx, id, &msg).await?;
        tx.commit().await?;
        self.reserver.refresh_owners(&[Owner::Lesson(id)]).await?;
        self.send_releases(&released, "lesson cancelled");
        self.lesson_changed(id);
        self.clock.notify_one();
        self.lesson(id).await
    }
}
