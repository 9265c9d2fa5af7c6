use classgrid_placement::Explanation;

/// One invalid field: its path in the request and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    pub field: String,
    pub rule: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.rule)
    }
}

/// The service layer's errors; each transport maps them to its own codes
/// (gRPC status, HTTP problem details).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    #[error("{0} not found")]
    NotFound(String),
    /// Placement refused the request; the explanation says why.
    #[error("refused: {}", .0.summary)]
    Refused(Box<Explanation>),
    #[error("{0}")]
    Conflict(String),
    /// The caller is known but may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The credentials are missing or not valid.
    #[error("{0}")]
    Unauthenticated(String),
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

impl ServiceError {
    pub fn field(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, rule)])
    }
}

impl From<sqlx::Error> for ServiceError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

/// Collects every field error of one request, so a caller can fix them all at once.
#[derive(Default)]
pub struct Checks(Vec<FieldError>);

impl Checks {
    pub fn fail(&mut self, field: impl Into<String>, rule: impl Into<String>) {
        self.0.push(FieldError::new(field, rule));
    }
    pub fn check(&mut self, ok: bool, field: &str, rule: &str) {
        if !ok {
            self.fail(field, rule);
        }
    }
    pub fn finish(self) -> Result<(), ServiceError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ServiceError::Invalid(self.0))
        }
    }
}
