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
    /// A transient failure (the database restarting or unreachable) that
    /// outlasted the broker's own retries: nothing was written, and the
    /// same request may be sent again (503 with Retry-After, gRPC
    /// UNAVAILABLE).
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(anyhow::Error),
}

/// What a caller is told when the database could not be reached.
pub const DATABASE_UNAVAILABLE: &str =
    "the region's database is not reachable right now; nothing was written; retry";

impl From<anyhow::Error> for ServiceError {
    fn from(e: anyhow::Error) -> Self {
        let fenced = e.chain().any(|c| {
            c.downcast_ref::<sqlx::Error>()
                .is_some_and(crate::store::lease::is_fenced)
        });
        if fenced {
            // Another replica leads now; this one is about to stop, and the
            // same request through the load balancer reaches the leader.
            tracing::warn!(error = %format!("{e:#}"), "refused by the fence");
            Self::Unavailable("this broker replica no longer leads the region; retry".into())
        } else if crate::store::is_transient_any(&e) {
            tracing::warn!(error = %format!("{e:#}"), "database unavailable");
            Self::Unavailable(DATABASE_UNAVAILABLE.into())
        } else {
            Self::Internal(e)
        }
    }
}

impl ServiceError {
    pub fn field(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, rule)])
    }
}

impl From<sqlx::Error> for ServiceError {
    fn from(e: sqlx::Error) -> Self {
        anyhow::Error::from(e).into()
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
