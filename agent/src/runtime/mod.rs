//! Runtimes turn an assignment into running work.

pub mod process;
