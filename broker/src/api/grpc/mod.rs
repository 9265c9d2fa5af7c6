//! gRPC services of `classgrid.v1`, plus reflection and `grpc.health.v1`.

pub mod admin;
pub mod agent;
pub mod convert;
pub mod dry_run;
pub mod edge;
pub mod federation;
pub mod fleet;
pub mod job;
pub mod lesson;
pub mod relay;
pub mod series;
pub mod timetable;
pub mod voucher;

use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::ServiceError;

/// One mapping from service errors to gRPC status, for every method.
pub fn status(e: ServiceError) -> Status {
    match e {
        ServiceError::Invalid(fields) => {
            let msg = fields
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            let mut details = ErrorDetails::new();
            for f in &fields {
                details.add_bad_request_violation(f.field.clone(), f.rule.clone());
            }
            Status::with_error_details(tonic::Code::InvalidArgument, msg, details)
        }
        ServiceError::NotFound(what) => Status::not_found(format!("{what} not found")),
        ServiceError::Refused(expl) => {
            let mut details = ErrorDetails::new();
            for f in &expl.filters {
                details.add_precondition_failure_violation(
                    f.filter,
                    f.detail.clone(),
                    format!("{} nodes removed", f.removed),
                );
            }
            Status::with_error_details(
                tonic::Code::FailedPrecondition,
                format!("cannot be placed: {}", expl.summary),
                details,
            )
        }
        ServiceError::Conflict(msg) => Status::failed_precondition(msg),
        ServiceError::Forbidden(msg) => Status::permission_denied(msg),
        ServiceError::Unauthenticated(msg) => Status::unauthenticated(msg),
        ServiceError::Unavailable(msg) => Status::unavailable(msg),
        ServiceError::Internal(e) => {
            tracing::error!(error = %e, "internal error");
            Status::internal("internal error; see the broker log")
        }
    }
}
