//! Edits of a booked series: cancel or move one occurrence, or end the
//! series early. Each occurrence is an ordinary lesson, so cancelling one is
//! cancelling its lesson, which releases its capacity and refunds its
//! voucher hold exactly as for any lesson; the series row only records
//! which lesson is the occurrence now and when the series ended.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::series::SeriesView;
use crate::{
    domain::{ServiceError, lesson::Booking, states::lesson as ls},
    series::request::occurrence,
    state::Broker,
    store::{lessons::LessonView, series::SeriesRow},
};

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
    }
}
