//! What operators watch: the gauges sampled from the broker's state
//! (`gauges`) and the trace context carried into a booking's spans
//! (`trace`).

pub mod gauges;
pub mod trace;
