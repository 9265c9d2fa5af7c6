//! Console logins become a [`Caller`], the same type a bearer token becomes,
//! so every page reaches the domain through `Broker::scoped` like any API.
//!
//! The session id is a 256-bit secret in an HttpOnly, SameSite=Strict cookie
//! (Secure, and `__Host-` prefixed, under TLS); PostgreSQL keeps only its
//! SHA-256 and an expiry. Each session has a CSRF token that every
//! state-changing form carries, and such requests must also come from this
//! origin (decision 060).

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, Uri, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use chrono::Utc;
use sha2::{Digest, Sha256};

use super::i18n::Lang;
use crate::{
    auth::{Caller, Role},
    state::App,
};

/// A working day; a console left open overnight asks for the password again.
pub const TTL: chrono::Duration = chrono::Duration::hours(10);
pub const LANG_COOKIE: &str = "cg_lang";

pub fn cookie_name(app: &App) -> &'static str {
    if app.tls.is_some() {
        "__Host-cg_session"
    } else {
        "cg_session"
    }
}

/// `Set-Cookie` for a new session, or (with `None`) one that clears it.
pub fn set_cookie(app: &App, value: Option<&str>) -> String {
    let secure = if app.tls.is_some() { "; Secure" } else { "" };
    match value {
        Some(v) => format!(
            "{}={v}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            cookie_name(app),
            TTL.num_seconds()
        ),
        None => format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
            cookie_name(app)
        ),
    }
}

pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub fn lang_of(headers: &HeaderMap) -> Lang {
    cookie(headers, LANG_COOKIE)
        .and_then(Lang::parse)
        .unwrap_or_default()
}

pub fn source_of(parts_ext: &axum::http::Extensions) -> String {
    parts_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| format!("console {}", c.0.ip()))
        .unwrap_or_else(|| "console".into())
}

fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Starts a session for a verified user; returns the cookie value.
pub async fn create(app: &App, user: uuid::Uuid, source: &str) -> sqlx::Result<String> {
    let secret = random_hex();
    app.store
        .insert_console_session(
            &digest(&secret),
            user,
            &random_hex(),
            Utc::now() + TTL,
            source,
        )
        .await?;
    Ok(secret)
}

pub async fn end(app: &App, headers: &HeaderMap) -> sqlx::Result<()> {
    if let Some(v) = cookie(headers, cookie_name(app)) {
        app.store.delete_console_session(&digest(v)).await?;
    }
    Ok(())
}

/// A signed-in console user, as the domain sees them.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    pub username: String,
    pub csrf: String,
    pub lang: Lang,
    /// The host this request addressed, for the same-origin check.
    pub host: String,
}

impl Session {
    /// Refuses a state-changing request that lacks this session's token or
    /// that a browser says came from another origin.
    pub fn check_form(&self, headers: &HeaderMap, token: &str) -> Result<(), &'static str> {
        self.check_origin(headers)?;
        let a = Sha256::digest(self.csrf.as_bytes());
        let b = Sha256::digest(token.as_bytes());
        // Compared as digests so the time taken says nothing about the token.
        if a == b {
            Ok(())
        } else {
            Err("the form is stale; reload the page and try again")
        }
    }
}

impl Session {
    /// The origin half of `check_form`, for a form that was cut short
    /// before its token and is only answered with an error.
    pub fn check_origin(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        if same_origin(headers, &self.host) {
            Ok(())
        } else {
            Err("the request came from another site")
        }
    }
}

/// The host (and port) the browser addressed: the `Host` header in
/// HTTP/1.1; in HTTP/2, which browsers speak over TLS, there is no `Host`
/// and the `:authority` arrives as the URI's authority instead.
pub fn request_host<'a>(headers: &'a HeaderMap, uri: &'a Uri) -> &'a str {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// True unless the browser names an origin other than `host` (Origin or
/// Sec-Fetch-Site).
pub fn same_origin(headers: &HeaderMap, host: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && site != "same-origin"
        && site != "none"
    {
        return false;
    }
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            let o = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
            !host.is_empty() && o == host
        }
    }
}

/// Not signed in: pages send the browser to the login form, the event
/// stream answers 401.
pub struct NoSession {
    to_login: bool,
}

impl IntoResponse for NoSession {
    fn into_response(self) -> Response {
        if self.to_login {
            Redirect::to("/console/login").into_response()
        } else {
            (
                axum::http::StatusCode::UNAUTHORIZED,
                "sign in at /console/login\n",
            )
                .into_response()
        }
    }
}

impl FromRequestParts<App> for Session {
    type Rejection = NoSession;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let to_login = !parts.uri.path().ends_with("/events");
        let value = cookie(&parts.headers, cookie_name(app)).ok_or(NoSession { to_login })?;
        // A malformed cookie is not even looked up.
        if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NoSession { to_login });
        }
        let row = match app.store.console_session(&digest(value)).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(NoSession { to_login }),
            Err(e) => {
                tracing::error!(error = %e, "console session lookup failed");
                return Err(NoSession { to_login });
            }
        };
        let role = Role::parse(&row.user.role).ok_or(NoSession { to_login })?;
        Ok(Session {
            caller: Caller {
                actor: format!("user:{}", row.user.username),
                role,
                sites: row.user.sites.clone(),
                source: source_of(&parts.extensions),
                token_id: None,
            },
            username: row.user.username,
            csrf: row.csrf,
            lang: lang_of(&parts.headers),
            host: request_host(&parts.headers, &parts.uri).to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn cross_origin_posts_are_refused() {
        assert!(same_origin(&h(&[("origin", "https://b:7080")]), "b:7080"));
        assert!(!same_origin(
            &h(&[("origin", "https://evil.example")]),
            "b:7080"
        ));
        assert!(!same_origin(
            &h(&[("sec-fetch-site", "cross-site")]),
            "b:7080"
        ));
        assert!(same_origin(&h(&[]), "b:7080"));
        assert!(!same_origin(&h(&[("origin", "https://b:7080")]), ""));
    }

    #[test]
    fn the_host_comes_from_host_or_from_the_http2_authority() {
        let h1: Uri = "/console/login".parse().unwrap();
        assert_eq!(request_host(&h(&[("host", "b:7080")]), &h1), "b:7080");
        let h2: Uri = "https://b:7080/console/login".parse().unwrap();
        assert_eq!(request_host(&h(&[]), &h2), "b:7080");
        assert_eq!(request_host(&h(&[]), &h1), "");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let m = h(&[("cookie", "a=1; cg_session=abc; cg_lang=en")]);
        assert_eq!(cookie(&m, "cg_session"), Some("abc"));
        assert_eq!(lang_of(&m), Lang::En);
        assert_eq!(lang_of(&h(&[])), Lang::Zh);
    }
}
