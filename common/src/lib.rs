//! Start-up pieces shared by every classgrid binary. Each lives in one obvious
//! file: telemetry (logs and traces), config files, and the client context.

pub mod config;
pub mod context;
pub mod join;
pub mod telemetry;
pub mod tls;
