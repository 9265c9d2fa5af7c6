//! Who is calling, and what they may see. Every API request is authenticated
//! once at the transport's edge (`gate`), and carries a [`Caller`] into the
//! service layer, which scopes every read and write by it.

pub mod authn;
pub mod cache;
pub mod config;
pub mod gate;
pub mod http;
pub mod passwords;
pub mod pki;
pub mod tls;
pub mod tokens;

use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A course platform: books and reads lessons and jobs for its schools.
    Platform,
    /// A school's IT admin: reads its school's nodes, lessons and vouchers.
    SchoolAdmin,
    /// Everything in the region.
    DistrictAdmin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Platform => "platform",
            Role::SchoolAdmin => "school_admin",
            Role::DistrictAdmin => "district_admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "platform" => Some(Role::Platform),
            "school_admin" => Some(Role::SchoolAdmin),
            "district_admin" => Some(Role::DistrictAdmin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Caller {
    /// `token:<id>`, `user:<name>`, `node:<site>/<name>` or `system`.
    pub actor: String,
    pub role: Role,
    /// Sites in scope; empty means the whole region (district admins only).
    pub sites: Vec<Uuid>,
    /// Where the request came from, for the audit log.
    pub source: String,
    /// The token id, for rate limiting.
    pub token_id: Option<Uuid>,
}

impl Caller {
    /// The broker itself (start-up, the lifecycle clock, `classgrid up`).
    pub fn system() -> Self {
        Self {
            actor: "system".into(),
            role: Role::DistrictAdmin,
            sites: Vec::new(),
            source: "local".into(),
            token_id: None,
        }
    }

    pub fn sees_site(&self, site: Uuid) -> bool {
        self.role == Role::DistrictAdmin || self.sites.contains(&site)
    }

    pub fn is_district_admin(&self) -> bool {
        self.role == Role::DistrictAdmin
    }

    /// School admins read; platforms and district admins also write.
    pub fn may_write(&self) -> bool {
        self.role != Role::SchoolAdmin
    }
}
