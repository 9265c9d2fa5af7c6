//! The classgrid regional broker: gRPC and HTTP APIs, the placement adapter,
//! the live fleet view, the lifecycle clock and the PostgreSQL store.

pub mod api;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod console;
pub mod dispatch;
pub mod domain;
pub mod fleet;
pub mod leader;
pub mod metrics;
pub mod planner;
pub mod relay;
pub mod seats;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod vouchers;
