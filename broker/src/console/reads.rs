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

    /// Voucher balances and alerts of the schools the caller sees.
    pub async fn voucher_view(&self) -> Result<BalanceView, ServiceError> {
        let mut v = self.app.voucher_balances("").await?;
        v.schools.retain(|s| self.caller.sees_site(s.school.id));
        let visible: Vec<String> = v.schools.iter().map(|s| s.school.name.clone()).collect();
        v.alerts.retain(|a| visible.contains(&a.school));
        Ok(v)
    }
}
