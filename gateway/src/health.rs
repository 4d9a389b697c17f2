//! `GET` on the webhook endpoints answers a health document (spec §9), so Stripe dashboard
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

pub(crate) async fn stripe_subscription() -> Json<EndpointHealth> {
    endpoint_health("stripe-subscription-webhook")
}

/// Liveness for Kubernetes: the process answers HTTP.
pub(crate) async fn liveness() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}
