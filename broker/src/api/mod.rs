//! Thin transport adapters: decode → service call → encode.

pub mod grpc;
pub mod http;
pub mod rest;
pub mod serve;
