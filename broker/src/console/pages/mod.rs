//! One module per console page.

pub mod audit;
pub mod jobs;
pub mod lesson;
pub mod login;
pub mod node;
pub mod nodes;
pub mod overview;
pub mod timetable;
pub mod tokens;
pub mod vouchers;

use std::collections::HashMap;

/// A query or form value, trimmed; empty counts as absent.
pub fn opt<'a>(q: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
}
