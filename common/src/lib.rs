//! Start-up pieces shared by every classgrid binary. Each lives in one obvious
//! file: telemetry (logs and traces), config files, the client context, and how
//! agents and edges join and reach the broker (directly or through a relay),
//! and the process's memory settings.

pub mod broker_list;
pub mod config;
pub mod context;
pub mod dial;
pub mod exposition;
pub mod join;
pub mod memory;
pub mod telemetry;
pub mod tls;
