//! Admin REST over payouts: list them, one with its audit log, resume a parked one.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use payouts_proto::payouts::v1 as pb;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin_auth::Admin;
use crate::{Gateway, error_response, grpc_error, page_limit, rfc3339};

/// Audit entries shown with a payout at most (a payout's trail is a handful of entries).
const AUDIT_ENTRIES: i32 = 500;

/// A payout as admins see it.
pub(crate) fn payout_json(p: pb::Payout) -> Value {
    let amount = p.amount.clone().unwrap_or_default();
    let flags: Vec<&str> = p
        .flags()
        .map(|flag| flag.as_str_name().trim_start_matches("PAYOUT_FLAG_"))
        .collect();
    let text = |value: String| Some(value).filter(|value| !value.is_empty());
    json!({
        "id": p.id,
        "userId": p.user_id,
        "amountCents": amount.cents,
        "currency": amount.currency,
        "status": payout_status(p.status()),
        "stripeTransferId": text(p.stripe_transfer_id.clone()),
        "stripePayoutId": text(p.stripe_payout_id.clone()),
        "approvalRequired": p.approval_required,
        "retryCount": p.retry_count,
        "nextRetryAt": rfc3339(p.next_retry_at),
        "failureCode": text(p.failure_code.clone()),
        "failureReason": text(p.failure_reason.clone()),
        "flags": flags,
        "amountReversedCents": p.amount_reversed.as_ref().map_or(0, |m| m.cents),
        "requestedAt": rfc3339(p.requested_at),
        "completedAt": rfc3339(p.completed_at),
        "webhookProcessedAt": rfc3339(p.webhook_processed_at),
        "outcomeUnknown": p.outcome_unknown,
        "parked": p.parked,
        "reversalIntents": p.reversal_intents.into_iter().map(reversal_intent_json).collect::<Vec<_>>(),
    })
}

/// An admin's reversal intent as admins see it.
pub(crate) fn reversal_intent_json(i: pb::ReversalIntent) -> Value {
    let state = match i.state() {
        pb::ReversalIntentState::Pending => "pending",
        pb::ReversalIntentState::Unknown => "unknown",
        pb::ReversalIntentState::Succeeded => "succeeded",
        pb::ReversalIntentState::Refused => "refused",
        pb::ReversalIntentState::Unspecified => "",
    };
    let text = |value: String| Some(value).filter(|value| !value.is_empty());
    json!({
        "id": i.id,
        "idempotencyKey": i.client_request_id,
        "requestedBy": i.requested_by,
        "amountCents": i.amount.as_ref().map_or(0, |m| m.cents),
        "notes": i.notes,
        "transferId": i.transfer_id,
        "createdAt": rfc3339(i.created_at),
        "state": state,
        "reversalId": text(i.reversal_id),
        "detail": text(i.detail),
    })
}

fn audit_json(e: pb::AuditEntry) -> Value {
    let from = e.from_status();
    json!({
        "id": e.id,
        "eventType": e.event_type,
        "fromStatus": Some(payout_status(from)).filter(|status| !status.is_empty()),
        "toStatus": payout_status(e.to_status()),
        "reason": e.reason,
        "actor": e.actor.map(|actor| actor.id),
        "stripeEventId": Some(e.stripe_event_id).filter(|id| !id.is_empty()),
        "transferId": Some(e.transfer_id).filter(|id| !id.is_empty()),
        "amountCents": e.amount.map_or(0, |m| m.cents),
        "timestamp": rfc3339(e.timestamp),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PayoutsQuery {
    status: Option<String>,
    user_id: Option<String>,
    limit: Option<String>,
    page_token: Option<String>,
}

/// `GET /api/admin/payouts?status=&userId=&limit=&pageToken=`: newest first, every user's
/// unless `userId` names one.
pub(crate) async fn list(
    State(gateway): State<Gateway>,
    _admin: Admin,
    Query(query): Query<PayoutsQuery>,
) -> Response {
    let status = match query.status.as_deref() {
        None => pb::PayoutStatus::Unspecified,
        Some(text) => match pb::PayoutStatus::from_str_name(&format!(
            "PAYOUT_STATUS_{}",
            text.to_ascii_uppercase()
        )) {
            Some(status)
                if status != pb::PayoutStatus::Unspecified
                    && status != pb::PayoutStatus::Admitting
                    && text == payout_status(status) =>
            {
                status
            }
            _ => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "status must be pending_approval, pending, processing, completed, failed or reversed, got {text:?}"
                    ),
                );
            }
        },
    };
    let limit = match page_limit(query.limit.as_deref()) {
        Ok(limit) => limit,
        Err(response) => return response,
    };
    if query
        .user_id
        .as_deref()
        .is_some_and(|user| user.trim().is_empty())
    {
        return error_response(StatusCode::BAD_REQUEST, "userId must not be empty");
    }
    let request = pb::ListPayoutsRequest {
        user_id: query.user_id.unwrap_or_default(),
        status: status.into(),
        page_size: limit,
        page_token: query.page_token.unwrap_or_default(),
    };
    match gateway.payouts().list_payouts(request).await {
        Ok(response) => {
            let page = response.into_inner();
            let payouts: Vec<Value> = page.payouts.into_iter().map(payout_json).collect();
            let next = Some(page.next_page_token).filter(|token| !token.is_empty());
            Json(json!({ "payouts": payouts, "nextPageToken": next })).into_response()
        }
        Err(status) => grpc_error(&status),
    }
}

/// `GET /api/admin/payouts/{payoutId}`: the payout and its audit log, oldest first.
pub(crate) async fn detail(
    State(gateway): State<Gateway>,
    _admin: Admin,
    Path(payout_id): Path<String>,
) -> Response {
    let payout = match gateway
        .payouts()
        .get_payout(pb::GetPayoutRequest {
            payout_id: payout_id.clone(),
        })
        .await
    {
        Ok(response) => response.into_inner().payout.unwrap_or_default(),
        Err(status) => return grpc_error(&status),
    };
    let audit = match gateway
        .payouts()
        .list_audit_log(pb::ListAuditLogRequest {
            payout_id,
            page_size: AUDIT_ENTRIES,
            page_token: String::new(),
        })
        .await
    {
        Ok(response) => response.into_inner().entries,
        Err(status) => return grpc_error(&status),
    };
    Json(json!({
        "payout": payout_json(payout),
        "auditLog": audit.into_iter().map(audit_json).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// `POST /api/admin/payouts/{payoutId}/resume`: a payout whose admission or approval
/// hand-off failed too often (and raised a critical alert) is due again.
pub(crate) async fn resume(
    State(gateway): State<Gateway>,
    admin: Admin,
    Path(payout_id): Path<String>,
) -> Response {
    let request = pb::ResumePayoutRequest {
        payout_id,
        requested_by: format!("admin:{}", admin.subject),
    };
    match gateway.payouts().resume_payout(request).await {
        Ok(response) => {
            let payout = response.into_inner().payout.unwrap_or_default();
            Json(serde_json::json!({
                "success": true,
                "payoutId": payout.id,
                "status": payout_status(payout.status()),
                "parked": payout.parked,
            }))
            .into_response()
        }
        Err(status) => grpc_error(&status),
    }
}

pub(crate) fn payout_status(status: pb::PayoutStatus) -> &'static str {
    match status {
        pb::PayoutStatus::Admitting => "admitting",
        pb::PayoutStatus::PendingApproval => "pending_approval",
        pb::PayoutStatus::Pending => "pending",
        pb::PayoutStatus::Processing => "processing",
        pb::PayoutStatus::Completed => "completed",
        pb::PayoutStatus::Failed => "failed",
        pb::PayoutStatus::Reversed => "reversed",
        pb::PayoutStatus::Unspecified => "",
    }
}
