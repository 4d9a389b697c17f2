//! The gRPC server every service runs on: tonic-health (SERVING once the store answers),
//! server reflection (v1 and v1alpha, so grpcurl and grpc_health_probe work), a tracing
//! span per request parented on the caller's trace context, graceful shutdown.
//! Also the client side: channels that carry trace context and a deadline, connected lazily
//! over the network, or, in the all-in-one process, straight into this process's own
//! services ([`InProcess`]).

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic_health::ServingStatus;
use tower::ServiceExt as _;
use tower::util::BoxCloneSyncService;

use crate::config::ServiceName;

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

/// Sets `TCP_NODELAY` on an accepted connection. Without it, a small response written after
/// another (HTTP/2 frames, a gRPC trailer) waits for the peer's delayed ACK: Nagle's
/// algorithm meeting delayed ACKs costs about 40 ms. Clients set it on their side already.
pub fn set_nodelay(stream: &mut tokio::net::TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY on an accepted connection");
    }
}

/// A set of tonic services to serve together on one listener.
#[derive(Default)]
pub struct GrpcServer {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    /// Services that answer but cannot do their work (their health says NOT_SERVING).
    readiness: Readiness,
    /// Whether server reflection is off (`GRPC_REFLECTION=false`).
    no_reflection: bool,
    /// Mutual TLS and who may call what (`GRPC_TLS_*`); plaintext and unchecked without.
    mutual_tls: Option<(Arc<crate::tls::MutualTls>, crate::authz::Identities)>,
    /// A plaintext listener serving only health (`GRPC_HEALTH_ADDR`).
    health_listener: Option<TcpListener>,
    /// Connections one remote address may hold on the TLS port
    /// (`GRPC_MAX_CONNECTIONS_PER_PEER`; see [`crate::peers`]).
    max_connections_per_peer: Option<usize>,
}

/// Services of this process that cannot do their work, and why: a missing setting, or a
/// background worker that stopped. Their health reports NOT_SERVING (so Kubernetes takes the
/// pod out of rotation and, through the liveness probe, restarts it).
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    unready: Arc<std::sync::Mutex<std::collections::BTreeMap<&'static str, String>>>,
}

impl Readiness {
    /// `service` (its gRPC name) cannot work, for `reason`.
    pub fn mark(&self, service: &'static str, reason: String) {
        self.unready
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(service, reason);
    }

    /// Why `service` cannot work, if it cannot.
    pub fn reason(&self, service: &str) -> Option<String> {
        self.unready
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(service)
            .cloned()
    }
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

    /// Keeps `name`'s health NOT_SERVING whatever the store says: it is mounted (it answers)
    /// but cannot do its work; `reason` is logged.
    pub fn mark_unready(&mut self, name: &'static str, reason: &str) -> &mut Self {
        tracing::warn!(
            service = name,
            reason,
            "service not ready: its health stays NOT_SERVING"
        );
        self.readiness.mark(name, reason.to_owned());
        self
    }

    /// Serves server reflection or not (`GRPC_REFLECTION`; on by default, off in the chart).
    pub fn set_reflection(&mut self, on: bool) -> &mut Self {
        self.no_reflection = !on;
        self
    }

    /// Serves over mutual TLS, each call checked against the callers its RPC serves
    /// ([`crate::authz`]).
    pub fn set_mutual_tls(
        &mut self,
        tls: Arc<crate::tls::MutualTls>,
        identities: crate::authz::Identities,
    ) -> &mut Self {
        self.mutual_tls = Some((tls, identities));
        self
    }

    /// Bounds the connections one remote address may hold on the TLS port.
    pub fn set_max_connections_per_peer(&mut self, max: usize) -> &mut Self {
        self.max_connections_per_peer = Some(max);
        self
    }

    /// Also serves health alone, in plaintext, on `listener` (for probes without a
    /// certificate, such as Kubernetes' gRPC probes).
    pub fn set_health_listener(&mut self, listener: TcpListener) -> &mut Self {
        self.health_listener = Some(listener);
        self
    }

    /// Shares `readiness` with the services' workers (see [`crate::ServiceContext::spawn_worker`]).
    pub fn set_readiness(&mut self, readiness: Readiness) -> &mut Self {
        self.readiness = readiness;
        self
    }

    /// Fully qualified names of the services added so far.
    pub fn service_names(&self) -> &[&'static str] {
        &self.names
    }

    /// The services added so far as one in-process service: the same routes behind the same
    /// server layers (a span per request, parented on the caller's trace context), without
    /// HTTP/2 or a socket. Health and reflection are for other processes and stay out.
    pub fn local_service(&self) -> LocalService {
        let routes = self.routes.clone().routes().prepare();
        let service = tower::ServiceBuilder::new()
            .layer(server_trace_layer())
            .layer(telemetry::RequestIdScopeLayer)
            .layer(GrpcMetricsLayer)
            .service(routes)
            .map_response(|response| response.map(Body::new));
        BoxCloneSyncService::new(service)
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

        let health_task = tokio::spawn(report_store_health(
            reporter,
            self.names.clone(),
            self.readiness.clone(),
            store,
            shutdown.clone(),
        ));

        let health_only = self.health_listener.map(|listener| {
            let health_service = health_service.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                // Health alone, without a certificate: Check answers, Watch (a stream held
                // open forever) is refused like any call without one.
                bounded_server()
                    .layer(crate::authz::AuthorizationLayer::new(
                        crate::authz::Identities::default(),
                    ))
                    .add_service(health_service)
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true)),
                        shutdown.requested(),
                    )
                    .await
            })
        });
        let authorization = self
            .mutual_tls
            .as_ref()
            .map(|(_, identities)| crate::authz::AuthorizationLayer::new(identities.clone()));
        let router = bounded_server()
            .layer(server_trace_layer())
            .layer(telemetry::RequestIdScopeLayer)
            // Authorization before metrics: a refused call is counted by the authorization
            // layer (bounded labels) and never reaches the per-method series.
            .layer(tower::util::option_layer(authorization))
            .layer(GrpcMetricsLayer)
            .add_routes(self.routes.routes())
            .add_service(health_service)
            .add_optional_service((!self.no_reflection).then_some(reflection_v1))
            .add_optional_service((!self.no_reflection).then_some(reflection_v1alpha));
        let result = match &self.mutual_tls {
            Some((tls, _)) => {
                router
                    .serve_with_incoming_shutdown(
                        tls.incoming(
                            listener,
                            crate::peers::PeerBudget::new(
                                self.max_connections_per_peer
                                    .unwrap_or(crate::peers::DEFAULT_MAX_CONNECTIONS_PER_PEER),
                            ),
                            shutdown.clone(),
                        ),
                        shutdown.requested(),
                    )
                    .await
            }
            None => {
                router
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true)),
                        shutdown.requested(),
                    )
                    .await
            }
        };
        if let Some(health_only) = health_only {
            health_only.abort();
        }
        health_task.abort();
        result.map_err(|error| anyhow::anyhow!("gRPC server failed: {error}"))
    }
}

/// A gRPC server with bounds on what one connection can hold: streams at once (tonic would
/// otherwise lift hyper's default to unlimited), idle connections found by keepalive pings,
/// and every connection closed after an hour (gracefully: GOAWAY, then in-flight calls
/// finish), so a CA taken out of the files stops being trusted on long-lived connections too.
fn bounded_server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_connection_age(Duration::from_secs(3600))
        .max_connection_age_grace(Duration::from_secs(60))
}

/// Streams one HTTP/2 connection may have open at once (hyper's own default).
const MAX_STREAMS_PER_CONNECTION: u32 = 200;

/// Design §10's rate, errors and duration of every gRPC method a server serves, whether the
/// call came over the network or in process: `payouts_grpc_server_requests_total{method}`
/// (how many calls one request to the system makes inside it),
/// `payouts_grpc_server_responses_total{method, code}` (the gRPC status code; an error
/// travels in the headers of a trailers-only response, and its absence means OK) and
/// `payouts_grpc_server_duration_seconds{method}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, RequestBody, ResponseBody> tower::Service<http::Request<RequestBody>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResponseBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<RequestBody>) -> Self::Future {
        let method = metric_label(request.uri().path());
        metrics::counter!("payouts_grpc_server_requests_total", "method" => method.clone())
            .increment(1);
        let started = std::time::Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|value| value.to_str().ok())
                    .map(|code| tonic::Code::from_bytes(code.as_bytes()))
                    .unwrap_or(tonic::Code::Ok),
                Err(_) => tonic::Code::Unavailable,
            };
            metrics::histogram!("payouts_grpc_server_duration_seconds", "method" => method.clone())
                .record(started.elapsed().as_secs_f64());
            metrics::counter!(
                "payouts_grpc_server_responses_total",
                "method" => method,
                "code" => format!("{code:?}")
            )
            .increment(1);
            result
        })
    }
}

/// The `method` label of a request: its path when it is an RPC this binary knows, and
/// `unknown` for anything else, so a client sending made-up paths cannot grow the metrics'
/// memory (one series per path, never evicted).
pub fn metric_label(path: &str) -> String {
    const OPEN: [&str; 4] = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ];
    let known = OPEN.contains(&path)
        || path
            .strip_prefix('/')
            .is_some_and(|method| crate::authz::allowed_callers(method).is_some());
    if known {
        path.to_owned()
    } else {
        "unknown".to_owned()
    }
}

/// How the server names a request's span.
type MakeSpan = fn(&http::Request<Body>) -> tracing::Span;

/// The server's tracing layer.
type ServerTraceLayer = tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::GrpcErrorsAsFailures>,
    MakeSpan,
>;

/// The server's span per request, parented on the caller's W3C trace context.
fn server_trace_layer() -> ServerTraceLayer {
    tower_http::trace::TraceLayer::new_for_grpc()
        .make_span_with(telemetry::grpc_request_span as MakeSpan)
}

/// Keeps every service's health in step: SERVING while the store answers, NOT_SERVING for a
/// service that cannot work ([`Readiness`]), and NOT_SERVING for all once shutdown begins (the
/// process drains: clients watching health move away while in-flight calls finish).
async fn report_store_health(
    reporter: tonic_health::server::HealthReporter,
    names: Vec<&'static str>,
    readiness: Readiness,
    store: Store,
    shutdown: Shutdown,
) {
    let mut last: std::collections::BTreeMap<&'static str, ServingStatus> =
        std::collections::BTreeMap::new();
    let stop = shutdown.clone().requested();
    tokio::pin!(stop);
    loop {
        let store_status = if shutdown.is_requested() {
            ServingStatus::NotServing
        } else {
            match store.ping().await {
                Ok(()) => ServingStatus::Serving,
                Err(error) => {
                    tracing::warn!(%error, "store does not answer; reporting NOT_SERVING");
                    ServingStatus::NotServing
                }
            }
        };
        for name in names.iter().copied().chain([""]) {
            let status = if readiness.reason(name).is_some() {
                ServingStatus::NotServing
            } else {
                store_status
            };
            if last.get(name) != Some(&status) {
                reporter.set_service_status(name, status).await;
                last.insert(name, status);
            }
        }
        if shutdown.is_requested() {
            return;
        }
        tokio::select! {
            () = &mut stop => {}
            () = tokio::time::sleep(STORE_CHECK_INTERVAL) => {}
        }
    }
}

/// The trace-context interceptor's function type.
pub type TraceInterceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;

/// A channel to another service that carries W3C trace context and a deadline on every call.
pub type TracedChannel = InterceptedService<Transport, TraceInterceptor>;

/// A process's own gRPC services as one in-process service (see [`GrpcServer::local_service`]).
pub type LocalService = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>;

/// The services of the all-in-one process that its own clients (the gateway, and services
/// calling each other) reach in process: a tonic client over the server's tower service, so
/// the same contracts, interceptors, server layers, deadlines and error mapping apply, with no
/// socket, no HTTP/2 framing and no second trip through the kernel. Other processes still
/// reach them over gRPC on GRPC_ADDR. Filled in once every service is mounted; clients built
/// before that look it up on each call.
#[derive(Clone, Default)]
pub struct InProcess {
    services: Arc<Mutex<BTreeSet<ServiceName>>>,
    routes: Arc<OnceLock<LocalService>>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("services", &self.services())
            .field("ready", &self.routes.get().is_some())
            .finish()
    }
}

impl InProcess {
    /// `service` runs in this process and is called in process.
    pub fn add(&mut self, service: ServiceName) {
        self.services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(service);
    }

    /// Whether calls to `service` stay in this process.
    pub fn serves(&self, service: ServiceName) -> bool {
        self.services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(&service)
    }

    /// The services called in process.
    pub fn services(&self) -> Vec<ServiceName> {
        self.services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// Connects the in-process clients to the mounted services (once).
    pub fn connect(&self, service: LocalService) {
        let _ = self.routes.set(service);
    }
}

/// Where a client's calls go: over the network, or into this process's own services.
#[derive(Clone)]
pub enum Transport {
    Remote(Channel),
    Local {
        routes: Arc<OnceLock<LocalService>>,
        deadline: Duration,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Remote(channel) => f.debug_tuple("Remote").field(channel).finish(),
            Transport::Local { deadline, .. } => {
                f.debug_struct("Local").field("deadline", deadline).finish()
            }
        }
    }
}

impl tower::Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = tower::BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Transport::Remote(channel) => {
                tower::Service::<http::Request<Body>>::poll_ready(channel, cx).map_err(Into::into)
            }
            Transport::Local { .. } => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self {
            Transport::Remote(channel) => {
                let call = channel.call(request);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
            Transport::Local { routes, deadline } => {
                let service = routes.get().cloned();
                let deadline = *deadline;
                Box::pin(async move {
                    let Some(service) = service else {
                        return Err(tonic::Status::unavailable(
                            "the service is not mounted in this process yet",
                        )
                        .into());
                    };
                    // The deadline as the network channel applies it: a call not answered
                    // in time is abandoned (CANCELLED, an unknown outcome to its caller).
                    match tokio::time::timeout(deadline, service.oneshot(request)).await {
                        Ok(Ok(response)) => Ok(response),
                        Ok(Err(never)) => match never {},
                        Err(_) => Err(tonic::TimeoutExpired(()).into()),
                    }
                })
            }
        }
    }
}

/// A lazily connected channel to `url`: the peer need not be up yet. Every call on it has
/// `deadline`: a peer that hangs fails the call (DEADLINE_EXCEEDED, which callers treat as an
/// unknown outcome) instead of stalling the caller without bound.
pub fn traced_channel(url: &str, deadline: Duration) -> anyhow::Result<TracedChannel> {
    Ok(traced(Transport::Remote(
        endpoint(url, deadline)?.connect_lazy(),
    )))
}

fn endpoint(url: &str, deadline: Duration) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(url.to_owned())
        .map_err(|error| anyhow::anyhow!("invalid gRPC URL {url:?}: {error}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(deadline)
        .tcp_nodelay(true))
}

/// Like [`traced_channel`], over mutual TLS with `tls`'s certificate, to a server whose
/// certificate carries `server_identity` (e.g. `payouts-limits`).
pub fn traced_tls_channel(
    url: &str,
    deadline: Duration,
    tls: &Arc<crate::tls::MutualTls>,
    server_identity: &str,
) -> anyhow::Result<TracedChannel> {
    let channel =
        endpoint(url, deadline)?.connect_with_connector_lazy(tls.connector(server_identity)?);
    Ok(traced(Transport::Remote(channel)))
}

fn traced(transport: Transport) -> TracedChannel {
    InterceptedService::new(
        transport,
        telemetry::inject_trace_context as TraceInterceptor,
    )
}

/// The channel to `service`: in process when this process serves it
/// ([`crate::Settings::in_process`]), else at its configured URL; either way with the
/// configured call deadline (`GRPC_TIMEOUT_MILLISECONDS`).
pub fn service_channel(
    settings: &crate::config::Settings,
    service: ServiceName,
) -> anyhow::Result<TracedChannel> {
    if settings.in_process.serves(service) {
        return Ok(traced(Transport::Local {
            routes: Arc::clone(&settings.in_process.routes),
            deadline: settings.grpc_timeout,
        }));
    }
    match &settings.mutual_tls {
        Some(tls) => traced_tls_channel(
            settings.service_url(service),
            settings.grpc_timeout,
            tls,
            &crate::tls::component_identity(service.as_str()),
        ),
        None => traced_channel(settings.service_url(service), settings.grpc_timeout),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn metrics_label_only_known_rpcs() {
        for known in [
            "/payouts.disputes.v1.DisputesService/RecordAllocation",
            "/grpc.health.v1.Health/Check",
        ] {
            assert_eq!(super::metric_label(known), known);
        }
        for unknown in [
            "/payouts.disputes.v1.DisputesService/Nope",
            "/made.up.Service/Method",
            "/",
            "",
        ] {
            assert_eq!(super::metric_label(unknown), "unknown", "{unknown}");
        }
    }

    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;

    fn in_process(server: &GrpcServer, deadline: Duration) -> TracedChannel {
        let mut settings = crate::Settings::from_env(std::collections::HashMap::new())
            .unwrap()
            .with_local_services("127.0.0.1:1".parse().unwrap());
        settings.grpc_timeout = deadline;
        settings.in_process.connect(server.local_service());
        assert!(settings.in_process.serves(ServiceName::Limits));
        service_channel(&settings, ServiceName::Limits).unwrap()
    }

    use tonic_health::pb::health_check_response::ServingStatus as Answer;

    async fn status_of(client: &mut HealthClient<TracedChannel>, service: &str) -> Option<Answer> {
        let answer = client
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .ok()?;
        Some(answer.into_inner().status())
    }

    async fn wait_for(client: &mut HealthClient<TracedChannel>, service: &str, wanted: Answer) {
        for _ in 0..200 {
            if status_of(client, service).await == Some(wanted) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{service} never became {wanted:?}");
    }

    #[tokio::test]
    async fn a_dead_worker_or_a_shutdown_makes_health_not_serving() {
        let (reporter, health) = tonic_health::server::health_reporter();
        let mut server = GrpcServer::new();
        server.add_service(health);
        let mut client = HealthClient::new(in_process(&server, Duration::from_secs(5)));
        let (shutdown, trigger) = Shutdown::manual();
        let context = crate::ServiceContext::new(
            Arc::new(crate::Settings::from_env(std::collections::HashMap::new()).unwrap()),
            Store::Embedded,
            shutdown.clone(),
        );
        tokio::spawn(report_store_health(
            reporter,
            vec!["test.Worker", "test.Other"],
            context.readiness.clone(),
            Store::Embedded,
            shutdown,
        ));
        wait_for(&mut client, "test.Worker", Answer::Serving).await;
        // A worker that stops before shutdown (here at once) takes its service out.
        context.spawn_worker("test.Worker", "test worker", async {});
        wait_for(&mut client, "test.Worker", Answer::NotServing).await;
        assert!(
            context
                .readiness
                .reason("test.Worker")
                .is_some_and(|reason| reason.contains("test worker stopped"))
        );
        assert_eq!(
            status_of(&mut client, "test.Other").await,
            Some(Answer::Serving)
        );
        // Draining: everything reports NOT_SERVING at once.
        trigger.trigger();
        wait_for(&mut client, "test.Other", Answer::NotServing).await;
        wait_for(&mut client, "", Answer::NotServing).await;
    }

    #[tokio::test]
    async fn a_service_of_this_process_is_called_without_a_socket() {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status(
                "payouts.limits.v1.PayoutLimitsService",
                ServingStatus::NotServing,
            )
            .await;
        let mut server = GrpcServer::new();
        server.add_service(health);
        // Nothing listens at 127.0.0.1:1; the call never leaves the process.
        let mut client = HealthClient::new(in_process(&server, Duration::from_secs(5)));
        let answer = client
            .check(HealthCheckRequest {
                service: "payouts.limits.v1.PayoutLimitsService".to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.status,
            i32::from(tonic_health::pb::health_check_response::ServingStatus::NotServing)
        );
        // The server's own answers keep their codes.
        let unknown = client
            .check(HealthCheckRequest {
                service: "no.such.Service".to_owned(),
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
    }

    /// A service that accepts every call and never answers.
    #[derive(Clone)]
    struct Hung;

    impl NamedService for Hung {
        const NAME: &'static str = "grpc.health.v1.Health";
    }

    impl tower::Service<http::Request<Body>> for Hung {
        type Response = http::Response<Body>;
        type Error = Infallible;
        type Future = std::future::Pending<Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            std::future::pending()
        }
    }

    #[tokio::test]
    async fn an_in_process_call_has_the_same_deadline() {
        let mut server = GrpcServer::new();
        server.add_service(Hung);
        let mut client = HealthClient::new(in_process(&server, Duration::from_millis(200)));
        let call = client.check(HealthCheckRequest::default());
        let status = tokio::time::timeout(Duration::from_secs(60), call)
            .await
            .expect("the call returned at its deadline instead of hanging")
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Cancelled, "{status:?}");
        assert_eq!(
            crate::ErrorKind::from_grpc_code(status.code()),
            crate::ErrorKind::Unavailable,
            "callers treat it as unknown, not as a refusal"
        );
    }

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
