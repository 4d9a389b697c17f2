//! Admin REST over earnings and disputes: a creator's earnings with their debt, the
//! disputes, and taking paid money back (a transfer reversal).

use crate::body::JsonBody;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use payouts_proto::disputes::v1 as pb;
use payouts_proto::limits::v1 as limits_pb;
use payouts_proto::payouts::v1 as payouts_pb;
use payouts_runtime::convert::cents;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin_auth::Admin;
use crate::{Gateway, error_response, grpc_error, page_limit, rfc3339};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PageQuery {
    limit: Option<String>,
    page_token: Option<String>,
    status: Option<String>,
}

fn allocation_status(status: pb::AllocationStatus) -> &'static str {
    match status {
        pb::AllocationStatus::Active => "active",
        pb::AllocationStatus::AtRisk => "at_risk",
        pb::AllocationStatus::Disputed => "disputed",
        pb::AllocationStatus::Refunded => "refunded",
        pb::AllocationStatus::Unspecified => "",
    }
}

fn allocation_json(a: pb::Allocation) -> Value {
    let status = allocation_status(a.status());
    let empty = |text: String| (!text.is_empty()).then_some(text);
    json!({
        "id": a.id,
        "userId": a.user_id,
        "chargeId": a.charge_id,
        "payerId": empty(a.payer_id),
        "status": status,
        "currency": a.amount.as_ref().map(|m| m.currency.clone()),
        "originalCents": cents(a.original_amount.as_ref()),
        "amountCents": cents(a.amount.as_ref()),
        "refundedAmount": cents(a.refunded.as_ref()),
        "frozenAmount": cents(a.frozen.as_ref()),
        "disputeId": empty(a.dispute_id),
        "disputeOutcome": empty(a.dispute_outcome),
        "refundedAt": rfc3339(a.refunded_at),
        "disputedAt": rfc3339(a.disputed_at),
        "disputeResolvedAt": rfc3339(a.dispute_resolved_at),
        "createdAt": rfc3339(a.created_at),
        "updatedAt": rfc3339(a.updated_at),
        "audit": a.audit.into_iter().map(|entry| json!({
            "at": rfc3339(entry.at),
            "eventId": entry.event_id,
            "from": allocation_status(entry.from_status()),
            "to": allocation_status(entry.to_status()),
            "fromCents": entry.from_cents,
            "toCents": entry.to_cents,
            "reason": entry.reason,
        })).collect::<Vec<_>>(),
    })
}

/// `GET /api/admin/users/{userId}/earnings?limit=&pageToken=`: the creator's earnings (the
/// disputes service), their balance and debt (the limits service), and a page of their
/// allocations, newest first.
pub(crate) async fn earnings(
    State(gateway): State<Gateway>,
    _admin: Admin,
    Path(user_id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Response {
    let page_size = match page_limit(query.limit.as_deref()) {
        Ok(limit) => limit,
        Err(response) => return response,
    };
    let mut disputes = gateway.disputes();
    let mut listing = gateway.disputes();
    let mut limits = gateway.limits();
    let (earnings, allocations, balance) = tokio::join!(
        disputes.get_earnings(pb::GetEarningsRequest {
            user_id: user_id.clone(),
            currency: "usd".to_owned(),
        }),
        listing.list_allocations(pb::ListAllocationsRequest {
            user_id: user_id.clone(),
            page_size,
            page_token: query.page_token.unwrap_or_default(),
        }),
        limits.get_balance(limits_pb::GetBalanceRequest {
            user_id: user_id.clone(),
        }),
    );
    let (earnings, allocations, balance) = match (earnings, allocations, balance) {
        (Ok(e), Ok(a), Ok(b)) => (e.into_inner(), a.into_inner(), b.into_inner()),
        (Err(status), _, _) | (_, Err(status), _) | (_, _, Err(status)) => {
            return grpc_error(&status);
        }
    };
    Json(json!({
        "userId": user_id,
        "currency": "usd",
        "lifetimeCents": cents(earnings.lifetime.as_ref()),
        "payableCents": cents(earnings.active.as_ref()),
        "frozenCents": cents(earnings.frozen.as_ref()),
        "refundedCents": cents(earnings.refunded.as_ref()),
        "committedCents": cents(balance.committed.as_ref()),
        "availableCents": cents(balance.available.as_ref()),
        "debtCents": cents(balance.debt.as_ref()),
        "recentRefunds": earnings.recent_refund_count,
        "recentDisputes": earnings.recent_dispute_count,
        "allocations": allocations.allocations.into_iter().map(allocation_json).collect::<Vec<_>>(),
        "nextPageToken": (!allocations.next_page_token.is_empty()).then_some(allocations.next_page_token),
    }))
    .into_response()
}

/// `GET /api/admin/disputes?status=open|won|lost|all&limit=&pageToken=`: newest first.
pub(crate) async fn disputes(
    State(gateway): State<Gateway>,
    _admin: Admin,
    Query(query): Query<PageQuery>,
) -> Response {
    let status = query.status.unwrap_or_else(|| "all".to_owned());
    if !matches!(status.as_str(), "open" | "won" | "lost" | "all") {
        return error_response(
            StatusCode::BAD_REQUEST,
            format!("status must be open, won, lost or all, got {status:?}"),
        );
    }
    let page_size = match page_limit(query.limit.as_deref()) {
        Ok(limit) => limit.min(200),
        Err(response) => return response,
    };
    let request = pb::ListDisputesRequest {
        status,
        page_size,
        page_token: query.page_token.unwrap_or_default(),
    };
    match gateway.disputes().list_disputes(request).await {
        Ok(response) => {
            let page = response.into_inner();
            let disputes: Vec<Value> = page
                .disputes
                .into_iter()
                .map(|d| {
                    json!({
                        "disputeId": d.dispute_id,
                        "chargeId": d.charge_id,
                        "amountCents": cents(d.amount.as_ref()),
                        "currency": d.amount.as_ref().map(|m| m.currency.clone()),
                        "status": d.state,
                        "stripeStatus": d.stripe_status,
                        "reason": d.reason,
                        "openedAt": rfc3339(d.opened_at),
                        "closedAt": rfc3339(d.closed_at),
                        "fundsWithdrawn": d.funds_withdrawn,
                        "fundsReinstated": d.funds_reinstated,
                        "affectedCreators": d.affected.into_iter().map(|c| json!({
                            "userId": c.user_id,
                            "allocations": c.allocations,
                            "frozenCents": cents(c.frozen.as_ref()),
                            "refundedCents": cents(c.refunded.as_ref()),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            Json(json!({
                "disputes": disputes,
                "nextPageToken": (!page.next_page_token.is_empty()).then_some(page.next_page_token),
            }))
            .into_response()
        }
        Err(status) => grpc_error(&status),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ReverseBody {
    #[serde(deserialize_with = "crate::body::whole_cents")]
    amount_cents: i64,
    notes: String,
}

/// `POST /api/admin/payouts/{payoutId}/reverse` with `{"amountCents", "notes"}` and an
/// `Idempotency-Key` header (required: one per admin confirmation): a transfer reversal
/// from the creator's Stripe account, recorded on the payout as an intent before Stripe is
/// asked. The same key returns the same intent's outcome; the same key with another amount
/// is 409; another reversal while one is unresolved is 409 naming it; 503 when Stripe's
/// answer was lost (send the same request, same key, again); 409 when nothing is left to
/// reverse or Stripe refused it.
pub(crate) async fn reverse(
    State(gateway): State<Gateway>,
    admin: Admin,
    Path(payout_id): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ReverseBody>,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .unwrap_or_default();
    if key.is_empty() || key.len() > 255 {
        return error_response(
            StatusCode::BAD_REQUEST,
            "the Idempotency-Key header is required (1 to 255 characters, one per confirmation): the same key never reverses twice",
        );
    }
    let request = payouts_pb::ReversePayoutRequest {
        payout_id,
        amount_cents: body.amount_cents,
        notes: body.notes,
        requested_by: format!("admin:{}", admin.subject),
        client_request_id: key.to_owned(),
    };
    match gateway.payouts().reverse_payout(request).await {
        Ok(response) => {
            let payout = response.into_inner().payout.unwrap_or_default();
            let intent = payout
                .reversal_intents
                .iter()
                .find(|intent| intent.client_request_id == key)
                .cloned()
                .map(crate::admin_payouts::reversal_intent_json);
            Json(json!({
                "success": true,
                "payoutId": payout.id,
                "status": crate::admin_payouts::payout_status(payout.status()),
                "amountCents": cents(payout.amount.as_ref()),
                "amountReversedCents": cents(payout.amount_reversed.as_ref()),
                "reversal": intent,
            }))
            .into_response()
        }
        Err(status) => grpc_error(&status),
    }
}
