//! The classgrid regional broker: gRPC and HTTP APIs, the placement adapter,
//! the live fleet view, the lifecycle clock and the PostgreSQL store.

pub mod api;
pub mod app;
pub mod auth;
pub mod bind;
pub mod clock;
pub mod config;
pub mod console;
pub mod dispatch;
pub mod domain;
pub mod edge_view;
pub mod federation;
pub mod fleet;
pub mod forward;
pub mod leader;
pub mod metrics;
pub mod relay;
pub mod reserve;
pub mod seats;
pub mod series;
pub mod server;
pub mod service;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod timetable;
pub mod vouchers;
