//! Series under the caller's scope, as `tenancy` scopes lessons: a platform
//! books and edits series only at its schools, sees only theirs; every
//! change is audited (a dry run changes nothing and is not).

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::{
    series::{SeriesAnswer, SeriesView},
    tenancy::Scoped,
};
use crate::{
    domain::ServiceError,
    series::request::RawSeries,
    store::{lessons::LessonView, series::SeriesRow},
};

impl Scoped<'_> {
    pub async fn book_series(
        &self,
        raw: RawSeries,
        dry_run: bool,
    ) -> Result<SeriesAnswer, ServiceError> {
        let school = raw.lesson.school_site.trim().to_string();
        let op = async {
            self.writer()?;
            if !school.is_empty() {
                self.site("school_site", &school)?;
            }
            let a = self.app.book_series(raw, dry_run).await?;
            // A request id another tenant already used answers with their
            // series; never show it.
            if let Some(s) = &a.series
                && !self.caller.sees_site(s.school_site_id)
            {
                return Err(ServiceError::Conflict(
                    "this request_id (Idempotency-Key) is already used; choose another".into(),
                ));
            }
            Ok(a)
        };
        if dry_run {
            return op.await;
        }
        let target = |a: &SeriesAnswer| {
            a.series
                .as_ref()
                .map(|s| format!("series:{}", s.id))
                .unwrap_or_default()
        };
        self.app
            .audited(
                self.caller,
                "series.book",
                target,
                &format!("site:{school}"),
                op,
            )
            .await
    }

    pub async fn series(&self, id: Uuid) -> Result<SeriesView, ServiceError> {
        let v = self.app.series(id).await?;
        if self.caller.sees_site(v.series.school_site_id) {
            Ok(v)
        } else {
            Err(ServiceError::NotFound(format!("series {id}")))
        }
    }

    /// Series of one school (or every school the caller sees) whose term
    /// overlaps `[from, to]`.
    pub async fn list_series(
        &self,
        school_site: &str,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> Result<Vec<SeriesRow>, ServiceError> {
        let sites: Option<Vec<Uuid>> = match school_site.trim() {
            "" if self.caller.is_district_admin() => None,
            "" => Some(self.caller.sites.clone()),
            s => Some(vec![self.site("school_site", s)?.id]),
        };
        Ok(self
            .app
            .store
            .list_series(sites.as_deref(), from, to)
            .await?)
    }

    /// Runs an edit of a series the caller may see and change, audited.
    async fn edit<T>(
        &self,
        action: &str,
        id: Uuid,
        op: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        let target = format!("series:{id}");
        self.app
            .audited(self.caller, action, |_| target.clone(), &target, async {
                self.series(id).await?;
                self.writer()?;
                op.await
            })
            .await
    }

    pub async fn cancel_occurrence(
        &self,
        id: Uuid,
        lesson_id: Uuid,
        reason: &str,
    ) -> Result<LessonView, ServiceError> {
        let op = self.app.cancel_occurrence(id, lesson_id, reason);
        let v = self.edit("series.cancel_occurrence", id, op).await?;
        Ok(self.shown(v))
    }

    pub async fn move_occurrence(
        &self,
        id: Uuid,
        lesson_id: Uuid,
        start: DateTime<Utc>,
    ) -> Result<LessonView, ServiceError> {
        let op = self.app.move_occurrence(id, lesson_id, start);
        let v = self.edit("series.move_occurrence", id, op).await?;
        Ok(self.shown(v))
    }

    pub async fn change_future(
        &self,
        id: Uuid,
        change: super::series_edits::RawChange,
    ) -> Result<SeriesView, ServiceError> {
        let op = self.app.change_future(id, change);
        self.edit("series.change_future", id, op).await
    }

    pub async fn end_series(
        &self,
        id: Uuid,
        from: Option<DateTime<Utc>>,
    ) -> Result<SeriesView, ServiceError> {
        let op = self.app.end_series(id, from);
        self.edit("series.end", id, op).await
    }
}

impl Scoped<'_> {
    /// A timetable import at the caller's schools only (a row naming
    /// another is "unknown site"), audited unless a dry run.
    pub async fn import_timetable(
        &self,
        text: &str,
        workload: &crate::domain::spec::Workload,
        policy: &str,
        dry_run: bool,
    ) -> Result<super::timetable::TimetableAnswer, ServiceError> {
        let file = crate::timetable::sheet::Upload::Csv(text);
        self.import_sheet(file, workload, policy, dry_run).await
    }

    /// As `import_timetable`, for CSV or an .xlsx workbook.
    pub async fn import_sheet(
        &self,
        file: crate::timetable::sheet::Upload<'_>,
        workload: &crate::domain::spec::Workload,
        policy: &str,
        dry_run: bool,
    ) -> Result<super::timetable::TimetableAnswer, ServiceError> {
        let sees = |site: Uuid| self.caller.sees_site(site);
        let op = async {
            self.writer()?;
            self.app
                .import_sheet(file, workload, policy, dry_run, &sees)
                .await
        };
        if dry_run {
            return op.await;
        }
        let target =
            |a: &super::timetable::TimetableAnswer| format!("timetable:{} series", a.rows.len());
        self.app
            .audited(self.caller, "timetable.import", target, "timetable", op)
            .await
    }
}
