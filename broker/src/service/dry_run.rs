//! Dry runs: a booking (or a series' occurrences) decided exactly as a real
//! booking decides it — placement against the live calendar, RTT and
//! staging, then quota and vouchers in the database — with nothing written
//! and nothing held (decision 096).
//!
//! Placement runs on a scratch copy of the calendar, so no other plan sees
//! its seats (and the bookings of one dry run see each other's); the
//! voucher and quota decision runs in a transaction that is rolled back, so
//! the ledger never sees it. The school's voucher rows are locked for the
//! few milliseconds of that transaction, exactly as a booking locks them, so
//! that the balances read are the ones a booking would read.

use std::sync::Arc;

use chrono::Utc;
use classgrid_placement::Decision;
use uuid::Uuid;

use super::{booking_writes::WriteMode, tenancy::Scoped};
use crate::{
    domain::{
        ServiceError,
        lesson::{RawBooking, parse_booking},
    },
    reserve::{
        many::Previous,
        queue::{Booked, BookingInput, BookingWrite},
    },
    state::Broker,
    store::lessons::LessonView,
    vouchers::Held,
};

/// What a booking would be: the lesson as it would be written (its seats'
/// nodes, devices and RTTs, its explanation), and what it would hold on
/// the vouchers.
pub struct Preview {
    pub view: LessonView,
    pub held: Held,
}

/// A dry run's lessons carry this message, so that no reader of one mistakes
/// it for a booking.
pub const DRY_RUN_MESSAGE: &str = "dry run: nothing was written or held";

impl Broker {
    /// A single lesson's dry run: the same admission, explanation and
    /// voucher cost as `book_lesson`, or the same refusal.
    pub async fn dry_run_lesson(&self, raw: RawBooking) -> Result<Preview, ServiceError> {
        let now = Utc::now();
        let b = parse_booking(raw, now, &self.limits())?;
        if let Some(rid) = &b.request_id
            && let Some(id) = self.store.lesson_by_request_id(rid).await?
        {
            // A booking would answer with the lesson already booked.
            return Ok(Preview {
                view: self.lesson(id).await?,
                held: Held::default(),
            });
        }
        let input = self.booking_input(b, now, Uuid::now_v7())?;
        let mut previews = self
            .preview_bookings(&[input], &[None], WriteMode::DryRun)
            .await?;
        previews
            .pop()
            .unwrap_or_else(|| Err(ServiceError::Conflict("nothing was planned".into())))
    }

    /// Plans every input against the calendar without holding it, then
    /// decides quota and vouchers for the admitted ones in one transaction
    /// that is rolled back; one answer per input, in order. Inputs of one
    /// school share its voucher balances, each taking its hold off them
    /// before the next is decided, as a series' booking does. `prev` names
    /// each input's series' previous occurrence (`Reserver::plan_scratch`).
    pub(crate) async fn preview_bookings(
        &self,
        inputs: &[Arc<BookingInput>],
        prev: &Previous,
        mode: WriteMode,
    ) -> Result<Vec<Result<Preview, ServiceError>>, ServiceError> {
        let writes = self.plan_unheld(inputs, prev).await?;
        let admitted: Vec<&BookingWrite> = writes.iter().filter_map(|w| w.as_ref().ok()).collect();
        let mut decided = if admitted.is_empty() {
            Vec::new()
        } else {
            let mut conn = self.store.acquire().await?;
            self.write_bookings_as(&mut conn, &admitted, mode).await?
        }
        .into_iter();
        Ok(writes
            .into_iter()
            .map(|w| match w {
                Err(refused) => Err(refused),
                Ok(_) => match decided.next() {
                    Some(Ok(booked)) => Ok(preview(booked)),
                    Some(Err(refused)) => Err(refused),
                    None => Err(ServiceError::Conflict("nothing was decided".into())),
                },
            })
            .collect())
    }

    /// Each input placed against the live calendar and the inputs before
    /// it, nothing held (`Reserver::plan_scratch`): its write (for deciding
    /// vouchers) or the placement's refusal.
    pub(crate) async fn plan_unheld(
        &self,
        inputs: &[Arc<BookingInput>],
        prev: &Previous,
    ) -> Result<Vec<Result<BookingWrite, ServiceError>>, ServiceError> {
        let rtt = self.rtt_table();
        let decisions = self.reserver.plan_scratch(inputs, prev, &rtt).await?;
        Ok(inputs
            .iter()
            .zip(decisions)
            .map(|(input, d)| match d {
                Decision::Admitted(admission) => Ok(BookingWrite {
                    input: input.clone(),
                    admission,
                }),
                Decision::Refused(e) => Err(ServiceError::Refused(Box::new(e))),
            })
            .collect())
    }
}

fn preview(b: Booked) -> Preview {
    let mut view = b.view;
    view.lesson.message = DRY_RUN_MESSAGE.into();
    Preview { view, held: b.held }
}

impl Scoped<'_> {
    /// `book_lesson`'s dry run, under the same rules of who may book where;
    /// not audited, since it changes nothing.
    pub async fn dry_run_lesson(&self, raw: RawBooking) -> Result<Preview, ServiceError> {
        self.writer()?;
        if !raw.school_site.trim().is_empty() {
            self.site("school_site", raw.school_site.trim())?;
        }
        let p = self.app.dry_run_lesson(raw).await?;
        if !self.caller.sees_site(p.view.lesson.school_site_id) {
            return Err(ServiceError::Conflict(
                "this request_id (Idempotency-Key) is already used; choose another".into(),
            ));
        }
        Ok(p)
    }
}
