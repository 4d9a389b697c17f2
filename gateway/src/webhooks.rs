//! `POST /api/webhooks/stripe-payouts`, `/api/webhooks/stripe-transfers` and
//! `/api/webhooks/stripe-subscription`: hand the raw body and the Stripe-Signature header to
//! the webhooks service and answer with its verdict (which events each endpoint takes is the
//! webhooks service's rule: an event that cannot arrive there is its 400).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Json, Response};
use payouts_proto::webhooks::v1 as pb;

use crate::{Gateway, grpc_error};

async fn ingest(
    gateway: &Gateway,
    endpoint: pb::WebhookEndpoint,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let signature_header = headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let request = pb::IngestEventRequest {
        endpoint: endpoint.into(),
        payload: body.to_vec(),
        signature_header,
    };
    match gateway.webhooks().ingest_event(request).await {
        Ok(response) => match response.into_inner().outcome() {
            pb::IngestOutcome::Duplicate => {
                Json(serde_json::json!({ "received": true, "duplicate": true })).into_response()
            }
            _ => Json(serde_json::json!({ "received": true })).into_response(),
        },
        Err(status) => grpc_error(&status),
    }
}

pub(crate) async fn stripe_payouts(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    ingest(&gateway, pb::WebhookEndpoint::StripePayouts, &headers, body).await
}

pub(crate) async fn stripe_subscription(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    ingest(
        &gateway,
        pb::WebhookEndpoint::StripeSubscription,
        &headers,
        body,
    )
    .await
}

pub(crate) async fn stripe_transfers(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    ingest(
        &gateway,
        pb::WebhookEndpoint::StripeTransfers,
        &headers,
        body,
    )
    .await
}
