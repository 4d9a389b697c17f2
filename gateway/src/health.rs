//! `GET` on the webhook endpoints answers a health document (design §9), so Stripe dashboard
//! checks and uptime monitors see the endpoint alive.

use axum::response::Json;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub(crate) struct EndpointHealth {
    status: &'static str,
    service: &'static str,
    timestamp: String,
}

fn endpoint_health(service: &'static str) -> Json<EndpointHealth> {
    Json(EndpointHealth {
        status: "ok",
        service,
        timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    })
}

pub(crate) async fn stripe_payouts() -> Json<EndpointHealth> {
    endpoint_health("stripe-payouts-webhook")
}

pub(crate) async fn stripe_transfers() -> Json<EndpointHealth> {
    endpoint_health("stripe-transfers-webhook")
}

pub(crate) async fn stripe_subscription() -> Json<EndpointHealth> {
    endpoint_health("stripe-subscription-webhook")
}

/// Liveness for Kubernetes (`/livez`, and `/healthz`): the process answers HTTP.
pub(crate) async fn liveness() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// How long readiness waits for the services' health answers.
const READINESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Readiness for Kubernetes (`/readyz`): 200 when every service the gateway calls reports
/// SERVING on its gRPC health (services in this process count as ready: they are this
/// process), 503 naming those that do not.
pub(crate) async fn readiness(
    axum::extract::State(gateway): axum::extract::State<crate::Gateway>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    let checks = gateway
        .health_clients()
        .into_iter()
        .map(|(service, client)| async move {
            let status = match client {
                None => "SERVING (in process)".to_owned(),
                Some(mut client) => {
                    let call = client.check(HealthCheckRequest {
                        service: service.grpc_name().to_owned(),
                    });
                    match tokio::time::timeout(READINESS_TIMEOUT, call).await {
                        Ok(Ok(answer)) => answer.into_inner().status().as_str_name().to_owned(),
                        Ok(Err(status)) => format!("unreachable: {}", status.code()),
                        Err(_) => "no answer in time".to_owned(),
                    }
                }
            };
            (service, status)
        });
    let statuses = futures::future::join_all(checks).await;
    let ready = statuses.iter().all(|(_, status)| {
        status == ServingStatus::Serving.as_str_name() || status.starts_with("SERVING ")
    });
    let services: serde_json::Map<String, serde_json::Value> = statuses
        .into_iter()
        .map(|(service, status)| (service.as_str().to_owned(), serde_json::json!(status)))
        .collect();
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({
            "status": if ready { "ready" } else { "not ready" },
            "services": services,
        })),
    )
        .into_response()
}
