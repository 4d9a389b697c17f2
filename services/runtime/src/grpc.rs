//! The gRPC server every service runs on: tonic-health (SERVING once the store answers),
//! server reflection (v1 and v1alpha, so grpcurl and grpc_health_probe work), a tracing
//! span per request parented on the caller's trace context, graceful shutdown.
//! Also the client side: lazily connected channels that carry trace context.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::ServingStatus;

use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::telemetry;

/// How often the health reporter re-checks the store.
const STORE_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Binds a TCP listener, reporting an address in use by the setting that chose it.
pub async fn bind(addr: SocketAddr, variable: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|error| {
        if error.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("{variable} {addr} is already in use by another process")
        } else {
            anyhow::anyhow!("cannot listen on {variable} {addr}: {error}")
        }
    })
}

/// A set of tonic services to serve together on one listener.
#[derive(Default)]
pub struct GrpcServer {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
}

impl GrpcServer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a generated tonic server (e.g. `WebhooksServiceServer::new(service)`).
    pub fn add_service<S>(&mut self, service: S) -> &mut Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Fully qualified names of the services added so far.
    pub fn service_names(&self) -> &[&'static str] {
        &self.names
    }

    /// Serves until `shutdown`, then lets in-flight requests finish.
    pub async fn serve(
        self,
        listener: TcpListener,
        store: Store,
        shutdown: Shutdown,
    ) -> anyhow::Result<()> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(payouts_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(payouts_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let health_task = tokio::spawn(report_store_health(reporter, self.names.clone(), store));

        let trace_layer = tower_http::trace::TraceLayer::new_for_grpc()
            .make_span_with(|request: &http::Request<_>| telemetry::grpc_request_span(request));
        let result = tonic::transport::Server::builder()
            .layer(trace_layer)
            .add_routes(self.routes.routes())
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                shutdown.requested(),
            )
            .await;
        health_task.abort();
        result.map_err(|error| anyhow::anyhow!("gRPC server failed: {error}"))
    }
}

/// Keeps every service's health in step with its store: SERVING while the store answers.
async fn report_store_health(
    reporter: tonic_health::server::HealthReporter,
    names: Vec<&'static str>,
    store: Store,
) {
    let mut last = None;
    loop {
        let status = match store.ping().await {
            Ok(()) => ServingStatus::Serving,
            Err(error) => {
                tracing::warn!(%error, "store does not answer; reporting NOT_SERVING");
                ServingStatus::NotServing
            }
        };
        if last != Some(status) {
            for name in &names {
                reporter.set_service_status(*name, status).await;
            }
            reporter.set_service_status("", status).await;
            last = Some(status);
        }
        tokio::time::sleep(STORE_CHECK_INTERVAL).await;
    }
}

/// The trace-context interceptor's function type.
pub type TraceInterceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;

/// A channel to another service that carries W3C trace context on every call.
pub type TracedChannel = InterceptedService<Channel, TraceInterceptor>;

/// A lazily connected channel to `url`: the peer need not be up yet. Every call on it has
/// `deadline`: a peer that hangs fails the call (DEADLINE_EXCEEDED, which callers treat as an
/// unknown outcome) instead of stalling the caller without bound.
pub fn traced_channel(url: &str, deadline: Duration) -> anyhow::Result<TracedChannel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|error| anyhow::anyhow!("invalid gRPC URL {url:?}: {error}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(deadline)
        .tcp_nodelay(true);
    Ok(InterceptedService::new(
        endpoint.connect_lazy(),
        telemetry::inject_trace_context as TraceInterceptor,
    ))
}

/// The channel to `service` at its configured URL, with the configured call deadline
/// (`GRPC_TIMEOUT_MILLISECONDS`).
pub fn service_channel(
    settings: &crate::config::Settings,
    service: crate::config::ServiceName,
) -> anyhow::Result<TracedChannel> {
    traced_channel(settings.service_url(service), settings.grpc_timeout)
}

#[cfg(test)]
mod tests {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;

    #[tokio::test]
    async fn a_peer_that_never_answers_fails_the_call_at_its_deadline() {
        // A peer that accepts connections and then says nothing: a hung service.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                open.push(socket);
            }
        });
        let channel =
            traced_channel(&format!("http://{address}"), Duration::from_millis(200)).unwrap();
        let mut client = HealthClient::new(channel);
        let call = client.check(HealthCheckRequest::default());
        // Without a deadline the call would wait forever; this guard only turns that hang into
        // a failure instead of a stuck test.
        let answer = tokio::time::timeout(Duration::from_secs(60), call)
            .await
            .expect("the call returned at its deadline instead of hanging");
        let status = answer.unwrap_err();
        assert!(
            matches!(
                status.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled | tonic::Code::Unavailable
            ),
            "{status:?}"
        );
        assert_eq!(
            crate::ErrorKind::from_grpc_code(status.code()),
            crate::ErrorKind::Unavailable,
            "callers treat it as unknown, not as a refusal"
        );
        held.abort();
    }
}
