//! Read-only views the console needs beyond the shared API, still reached
//! through [`Scoped`] so a school admin sees only their school.

use uuid::Uuid;

use crate::{
    domain::ServiceError,
    service::{tenancy::Scoped, vouchers::BalanceView},
    store::jobs::JobRow,
};

impl Scoped<'_> {
    /// The caller's sites for SQL filters; None means the whole region.
    pub fn site_filter(&self) -> Option<Vec<Uuid>> {
        if self.caller.is_district_admin() {
            None
        } else {
            Some(self.caller.sites.clone())
        }
    }

    pub async fn console_jobs(&self, state: Option<&str>) -> Result<Vec<JobRow>, ServiceError> {
        const STATES: &[&str] = &["queued", "running", "succeeded", "failed", "cancelled"];
        if let Some(s) = state
            && !STATES.contains(&s)
        {
            return Err(ServiceError::field(
                "state",
                format!("must be one of {}", STATES.join(", ")),
            ));
        }
        Ok(self
            .app
            .store
            .console_jobs(self.site_filter().as_deref(), state, 200)
            .await?)
    }

    /// Failed and running seats per lesson. The ids come from the caller's
    /// own scoped reads, so they are already lessons the caller sees.
    pub async fn seat_rollups(
        &self,
        lessons: &[Uuid],
    ) -> Result<std::collections::HashMap<Uuid, (i64, i64)>, ServiceError> {
        Ok(self
            .app
            .store
            .seat_rollups(lessons)
            .await?
            .into_iter()
            .map(|r| (r.lesson_id, (r.failed, r.running)))
            .collect())
    }

    /// A lesson's seats' output tails by seat id. The lesson comes from
    /// the caller's scoped read ([`Scoped::lesson`]), so the caller sees it.
    pub async fn seat_output_tails(
        &self,
        v: &crate::service::lessons::LessonView,
    ) -> Result<std::collections::HashMap<Uuid, String>, ServiceError> {
        Ok(self
            .app
            .store
            .seat_output_tails(v.lesson.id)
            .await?
            .into_iter()
            .collect())
    }

    /// Voucher balances and alerts of the schools the caller sees.
    pub async fn voucher_view(&self) -> Result<BalanceView, ServiceError> {
        let mut v = self.app.voucher_balances("").await?;
        v.schools.retain(|s| self.caller.sees_site(s.school.id));
        let visible: Vec<String> = v.schools.iter().map(|s| s.school.name.clone()).collect();
        v.alerts.retain(|a| visible.contains(&a.school));
        Ok(v)
    }
}
