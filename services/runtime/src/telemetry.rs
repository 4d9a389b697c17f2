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

/// Longest `x-request-id` taken from a caller (a UUID is 36): a longer one, or one with
/// characters outside visible ASCII, is replaced (the gateway) or ignored (a service), never
/// echoed, logged or passed on.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Longest `tracestate` taken from a caller (W3C Trace Context asks vendors to propagate at
/// least 512 characters; beyond that it may be dropped).
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// Whether a caller's `x-request-id` is kept: 1 to [`MAX_REQUEST_ID_BYTES`] bytes of
/// visible ASCII (no spaces or control characters, so it cannot forge a log line).
pub fn acceptable_request_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_BYTES).contains(&value.len())
        && value.iter().all(|byte| byte.is_ascii_graphic())
}

/// Whether `value` is a W3C `traceparent` of version 00 as the standard writes it:
/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, 55 characters, lowercase hex,
/// neither id all zeros. Anything else is ignored (a new trace starts).
pub fn valid_traceparent(value: &[u8]) -> bool {
    fn lower_hex(part: &[u8]) -> bool {
        part.iter()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(byte))
    }
    fn not_zero(part: &[u8]) -> bool {
        part.iter().any(|byte| *byte != b'0')
    }
    if value.len() != 55 {
        return false;
    }
    let (version, trace_id, parent_id, flags) =
        (&value[0..2], &value[3..35], &value[36..52], &value[53..55]);
    version == b"00"
        && value[2] == b'-'
        && value[35] == b'-'
        && value[52] == b'-'
        && lower_hex(trace_id)
        && not_zero(trace_id)
        && lower_hex(parent_id)
        && not_zero(parent_id)
        && lower_hex(flags)
}

/// A caller's request id as given, if it is acceptable ([`acceptable_request_id`]).
fn callers_request_id(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get("x-request-id")
        .filter(|value| acceptable_request_id(value.as_bytes()))
        .and_then(|value| value.to_str().ok())
}

/// Reads W3C trace context from headers, ignoring a `traceparent` that is not
/// [`valid_traceparent`] (and then its `tracestate`) and a `tracestate` over
/// [`MAX_TRACESTATE_BYTES`].
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let traceparent_valid = || {
            self.0
                .get("traceparent")
                .is_some_and(|value| valid_traceparent(value.as_bytes()))
        };
        let value = self.0.get(key)?;
        let acceptable = match key {
            "traceparent" => traceparent_valid(),
            "tracestate" => value.len() <= MAX_TRACESTATE_BYTES && traceparent_valid(),
            _ => true,
        };
        acceptable.then(|| value.to_str().ok()).flatten()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

tokio::task_local! {
    /// The `x-request-id` of the request being served (HTTP at the gateway, gRPC in a
    /// service), carried on every gRPC call made while serving it.
    static REQUEST_ID: String;
}

/// Runs `future` as part of the request `id` (calls it makes carry the id).
pub async fn with_request_id<F: std::future::Future>(id: Option<String>, future: F) -> F::Output {
    match id {
        Some(id) => REQUEST_ID.scope(id, future).await,
        None => future.await,
    }
}

/// The `x-request-id` of the request being served, if any.
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// gRPC client interceptor: writes the current span's context as `traceparent`/`tracestate`,
/// and the request id being served as `x-request-id`.
pub fn inject_trace_context(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
    });
    if let Some(id) = current_request_id()
        && let Ok(value) = tonic::metadata::MetadataValue::try_from(id.as_str())
    {
        request.metadata_mut().insert("x-request-id", value);
    }
    Ok(request)
}

/// Serves each request inside the scope of its `x-request-id`, so the calls it makes carry it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIdScopeLayer;

impl<S> tower::Layer<S> for RequestIdScopeLayer {
    type Service = RequestIdScope<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdScope { inner }
    }
}

/// See [`RequestIdScopeLayer`].
#[derive(Debug, Clone)]
pub struct RequestIdScope<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for RequestIdScope<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let id = callers_request_id(request.headers()).map(str::to_owned);
        let future = self.inner.call(request);
        Box::pin(with_request_id(id, future))
    }
}

/// The current span's W3C `traceparent`, to be stored with work done later (a webhook
/// event processed after its delivery was acknowledged); None without an OpenTelemetry layer.
pub fn current_traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut carrier);
    });
    carrier.remove("traceparent")
}

/// The span context a stored `traceparent` names, if it is valid.
pub fn remote_span_context(traceparent: &str) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::TraceContextExt as _;
    let carrier =
        std::collections::HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context =
        opentelemetry::global::get_text_map_propagator(|propagator| propagator.extract(&carrier));
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// Links `span` to the trace of a stored `traceparent` (the processing of a webhook event
/// to the delivery that stored it: another trace, related).
pub fn link_to(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(context) = traceparent.and_then(remote_span_context) {
        span.add_link(context);
    }
}

/// The span a gRPC server opens for a request, parented on the caller's trace context.
pub fn grpc_request_span<B>(request: &http::Request<B>) -> tracing::Span {
    // OpenTelemetry's RPC conventions: the span is named "package.Service/Method".
    // Named after the RPC only when it is one of ours: a client (authorized or not yet)
    // sending made-up paths cannot fill the tracing backend with span names.
    let label = crate::grpc::metric_label(request.uri().path());
    let path = label.trim_start_matches('/');
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    let span = tracing::info_span!(
        "grpc request",
        otel.name = %path,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        request_id = tracing::field::Empty,
    );
    if let Some(request_id) = callers_request_id(request.headers()) {
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
    fn a_stored_traceparent_names_the_span_that_stored_it() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let delivery = tracing::info_span!("delivery");
            let trace_id = delivery.context().span().span_context().trace_id();
            let stored = delivery
                .in_scope(current_traceparent)
                .expect("a traceparent");
            assert!(stored.contains(&trace_id.to_string()), "{stored}");
            let remote = remote_span_context(&stored).expect("a valid span context");
            assert_eq!(remote.trace_id(), trace_id);
            assert!(remote_span_context("garbage").is_none());
            // Linking a later span to it is accepted (the link is exported with the span).
            let processing = tracing::info_span!("processing");
            link_to(&processing, Some(&stored));
            assert_ne!(
                processing.context().span().span_context().trace_id(),
                trace_id,
                "processing is its own trace"
            );
        });
        assert!(current_traceparent().is_none(), "no span, no traceparent");
    }

    #[tokio::test]
    async fn the_request_id_crosses_a_grpc_hop() {
        use tower::{Layer as _, ServiceExt as _};
        // The caller serves request "req-1": its calls carry the id...
        let request = with_request_id(Some("req-1".to_owned()), async {
            inject_trace_context(tonic::Request::new(())).unwrap()
        })
        .await;
        assert_eq!(request.metadata().get("x-request-id").unwrap(), "req-1");
        // ...outside a request, none.
        let request = inject_trace_context(tonic::Request::new(())).unwrap();
        assert!(request.metadata().get("x-request-id").is_none());
        // The callee serves the call inside the id's scope, so its own calls carry it on.
        let callee = RequestIdScopeLayer.layer(tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(current_request_id())
        }));
        let call = http::Request::builder()
            .header("x-request-id", "req-1")
            .body(())
            .unwrap();
        assert_eq!(
            callee.oneshot(call).await.unwrap().as_deref(),
            Some("req-1")
        );
    }

    #[test]
    fn request_ids_are_capped_and_visible_ascii() {
        assert!(acceptable_request_id(b"req-from-caller"));
        assert!(acceptable_request_id(
            b"0f8fad5b-d9cb-469f-a165-70867728950e"
        ));
        assert!(acceptable_request_id(&[b'a'; MAX_REQUEST_ID_BYTES]));
        assert!(!acceptable_request_id(&[b'a'; MAX_REQUEST_ID_BYTES + 1]));
        assert!(!acceptable_request_id(b""));
        assert!(!acceptable_request_id(b"two words"));
        assert!(!acceptable_request_id(b"line\tbreak"));
        assert!(!acceptable_request_id("caf\u{e9}".as_bytes()));
    }

    #[test]
    fn only_a_w3c_traceparent_is_read() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(valid.as_bytes()));
        for invalid in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert!(!valid_traceparent(invalid.as_bytes()), "{invalid}");
        }
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", valid.parse().unwrap());
        headers.insert("tracestate", "vendor=value".parse().unwrap());
        let extractor = HeaderExtractor(&headers);
        assert_eq!(extractor.get("traceparent"), Some(valid));
        assert_eq!(extractor.get("tracestate"), Some("vendor=value"));
        headers.insert(
            "tracestate",
            format!("vendor={}", "x".repeat(MAX_TRACESTATE_BYTES))
                .parse()
                .unwrap(),
        );
        assert_eq!(HeaderExtractor(&headers).get("tracestate"), None);
        let long = format!("{valid}{}", "0".repeat(1000));
        headers.insert("traceparent", long.parse().unwrap());
        headers.insert("tracestate", "vendor=value".parse().unwrap());
        let extractor = HeaderExtractor(&headers);
        assert_eq!(extractor.get("traceparent"), None);
        assert_eq!(extractor.get("tracestate"), None, "follows its traceparent");
    }

    #[tokio::test]
    async fn a_service_ignores_an_oversized_request_id() {
        use tower::{Layer as _, ServiceExt as _};
        let callee = RequestIdScopeLayer.layer(tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(current_request_id())
        }));
        let call = http::Request::builder()
            .header("x-request-id", "r".repeat(MAX_REQUEST_ID_BYTES + 1))
            .body(())
            .unwrap();
        assert_eq!(callee.oneshot(call).await.unwrap(), None);
    }

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
