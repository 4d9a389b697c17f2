//! Admin REST over the webhook inbox: statistics, event lists, retry of failed events.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use payouts_proto::webhooks::v1 as pb;
use serde::Deserialize;

use crate::admin_auth::Admin;
use crate::body::JsonBody;
use crate::{Gateway, error_response, grpc_error, page_limit, rfc3339};

/// `GET /api/admin/webhooks/stats`: design §4 statistics.
pub(crate) async fn stats(State(gateway): State<Gateway>, _admin: Admin) -> Response {
    match gateway
        .webhooks()
        .get_statistics(pb::GetStatisticsRequest {})
        .await
    {
        Ok(response) => {
            let s = response.into_inner();
            Json(serde_json::json!({
                "total": s.total,
                "processing": s.processing,
                "completed": s.completed,
                "failed": s.failed,
                "backfilled": s.backfilled,
                "waiting": s.waiting,
                "waitingFor": s.waiting_for,
                "alertsOwed": s.alerts_owed,
            }))
            .into_response()
        }
        Err(status) => grpc_error(&status),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventsQuery {
    status: Option<String>,
    limit: Option<String>,
    page_token: Option<String>,
}

/// `GET /api/admin/webhooks/events?status=failed&limit=50&pageToken=`: newest first.
pub(crate) async fn events(
    State(gateway): State<Gateway>,
    _admin: Admin,
    Query(query): Query<EventsQuery>,
) -> Response {
    let status = match query.status.as_deref() {
        None => pb::EventStatus::Unspecified,
        Some("processing") => pb::EventStatus::Processing,
        Some("completed") => pb::EventStatus::Completed,
        Some("failed") => pb::EventStatus::Failed,
        Some(other) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("status must be processing, completed or failed, got {other:?}"),
            );
        }
    };
    let limit = match page_limit(query.limit.as_deref()) {
        Ok(limit) => limit,
        Err(response) => return response,
    };
    let request = pb::ListEventsRequest {
        status: status.into(),
        page_size: limit,
        page_token: query.page_token.unwrap_or_default(),
    };
    match gateway.webhooks().list_events(request).await {
        Ok(response) => {
            let page = response.into_inner();
            let events: Vec<_> = page.events.into_iter().map(event_json).collect();
            let next = Some(page.next_page_token).filter(|token| !token.is_empty());
            Json(serde_json::json!({ "events": events, "nextPageToken": next })).into_response()
        }
        Err(status) => grpc_error(&status),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct RetryQuery {
    endpoint: Option<String>,
}

/// `POST /api/admin/webhooks/events/{id}/retry`: makes a failed event due again.
pub(crate) async fn retry(
    State(gateway): State<Gateway>,
    admin: Admin,
    Path(event_id): Path<String>,
    Query(query): Query<RetryQuery>,
) -> Response {
    let endpoint = match query.endpoint.as_deref() {
        None => pb::WebhookEndpoint::Unspecified,
        Some("stripe-payouts") => pb::WebhookEndpoint::StripePayouts,
        Some("stripe-subscription") => pb::WebhookEndpoint::StripeSubscription,
        Some("stripe-transfers") => pb::WebhookEndpoint::StripeTransfers,
        Some(other) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "endpoint must be stripe-payouts, stripe-transfers or stripe-subscription, got {other:?}"
                ),
            );
        }
    };
    let request = pb::RetryEventRequest {
        endpoint: endpoint.into(),
        event_id,
        requested_by: format!("admin:{}", admin.subject),
    };
    match gateway.webhooks().retry_event(request).await {
        Ok(response) => {
            let events: Vec<_> = response
                .into_inner()
                .events
                .into_iter()
                .map(event_json)
                .collect();
            Json(serde_json::json!({ "success": true, "retried": events })).into_response()
        }
        Err(status) => grpc_error(&status),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackfillBody {
    since: String,
}

/// `POST /api/admin/webhooks/backfill` `{"since": RFC 3339}`: stores the events Stripe never
/// delivered since then (at most 30 days back), as the periodic backfill does.
pub(crate) async fn backfill(
    State(gateway): State<Gateway>,
    admin: Admin,
    JsonBody(body): JsonBody<BackfillBody>,
) -> Response {
    let since = match chrono::DateTime::parse_from_rfc3339(&body.since) {
        Ok(since) => since.with_timezone(&chrono::Utc),
        Err(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("since must be an RFC 3339 time, got {:?}", body.since),
            );
        }
    };
    let request = pb::BackfillEventsRequest {
        since: Some(payouts_runtime::convert::timestamp(since)),
        requested_by: format!("admin:{}", admin.subject),
    };
    match gateway.webhooks().backfill_events(request).await {
        Ok(response) => {
            let r = response.into_inner();
            Json(serde_json::json!({
                "success": true,
                "since": rfc3339(r.since),
                "until": rfc3339(r.until),
                "listed": r.listed,
                "stored": r.stored,
                "duplicates": r.duplicates,
                "accounts": r.accounts,
            }))
            .into_response()
        }
        Err(status) => grpc_error(&status),
    }
}

/// An inbox event as JSON, with the field names of design §4.
fn event_json(e: pb::WebhookEvent) -> serde_json::Value {
    let endpoint = match e.endpoint() {
        pb::WebhookEndpoint::StripePayouts => "stripe-payouts",
        pb::WebhookEndpoint::StripeSubscription => "stripe-subscription",
        pb::WebhookEndpoint::StripeTransfers => "stripe-transfers",
        pb::WebhookEndpoint::Unspecified => "",
    };
    let status = match e.status() {
        pb::EventStatus::Processing => "processing",
        pb::EventStatus::Completed => "completed",
        pb::EventStatus::Failed => "failed",
        pb::EventStatus::Unspecified => "",
    };
    serde_json::json!({
        "eventId": e.event_id,
        "eventType": e.event_type,
        "webhookEndpoint": endpoint,
        "status": status,
        "processedAt": rfc3339(e.processed_at),
        "completedAt": rfc3339(e.completed_at),
        "failedAt": rfc3339(e.failed_at),
        "nextAttemptAt": rfc3339(e.next_attempt_at),
        "error": Some(e.error).filter(|error| !error.is_empty()),
        "outcome": Some(e.outcome).filter(|outcome| !outcome.is_empty()),
        "attempts": e.attempts,
        "deliveries": e.deliveries,
        "source": e.source,
        "waitingFor": Some(e.waiting_for).filter(|owner| !owner.is_empty()),
        "waitingSince": rfc3339(e.waiting_since),
        "refusals": e.refusals,
        "alertOwed": e.alert_owed,
        "account": Some(e.account).filter(|account| !account.is_empty()),
        "livemode": e.livemode,
        "metadata": {
            "apiVersion": Some(e.api_version).filter(|version| !version.is_empty()),
            "created": e.created,
        },
    })
}
