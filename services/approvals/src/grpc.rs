//! The gRPC surface: parse requests into domain values, call the repository, map back.

use std::sync::Arc;

use payouts_proto::approvals::v1 as pb;
use payouts_proto::approvals::v1::approvals_service_server::{
    ApprovalsService, ApprovalsServiceServer,
};
use payouts_runtime::ServiceError;
use payouts_runtime::convert::{optional_timestamp, required_id, timestamp};
use tonic::{Request, Response, Status};

use crate::domain::{Approval, ApprovalStatus};
use crate::store::ApprovalRepository;

/// The tonic service.
pub struct ApprovalsGrpc {
    approvals: Arc<dyn ApprovalRepository>,
}

impl ApprovalsGrpc {
    pub fn new(approvals: Arc<dyn ApprovalRepository>) -> Self {
        Self { approvals }
    }
}

/// The generated server around the service.
pub fn server(service: ApprovalsGrpc) -> ApprovalsServiceServer<ApprovalsGrpc> {
    ApprovalsServiceServer::new(service)
}

fn to_proto(a: Approval) -> pb::Approval {
    let status = match a.status {
        ApprovalStatus::Pending => pb::ApprovalStatus::Pending,
        ApprovalStatus::Approved => pb::ApprovalStatus::Approved,
        ApprovalStatus::Rejected => pb::ApprovalStatus::Rejected,
    };
    pb::Approval {
        id: a.id,
        payout_id: a.payout_id,
        user_id: a.user_id,
        amount_cents: a.amount.cents,
        currency: a.amount.currency.to_string(),
        status: status.into(),
        reason: a.reason,
        flags: a
            .flags
            .iter()
            .filter_map(|flag| {
                payouts_proto::limits::v1::PayoutFlag::from_str_name(&format!("PAYOUT_FLAG_{flag}"))
            })
            .map(i32::from)
            .collect(),
        metadata: None,
        user_context: None,
        requested_at: Some(timestamp(a.requested_at)),
        reviewed_at: optional_timestamp(a.reviewed_at),
        reviewed_by: a.reviewed_by.unwrap_or_default(),
        review_notes: a.review_notes.unwrap_or_default(),
        created_at: Some(timestamp(a.requested_at)),
    }
}

#[tonic::async_trait]
impl ApprovalsService for ApprovalsGrpc {
    async fn create_approval(
        &self,
        _request: Request<pb::CreateApprovalRequest>,
    ) -> Result<Response<pb::CreateApprovalResponse>, Status> {
        Err(Status::unimplemented(
            "the approval workflow is not built yet",
        ))
    }

    async fn get_approval(
        &self,
        request: Request<pb::GetApprovalRequest>,
    ) -> Result<Response<pb::GetApprovalResponse>, Status> {
        let approval_id = required_id(&request.get_ref().approval_id, "approval_id")?;
        let approval =
            self.approvals.get(&approval_id).await?.ok_or_else(|| {
                ServiceError::not_found(format!("approval {approval_id} not found"))
            })?;
        Ok(Response::new(pb::GetApprovalResponse {
            approval: Some(to_proto(approval)),
        }))
    }

    async fn list_approvals(
        &self,
        _request: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        Err(Status::unimplemented("the approval queue is not built yet"))
    }

    async fn decide_approval(
        &self,
        _request: Request<pb::DecideApprovalRequest>,
    ) -> Result<Response<pb::DecideApprovalResponse>, Status> {
        Err(Status::unimplemented(
            "the approval workflow is not built yet",
        ))
    }
}
