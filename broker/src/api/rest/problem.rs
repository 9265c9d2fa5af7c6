//! RFC 9457 problem details: the one error shape of the REST API, mapped
//! from [`ServiceError`] in one function, as gRPC maps it to a status.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{FieldError, ServiceError};

/// One field that broke a rule, by its path in the request.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"field": "seat.gpu.compute_percent", "rule": "must be between 1 and 100, not 150"}))]
pub struct Violation {
    /// Path of the field in the request body or query, e.g. `seat.gpu.vendors[1]`.
    pub field: String,
    pub rule: String,
}

/// How many candidate nodes one placement filter removed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FilterRemoval {
    pub filter: String,
    pub removed: u64,
    pub detail: String,
}

/// An error, as `application/problem+json` (RFC 9457).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:classgrid:problem:invalid_argument",
    "title": "The request is not valid",
    "status": 400,
    "detail": "seats: must be between 1 and 1000, not 0",
    "code": "invalid_argument",
    "errors": [{"field": "seats", "rule": "must be between 1 and 1000, not 0"}]
}))]
pub struct Problem {
    /// `urn:classgrid:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Machine-readable: invalid_argument, not_found, refused, conflict,
    /// forbidden, unauthenticated, rate_limited, unavailable, payload_too_large,
    /// unsupported_media_type, internal.
    pub code: String,
    /// Every invalid field, so that a caller can fix them all at once.
    pub errors: Vec<Violation>,
    /// For `refused`: what each placement filter removed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<FilterRemoval>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:classgrid:problem:{code}"),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
            code: code.into(),
            errors: Vec::new(),
            filters: Vec::new(),
        }
    }

    pub fn invalid(fields: Vec<FieldError>) -> Self {
        let detail = fields
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        let mut p = Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "The request is not valid",
            detail,
        );
        p.errors = fields
            .into_iter()
            .map(|f| Violation {
                field: f.field,
                rule: f.rule,
            })
            .collect();
        p
    }

    pub fn field(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self::invalid(vec![FieldError::new(field, rule)])
    }

    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<ServiceError> for Problem {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(fields) => Self::invalid(fields),
            ServiceError::NotFound(what) => Self::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "Not found",
                format!("{what} not found"),
            ),
            ServiceError::Refused(expl) => {
                let mut p = Self::new(
                    StatusCode::CONFLICT,
                    "refused",
                    "The request cannot be placed",
                    format!("cannot be placed: {}", expl.summary),
                );
                p.filters = expl
                    .filters
                    .iter()
                    .map(|f| FilterRemoval {
                        filter: f.filter.to_string(),
                        removed: f.removed as u64,
                        detail: f.detail.clone(),
                    })
                    .collect();
                p
            }
            ServiceError::Conflict(msg) => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                "Conflict with the current state",
                msg,
            ),
            ServiceError::Forbidden(msg) => {
                Self::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed", msg)
            }
            ServiceError::Unauthenticated(msg) => Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Not authenticated",
                msg,
            ),
            ServiceError::Unavailable(msg) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Try again shortly",
                msg,
            ),
            ServiceError::Internal(e) => {
                tracing::error!(error = %e, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "internal error; see the broker log",
                )
            }
        }
    }
}

/// The authentication layer speaks gRPC status; the same answer over HTTP.
impl From<tonic::Status> for Problem {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let msg = s.message().to_string();
        match s.code() {
            Code::Unauthenticated => Self::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Not authenticated",
                msg,
            ),
            Code::PermissionDenied => {
                Self::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed", msg)
            }
            Code::ResourceExhausted => Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests",
                msg,
            ),
            Code::Unavailable => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Try again shortly",
                msg,
            ),
            Code::InvalidArgument => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                "The request is not valid",
                msg,
            ),
            Code::NotFound => Self::new(StatusCode::NOT_FOUND, "not_found", "Not found", msg),
            _ => {
                tracing::error!(code = ?s.code(), message = %msg, "unexpected status at the HTTP edge");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "internal error; see the broker log",
                )
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let mut res = (status, axum::Json(&self)).into_response();
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match status {
            StatusCode::UNAUTHORIZED => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"classgrid\""),
                );
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        res
    }
}

/// What every handler returns on failure.
pub type ApiResult<T> = Result<T, Problem>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_become_400_with_every_field_named() {
        let p = Problem::from(ServiceError::Invalid(vec![
            FieldError::new("seats", "must be between 1 and 1000, not 0"),
            FieldError::new("seat.gpu.vendors[1]", "unknown vendor"),
        ]));
        assert_eq!(p.status, 400);
        assert_eq!(p.code, "invalid_argument");
        let fields: Vec<_> = p.errors.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["seats", "seat.gpu.vendors[1]"]);
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let p = Problem::from(ServiceError::Internal(anyhow::anyhow!("password=secret")));
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("secret"));
    }

    #[test]
    fn rate_limit_becomes_429_with_retry_after() {
        let res = Problem::from(tonic::Status::resource_exhausted("slow down")).into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert!(res.headers().contains_key(header::RETRY_AFTER));
    }
}
