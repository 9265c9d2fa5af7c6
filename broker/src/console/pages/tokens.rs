//! Tokens: create join tokens (for nodes and edges) and API tokens (for
//! platforms and admins), each secret shown once; revoke them. The service
//! layer checks the role and audits every change.

use std::collections::HashMap;

use axum::{
    Form,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use uuid::Uuid;

use super::super::{
    html::{Page, Th, error, esc, render, see_other, state_badge, table_open},
    i18n::{Lang, t},
    session::Session,
    zone,
};
use crate::{domain::ServiceError, state::App};

pub async fn page(State(app): State<App>, s: Session, uri: Uri) -> Response {
    match build(&app, &s, None).await {
        Ok(body) => render(
            &s,
            zone(),
            uri.path(),
            Page::new(t(s.lang, "tokens"), "tokens", body),
        ),
        Err(e) => error(&s, zone(), uri.path(), &e),
    }
}

/// `<option>`s whose values are the API's words and whose labels are the
/// page's language.
fn options(l: Lang, group: &str, values: &[&str]) -> String {
    values
        .iter()
        .map(|v| {
            format!(
                r#"<option value="{v}">{}</option>"#,
                esc(&crate::console::i18n::word(l, group, v))
            )
        })
        .collect()
}

fn status(l: Lang, revoked: bool, expires: Option<chrono::DateTime<Utc>>) -> String {
    if revoked {
        state_badge(l, "revoked").replace(">revoked<", &format!(">{}<", t(l, "revoked")))
    } else if expires.is_some_and(|e| e <= Utc::now()) {
        state_badge(l, "failed").replace(">failed<", &format!(">{}<", t(l, "expired")))
    } else {
        state_badge(l, "active").replace(">active<", &format!(">{}<", t(l, "active")))
    }
}

async fn build(
    app: &App,
    s: &Session,
    secret: Option<(&str, &str)>,
) -> Result<String, ServiceError> {
    let l = s.lang;
    let z = zone();
    let api = app.list_api_tokens(&s.caller).await?;
    let join = app.list_join_tokens(&s.caller).await?;
    let names = super::names::Names::from_lists(&api, &join);
    let csrf = esc(&s.csrf);
    let mut o = String::new();
    if let Some((what, secret)) = secret {
        o += &format!(
            r#"<div class="notice ok" role="status"><p><strong>{}</strong> — {}</p><p class="secret" id="new-secret"><code>{}</code></p></div>"#,
            esc(what),
            t(l, "secret_once"),
            esc(secret)
        );
    }
    let sites: String = app
        .scoped(&s.caller)
        .sites()
        .iter()
        .map(|x| format!(r#"<option value="{0}">{0}</option>"#, esc(&x.name)))
        .collect();
    o += &format!(
        r#"<div class="grid2"><section><h2>{}</h2><form class="filters" method="post" action="/console/tokens/api"><input type="hidden" name="_csrf" value="{csrf}">
<label for="api-name">{}<input id="api-name" name="name" maxlength="128" required></label>
<label for="api-role">{}<select id="api-role" name="role">{roles}</select></label>
<label for="api-sites">{}<input id="api-sites" name="sites" maxlength="2000"></label>
<label for="api-ttl">{}<input id="api-ttl" name="ttl" placeholder="24h" maxlength="16"></label>
<button type="submit">{}</button></form></section>"#,
        t(l, "create_api_token"),
        t(l, "name"),
        t(l, "role"),
        t(l, "sites_comma"),
        t(l, "ttl_hours"),
        t(l, "create"),
        roles = options(l, "role", &["platform", "school_admin", "district_admin"]),
    );
    o += &format!(
        r#"<section><h2>{}</h2><form class="filters" method="post" action="/console/tokens/join"><input type="hidden" name="_csrf" value="{csrf}">
<label for="join-site">{}<select id="join-site" name="site">{sites}</select></label>
<label for="join-kind">{}<select id="join-kind" name="kind">{kinds}</select></label>
<label for="join-ttl">{}<input id="join-ttl" name="ttl" placeholder="24h" maxlength="16"></label>
<label for="join-uses">{}<input id="join-uses" name="uses" inputmode="numeric" value="1"></label>
<label for="join-approval"><input type="checkbox" id="join-approval" name="require_approval" value="true"{}> {}</label>
<button type="submit">{}</button></form><p class="muted">{}</p></section></div>"#,
        t(l, "create_join_token"),
        t(l, "site"),
        t(l, "kind"),
        t(l, "ttl_hours"),
        t(l, "uses"),
        if app.cfg.join.require_approval {
            " checked"
        } else {
            ""
        },
        t(l, "require_approval"),
        t(l, "create"),
        t(l, "approve_hint"),
        kinds = options(l, "join_kind", &["agent", "edge"]),
    );
    let revoke = |kind: &str, id: Uuid| {
        format!(
            r#"<form class="inline" method="post" action="/console/tokens/{kind}/{id}/revoke"><input type="hidden" name="_csrf" value="{csrf}"><button type="submit" class="danger" aria-label="{} {id}">{}</button></form>"#,
            t(l, "revoke"),
            t(l, "revoke")
        )
    };
    o += &(format!("<h2>{}</h2>", t(l, "api_tokens"))
        + &table_open(
            Some("api-tokens"),
            &[
                Th::Text(t(l, "name")),
                Th::Text(t(l, "role")),
                Th::Text(t(l, "sites")),
                Th::Text(t(l, "created_by")),
                Th::Text(t(l, "created")),
                Th::Text(t(l, "expires")),
                Th::Text(t(l, "state")),
                Th::Text(t(l, "actions")),
            ],
        ));
    for a in &api {
        let sites: Vec<String> = a
            .sites
            .iter()
            .filter_map(|id| app.fleet.site_by_id(*id).map(|s| s.name))
            .collect();
        o += &format!(
            r#"<tr data-token="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            a.id,
            esc(&a.name),
            esc(&crate::console::i18n::word(l, "role", &a.role)),
            esc(&sites.join(", ")),
            names.reference(l, app, &a.created_by),
            z.fmt(a.created_at),
            a.expires_at
                .map(|e| z.fmt(e))
                .unwrap_or_else(|| t(l, "never").into()),
            status(l, a.revoked_at.is_some(), a.expires_at),
            if a.revoked_at.is_none() {
                revoke("api", a.id)
            } else {
                String::new()
            }
        );
    }
    o += "</tbody></table>";
    o += &(format!("<h2>{}</h2>", t(l, "join_tokens"))
        + &table_open(
            Some("join-tokens"),
            &[
                Th::Text(t(l, "site")),
                Th::Text(t(l, "kind")),
                Th::Num(t(l, "uses")),
                Th::Text(t(l, "require_approval")),
                Th::Text(t(l, "created_by")),
                Th::Text(t(l, "expires")),
                Th::Text(t(l, "state")),
                Th::Text(t(l, "actions")),
            ],
        ));
    for j in &join {
        o += &format!(
            r#"<tr data-token="{}"><td>{}</td><td>{}</td><td class="num">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            j.id,
            esc(&app
                .fleet
                .site_by_id(j.site_id)
                .map(|s| s.name)
                .unwrap_or_default()),
            esc(&crate::console::i18n::word(l, "join_kind", &j.kind)),
            j.uses_left,
            if j.require_approval { "✓" } else { "—" },
            names.reference(l, app, &j.created_by),
            z.fmt(j.expires_at),
            status(l, j.revoked_at.is_some(), Some(j.expires_at)),
            if j.revoked_at.is_none() && j.expires_at > Utc::now() {
                revoke("join", j.id)
            } else {
                String::new()
            }
        );
    }
    o += "</tbody></table>";
    Ok(o)
}

fn int(f: &HashMap<String, String>, field: &str, default: i64) -> Result<i64, ServiceError> {
    match f.get(field).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| ServiceError::field(field, "must be a whole number")),
    }
}

/// A lifetime as people type it: `90m`, `24h`, `7d` (or `ttl_seconds`, as
/// older forms sent); empty means the server's default. Seconds.
fn lifetime(f: &HashMap<String, String>) -> Result<i64, ServiceError> {
    let Some(v) = f.get("ttl").map(|v| v.trim()).filter(|v| !v.is_empty()) else {
        return int(f, "ttl_seconds", 0);
    };
    let rule = "must be a number with a unit: m (minutes), h (hours) or d (days), e.g. 24h or 7d";
    let (n, unit) = v.split_at(v.len() - v.chars().last().map_or(0, char::len_utf8));
    let per = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(ServiceError::field("ttl", rule)),
    };
    let n: f64 = n
        .trim()
        .parse()
        .map_err(|_| ServiceError::field("ttl", rule))?;
    if !n.is_finite() || n <= 0.0 || n > 3650.0 * 86_400.0 / per as f64 {
        return Err(ServiceError::field(
            "ttl",
            "must be above 0 and at most 3650d",
        ));
    }
    Ok((n * per as f64).round() as i64)
}

#[cfg(test)]
mod lifetime_tests {
    use std::collections::HashMap;

    fn ttl(v: &str) -> Result<i64, String> {
        let f = HashMap::from([("ttl".to_string(), v.to_string())]);
        super::lifetime(&f).map_err(|e| e.to_string())
    }

    #[test]
    fn lifetimes_are_typed_with_a_unit() {
        assert_eq!(ttl("24h"), Ok(86_400));
        assert_eq!(ttl("7d"), Ok(604_800));
        assert_eq!(ttl("1.5h"), Ok(5_400));
        assert_eq!(ttl(""), Ok(0));
        assert!(ttl("3600").unwrap_err().contains("ttl"));
        assert!(ttl("-1h").is_err());
        assert!(ttl("天").is_err());
    }
}

pub async fn create(
    State(app): State<App>,
    s: Session,
    headers: HeaderMap,
    uri: Uri,
    Path(kind): Path<String>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Err(why) = s.check_form(&headers, f.get("_csrf").map(|v| v.as_str()).unwrap_or("")) {
        return (StatusCode::FORBIDDEN, format!("{why}\n")).into_response();
    }
    let get = |k: &str| f.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
    let made = async {
        match kind.as_str() {
            "api" => {
                let sites: Vec<String> = get("sites")
                    .split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect();
                let (row, secret) = app
                    .create_api_token(&s.caller, &get("name"), &get("role"), &sites, lifetime(&f)?)
                    .await?;
                Ok((
                    format!(
                        "{} {} ({})",
                        t(s.lang, "api_tokens"),
                        row.name,
                        crate::console::i18n::word(s.lang, "role", &row.role)
                    ),
                    secret,
                ))
            }
            "join" => {
                let uses = i32::try_from(int(&f, "uses", 1)?).map_err(|_| {
                    ServiceError::field("uses", "must be between 1 and 10000 (0 means 1)")
                })?;
                let (_, secret) = app
                    .create_join_token(
                        &s.caller,
                        &get("site"),
                        &get("kind"),
                        lifetime(&f)?,
                        uses,
                        // An unchecked box is simply absent from the form.
                        Some(f.get("require_approval").is_some_and(|v| v == "true")),
                    )
                    .await?;
                Ok((
                    format!(
                        "{} {} ({})",
                        t(s.lang, "join_tokens"),
                        get("site"),
                        crate::console::i18n::word(s.lang, "join_kind", &get("kind"))
                    ),
                    secret,
                ))
            }
            _ => Err(ServiceError::field("kind", "must be api or join")),
        }
    };
    let made: Result<(String, String), ServiceError> = made.await;
    match made {
        // Shown in this response only: the page is not live, so a refresh
        // cannot fetch it again, and the secret is never stored in clear.
        Ok((what, secret)) => match build(&app, &s, Some((&what, &secret))).await {
            Ok(body) => {
                let page = Page {
                    title: t(s.lang, "tokens").into(),
                    nav: "tokens",
                    body,
                    live: false,
                };
                render(&s, zone(), "/console/tokens", page)
            }
            Err(e) => error(&s, zone(), uri.path(), &e),
        },
        Err(e) => error(&s, zone(), uri.path(), &e),
    }
}

pub async fn revoke(
    State(app): State<App>,
    s: Session,
    headers: HeaderMap,
    uri: Uri,
    Path((kind, id)): Path<(String, String)>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Err(why) = s.check_form(&headers, f.get("_csrf").map(|v| v.as_str()).unwrap_or("")) {
        return (StatusCode::FORBIDDEN, format!("{why}\n")).into_response();
    }
    let Ok(id) = id.parse::<Uuid>() else {
        return error(
            &s,
            zone(),
            uri.path(),
            &ServiceError::field("id", "must be a token id (a UUID)"),
        );
    };
    let r = match kind.as_str() {
        "api" => app.revoke_api_token(&s.caller, id).await.map(|_| ()),
        "join" => app.revoke_join_token(&s.caller, id).await.map(|_| ()),
        _ => Err(ServiceError::field("kind", "must be api or join")),
    };
    match r {
        Ok(()) => see_other("/console/tokens"),
        Err(e) => error(&s, zone(), uri.path(), &e),
    }
}
