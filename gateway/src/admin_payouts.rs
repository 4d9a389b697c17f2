//! Admin REST over payouts: resume a parked payout.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Json, Response};
use payouts_proto::payouts::v1 as pb;

use crate::admin_auth::Admin;
use crate::{Gateway, grpc_error};

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
