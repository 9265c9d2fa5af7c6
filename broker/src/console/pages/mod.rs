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

/// A lesson's link for tables: its title, or, untitled, its school and
/// start time (people recognise those; a UUID they do not).
pub fn lesson_link(ls: &crate::store::lessons::LessonRow) -> String {
    let title = if ls.title.is_empty() {
        let z = super::zone();
        format!("{} {}", ls.school_site, z.hm(ls.start_at))
    } else {
        ls.title.clone()
    };
    format!(
        r#"<a href="/console/lessons/{}">{}</a>"#,
        ls.id,
        super::html::esc(&title)
    )
}
