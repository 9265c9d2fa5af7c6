//! One module per console page.

pub mod audit;
pub mod class_sheet;
pub mod jobs;
pub mod lesson;
pub mod login;
pub mod names;
pub mod node;
pub mod nodes;
pub mod overview;
pub mod overview_charts;
pub mod regions;
pub mod term;
pub mod timetable;
pub mod tokens;
pub mod voucher_alerts;
pub mod vouchers;

use std::collections::HashMap;

/// A query or form value, trimmed; empty counts as absent.
pub fn opt<'a>(q: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    q.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// A lesson's name for people: its title, or, untitled, its school and
/// start time (people recognise those; a UUID they do not).
pub fn lesson_title(ls: &crate::store::lessons::LessonRow) -> String {
    if ls.title.is_empty() {
        let z = super::zone();
        format!("{} {}", ls.school_site, z.hm(ls.start_at))
    } else {
        ls.title.clone()
    }
}

/// A lesson's link for tables, by [`lesson_title`].
pub fn lesson_link(ls: &crate::store::lessons::LessonRow) -> String {
    format!(
        r#"<a href="/console/lessons/{}">{}</a>"#,
        ls.id,
        super::html::esc(&lesson_title(ls))
    )
}
