//! The HTTP gateway (axum on tower). It translates Stripe webhooks and admin REST into gRPC
//! calls and holds no business logic: extract, verify the caller, one call, map the answer.
//!
//! Every request gets an `x-request-id` (kept when the caller sent an acceptable one: see
//! `headers`), echoed in the response and recorded on the request's span, which is parented
//! on the caller's W3C trace context. Bodies over `GATEWAY_BODY_LIMIT_BYTES` are refused with
//! 413. Each class of caller has its own concurrency budget (`budgets`); a connection that
//! does not send its headers in time is closed (`serve`).

mod admin_alerts;
mod admin_approvals;
mod admin_auth;
pub use admin_auth::mint_admin_token;
mod admin_disputes;
mod admin_payouts;
mod admin_reconciliation;
mod admin_webhooks;
mod body;
mod budgets;
mod cron;
mod dashboard;
mod headers;
mod health;
mod serve;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderName, Request, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use payouts_proto::approvals::v1::approvals_service_client::ApprovalsServiceClient;
use payouts_proto::balance::v1::balance_service_client::BalanceServiceClient;
use payouts_proto::disputes::v1::disputes_service_client::DisputesServiceClient;
use payouts_proto::limits::v1::payout_limits_service_client::PayoutLimitsServiceClient;
use payouts_proto::notifications::v1::notifications_service_client::NotificationsServiceClient;
use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use payouts_proto::webhooks::v1::webhooks_service_client::WebhooksServiceClient;
use payouts_runtime::grpc::{TracedChannel, service_channel};
use payouts_runtime::shutdown::Shutdown;
use payouts_runtime::{ErrorKind, ServiceName, Settings};
use tokio::net::TcpListener;
use tonic_health::pb::health_client::HealthClient;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub use admin_auth::{AdminAuth, AdminRole, JwksLimits};

/// The gateway's shared state: what its handlers need to call the services. Cloned for
/// every request (axum's `State`), so it is one reference-counted pointer.
#[derive(Clone, Debug)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Arc<Settings>,
    webhooks: WebhooksServiceClient<TracedChannel>,
    approvals: ApprovalsServiceClient<TracedChannel>,
    payouts: PayoutsServiceClient<TracedChannel>,
    balance: BalanceServiceClient<TracedChannel>,
    notifications: NotificationsServiceClient<TracedChannel>,
    disputes: DisputesServiceClient<TracedChannel>,
    limits: PayoutLimitsServiceClient<TracedChannel>,
    /// A health client per service it calls; None for those in this process.
    health: Vec<(ServiceName, Option<HealthClient<TracedChannel>>)>,
    admin_auth: AdminAuth,
    cron_tokens: cron::CronTokens,
}

impl Gateway {
    /// Clients to the services at their configured URLs; they connect lazily.
    pub fn new(settings: Arc<Settings>) -> anyhow::Result<Self> {
        let webhooks =
            WebhooksServiceClient::new(service_channel(&settings, ServiceName::Webhooks)?);
        let approvals =
            ApprovalsServiceClient::new(service_channel(&settings, ServiceName::Approvals)?);
        let payouts = PayoutsServiceClient::new(service_channel(&settings, ServiceName::Payouts)?);
        let balance = BalanceServiceClient::new(service_channel(&settings, ServiceName::Balance)?);
        let notifications = NotificationsServiceClient::new(service_channel(
            &settings,
            ServiceName::Notifications,
        )?);
        let disputes =
            DisputesServiceClient::new(service_channel(&settings, ServiceName::Disputes)?);
        let limits =
            PayoutLimitsServiceClient::new(service_channel(&settings, ServiceName::Limits)?);
        let in_process = settings.in_process.services();
        let mut health = Vec::new();
        for service in ServiceName::ALL {
            let client = if in_process.contains(&service) {
                None
            } else {
                Some(HealthClient::new(service_channel(&settings, service)?))
            };
            health.push((service, client));
        }
        let admin_auth = AdminAuth::from_settings(&settings)?;
        let cron_tokens = cron::CronTokens::from_settings(&settings);
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                webhooks,
                approvals,
                payouts,
                balance,
                notifications,
                disputes,
                limits,
                health,
                admin_auth,
                cron_tokens,
            }),
        })
    }

    pub(crate) fn webhooks(&self) -> WebhooksServiceClient<TracedChannel> {
        self.inner.webhooks.clone()
    }

    pub(crate) fn approvals(&self) -> ApprovalsServiceClient<TracedChannel> {
        self.inner.approvals.clone()
    }

    pub(crate) fn payouts(&self) -> PayoutsServiceClient<TracedChannel> {
        self.inner.payouts.clone()
    }

    pub(crate) fn balance(&self) -> BalanceServiceClient<TracedChannel> {
        self.inner.balance.clone()
    }

    pub(crate) fn notifications(&self) -> NotificationsServiceClient<TracedChannel> {
        self.inner.notifications.clone()
    }

    pub(crate) fn disputes(&self) -> DisputesServiceClient<TracedChannel> {
        self.inner.disputes.clone()
    }

    pub(crate) fn limits(&self) -> PayoutLimitsServiceClient<TracedChannel> {
        self.inner.limits.clone()
    }

    pub(crate) fn health_clients(&self) -> Vec<(ServiceName, Option<HealthClient<TracedChannel>>)> {
        self.inner.health.clone()
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub(crate) fn admin_auth(&self) -> &AdminAuth {
        &self.inner.admin_auth
    }

    pub(crate) fn cron_tokens(&self) -> &cron::CronTokens {
        &self.inner.cron_tokens
    }

    /// The HTTP routes with their middleware (the budgets are a layer of the matched routes,
    /// their slots shared by every route of a budget: see `routes`).
    pub fn router(&self) -> Router {
        let settings = &self.inner.settings;
        self.routes()
            .layer(axum::middleware::map_response(json_errors))
            .layer(axum::middleware::from_fn(scope_request_id))
            .layer(cors(&settings.admin_cors_origins))
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(TraceLayer::new_for_http().make_span_with(http_request_span))
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(axum::middleware::map_request(
                headers::drop_unacceptable_trace_headers,
            ))
            .layer(axum::middleware::map_response(headers::no_sniff_no_store))
    }

    /// The routes, each with its metrics, the body limit and the request timeout.
    fn routes(&self) -> Router {
        Router::new()
            .route(
                "/api/webhooks/stripe-payouts",
                get(health::stripe_payouts).post(webhooks::stripe_payouts),
            )
            .route(
                "/api/webhooks/stripe-transfers",
                get(health::stripe_transfers).post(webhooks::stripe_transfers),
            )
            .route(
                "/api/webhooks/stripe-subscription",
                get(health::stripe_subscription).post(webhooks::stripe_subscription),
            )
            .route("/api/admin/me", get(admin_auth::me))
            .route("/api/admin/webhooks/stats", get(admin_webhooks::stats))
            .route("/api/admin/webhooks/events", get(admin_webhooks::events))
            .route(
                "/api/admin/webhooks/backfill",
                post(admin_webhooks::backfill),
            )
            .route(
                "/api/admin/reconciliation",
                get(admin_reconciliation::reports),
            )
            .route(
                "/api/admin/reconciliation/run",
                post(admin_reconciliation::run),
            )
            .route(
                "/api/admin/webhooks/events/{event_id}/retry",
                post(admin_webhooks::retry),
            )
            .route("/api/admin/payout-approval", post(admin_approvals::decide))
            .route("/api/admin/payout-approvals", get(admin_approvals::queue))
            .route(
                "/api/admin/payout-approvals/{approval_id}/retry",
                post(admin_approvals::retry),
            )
            .route("/api/admin/payouts", get(admin_payouts::list))
            .route("/api/admin/payouts/{payout_id}", get(admin_payouts::detail))
            .route(
                "/api/admin/payouts/{payout_id}/resume",
                post(admin_payouts::resume),
            )
            .route("/api/admin/alerts", get(admin_alerts::list))
            .route(
                "/api/admin/alerts/{alert_id}/acknowledge",
                post(admin_alerts::acknowledge),
            )
            .route(
                "/api/admin/alerts/{alert_id}/resolve",
                post(admin_alerts::resolve),
            )
            .route("/api/admin/balance", get(admin_alerts::balance))
            .route(
                "/api/admin/users/{user_id}/earnings",
                get(admin_disputes::earnings),
            )
            .route("/api/admin/disputes", get(admin_disputes::disputes))
            .route(
                "/api/admin/payouts/{payout_id}/reverse",
                post(admin_disputes::reverse),
            )
            .route("/api/admin/balance/check", post(admin_alerts::run_check))
            .route(
                "/api/admin/balance/pause",
                get(admin_alerts::pause_state).post(admin_alerts::pause),
            )
            .route("/api/admin/balance/resume", post(admin_alerts::resume))
            .route(
                "/api/cron/platform-balance-check",
                get(cron::platform_balance_check).post(cron::platform_balance_check),
            )
            .route("/admin", get(dashboard::redirect))
            .route("/admin/", get(dashboard::index))
            .route("/admin/{file}", get(dashboard::file))
            .route("/api/openapi.json", get(openapi))
            .route("/healthz", get(health::liveness))
            .route("/livez", get(health::liveness))
            .route("/readyz", get(health::readiness))
            // The budgets on matched routes only (an unknown path or method is answered 404 or
            // 405 at once, before any credential is looked at), inside the metrics so a shed
            // request is counted under its route.
            .route_layer(axum::middleware::from_fn_with_state(
                (
                    budgets::Budgets::from_settings(&self.inner.settings),
                    self.clone(),
                ),
                budgets::enforce,
            ))
            .route_layer(axum::middleware::from_fn(http_metrics))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(self.clone())
            .layer(RequestBodyLimitLayer::new(
                self.inner.settings.gateway_body_limit_bytes,
            ))
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::GATEWAY_TIMEOUT,
                self.inner.settings.gateway_request_timeout,
            ))
    }

    /// Serves until `shutdown`, then lets in-flight requests finish.
    pub async fn serve(self, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
        tokio::spawn(self.admin_auth().clone().keep_jwks_fresh(shutdown.clone()));
        let settings = self.settings();
        let limits = serve::Limits {
            header_read_timeout: settings.gateway_header_read_timeout,
            max_connections: settings.gateway_max_connections,
            max_connections_per_peer: settings.gateway_max_connections_per_peer,
        };
        serve::serve(self.router(), listener, limits, shutdown).await;
        Ok(())
    }
}

fn http_request_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    // OpenTelemetry names an HTTP server span "METHOD /route/template"; the template is only
    // known once routed, so `http_metrics` records it (unmatched requests keep the method).
    let span = tracing::info_span!(
        "http request",
        otel.name = %request.method(),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = tracing::field::Empty,
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        request_id = %request_id,
    );
    payouts_runtime::telemetry::set_parent_from_headers(&span, request.headers());
    span
}

/// Design §10's rate, errors and duration of every HTTP route, by route template (never the
/// raw path, so ids do not make new series): `payouts_http_requests_total{method, route,
/// status}` and `payouts_http_request_duration_seconds{method, route}`.
async fn http_metrics(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let span = tracing::Span::current();
    span.record("otel.name", format!("{method} {route}"));
    span.record("http.route", route.as_str());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    span.record("http.response.status_code", response.status().as_u16());
    metrics::histogram!(
        "payouts_http_request_duration_seconds",
        "method" => method.clone(),
        "route" => route.clone()
    )
    .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        "payouts_http_requests_total",
        "method" => method,
        "route" => route,
        "status" => status
    )
    .increment(1);
    response
}

/// A JSON error body `{"error": "..."}` with a status.
pub(crate) fn error_response(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// A service's gRPC error as the HTTP answer: the status from the shared error table and the
/// service's message (services never put internal causes in messages).
pub(crate) fn grpc_error(status: &tonic::Status) -> Response {
    let kind = ErrorKind::from_grpc_code(status.code());
    if kind == ErrorKind::Internal || kind == ErrorKind::Unavailable {
        tracing::warn!(code = ?status.code(), message = status.message(), "service call failed");
    }
    let message = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    };
    error_response(kind.http_status(), message)
}

/// The `limit` query parameter of an admin list: 1..=500, 50 when absent; 400 otherwise.
#[allow(clippy::result_large_err)] // the error is the answer itself
pub(crate) fn page_limit(value: Option<&str>) -> Result<i32, Response> {
    match value.map(str::parse::<i32>) {
        None => Ok(50),
        Some(Ok(limit)) if (1..=500).contains(&limit) => Ok(limit),
        Some(_) => Err(error_response(
            StatusCode::BAD_REQUEST,
            "limit must be a whole number from 1 to 500",
        )),
    }
}

/// A protobuf timestamp as RFC 3339 (UTC, milliseconds), or null.
pub(crate) fn rfc3339(timestamp: Option<prost_types::Timestamp>) -> Option<String> {
    let timestamp = timestamp?;
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    chrono::DateTime::from_timestamp(timestamp.seconds, nanos)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// The OpenAPI document of the HTTP API, kept in the repository (`gateway/openapi.json`).
pub const OPENAPI: &str = include_str!("../openapi.json");

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "no such route")
}

/// Serves the request inside the scope of its `x-request-id` (set or kept by the outermost
/// layer), so every gRPC call it makes carries the id to the services.
async fn scope_request_id(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    payouts_runtime::telemetry::with_request_id(id, next.run(request)).await
}

async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route",
    )
}

/// Every error answer is JSON (`{"error": ...}`), also those the middleware writes in plain
/// text (413 from the body limit, 504 from the timeout).
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .ok()
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_lowercase());
    let mut json = error_response(status, text);
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    json
}

/// CORS for the admin origins only (`ADMIN_CORS_ORIGINS`); without any, no CORS headers.
fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<axum::http::HeaderValue> = origins
        .iter()
        .filter_map(|origin| axum::http::HeaderValue::from_str(origin).ok())
        .collect();
    if origins.is_empty() {
        return CorsLayer::new();
    }
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
        ])
        .max_age(std::time::Duration::from_secs(600))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use axum::body::Body;
    use tower::ServiceExt as _;

    use super::*;

    fn gateway(env: &[(&str, &str)]) -> Router {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        Gateway::new(Arc::new(Settings::from_env(env).unwrap()))
            .unwrap()
            .router()
    }

    async fn json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// A TCP listener that never answers: a service that hangs.
    fn black_hole() -> (std::net::TcpListener, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        (listener, url)
    }

    #[tokio::test]
    async fn spans_are_named_as_opentelemetry_names_them() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let fields = payouts_runtime::testing::spans::SpanFields::default();
        let _guard =
            tracing::subscriber::set_default(tracing_subscriber::registry().with(fields.clone()));
        let response = gateway(&[])
            .oneshot(
                Request::post("/api/admin/alerts/alert_42/resolve")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let spans = fields.all();
        let http = spans
            .iter()
            .find(|span| {
                span.get("url.path")
                    .is_some_and(|path| path.contains("alert_42"))
            })
            .unwrap_or_else(|| panic!("{spans:?}"));
        assert_eq!(
            http["otel.name"],
            "POST /api/admin/alerts/{alert_id}/resolve"
        );
        assert_eq!(http["http.route"], "/api/admin/alerts/{alert_id}/resolve");
        assert_eq!(http["http.response.status_code"], "503");

        let call =
            http::Request::post("/payouts.limits.v1.PayoutLimitsService/ValidatePayoutLimits")
                .body(())
                .unwrap();
        let _span = payouts_runtime::telemetry::grpc_request_span(&call);
        let spans = fields.all();
        let grpc = spans
            .iter()
            .find(|span| span.get("rpc.system").is_some())
            .unwrap_or_else(|| panic!("{spans:?}"));
        assert_eq!(
            grpc["otel.name"],
            "payouts.limits.v1.PayoutLimitsService/ValidatePayoutLimits"
        );
        assert_eq!(grpc["rpc.service"], "payouts.limits.v1.PayoutLimitsService");
        assert_eq!(grpc["rpc.method"], "ValidatePayoutLimits");
    }

    #[tokio::test]
    async fn every_error_is_json_405_413_and_504_included() {
        let response = gateway(&[])
            .oneshot(
                Request::delete("/api/admin/balance")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            json(response).await["error"],
            "method not allowed on this route"
        );

        let request = Request::post("/api/webhooks/stripe-payouts")
            .header("stripe-signature", well_formed_signature())
            .body(Body::from(vec![b'x'; 2048]))
            .unwrap();
        let response = gateway(&[("GATEWAY_BODY_LIMIT_BYTES", "1024")])
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(json(response).await["error"].as_str().is_some());

        // A service that never answers: the request times out with a JSON 504.
        let (_hole, url) = black_hole();
        let request = Request::get("/readyz").body(Body::empty()).unwrap();
        let response = gateway(&[
            ("GATEWAY_REQUEST_TIMEOUT_SECONDS", "1"),
            ("PAYOUTS_SERVICE_URL", &url),
        ])
        .oneshot(request)
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(json(response).await["error"].as_str().is_some());
    }

    /// A well-formed (not valid) `Stripe-Signature`, with a timestamp of now (one outside the
    /// tolerance is refused before the body is read).
    fn well_formed_signature() -> String {
        format!(
            "t={},v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd",
            chrono::Utc::now().timestamp()
        )
    }

    /// A body that tells `polled` when it is first read, then never ends (a slow client).
    fn endless_body(polled: tokio::sync::oneshot::Sender<()>) -> Body {
        let mut polled = Some(polled);
        Body::from_stream(futures::stream::poll_fn(move |_| {
            if let Some(polled) = polled.take() {
                let _ = polled.send(());
            }
            std::task::Poll::<Option<Result<axum::body::Bytes, std::io::Error>>>::Pending
        }))
    }

    #[tokio::test]
    async fn a_full_webhook_budget_sheds_webhooks_only() {
        let router = gateway(&[
            ("GATEWAY_MAX_CONCURRENT_WEBHOOKS", "1"),
            ("GATEWAY_MAX_CONCURRENT_REQUESTS", "1"),
            (
                "ADMIN_JWT_SECRET",
                "gateway-test-secret-of-32-bytes-or-more",
            ),
            ("CRON_SECRET", "cron-secret-of-at-least-32-bytes-0001"),
        ]);
        // A slow client holds the one webhook slot: its body is being read.
        let (polled, body_read) = tokio::sync::oneshot::channel();
        let slow = Request::post("/api/webhooks/stripe-payouts")
            .header("stripe-signature", well_formed_signature())
            .body(endless_body(polled))
            .unwrap();
        let _slow = tokio::spawn(router.clone().oneshot(slow));
        body_read.await.unwrap();

        let webhook = Request::post("/api/webhooks/stripe-transfers")
            .header("stripe-signature", well_formed_signature())
            .body(Body::from("{}"))
            .unwrap();
        let shed = router.clone().oneshot(webhook).await.unwrap();
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.headers()["retry-after"], "1");
        let message = json(shed).await["error"].as_str().unwrap().to_owned();
        assert!(message.contains("capacity for webhooks"), "{message}");

        // Everyone else is served: health, admin (401 without a token), cron (401 with a
        // wrong one), and the other routes.
        for (path, status) in [
            ("/livez", StatusCode::OK),
            ("/healthz", StatusCode::OK),
            ("/api/admin/balance", StatusCode::UNAUTHORIZED),
            ("/api/cron/platform-balance-check", StatusCode::UNAUTHORIZED),
            ("/api/openapi.json", StatusCode::OK),
        ] {
            let response = router
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), status, "{path}");
            assert!(!response.headers().contains_key("retry-after"), "{path}");
        }
    }

    #[tokio::test]
    async fn health_routes_are_never_shed() {
        // A service that accepts connections and never answers: readiness waits on it.
        let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", hole.local_addr().unwrap());
        let router = gateway(&[
            ("GATEWAY_MAX_CONCURRENT_REQUESTS", "1"),
            ("GATEWAY_MAX_CONCURRENT_WEBHOOKS", "1"),
            ("GATEWAY_MAX_CONCURRENT_ADMIN", "1"),
            ("GATEWAY_MAX_CONCURRENT_CRON", "1"),
            ("PAYOUTS_SERVICE_URL", &url),
        ]);
        let first = tokio::spawn(
            router
                .clone()
                .oneshot(Request::get("/readyz").body(Body::empty()).unwrap()),
        );
        // The first probe is in flight once it has called the silent service.
        let _connection = hole.accept().await.unwrap();
        for path in ["/livez", "/healthz", "/readyz"] {
            let response = router
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert!(!response.headers().contains_key("retry-after"), "{path}");
            let body = json(response).await;
            assert!(
                body["status"].is_string(),
                "{path} answered, not shed: {body}"
            );
        }
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE, "not ready");
        assert_eq!(json(first).await["status"], "not ready");
    }

    #[tokio::test]
    async fn a_webhook_without_a_well_formed_signature_is_refused_before_its_body_is_read() {
        for signature in [None, Some("t=1"), Some("t=1700000000,v1=00")] {
            let (polled, body_read) = tokio::sync::oneshot::channel();
            let mut request = Request::post("/api/webhooks/stripe-payouts");
            if let Some(signature) = signature {
                request = request.header("stripe-signature", signature);
            }
            let response = gateway(&[])
                .oneshot(request.body(endless_body(polled)).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{signature:?}");
            let message = json(response).await["error"].as_str().unwrap().to_owned();
            assert!(message.contains("Stripe-Signature header"), "{message}");
            assert!(
                body_read.await.is_err(),
                "{signature:?}: the body was never read (its sender is dropped unpolled)"
            );
        }
    }

    #[tokio::test]
    async fn a_webhook_body_is_read_up_to_the_limit_only() {
        // Chunked (no Content-Length): the limit is met while reading.
        let chunks = futures::stream::iter(
            (0..4).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b'x'; 512]))),
        );
        let request = Request::post("/api/webhooks/stripe-payouts")
            .header("stripe-signature", well_formed_signature())
            .body(Body::from_stream(chunks))
            .unwrap();
        let response = gateway(&[("GATEWAY_BODY_LIMIT_BYTES", "1024")])
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(json(response).await["error"].as_str().is_some());
    }

    #[tokio::test]
    async fn an_oversized_or_forged_request_id_is_replaced_never_echoed() {
        let answer_id = |sent: String| async move {
            let request = Request::get("/livez")
                .header(REQUEST_ID, sent)
                .body(Body::empty())
                .unwrap();
            let response = gateway(&[]).oneshot(request).await.unwrap();
            response.headers()[REQUEST_ID].to_str().unwrap().to_owned()
        };
        let longest = "r".repeat(payouts_runtime::telemetry::MAX_REQUEST_ID_BYTES);
        assert_eq!(answer_id(longest.clone()).await, longest);
        for refused in [format!("{longest}r"), "forged id\tlevel=error".to_owned()] {
            let answered = answer_id(refused.clone()).await;
            assert_ne!(answered, refused);
            assert_eq!(answered.len(), 36, "a new UUID: {answered}");
        }
    }

    #[tokio::test]
    async fn a_traceparent_not_of_the_w3c_form_is_dropped_with_its_tracestate() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let headers = |traceparents: &[&str], tracestate: &str| {
            let mut request = Request::get("/livez");
            for traceparent in traceparents {
                request = request.header("traceparent", *traceparent);
            }
            request
                .header("tracestate", tracestate)
                .body(Body::empty())
                .unwrap()
        };
        let kept = headers::drop_unacceptable_trace_headers(headers(&[valid], "v=1")).await;
        assert_eq!(kept.headers()["traceparent"], valid);
        assert_eq!(kept.headers()["tracestate"], "v=1");
        let long = format!("{valid}{}", "0".repeat(4096));
        for traceparents in [&[long.as_str()][..], &["garbage"][..], &[valid, valid][..]] {
            let dropped =
                headers::drop_unacceptable_trace_headers(headers(traceparents, "v=1")).await;
            assert!(!dropped.headers().contains_key("traceparent"));
            assert!(!dropped.headers().contains_key("tracestate"));
        }
        let long_state = format!("v={}", "x".repeat(600));
        let trimmed =
            headers::drop_unacceptable_trace_headers(headers(&[valid], &long_state)).await;
        assert_eq!(trimmed.headers()["traceparent"], valid);
        assert!(!trimmed.headers().contains_key("tracestate"));
    }

    #[tokio::test]
    async fn every_answer_says_nosniff_and_api_answers_no_store() {
        let router = gateway(&[]);
        for (request, status) in [
            (Request::get("/livez"), StatusCode::OK),
            (Request::get("/api/openapi.json"), StatusCode::OK),
            (Request::get("/nope"), StatusCode::NOT_FOUND),
            (
                Request::get("/api/admin/balance"),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                Request::delete("/api/admin/balance"),
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            (
                Request::post("/api/webhooks/stripe-payouts"),
                StatusCode::UNAUTHORIZED,
            ),
        ] {
            let response = router
                .clone()
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()["x-content-type-options"], "nosniff");
            assert_eq!(response.headers()["cache-control"], "no-store");
        }
        // The dashboard's static files keep their own caching (revalidated, not stored
        // blindly: they hold no data).
        let page = router
            .oneshot(Request::get("/admin/app.js").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(page.headers()["cache-control"], "no-cache");
        assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    }

    #[tokio::test]
    async fn cors_answers_only_the_configured_admin_origins() {
        let preflight = |origin: &str| {
            Request::builder()
                .method("OPTIONS")
                .uri("/api/admin/balance")
                .header("origin", origin)
                .header("access-control-request-method", "GET")
                .header("access-control-request-headers", "authorization")
                .body(Body::empty())
                .unwrap()
        };
        let configured = &[("ADMIN_CORS_ORIGINS", "https://admin.example.com")];
        let allowed = gateway(configured)
            .oneshot(preflight("https://admin.example.com"))
            .await
            .unwrap();
        assert_eq!(
            allowed.headers()["access-control-allow-origin"],
            "https://admin.example.com"
        );
        for (env, origin) in [
            (&configured[..], "https://evil.example.com"),
            (&[][..], "https://admin.example.com"),
        ] {
            let response = gateway(env).oneshot(preflight(origin)).await.unwrap();
            assert!(
                !response
                    .headers()
                    .contains_key("access-control-allow-origin"),
                "{env:?} {origin}"
            );
        }
    }

    #[tokio::test]
    async fn webhook_endpoints_answer_get_with_their_health() {
        for (path, service) in [
            ("/api/webhooks/stripe-payouts", "stripe-payouts-webhook"),
            ("/api/webhooks/stripe-transfers", "stripe-transfers-webhook"),
            (
                "/api/webhooks/stripe-subscription",
                "stripe-subscription-webhook",
            ),
        ] {
            let request = Request::get(path).body(Body::empty()).unwrap();
            let response = gateway(&[]).oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            let body = json(response).await;
            assert_eq!(body["status"], "ok");
            assert_eq!(body["service"], service);
            let timestamp = body["timestamp"].as_str().unwrap();
            assert!(
                chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
                "{timestamp}"
            );
        }
    }

    #[tokio::test]
    async fn every_response_carries_a_request_id_and_keeps_the_callers() {
        let response = gateway(&[])
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let generated = response
            .headers()
            .get(REQUEST_ID)
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(generated.len(), 36, "a UUID: {generated}");

        let request = Request::get("/healthz")
            .header(REQUEST_ID, "req-from-caller")
            .body(Body::empty())
            .unwrap();
        let response = gateway(&[]).oneshot(request).await.unwrap();
        assert_eq!(
            response.headers().get(REQUEST_ID).unwrap(),
            "req-from-caller"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused_with_413() {
        let request = Request::post("/api/webhooks/stripe-payouts")
            .header("content-length", "11")
            .body(Body::from("01234567890"))
            .unwrap();
        let response = gateway(&[("GATEWAY_BODY_LIMIT_BYTES", "10")])
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn service_errors_map_to_the_shared_table_with_the_services_message() {
        for (code, status) in [
            (tonic::Code::InvalidArgument, StatusCode::BAD_REQUEST),
            (tonic::Code::NotFound, StatusCode::NOT_FOUND),
            (tonic::Code::FailedPrecondition, StatusCode::CONFLICT),
            (tonic::Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
            (tonic::Code::Internal, StatusCode::INTERNAL_SERVER_ERROR),
        ] {
            let response = grpc_error(&tonic::Status::new(code, "what went wrong"));
            assert_eq!(response.status(), status, "{code:?}");
            assert_eq!(json(response).await["error"], "what went wrong");
        }
    }

    #[tokio::test]
    async fn the_openapi_document_is_served_and_names_every_route() {
        let response = gateway(&[])
            .oneshot(
                Request::get("/api/openapi.json")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let document = json(response).await;
        assert_eq!(document["openapi"], "3.1.0");
        let paths: Vec<&str> = document["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for route in [
            "/api/webhooks/stripe-payouts",
            "/api/webhooks/stripe-transfers",
            "/api/webhooks/stripe-subscription",
            "/api/admin/me",
            "/api/admin/webhooks/stats",
            "/api/admin/webhooks/events",
            "/api/admin/webhooks/events/{eventId}/retry",
            "/api/admin/payout-approval",
            "/api/admin/payout-approvals",
            "/api/admin/payout-approvals/{approvalId}/retry",
            "/api/admin/payouts/{payoutId}/resume",
            "/api/cron/platform-balance-check",
            "/api/admin/alerts",
            "/api/admin/alerts/{alertId}/acknowledge",
            "/api/admin/alerts/{alertId}/resolve",
            "/api/admin/balance",
            "/api/admin/balance/pause",
            "/api/admin/balance/resume",
            "/api/admin/users/{userId}/earnings",
            "/api/admin/disputes",
            "/api/admin/payouts/{payoutId}/reverse",
            "/api/admin/webhooks/backfill",
            "/api/admin/reconciliation",
            "/api/admin/reconciliation/run",
            "/api/admin/payouts",
            "/api/admin/payouts/{payoutId}",
            "/api/admin/balance/check",
            "/api/openapi.json",
        ] {
            assert!(paths.contains(&route), "{route} is not documented");
        }
        assert_eq!(
            paths.len(),
            28,
            "every documented path is a route: {paths:?}"
        );
    }

    #[tokio::test]
    async fn the_dashboard_is_served_from_the_binary_under_a_strict_policy() {
        let get = |path: &'static str| async move {
            gateway(&[])
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap()
        };
        for (path, content_type, contains) in [
            (
                "/admin/",
                "text/html; charset=utf-8",
                "<script src=\"/admin/app.js\" defer>",
            ),
            (
                "/admin/app.js",
                "text/javascript; charset=utf-8",
                "sessionStorage",
            ),
            ("/admin/app.css", "text/css; charset=utf-8", ".card"),
        ] {
            let response = get(path).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let headers = response.headers().clone();
            assert_eq!(headers["content-type"], content_type, "{path}");
            let policy = headers["content-security-policy"].to_str().unwrap();
            assert!(
                policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'")
            );
            assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"));
            assert_eq!(headers["x-content-type-options"], "nosniff");
            assert_eq!(headers["x-frame-options"], "DENY");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            assert!(String::from_utf8_lossy(&body).contains(contains), "{path}");
        }
        // No inline script in the page: the policy would block it.
        let page = axum::body::to_bytes(get("/admin/").await.into_body(), usize::MAX)
            .await
            .unwrap();
        let page = String::from_utf8_lossy(&page);
        assert_eq!(page.matches("<script").count(), 1);
        assert!(
            !page.contains(" on") || !page.contains("onclick="),
            "no inline handlers"
        );
        let missing = get("/admin/secrets.txt").await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let bare = get("/admin").await;
        assert_eq!(bare.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(bare.headers()["location"], "/admin/");
    }

    #[tokio::test]
    async fn the_cron_endpoint_needs_a_configured_token_and_the_right_one() {
        let call = |env: &'static [(&'static str, &'static str)], auth: Option<&'static str>| async move {
            let mut request = Request::get("/api/cron/platform-balance-check");
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            let response = gateway(env)
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = response.status();
            (
                status,
                json(response).await["error"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        };
        let (status, message) = call(&[], Some("Bearer anything")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(message.contains("CRON_SECRET"), "{message}");
        let both: &[(&str, &str)] = &[
            ("CRON_SECRET", "cron-secret-of-at-least-32-bytes-0001"),
            ("CRON_API_KEY", "cron-api-key-of-at-least-32-bytes-0002"),
        ];
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("cron-secret-of-at-least-32-bytes-0001"),
            Some("Basic cron-secret-of-at-least-32-bytes-0001"),
            Some("Bearer "),
        ] {
            let (status, message) = call(both, auth).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
            assert!(message.contains("Bearer"), "{message}");
        }
    }

    #[tokio::test]
    async fn earnings_disputes_and_reversals_need_an_admin_and_a_valid_body() {
        let env = &[(
            "ADMIN_JWT_SECRET",
            "gateway-test-secret-of-32-bytes-or-more",
        )];
        for (method, path) in [
            ("GET", "/api/admin/users/u1/earnings"),
            ("GET", "/api/admin/disputes"),
            ("POST", "/api/admin/payouts/p1/reverse"),
        ] {
            let request = Request::builder().method(method).uri(path);
            let response = gateway(env)
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"sub": "admin-1", "admin": true, "exp": chrono::Utc::now().timestamp() + 60}),
            &jsonwebtoken::EncodingKey::from_secret(b"gateway-test-secret-of-32-bytes-or-more"),
        )
        .unwrap();
        for (method, path, body, message) in [
            (
                "GET",
                "/api/admin/disputes?status=pending",
                "",
                "status must be open, won, lost or all",
            ),
            (
                "GET",
                "/api/admin/users/u1/earnings?limit=0",
                "",
                "limit must be",
            ),
            (
                "POST",
                "/api/admin/payouts/p1/reverse",
                "{}",
                "invalid body",
            ),
            (
                "POST",
                "/api/admin/payouts/p1/reverse",
                r#"{"amountCents":"5","notes":"x"}"#,
                "invalid body",
            ),
            (
                "POST",
                "/api/admin/payouts/p1/reverse",
                r#"{"amountCents":5,"notes":"x"}"#,
                "the Idempotency-Key header is required",
            ),
        ] {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            let response = gateway(env).oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path} {body}");
            let error = json(response).await["error"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(error.contains(message), "{error}");
        }
    }

    #[tokio::test]
    async fn a_decision_with_a_bad_body_is_400_before_any_service_call() {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &serde_json::json!({"sub": "admin-1", "admin": true, "exp": chrono::Utc::now().timestamp() + 60}),
            &jsonwebtoken::EncodingKey::from_secret(b"gateway-test-secret-of-32-bytes-or-more"),
        )
        .unwrap();
        for (body, message) in [
            ("not json", "invalid body"),
            ("{}", "approvalId is required"),
            (r#"{"approvalId":"a","action":"maybe"}"#, "action must be"),
        ] {
            let request = Request::post("/api/admin/payout-approval")
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            let response = gateway(&[(
                "ADMIN_JWT_SECRET",
                "gateway-test-secret-of-32-bytes-or-more",
            )])
            .oneshot(request)
            .await
            .unwrap();
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
            let error = json(response).await["error"].as_str().unwrap().to_owned();
            assert!(error.starts_with(message), "{body}: {error}");
        }
    }

    #[tokio::test]
    async fn unknown_routes_are_a_json_404() {
        let response = gateway(&[])
            .oneshot(Request::get("/nope").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(json(response).await["error"], "no such route");
    }
}
