use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
};

use opentelemetry::{
    propagation::TextMapPropagator,
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::Sampler};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

/// Log format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    #[default]
    Json,
    /// Human-readable, for a terminal.
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "text" => Ok(Self::Text),
            other => Err(format!(
                "log format must be `json` or `text`, not `{other}`"
            )),
        }
    }
}

/// Keeps the OTLP exporter alive; flushes spans when dropped.
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
    }
}

/// Whether this process exports spans (an OTLP endpoint was configured).
/// The spans of a booking's steps, of dispatch and the clock, and the
/// agent's per-seat spans are only made when it does (`traced_span!`): with
/// tracing off a bell pays one atomic load per step, not a span per class
/// or per seat. (The HTTP and gRPC request spans are made always, one per
/// call, for the log context they give.)
static EXPORTING: AtomicBool = AtomicBool::new(false);

pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The environment variable for the sampling ratio, read by `init` (the
/// edge, `classgrid up`); the broker and the agent take it as a flag too.
pub const SAMPLE_RATIO_ENV: &str = "CLASSGRID_TRACE_SAMPLE_RATIO";

/// Checks a sampling ratio: a fraction of traces from 0 (none) to 1 (all).
pub fn parse_sample_ratio(field: &str, raw: &str) -> Result<f64, String> {
    raw.trim()
        .parse::<f64>()
        .ok()
        .and_then(|r| check_sample_ratio(field, r).ok())
        .ok_or_else(|| ratio_error(field, raw))
}

/// Checks a sampling ratio already read as a number.
pub fn check_sample_ratio(field: &str, r: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(ratio_error(field, &r.to_string()))
    }
}

fn ratio_error(field: &str, raw: &str) -> String {
    format!(
        "{field} must be a number from 0 to 1 (the share of traces kept), not `{}`",
        raw.chars().take(64).collect::<String>()
    )
}

/// The sampler for a ratio: a trace begun here is kept with probability
/// `ratio`; a span whose parent came from another process (a platform's
/// `traceparent`, the broker's on an Assign) follows the parent's decision,
/// so one trace is kept or dropped whole across processes. Without a ratio
/// the SDK's default applies (parent-based, always on, or
/// `OTEL_TRACES_SAMPLER`).
fn sampler(ratio: f64) -> Sampler {
    Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)))
}

/// Structured logs to stderr (`RUST_LOG` filters, default `info`), plus
/// OpenTelemetry traces over OTLP/gRPC when `otlp_endpoint` is set (or the
/// standard `OTEL_EXPORTER_OTLP_ENDPOINT`), sampled as
/// `CLASSGRID_TRACE_SAMPLE_RATIO` says.
pub fn init(
    service: &'static str,
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> TelemetryGuard {
    let ratio = std::env::var(SAMPLE_RATIO_ENV)
        .ok()
        .filter(|r| !r.trim().is_empty())
        .and_then(|r| {
            parse_sample_ratio(SAMPLE_RATIO_ENV, &r)
                .map_err(|e| eprintln!("{e}; keeping every trace"))
                .ok()
        });
    init_sampled(service, format, otlp_endpoint, ratio)
}

/// `init` with the sampling ratio given (a checked 0..=1, or the default).
pub fn init_sampled(
    service: &'static str,
    format: LogFormat,
    otlp_endpoint: Option<&str>,
    sample_ratio: Option<f64>,
) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let endpoint = otlp_endpoint
        .map(str::to_owned)
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.is_empty());

    let provider = endpoint.and_then(|ep| {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(ep)
            .build()
            .map_err(|e| eprintln!("OTLP exporter disabled: {e}"))
            .ok()?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .build();
        let mut builder = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource);
        if let Some(r) = sample_ratio {
            builder = builder.with_sampler(sampler(r));
        }
        Some(builder.build())
    });
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));

    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    // Colour codes only for a terminal: `up > up.log`
                    // and journald get plain text (issue 23).
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .try_init(),
    };
    // `classgrid up` runs several components in one process; only the first
    // installs the subscriber.
    if result.is_ok() && provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
    }
    TelemetryGuard { provider }
}

/// A span at info level, made only when this process exports traces;
/// otherwise `Span::none()`, which costs nothing to enter or drop.
#[macro_export]
macro_rules! traced_span {
    ($($arg:tt)*) => {
        if $crate::telemetry::exporting() {
            ::tracing::info_span!($($arg)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// The W3C `traceparent` of `span`, for a message to another process; empty
/// when the span is not recorded by OpenTelemetry (tracing off, or a span
/// made by `traced_span!` while not exporting).
pub fn traceparent_of(span: &tracing::Span) -> String {
    if !exporting() || span.is_none() {
        return String::new();
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return String::new();
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent").unwrap_or_default()
}

/// Makes `span` a child of the remote span a `traceparent` names (another
/// process's). An empty or invalid one leaves `span` a root, as the W3C
/// recommendation says.
pub fn join_remote(span: &tracing::Span, traceparent: &str) {
    if traceparent.is_empty() || span.is_none() {
        return;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert("traceparent".into(), traceparent.to_string());
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        // Fails only where no OpenTelemetry layer is installed.
        let _ = span.set_parent(cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_outside_zero_to_one_is_refused_naming_the_field() {
        assert_eq!(parse_sample_ratio("r", "0.25"), Ok(0.25));
        assert_eq!(parse_sample_ratio("r", "1"), Ok(1.0));
        for bad in ["1.5", "-0.1", "half", "NaN"] {
            let e = parse_sample_ratio("trace_sample_ratio", bad).unwrap_err();
            assert!(e.starts_with("trace_sample_ratio must be"), "{e}");
        }
    }

    #[test]
    fn the_ratio_decides_new_traces_and_a_remote_parent_decides_its_own() {
        use opentelemetry::{
            Context,
            trace::{SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState},
        };
        use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample};
        let decide = |ratio: f64, parent: Option<TraceFlags>| {
            let cx = parent.map(|flags| {
                Context::new().with_remote_span_context(SpanContext::new(
                    TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
                    SpanId::from_hex("00f067aa0ba902b7").unwrap(),
                    flags,
                    true,
                    TraceState::default(),
                ))
            });
            sampler(ratio)
                .should_sample(
                    cx.as_ref(),
                    TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
                    "step",
                    &SpanKind::Server,
                    &[],
                    &[],
                )
                .decision
        };
        assert_eq!(decide(0.0, None), SamplingDecision::Drop);
        assert_eq!(decide(1.0, None), SamplingDecision::RecordAndSample);
        // A platform's (or the broker's) sampled trace is kept whole, and an
        // unsampled one is not started again here.
        assert_eq!(
            decide(0.0, Some(TraceFlags::SAMPLED)),
            SamplingDecision::RecordAndSample
        );
        assert_eq!(
            decide(1.0, Some(TraceFlags::default())),
            SamplingDecision::Drop
        );
    }

    #[test]
    fn without_exporting_nothing_is_carried_and_nothing_is_joined() {
        let span = traced_span!("step");
        assert!(span.is_none());
        assert_eq!(traceparent_of(&span), "");
        join_remote(
            &span,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
    }
}
