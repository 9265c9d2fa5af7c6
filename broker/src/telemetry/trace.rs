//! A span per HTTP request, joined to the caller's trace: the W3C
//! `traceparent` (and `tracestate`) of the request become the span's
//! OpenTelemetry parent, so what a booking does inside the broker shows
//! under the trace of the platform that asked for it. Spans leave the
//! process only when `--otlp-endpoint` is set (`classgrid_common::
//! telemetry`); without it the span is a plain `tracing` span that only the
//! log lines inside it carry.

use axum::{extract::Request, http::HeaderMap, middleware::Next, response::Response};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Request headers as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The middleware: one server span per request, child of the caller's
/// `traceparent` when it sends a valid one (an invalid one starts a new
/// trace, as the W3C recommendation says).
pub async fn http_span(req: Request, next: Next) -> Response {
    let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
    let span = tracing::info_span!(
        "http request",
        otel.name = %format!("{} {}", req.method(), req.uri().path()),
        otel.kind = "server",
        http.request.method = %req.method(),
        url.path = %req.uri().path(),
    );
    // Fails only where no OpenTelemetry layer is installed: then there is
    // nothing to join.
    let _ = span.set_parent(parent);
    next.run(req).instrument(span).await
}

/// gRPC's counterpart of `http_span`, a tower layer on the tonic server:
/// one server span per call, named `package.Service/Method` as
/// OpenTelemetry's RPC conventions say, child of the caller's
/// `traceparent` metadata (gRPC metadata travels as HTTP/2 headers). It
/// sits outside the gate, so authentication is inside the call's span. A
/// streaming call's span ends when the handler answers, not when the
/// stream does: an agent's session would otherwise be one span hours long.
#[derive(Clone, Copy, Default)]
pub struct GrpcSpanLayer;

impl<S> tower::Layer<S> for GrpcSpanLayer {
    type Service = GrpcSpan<S>;
    fn layer(&self, inner: S) -> GrpcSpan<S> {
        GrpcSpan { inner }
    }
}

#[derive(Clone)]
pub struct GrpcSpan<S> {
    inner: S,
}

impl<S, B> tower::Service<axum::http::Request<B>> for GrpcSpan<S>
where
    S: tower::Service<axum::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = tracing::instrument::Instrumented<S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let method = path.trim_start_matches('/');
        let (service, rpc) = method.split_once('/').unwrap_or((method, ""));
        let span = tracing::info_span!(
            "grpc request",
            otel.name = %method,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %rpc,
        );
        // Where no subscriber wants the span (the storm benchmark's broker
        // installs none), the metadata is not even parsed.
        if !span.is_disabled() {
            let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
            let _ = span.set_parent(parent);
        }
        let fut = {
            let _in = span.enter();
            self.inner.call(req)
        };
        fut.instrument(span)
    }
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, http::Request, routing::post};
    use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use tower::ServiceExt;
    use tracing_subscriber::layer::SubscriberExt;

    /// What a handler does inside the request: a span of its own, as the
    /// booking path's steps are.
    async fn book() -> &'static str {
        let step = tracing::info_span!("plan");
        let _g = step.enter();
        "booked"
    }

    /// Spans of this thread, exported in memory while the guard lives.
    fn in_memory() -> (
        InMemorySpanExporter,
        SdkTracerProvider,
        tracing::subscriber::DefaultGuard,
    ) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let guard = tracing::subscriber::set_default(subscriber);
        (exporter, provider, guard)
    }

    /// Sends one request with `traceparent` through the middleware and
    /// returns the spans that ended, exported in memory.
    async fn spans_of(traceparent: &str) -> Vec<SpanData> {
        let (exporter, provider, _default) = in_memory();
        let app = Router::new()
            .route("/v1/lessons", post(book))
            .layer(axum::middleware::from_fn(super::http_span));
        let req = Request::post("/v1/lessons")
            .header("traceparent", traceparent)
            .body(Body::empty())
            .unwrap();
        assert_eq!(app.oneshot(req).await.unwrap().status(), 200);
        let _ = provider.force_flush();
        exporter.get_finished_spans().unwrap()
    }

    fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name} in {spans:?}"))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_traceparent_becomes_the_parent_of_the_request_and_its_steps() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let caller = "00f067aa0ba902b7";
        let spans = spans_of(&format!("00-{trace}-{caller}-01")).await;
        let request = named(&spans, "POST /v1/lessons");
        let plan = named(&spans, "plan");
        let trace_id = TraceId::from_hex(trace).unwrap();
        assert_eq!(request.span_context.trace_id(), trace_id);
        assert_eq!(request.parent_span_id, SpanId::from_hex(caller).unwrap());
        assert_eq!(plan.span_context.trace_id(), trace_id);
        assert_eq!(plan.parent_span_id, request.span_context.span_id());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_grpc_calls_traceparent_metadata_becomes_the_parent_of_its_span() {
        let (exporter, provider, _default) = in_memory();
        let svc = tower::ServiceBuilder::new()
            .layer(super::GrpcSpanLayer)
            .service_fn(|_req: Request<Body>| async {
                book().await;
                Ok::<_, std::convert::Infallible>(())
            });
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let caller = "00f067aa0ba902b7";
        let req = Request::post("/classgrid.v1.LessonService/Book")
            .header("traceparent", format!("00-{trace}-{caller}-01"))
            .body(Body::empty())
            .unwrap();
        svc.oneshot(req).await.unwrap();
        let _ = provider.force_flush();
        let spans = exporter.get_finished_spans().unwrap();
        let call = named(&spans, "classgrid.v1.LessonService/Book");
        assert_eq!(
            call.span_context.trace_id(),
            TraceId::from_hex(trace).unwrap()
        );
        assert_eq!(call.parent_span_id, SpanId::from_hex(caller).unwrap());
        assert_eq!(call.span_kind, opentelemetry::trace::SpanKind::Server);
        assert_eq!(
            named(&spans, "plan").parent_span_id,
            call.span_context.span_id()
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn without_a_valid_traceparent_a_request_starts_its_own_trace() {
        let spans = spans_of("not a trace context").await;
        let request = named(&spans, "POST /v1/lessons");
        assert_eq!(request.parent_span_id, SpanId::INVALID);
        assert!(request.span_context.is_valid());
    }
}
