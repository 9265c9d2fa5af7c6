//! Sites: created by admins, referenced by every node, edge and lesson.

use crate::{
    domain::{ServiceError, error::Checks},
    state::Broker,
    store::sites::SiteRow,
};

pub const SITE_KINDS: &[&str] = &["school", "district_pop", "cloud"];

impl Broker {
    pub async fn create_site(
        &self,
        name: &str,
        kind: &str,
        district: &str,
    ) -> Result<SiteRow, ServiceError> {
        let mut c = Checks::default();
        let valid = !name.is_empty()
            && name.len() <= 128
            && name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch));
        c.check(
            valid,
            "name",
            "must be 1 to 128 letters, digits, '.', '_' or '-'",
        );
        c.check(
            SITE_KINDS.contains(&kind),
            "kind",
            "must be school, district_pop or cloud",
        );
        c.check(
            district.len() <= 128,
            "district",
            "must be at most 128 characters",
        );
        c.finish()?;
        let (site, created) = self.store.create_site(name, kind, district).await?;
        if !created && (site.kind != kind || site.district != district) {
            return Err(ServiceError::Conflict(format!(
                "site `{name}` exists with kind {} and district `{}`",
                site.kind, site.district
            )));
        }
        self.fleet.put_site(site.clone());
        Ok(site)
    }
}
