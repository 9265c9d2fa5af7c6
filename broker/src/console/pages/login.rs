//! Login, logout and the language switch.

use std::collections::HashMap;

use axum::{
    Form,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
};

use super::super::{
    html::{esc, see_other, shell},
    i18n::{Lang, t},
    session::{self, LANG_COOKIE, Session},
};
use crate::{
    auth::{Caller, Role, passwords},
    state::App,
};

fn login_page(l: Lang, failed: bool, user: &str) -> String {
    let err = if failed {
        format!(
            r#"<div class="notice error" role="alert">{}</div>"#,
            t(l, "login_failed")
        )
    } else {
        String::new()
    };
    let body = format!(
        r#"<div class="login"><h1>{app}</h1>{err}
<form method="post" action="/console/login">
<label for="username">{u}<input id="username" name="username" autocomplete="username" required maxlength="64" value="{user}" autofocus></label>
<label for="password">{p}<input id="password" name="password" type="password" autocomplete="current-password" required maxlength="256"></label>
<button type="submit">{login}</button></form>
<p><a href="/console/lang?to={other}&amp;back=/console/login" lang="{other}">{switch}</a></p></div>"#,
        app = t(l, "app"),
        u = t(l, "username"),
        p = t(l, "password"),
        user = esc(user),
        login = t(l, "login"),
        other = l.other().code(),
        switch = t(l, "switch_lang"),
    );
    shell(l, t(l, "login"), "", &body, "", false)
}

pub async fn form(headers: HeaderMap) -> Html<String> {
    Html(login_page(session::lang_of(&headers), false, ""))
}

pub async fn submit(
    State(app): State<App>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    ext: axum::http::Extensions,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let l = session::lang_of(&headers);
    if !session::same_origin(&headers, session::request_host(&headers, &uri)) {
        return (
            StatusCode::FORBIDDEN,
            "the login form must be posted from the console itself\n",
        )
            .into_response();
    }
    let username = f.get("username").map(|s| s.trim()).unwrap_or("");
    let password = f.get("password").map(|s| s.as_str()).unwrap_or("");
    let source = session::source_of(&ext);
    let who = Caller {
        actor: format!("user:{}", username.chars().take(64).collect::<String>()),
        role: Role::SchoolAdmin,
        sites: Vec::new(),
        source: source.clone(),
        token_id: None,
    };
    if app
        .limiter
        .check_key(&format!("console-login:{source}"))
        .is_err()
    {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many login attempts; wait a second and try again\n",
        )
            .into_response();
    }
    let user = match app.store.user_by_name(username).await {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "console login lookup failed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot check the login right now; retry\n",
            )
                .into_response();
        }
    };
    // The hash is checked even for an unknown user, so timing does not
    // tell which usernames exist.
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let hash = match &user {
        Some(u) => u.password_hash.clone(),
        None => DUMMY
            .get_or_init(|| {
                passwords::hash("no such user, compared for timing only").unwrap_or_default()
            })
            .clone(),
    };
    let pw = password.to_string();
    let ok = tokio::task::spawn_blocking(move || passwords::verify(&pw, &hash))
        .await
        .unwrap_or(false);
    let user = match user {
        Some(u) if ok && !u.disabled => u,
        _ => {
            app.audit(
                &who,
                "console.login",
                &format!("user:{}", username.chars().take(64).collect::<String>()),
                &Err("wrong username or password".into()),
                "",
            )
            .await;
            let mut r = Html(login_page(l, true, username)).into_response();
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            return r;
        }
    };
    let who = Caller {
        role: Role::parse(&user.role).unwrap_or(Role::SchoolAdmin),
        sites: user.sites.clone(),
        ..who
    };
    match session::create(&app, user.id, &source).await {
        Ok(secret) => {
            app.audit(
                &who,
                "console.login",
                &format!("user:{}", user.username),
                &Ok(()),
                "",
            )
            .await;
            let mut r = see_other("/console");
            r.headers_mut().insert(
                header::SET_COOKIE,
                session::set_cookie(&app, Some(&secret))
                    .parse()
                    .expect("cookie"),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "creating a console session failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot sign in right now; retry\n",
            )
                .into_response()
        }
    }
}

pub async fn logout(
    State(app): State<App>,
    s: Session,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if let Err(why) = s.check_form(&headers, f.get("_csrf").map(|v| v.as_str()).unwrap_or("")) {
        return (StatusCode::FORBIDDEN, format!("{why}\n")).into_response();
    }
    if let Err(e) = session::end(&app, &headers).await {
        tracing::error!(error = %e, "ending a console session failed");
    }
    app.audit(
        &s.caller,
        "console.logout",
        &format!("user:{}", s.username),
        &Ok(()),
        "",
    )
    .await;
    let mut r = see_other("/console/login");
    r.headers_mut().insert(
        header::SET_COOKIE,
        session::set_cookie(&app, None).parse().expect("cookie"),
    );
    r
}

/// Sets the language cookie and goes back to the page, which must be a
/// console page (never an address elsewhere).
pub async fn lang(Query(q): Query<HashMap<String, String>>) -> Response {
    let l = q.get("to").and_then(|v| Lang::parse(v)).unwrap_or_default();
    let back = q
        .get("back")
        .map(|s| s.as_str())
        .filter(|b| b.starts_with("/console") && !b.contains("//") && !b.contains('\\'))
        .unwrap_or("/console");
    let mut r = see_other(back);
    r.headers_mut().insert(
        header::SET_COOKIE,
        format!(
            "{LANG_COOKIE}={}; Path=/; SameSite=Strict; Max-Age=31536000",
            l.code()
        )
        .parse()
        .expect("cookie"),
    );
    r
}
