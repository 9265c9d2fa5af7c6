//! The region's broker replicas and who leads (decision 078), for
//! `classgrid status` and the console overview. District admins only: the
//! replicas' addresses are the operator's business.

use std::time::Duration;

use crate::{
    domain::ServiceError,
    service::tenancy::Scoped,
    store::lease::{self, LeaseRow, ReplicaRow},
};

/// The lease and every replica heard from lately.
pub struct RegionReplicas {
    pub lease: LeaseRow,
    pub replicas: Vec<ReplicaRow>,
}

impl RegionReplicas {
    /// `leader` or `standby` for one replica of the list.
    pub fn role(&self, r: &ReplicaRow) -> &'static str {
        if self.lease.holder == Some(r.id) {
            "leader"
        } else {
            "standby"
        }
    }
}

impl Scoped<'_> {
    pub async fn replicas(&self) -> Result<RegionReplicas, ServiceError> {
        if !self.caller.is_district_admin() {
            return Err(ServiceError::Forbidden(
                "only a district admin may list the broker replicas".into(),
            ));
        }
        let pool = &self.app.store;
        // Replicas say they are alive several times a lease; three leases
        // of silence is gone.
        let window = (self.app.cfg.lease * 3).max(Duration::from_secs(5));
        Ok(RegionReplicas {
            lease: lease::current(pool).await?,
            replicas: lease::replicas(pool, window).await?,
        })
    }
}
