//! Decoding at the REST edge: JSON bodies, query strings, path ids, times
//! and the `Idempotency-Key` header. Every failure is a problem that names
//! the field and the rule; nothing here judges domain values (that is
//! `domain/`'s job).

use axum::{
    body::Bytes,
    extract::{FromRequest, Query, Request},
    http::{HeaderMap, StatusCode, header},
};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::problem::Problem;

/// Largest request body the REST API reads (a lesson with many datasets
/// and a long environment still fits easily).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// A JSON body whose decode errors name the failing field's path.
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send JSON",
                "the body must be JSON, with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "The body is too large",
                    format!("the body must be at most {MAX_BODY_BYTES} bytes"),
                )
            } else {
                Problem::field("body", format!("could not be read: {}", e.body_text()))
            }
        })?;
        decode(&bytes).map(JsonBody)
    }
}

/// JSON → `T`, with the path of the first field that does not fit.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| Problem::field("body", format!("is not valid JSON: {e}")))?;
    // PostgreSQL text cannot hold NUL; refuse it here, by name, rather than
    // fail in the store.
    if let Some(path) = nul_path(&value, String::new()) {
        return Err(Problem::field(path, "must not contain NUL characters"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path.is_empty() || path == "." {
            "body".to_string()
        } else {
            path
        };
        Problem::field(field, rule_of(&e.into_inner().to_string()))
    })
}

/// serde's message, phrased as a rule ("invalid type: string, expected i64"
/// → "must be i64, not a string").
fn rule_of(msg: &str) -> String {
    if let Some(rest) = msg.strip_prefix("invalid type: ")
        && let Some((got, want)) = rest.split_once(", expected ")
    {
        return format!("must be {want}, not {got}");
    }
    if let Some(rest) = msg.strip_prefix("invalid value: ")
        && let Some((got, want)) = rest.split_once(", expected ")
    {
        return format!("must be {want}, not {got}");
    }
    if let Some(rest) = msg.strip_prefix("missing field ") {
        return format!("{} is required", rest.trim_matches('`'));
    }
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        let name = rest.split(',').next().unwrap_or(rest).trim_matches('`');
        return format!("`{name}` is not a known field");
    }
    msg.to_string()
}

fn nul_path(v: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    let key = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match v {
        Value::String(s) if s.contains('\0') => {
            Some(if at.is_empty() { "body".into() } else { at })
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_path(x, format!("{at}[{i}]"))),
        Value::Object(o) => o.iter().find_map(|(k, x)| {
            if k.contains('\0') {
                Some(key(&k.replace('\0', "\\0")))
            } else {
                nul_path(x, key(k))
            }
        }),
        _ => None,
    }
}

/// Query parameters as plain strings; each handler parses what it knows, so
/// that a bad value is reported by its parameter's name.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn from_query(
        q: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
        known: &[&str],
    ) -> Result<Self, Problem> {
        let Query(pairs) = q.map_err(|e| Problem::field("query", e.body_text()))?;
        let mut bad = Vec::new();
        for (k, _) in &pairs {
            if !known.contains(&k.as_str()) {
                bad.push(crate::domain::FieldError::new(
                    k.chars().take(64).collect::<String>(),
                    format!("is not a known parameter (known: {})", known.join(", ")),
                ));
            }
        }
        if !bad.is_empty() {
            return Err(Problem::invalid(bad));
        }
        Ok(Self(pairs))
    }

    /// The last value given for `name`, if any and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Every value given for `name`, in order (a repeated parameter).
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn str(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().to_string()
    }

    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, Problem> {
        self.get(name).map(|v| parse_time(name, v)).transpose()
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64, Problem> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| Problem::field(name, "must be a whole number")),
        }
    }

    pub fn bool(&self, name: &str) -> Result<bool, Problem> {
        match self.get(name) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(_) => Err(Problem::field(name, "must be true or false")),
        }
    }
}

/// RFC 3339 with an explicit offset (`Z` or `+08:00`).
pub fn parse_time(field: &str, s: &str) -> Result<DateTime<Utc>, Problem> {
    DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            Problem::field(
                field,
                "must be an RFC 3339 time with an offset, e.g. 2025-09-01T08:00:00+08:00",
            )
        })
}

pub fn parse_id(field: &str, s: &str) -> Result<Uuid, Problem> {
    s.parse()
        .map_err(|_| Problem::field(field, "must be a UUID"))
}

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The `Idempotency-Key` header, which becomes the domain's `request_id`:
/// a retried POST with the same key answers with the first result.
pub fn idempotency_key(h: &HeaderMap) -> Result<String, Problem> {
    let Some(v) = h.get(IDEMPOTENCY_KEY) else {
        return Ok(String::new());
    };
    let s = v
        .to_str()
        .ok()
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            Problem::field(
                "Idempotency-Key",
                "must be 1 to 128 visible ASCII characters",
            )
        })?;
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: i64,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        #[serde(default)]
        items: Vec<Inner>,
        #[serde(default)]
        name: String,
    }

    fn field_of(body: &str) -> (String, String) {
        let p = decode::<Outer>(body.as_bytes()).unwrap_err();
        (p.errors[0].field.clone(), p.errors[0].rule.clone())
    }

    #[test]
    fn wrong_type_names_the_nested_field() {
        let (f, r) = field_of(r#"{"items":[{"n":1},{"n":"x"}]}"#);
        assert_eq!(f, "items[1].n");
        assert!(r.starts_with("must be i64"), "{r}");
    }

    #[test]
    fn unknown_field_is_refused_by_name() {
        let (f, r) = field_of(r#"{"nmae":"x"}"#);
        assert_eq!(f, "nmae");
        assert!(r.contains("not a known field"), "{r}");
    }

    #[test]
    fn nul_in_a_string_is_refused_by_path() {
        let (f, _) = field_of("{\"items\":[],\"name\":\"a\\u0000b\"}");
        assert_eq!(f, "name");
    }

    #[test]
    fn broken_json_names_the_body() {
        assert_eq!(field_of("{").0, "body");
    }

    #[test]
    fn times_need_an_offset() {
        assert!(parse_time("start", "2030-01-01T08:00:00+08:00").is_ok());
        assert!(parse_time("start", "2030-01-01T08:00:00").is_err());
    }
}
