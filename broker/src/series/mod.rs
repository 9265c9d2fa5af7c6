//! Series: a recurring lesson, pure. A rule (RFC 5545 RRULE) at a start time
//! in the region's time zone, over a term, less exception dates, expands to
//! the occurrences' starts (`rule`). No I/O here; `service::series` books
//! them and `store::series` keeps them. `request` validates a series booking.

pub mod request;
pub mod rule;
