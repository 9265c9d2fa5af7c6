//! Domain values parsed once at the edge of the system, and the errors the
//! service layer speaks. Transports (gRPC, REST) convert to and from these.

pub mod error;
pub mod lesson;
pub mod spec;
pub mod states;

pub use error::{FieldError, ServiceError};
