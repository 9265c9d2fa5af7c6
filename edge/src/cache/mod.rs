//! The content cache: a content-addressed store (`store`), resumable
//! verified downloads (`fetch`), the staging queue (`stage`) and the LAN
//! content server (`serve`).

pub mod fetch;
pub mod serve;
pub mod stage;
pub mod store;
