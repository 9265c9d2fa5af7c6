//! Edits of a booked series: cancel or move one occurrence, change every
//! future occurrence, or end the series early. Each occurrence is an ordinary lesson, so cancelling one is
//! cancelling its lesson, which releases its capacity and refunds its
//! voucher hold exactly as for any lesson; the series row only records
//! which lesson is the occurrence now and when the series ended.

use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveTime, TimeZone, Utc};
use classgrid_placement::{Admission, Explanation, Owner};
use sqlx::Connection;
use uuid::Uuid;

use super::{
    booking_writes::WriteMode,
    series::{Outcome, SeriesView, admitted, refused},
};
use crate::{
    domain::{ServiceError, error::Checks, lesson::Booking, states::lesson as ls},
    reserve::{
        many::{Item, WroteMany},
        queue::{BookingInput, BookingWrite},
    },
    series::request::{occurrence, parse_time_of_day, template_of},
    state::Broker,
    store::{
        assignments::AssignmentRow,
        lessons::LessonView,
        series::{self as store, SeriesRow},
    },
};

/// A change of every future occurrence; zero or empty keeps the value.
#[derive(Debug, Clone, Default)]
pub struct RawChange {
    /// Occurrences starting then or later change; None means now.
    pub from: Option<DateTime<Utc>>,
    /// A new local start time, HH:MM.
    pub start_time: String,
    pub duration_seconds: i64,
    pub seats: i64,
    pub max_rtt_ms: i64,
}

/// How a change's write ended.
pub enum Changed {
    /// Written: the assignments the old lessons released, to send.
    Done(Vec<AssignmentRow>),
    /// Some new occurrence does not fit; nothing was written.
    Refused(Vec<Outcome>),
    Failed(ServiceError),
}

impl Broker {
    /// The lesson of `series_id` that is `lesson_id`, or not found.
    async fn occurrence_lesson(
        &self,
        series_id: Uuid,
        lesson_id: Uuid,
    ) -> Result<(SeriesRow, LessonView), ServiceError> {
        let v = self.series(series_id).await?;
        if self.store.series_of_lesson(lesson_id).await? != Some(series_id) {
            return Err(ServiceError::NotFound(format!(
                "lesson {lesson_id} in series {series_id}"
            )));
        }
        Ok((v.series, self.lesson(lesson_id).await?))
    }

    /// Cancels one occurrence: its lesson is cancelled and its hold refunded.
    pub async fn cancel_occurrence(
        &self,
        series_id: Uuid,
        lesson_id: Uuid,
        reason: &str,
    ) -> Result<LessonView, ServiceError> {
        self.occurrence_lesson(series_id, lesson_id).await?;
        self.cancel_lesson(lesson_id, reason).await
    }

    /// Moves one occurrence to `start`: the lesson at the new time is booked
    /// first (admitted as any booking), and only then the old one cancelled,
    /// so a move that does not fit leaves the occurrence where it was.
    pub async fn move_occurrence(
        &self,
        series_id: Uuid,
        lesson_id: Uuid,
        start: DateTime<Utc>,
    ) -> Result<LessonView, ServiceError> {
        let (series, old) = self.occurrence_lesson(series_id, lesson_id).await?;
        if ls::is_final(&old.lesson.state) {
            return Err(ServiceError::Conflict(format!(
                "lesson {lesson_id} is already {}",
                old.lesson.state
            )));
        }
        let now = Utc::now();
        if start < now {
            return Err(ServiceError::field("start", "must not be in the past"));
        }
        let moved = self
            .book_valid(occurrence(&template_booking(&series), start), now)
            .await?;
        self.cancel_lesson(lesson_id, "moved").await?;
        self.store
            .repoint_occurrence(series_id, lesson_id, moved.lesson.id)
            .await?;
        Ok(moved)
    }

    /// Ends the series at `from` (now when None): every occurrence starting
    /// then or later is cancelled, its hold refunded.
    pub async fn end_series(
        &self,
        series_id: Uuid,
        from: Option<DateTime<Utc>>,
    ) -> Result<SeriesView, ServiceError> {
        let v = self.series(series_id).await?;
        let from = from.unwrap_or_else(Utc::now);
        for o in &v.occurrences {
            let (Some(id), Some(start), Some(state)) =
                (o.lesson_id, o.lesson_start, &o.lesson_state)
            else {
                continue;
            };
            if start >= from && !ls::is_final(state) {
                self.cancel_lesson(id, "series ended early").await?;
            }
        }
        self.store.end_series(series_id, from).await?;
        self.series(series_id).await
    }
}

impl Broker {
    /// Changes every future occurrence at once: the lessons from `from` on
    /// are replaced by lessons of the changed template, all or none, in one
    /// transaction, planned as if the replaced lessons' capacity were free
    /// (it is, in that transaction); their holds are refunded and the new
    /// ones held. Nothing changes when one new occurrence does not fit; the
    /// refusal names each.
    pub async fn change_future(
        &self,
        series_id: Uuid,
        change: RawChange,
    ) -> Result<SeriesView, ServiceError> {
        let v = self.series(series_id).await?;
        let now = Utc::now();
        let from = change.from.unwrap_or(now).max(now);
        let (b, start_time) = self.changed_template(&v.series, &change)?;
        let tz = self.cfg.time_zone;
        let mut future: Vec<(Uuid, DateTime<Utc>)> = Vec::new();
        for o in &v.occurrences {
            let (Some(id), Some(start), Some(state)) =
                (o.lesson_id, o.lesson_start, &o.lesson_state)
            else {
                continue;
            };
            if start < from || ls::is_final(state) {
                continue;
            }
            let new = match start_time {
                None => start,
                Some(t) => tz
                    .from_local_datetime(&start.with_timezone(&tz).date_naive().and_time(t))
                    .earliest()
                    .map(|d| d.with_timezone(&Utc))
                    .unwrap_or(start),
            };
            if new <= now {
                return Err(ServiceError::field(
                    "start_time",
                    "would move an occurrence into the past",
                ));
            }
            future.push((id, new));
        }
        if future.is_empty() {
            return Err(ServiceError::Conflict(format!(
                "series {series_id} has no booked occurrence from {from} on"
            )));
        }
        let inputs: Vec<Arc<BookingInput>> = future
            .iter()
            .map(|(_, start)| self.booking_input(occurrence(&b, *start), now, Uuid::now_v7()))
            .collect::<Result<_, _>>()?;
        let items: Vec<Item> = inputs.iter().map(|i| Item::of(i)).collect();
        let replacing: Vec<Owner> = future.iter().map(|(id, _)| Owner::Lesson(*id)).collect();
        let mut row = v.series.clone();
        row.template = sqlx::types::Json(template_of(&b));
        row.duration_s = b.duration.num_seconds() as i32;
        row.start_time = start_time.unwrap_or(row.start_time);
        let rtt = self.rtt_table();
        let changed = self
            .reserver
            .reserve_many(&items, &replacing, &rtt, 8, |decisions| {
                self.write_change(&row, &future, &inputs, decisions)
            })
            .await?
            .ok_or_else(|| {
                ServiceError::Conflict("capacity kept changing; retry the change".into())
            })?;
        match changed {
            Changed::Done(released) => {
                self.send_releases(&released, "lesson changed with its series");
                for id in future
                    .iter()
                    .map(|f| f.0)
                    .chain(inputs.iter().map(|i| i.id))
                {
                    self.lesson_changed(id);
                }
                self.clock.notify_one();
                self.series(series_id).await
            }
            Changed::Refused(outcomes) => {
                let answer = super::series::SeriesAnswer {
                    title: row.title.clone(),
                    series: None,
                    dry_run: false,
                    policy: crate::series::request::Policy::AllOrNothing,
                    occurrences: outcomes,
                    past: 0,
                    held: Default::default(),
                };
                Err(ServiceError::Refused(Box::new(
                    self.refusal(std::slice::from_ref(&answer), answer.policy),
                )))
            }
            Changed::Failed(e) => Err(e),
        }
    }

    /// The series' template with the change applied, and the new start
    /// time if any; every bad field named.
    fn changed_template(
        &self,
        s: &SeriesRow,
        change: &RawChange,
    ) -> Result<(Booking, Option<NaiveTime>), ServiceError> {
        let mut c = Checks::default();
        let mut b = template_booking(s);
        let start_time = match change.start_time.trim() {
            "" => None,
            t => {
                let parsed = parse_time_of_day(t);
                c.check(
                    parsed.is_some(),
                    "start_time",
                    "must be a local time, HH:MM",
                );
                parsed
            }
        };
        let max_s = self.limits().max_window.as_secs() as i64;
        match change.duration_seconds {
            0 => {}
            d if (1..=max_s).contains(&d) => b.duration = Duration::seconds(d),
            _ => c.fail(
                "duration_seconds",
                format!("must be between 1 and {max_s} seconds"),
            ),
        }
        match change.seats {
            0 => {}
            n if (1..=1000).contains(&n) => {
                // All or nothing stays all or nothing; a minimum stays at
                // most the class.
                b.min_seats = if b.min_seats == b.seats {
                    n as u32
                } else {
                    b.min_seats.min(n as u32)
                };
                b.seats = n as u32;
            }
            _ => c.fail("seats", "must be between 1 and 1000"),
        }
        match change.max_rtt_ms {
            0 => {}
            r if (1..=10_000).contains(&r) => b.max_rtt_ms = r as u32,
            _ => c.fail("max_rtt_ms", "must be between 1 and 10000 ms"),
        }
        c.finish()?;
        Ok((b, start_time))
    }

    /// The write of a change: the old lessons cancelled (their holds
    /// refunded), the new ones written whole, the occurrences pointed at
    /// them and the template updated, in one transaction; or nothing.
    async fn write_change(
        &self,
        row: &SeriesRow,
        future: &[(Uuid, DateTime<Utc>)],
        inputs: &[Arc<BookingInput>],
        decisions: Vec<Result<Admission, Explanation>>,
    ) -> sqlx::Result<WroteMany<Changed>> {
        let none = |answer| WroteMany {
            answer,
            committed: vec![false; future.len()],
        };
        if decisions.iter().any(Result::is_err) {
            let outcomes = future
                .iter()
                .zip(decisions)
                .map(|((_, start), d)| match d {
                    Ok(_) => admitted(*start, None, Default::default()),
                    Err(e) => refused(*start, &ServiceError::Refused(Box::new(e))),
                })
                .collect();
            return Ok(none(Changed::Refused(outcomes)));
        }
        let writes: Vec<BookingWrite> = inputs
            .iter()
            .zip(decisions.into_iter().flatten())
            .map(|(input, admission)| BookingWrite {
                input: input.clone(),
                admission,
            })
            .collect();
        let refs: Vec<&BookingWrite> = writes.iter().collect();
        let mut conn = self.store.acquire().await?;
        let mut tx = conn.begin().await?;
        self.fence(&mut tx).await?;
        let mut released = Vec::new();
        for (old, _) in future {
            match self
                .cancel_in(&mut tx, *old, "cancelled: changed with its series")
                .await
            {
                Ok(r) => released.extend(r),
                Err(e) => {
                    tx.rollback().await?;
                    return Ok(none(Changed::Failed(e)));
                }
            }
        }
        let (written, wrote) = self
            .write_bookings_in(&mut tx, &refs, WriteMode::Whole)
            .await?;
        if !wrote {
            tx.rollback().await?;
            let outcomes = future
                .iter()
                .zip(written)
                .map(|((_, start), w)| match w {
                    Ok(b) => admitted(*start, None, b.held),
                    Err(e) => refused(*start, &e),
                })
                .collect();
            return Ok(none(Changed::Refused(outcomes)));
        }
        let pairs: Vec<(Uuid, Uuid)> = future
            .iter()
            .zip(inputs)
            .map(|((old, _), new)| (*old, new.id))
            .collect();
        store::replace_future(&mut tx, row, &pairs).await?;
        tx.commit().await?;
        Ok(WroteMany {
            answer: Changed::Done(released),
            committed: vec![true; future.len()],
        })
    }
}

/// A booking of the series' template (its start is set by `occurrence`).
fn template_booking(s: &SeriesRow) -> Booking {
    let t = &s.template.0;
    Booking {
        request_id: None,
        school_site: s.school_site.clone(),
        title: s.title.clone(),
        start: s.created_at,
        duration: Duration::seconds(i64::from(s.duration_s)),
        seats: t.seats,
        min_seats: t.min_seats,
        seat: t.seat.clone(),
        workload: t.workload.clone(),
        datasets: t.datasets.clone(),
        max_rtt_ms: t.max_rtt_ms,
        // A series keeps no residency rule of its own yet: anywhere.
        residency: Default::default(),
    }
}
