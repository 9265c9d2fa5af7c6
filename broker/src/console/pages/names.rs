//! Names for the ids that the audit log and token lists record: API tokens,
//! join tokens, nodes, sites and lessons. People recognise a token's name,
//! a node's name or a lesson's title; a UUID they do not.

use std::collections::HashMap;

use uuid::Uuid;

use super::super::{
    html::esc,
    i18n::{Lang, t},
    session::Session,
};
use crate::{
    app::App,
    store::security::{ApiTokenRow, JoinTokenRow},
};

/// At most this many lessons are looked up for one page; more are shown by
/// a short id, which still links to the lesson.
const LESSON_LOOKUPS: usize = 60;

#[derive(Default)]
pub struct Names {
    api_tokens: HashMap<Uuid, String>,
    join_tokens: HashMap<Uuid, (Uuid, String)>,
    lessons: HashMap<Uuid, String>,
}

impl Names {
    /// The names this caller may see: tokens only for whoever may list them.
    pub async fn load(app: &App, s: &Session) -> Self {
        let api = app.list_api_tokens(&s.caller).await.unwrap_or_default();
        let join = app.list_join_tokens(&s.caller).await.unwrap_or_default();
        Self::from_lists(&api, &join)
    }

    /// From token lists a page has already read.
    pub fn from_lists(api: &[ApiTokenRow], join: &[JoinTokenRow]) -> Self {
        Names {
            api_tokens: api.iter().map(|a| (a.id, a.name.clone())).collect(),
            join_tokens: join
                .iter()
                .map(|j| (j.id, (j.site_id, j.kind.clone())))
                .collect(),
            lessons: HashMap::new(),
        }
    }

    /// Looks up the titles of the lessons that `refs` (audit targets) name.
    pub async fn load_lessons<'a>(
        &mut self,
        app: &App,
        s: &Session,
        refs: impl Iterator<Item = &'a str>,
    ) {
        let mut ids: Vec<Uuid> = refs
            .filter_map(|r| r.strip_prefix("lesson:"))
            .filter_map(|id| id.parse().ok())
            .collect();
        ids.sort();
        ids.dedup();
        let scoped = app.scoped(&s.caller);
        for id in ids.into_iter().take(LESSON_LOOKUPS) {
            if let Ok(v) = scoped.lesson(id).await {
                self.lessons.insert(id, super::lesson_title(&v.lesson));
            }
        }
    }

    /// An audit actor or target (`token:UUID`, `node:UUID`, `user:NAME`…) as HTML: a name, linked where
    /// the console has a page for it.
    pub fn reference(&self, l: Lang, app: &App, raw: &str) -> String {
        let Some((kind, rest)) = raw.split_once(':') else {
            return match raw {
                "system" => t(l, "actor_system").to_string(),
                "bootstrap" => t(l, "actor_bootstrap").to_string(),
                _ => format!("<code>{}</code>", esc(raw)),
            };
        };
        let id: Option<Uuid> = rest.parse().ok();
        let named = |word: &str, name: &str| format!("{} {}", t(l, word), esc(name));
        match (kind, id) {
            ("user", _) => named("actor_user", rest),
            ("site", _) => named("site", rest),
            ("token", Some(id)) => match self.api_tokens.get(&id) {
                Some(n) => named("api_token", n),
                None => named("api_token", &short(id)),
            },
            ("join_token", Some(id)) => match self.join_tokens.get(&id) {
                Some((site, kind)) => format!(
                    "{} {} · {}",
                    t(l, "join_token"),
                    esc(&app
                        .fleet
                        .site_by_id(*site)
                        .map(|s| s.name)
                        .unwrap_or_default()),
                    esc(&super::super::i18n::word(l, "join_kind", kind))
                ),
                None => named("join_token", &short(id)),
            },
            ("node", Some(id)) => {
                let name = app
                    .fleet
                    .node(id)
                    .map(|n| {
                        let site = app.fleet.site_by_id(n.site_id).map(|s| s.name);
                        format!("{}/{}", site.unwrap_or_default(), n.name)
                    })
                    .unwrap_or_else(|| short(id));
                format!(
                    r#"{} <a href="/console/nodes/{id}">{}</a>"#,
                    t(l, "node"),
                    esc(&name)
                )
            }
            ("lesson", Some(id)) => format!(
                r#"{} <a href="/console/lessons/{id}">{}</a>"#,
                t(l, "lesson"),
                esc(&self.lessons.get(&id).cloned().unwrap_or_else(|| short(id)))
            ),
            // An agent acting as itself: `node:SITE/NAME`.
            ("node", None) => named("node", rest),
            ("job", Some(id)) => named("job", &short(id)),
            ("voucher", Some(id)) => named("voucher", &short(id)),
            _ => format!("<code>{}</code>", esc(raw)),
        }
    }
}

/// The first 8 hex digits, as git shows commits: enough to tell apart.
fn short(id: Uuid) -> String {
    id.simple().to_string()[..8].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_id_is_its_first_eight_hex_digits() {
        let id: Uuid = "0191d2c4-7a1b-7c3e-9f00-123456789abc".parse().unwrap();
        assert_eq!(short(id), "0191d2c4");
    }
}
