//! Logs and traces: `tracing` everywhere, JSON logs when stdout is not a terminal, OTLP trace
//! export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and W3C trace context carried over
//! every gRPC hop (client interceptor injects, server layer extracts).

use std::io::IsTerminal;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogFormat, Settings};

/// Keeps the trace exporter alive; flushes pending spans when dropped.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("trace exporter shutdown failed: {error}");
        }
    }
}

/// Installs the global subscriber. Call once, from `main`, inside the Tokio runtime.
pub fn init(settings: &Settings, service_name: &str) -> anyhow::Result<TelemetryGuard> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_new(&settings.log_filter)
        .map_err(|error| anyhow::anyhow!("invalid setting RUST_LOG: {error}"))?;
    let json = match settings.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let provider = match &settings.otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|error| {
                    anyhow::anyhow!("invalid setting OTEL_EXPORTER_OTLP_ENDPOINT: {error}")
                })?;
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(service_name.to_owned())
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
    };
    let otel_layer = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("payouts")));
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    let installed = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init()
    } else {
        registry.with(tracing_subscriber::fmt::layer()).try_init()
    };
    installed.map_err(|error| anyhow::anyhow!("logging already initialised: {error}"))?;
    Ok(TelemetryGuard { provider })
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// gRPC client interceptor: writes the current span's context as `traceparent`/`tracestate`.
pub fn inject_trace_context(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
    });
    Ok(request)
}

/// The span a gRPC server opens for a request, parented on the caller's trace context.
pub fn grpc_request_span<B>(request: &http::Request<B>) -> tracing::Span {
    let span = tracing::info_span!(
        "grpc request",
        otel.kind = "server",
        rpc.method = %request.uri().path(),
        request_id = tracing::field::Empty,
    );
    if let Some(request_id) = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
    {
        span.record("request_id", request_id);
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    // Without an OpenTelemetry layer installed there is nothing to link; that is fine.
    let _ = span.set_parent(parent);
    span
}

/// Parent a span (e.g. the gateway's HTTP span) on trace context found in HTTP headers.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    });
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[test]
    fn trace_context_crosses_a_grpc_hop() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let client_span = tracing::info_span!("client call");
            let entered = client_span.enter();
            let trace_id = client_span.context().span().span_context().trace_id();

            // The client interceptor writes W3C `traceparent` naming the caller's trace...
            let request = inject_trace_context(tonic::Request::new(())).unwrap();
            let traceparent = request
                .metadata()
                .get("traceparent")
                .expect("traceparent is set")
                .to_str()
                .unwrap()
                .to_owned();
            assert!(traceparent.contains(&trace_id.to_string()), "{traceparent}");

            // ...and the server's request span joins that trace.
            let mut incoming = http::Request::new(());
            incoming
                .headers_mut()
                .insert("traceparent", traceparent.parse().unwrap());
            let server_span = grpc_request_span(&incoming);
            assert_eq!(
                server_span.context().span().span_context().trace_id(),
                trace_id
            );

            // Without a caller's context (and outside any span) a new trace starts.
            drop(entered);
            let fresh = grpc_request_span(&http::Request::new(()));
            assert_ne!(fresh.context().span().span_context().trace_id(), trace_id);
        });
    }
}
