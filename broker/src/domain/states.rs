//! The lifecycles from DESIGN.md §4, as the strings stored and shown everywhere.

pub mod lesson {
    pub const BOOKED: &str = "booked";
    pub const STAGING: &str = "staging";
    pub const READY: &str = "ready";
    pub const LIVE: &str = "live";
    pub const ENDED: &str = "ended";
    pub const CANCELLED: &str = "cancelled";

    pub fn is_final(s: &str) -> bool {
        s == ENDED || s == CANCELLED
    }
}

pub mod seat {
    pub const PLANNED: &str = "planned";
    pub const STAGED: &str = "staged";
    pub const STARTING: &str = "starting";
    pub const RUNNING: &str = "running";
    pub const RELEASED: &str = "released";
    pub const FAILED: &str = "failed";
    pub const REPLACED: &str = "replaced";
}

pub mod job {
    pub const QUEUED: &str = "queued";
    pub const RUNNING: &str = "running";
    pub const SUCCEEDED: &str = "succeeded";
    pub const FAILED: &str = "failed";
    pub const CANCELLED: &str = "cancelled";

    pub fn is_final(s: &str) -> bool {
        s == SUCCEEDED || s == FAILED || s == CANCELLED
    }
}

pub mod node {
    pub const CONNECTED: &str = "connected";
    pub const DISCONNECTED: &str = "disconnected";
    pub const LOST: &str = "lost";
}
