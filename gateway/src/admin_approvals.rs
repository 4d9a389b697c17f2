//! The approval workflow for admins (design §7): decide, and the queue.

use crate::body::JsonBody;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use payouts_proto::approvals::v1 as pb;
use payouts_proto::limits::v1::PayoutFlag;
use serde::Deserialize;

use payouts_runtime::convert::{cents as money_cents, usd};

use crate::admin_auth::Admin;
use crate::{Gateway, error_response, grpc_error, page_limit, rfc3339};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DecisionBody {
    approval_id: Option<String>,
    action: Option<String>,
    notes: Option<String>,
}

/// `POST /api/admin/payout-approval` with `{approvalId, action: "approve"|"reject", notes}`.
pub(crate) async fn decide(
    State(gateway): State<Gateway>,
    admin: Admin,
    JsonBody(body): JsonBody<DecisionBody>,
) -> Response {
    let Some(approval_id) = body.approval_id.filter(|id| !id.trim().is_empty()) else {
        return error_response(StatusCode::BAD_REQUEST, "approvalId is required");
    };
    let action = match body.action.as_deref() {
        Some("approve") => pb::ApprovalAction::Approve,
        Some("reject") => pb::ApprovalAction::Reject,
        _ => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "action must be \"approve\" or \"reject\"",
            );
        }
    };
    let request = pb::DecideApprovalRequest {
        approval_id: approval_id.clone(),
        action: action.into(),
        reviewer: admin.subject,
        notes: body.notes.unwrap_or_default(),
    };
    match gateway.approvals().decide_approval(request).await {
        Ok(response) => {
            let decided = response.into_inner();
            let mut answer = serde_json::json!({ "success": true, "message": decided.message });
            if action == pb::ApprovalAction::Approve {
                answer["transferId"] =
                    serde_json::json!(Some(decided.transfer_id).filter(|id| !id.is_empty()));
            }
            // The approval as it now stands: under dual control a first approval leaves it
            // "pending" with 1 of 2 approvals.
            answer["approval"] = serde_json::json!(decided.approval.map(approval_json));
            Json(answer).into_response()
        }
        Err(status) if status.code() == tonic::Code::Aborted => {
            // A decided approval: 409 with its current state.
            let current = gateway
                .approvals()
                .get_approval(pb::GetApprovalRequest { approval_id })
                .await
                .ok()
                .and_then(|response| response.into_inner().approval)
                .map(approval_json);
            let body = serde_json::json!({ "error": status.message(), "approval": current });
            (StatusCode::CONFLICT, Json(body)).into_response()
        }
        Err(status) => grpc_error(&status),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueueQuery {
    status: Option<String>,
    min_amount: Option<String>,
    max_amount: Option<String>,
    flag: Option<String>,
    limit: Option<String>,
    page_token: Option<String>,
}

/// A positive amount in cents from the query; the message names the parameter.
fn cents(name: &str, value: Option<&str>) -> Result<i64, String> {
    match value {
        None => Ok(0),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|cents| (1..=payouts_runtime::Money::MAX_CENTS).contains(cents))
            .ok_or_else(|| {
                format!(
                    "{name} must be a whole number of cents from 1 to {}",
                    payouts_runtime::Money::MAX_CENTS
                )
            }),
    }
}

/// `GET /api/admin/payout-approvals?status=pending&minAmount=&maxAmount=&flag=&limit=&pageToken=`
pub(crate) async fn queue(
    State(gateway): State<Gateway>,
    _admin: Admin,
    Query(query): Query<QueueQuery>,
) -> Response {
    let status = match query.status.as_deref() {
        None | Some("pending") => pb::ApprovalStatus::Pending,
        Some("approved") => pb::ApprovalStatus::Approved,
        Some("rejected") => pb::ApprovalStatus::Rejected,
        Some("all") => pb::ApprovalStatus::Unspecified,
        Some(other) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("status must be pending, approved, rejected or all, got {other:?}"),
            );
        }
    };
    let (min, max) = match (
        cents("minAmount", query.min_amount.as_deref()),
        cents("maxAmount", query.max_amount.as_deref()),
    ) {
        (Ok(min), Ok(max)) => (min, max),
        (Err(message), _) | (_, Err(message)) => {
            return error_response(StatusCode::BAD_REQUEST, message);
        }
    };
    let flag = match query.flag.as_deref() {
        None => PayoutFlag::Unspecified,
        Some(name) => match PayoutFlag::from_str_name(&format!("PAYOUT_FLAG_{name}")) {
            Some(flag) => flag,
            None => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    format!("flag {name:?} is not a payout flag"),
                );
            }
        },
    };
    let page_size = match page_limit(query.limit.as_deref()) {
        Ok(limit) => limit,
        Err(response) => return response,
    };
    let request = pb::ListApprovalsRequest {
        status: status.into(),
        min_amount: (min > 0).then(|| usd(min)),
        max_amount: (max > 0).then(|| usd(max)),
        flag: flag.into(),
        page_size,
        page_token: query.page_token.unwrap_or_default(),
    };
    match gateway.approvals().list_approvals(request).await {
        Ok(response) => {
            let list = response.into_inner();
            let approvals: Vec<_> = list.approvals.into_iter().map(approval_json).collect();
            let next = Some(list.next_page_token).filter(|token| !token.is_empty());
            Json(serde_json::json!({ "approvals": approvals, "nextPageToken": next }))
                .into_response()
        }
        Err(status) => grpc_error(&status),
    }
}

/// A payoutApprovalQueue document as JSON (design §7), with the user context panel.
fn approval_json(a: pb::Approval) -> serde_json::Value {
    let status = match a.status() {
        pb::ApprovalStatus::Pending => "pending",
        pb::ApprovalStatus::Approved => "approved",
        pb::ApprovalStatus::Rejected => "rejected",
        pb::ApprovalStatus::Unspecified => "",
    };
    let flags: Vec<&str> = a
        .flags()
        .map(|flag| flag.as_str_name().trim_start_matches("PAYOUT_FLAG_"))
        .collect();
    let metadata = a.metadata.unwrap_or_default();
    let context = a.user_context.unwrap_or_default();
    let amount = a.amount.unwrap_or_default();
    serde_json::json!({
        "id": a.id,
        "payoutId": a.payout_id,
        "userId": a.user_id,
        "amountCents": amount.cents,
        "currency": amount.currency,
        "requestedAt": rfc3339(a.requested_at),
        "status": status,
        "reason": a.reason,
        "flags": flags,
        "metadata": {
            "isNewAccount": metadata.is_new_account,
            "accountAgeDays": metadata.account_age_days,
            "dailyPayoutCount": metadata.daily_payout_count,
            "dailyPayoutAmount": money_cents(metadata.daily_payout_amount.as_ref()),
            "monthlyPayoutAmount": money_cents(metadata.monthly_payout_amount.as_ref()),
        },
        "userContext": {
            "accountAgeDays": context.account_age_days,
            "lifetimeEarnings": money_cents(context.lifetime_earnings.as_ref()),
            "completedPayoutCount": context.completed_payout_count,
            "completedPayoutAmount": money_cents(context.completed_payout_amount.as_ref()),
            "recentRefundCount": context.recent_refund_count,
            "recentDisputeCount": context.recent_dispute_count,
        },
        "reviewedAt": rfc3339(a.reviewed_at),
        "reviewedBy": Some(a.reviewed_by).filter(|by| !by.is_empty()),
        "reviewNotes": Some(a.review_notes).filter(|notes| !notes.is_empty()),
        "createdAt": rfc3339(a.created_at),
        "applied": a.applied,
        "parked": a.parked,
        "approvalsRequired": a.approvals_required.max(1),
        "approvals": a.approvals.into_iter().map(|approval| serde_json::json!({
            "reviewer": approval.reviewer,
            "approvedAt": rfc3339(approval.approved_at),
            "notes": Some(approval.notes).filter(|notes| !notes.is_empty()),
        })).collect::<Vec<_>>(),
    })
}

/// `POST /api/admin/payout-approvals/{approvalId}/retry`: a decision the payouts service
/// refused to carry out too often (parked, with a critical alert) is tried again.
pub(crate) async fn retry(
    State(gateway): State<Gateway>,
    admin: Admin,
    Path(approval_id): Path<String>,
) -> Response {
    let request = pb::RetryDecisionRequest {
        approval_id,
        requested_by: format!("admin:{}", admin.subject),
    };
    match gateway.approvals().retry_decision(request).await {
        Ok(response) => {
            let approval = response.into_inner().approval.map(approval_json);
            Json(serde_json::json!({ "success": true, "approval": approval })).into_response()
        }
        Err(status) => grpc_error(&status),
    }
}
