//! The gRPC surface: parse requests into domain values, call the workflow, map back.

use std::sync::Arc;

use payouts_proto::approvals::v1 as pb;
use payouts_proto::approvals::v1::approvals_service_server::{
    ApprovalsService, ApprovalsServiceServer,
};
use payouts_proto::limits::v1::{LimitMetadata, PayoutFlag};
use payouts_runtime::convert::{
    cents, optional_money, optional_notes, optional_timestamp, page_size, paginate,
    parse_page_token, positive_money, required_id, timestamp, usd,
};
use payouts_runtime::{Currency, ServiceError};
use tonic::{Request, Response, Status};

use crate::domain::{Action, Approval, ApprovalStatus, Filter, HoldMetadata};
use crate::workflow::{Hold, Workflow};

/// The tonic service.
pub struct ApprovalsGrpc {
    workflow: Arc<Workflow>,
}

impl ApprovalsGrpc {
    pub fn new(workflow: Arc<Workflow>) -> Self {
        Self { workflow }
    }
}

/// The generated server around the service.
pub fn server(service: ApprovalsGrpc) -> ApprovalsServiceServer<ApprovalsGrpc> {
    ApprovalsServiceServer::new(service)
}

fn flag_name(flag: i32) -> Option<String> {
    PayoutFlag::try_from(flag)
        .ok()
        .filter(|flag| *flag != PayoutFlag::Unspecified)
        .map(|flag| {
            flag.as_str_name()
                .trim_start_matches("PAYOUT_FLAG_")
                .to_owned()
        })
}

fn status_to_proto(status: ApprovalStatus) -> pb::ApprovalStatus {
    match status {
        ApprovalStatus::Pending => pb::ApprovalStatus::Pending,
        ApprovalStatus::Approved => pb::ApprovalStatus::Approved,
        ApprovalStatus::Rejected => pb::ApprovalStatus::Rejected,
    }
}

pub fn to_proto(a: Approval) -> pb::Approval {
    pb::Approval {
        status: status_to_proto(a.status).into(),
        amount: Some(a.amount.clone().into()),
        applied: a.applied,
        parked: a.parked,
        approvals_required: i32::try_from(a.approvals_required).unwrap_or(i32::MAX),
        approvals: a
            .approvals
            .iter()
            .map(|approval| pb::AdminApproval {
                reviewer: approval.reviewer.clone(),
                approved_at: Some(timestamp(approval.approved_at)),
                notes: approval.notes.clone().unwrap_or_default(),
            })
            .collect(),
        flags: a
            .flags
            .iter()
            .filter_map(|flag| PayoutFlag::from_str_name(&format!("PAYOUT_FLAG_{flag}")))
            .map(i32::from)
            .collect(),
        metadata: Some(LimitMetadata {
            is_new_account: a.metadata.is_new_account,
            account_age_days: a.metadata.account_age_days,
            daily_payout_count: a.metadata.daily_payout_count,
            daily_payout_amount: Some(usd(a.metadata.daily_payout_amount_cents)),
            monthly_payout_amount: Some(usd(a.metadata.monthly_payout_amount_cents)),
            lifetime_earnings: Some(usd(a.metadata.lifetime_earnings_cents)),
            daily_attempt_count: 0,
        }),
        user_context: Some(pb::UserContext {
            account_age_days: a.user_context.account_age_days,
            lifetime_earnings: Some(usd(a.user_context.lifetime_earnings_cents)),
            completed_payout_count: a.user_context.completed_payout_count,
            completed_payout_amount: Some(usd(a.user_context.completed_payout_cents)),
            recent_refund_count: a.user_context.recent_refund_count,
            recent_dispute_count: a.user_context.recent_dispute_count,
        }),
        requested_at: Some(timestamp(a.requested_at)),
        reviewed_at: optional_timestamp(a.reviewed_at),
        reviewed_by: a.reviewed_by.unwrap_or_default(),
        review_notes: a.review_notes.unwrap_or_default(),
        created_at: Some(timestamp(a.requested_at)),
        id: a.id,
        payout_id: a.payout_id,
        user_id: a.user_id,
        reason: a.reason,
    }
}

#[tonic::async_trait]
impl ApprovalsService for ApprovalsGrpc {
    #[tracing::instrument(skip_all, fields(payout_id = %request.get_ref().payout_id))]
    async fn create_approval(
        &self,
        request: Request<pb::CreateApprovalRequest>,
    ) -> Result<Response<pb::CreateApprovalResponse>, Status> {
        let r = request.into_inner();
        let metadata = r.metadata.unwrap_or_default();
        let hold = Hold {
            payout_id: required_id(&r.payout_id, "payout_id")?,
            user_id: required_id(&r.user_id, "user_id")?,
            amount: positive_money(r.amount, "amount", &Currency::usd())?,
            flags: r.flags.into_iter().filter_map(flag_name).collect(),
            reason: r.reason,
            metadata: HoldMetadata {
                is_new_account: metadata.is_new_account,
                account_age_days: metadata.account_age_days,
                daily_payout_count: metadata.daily_payout_count,
                daily_payout_amount_cents: cents(metadata.daily_payout_amount.as_ref()),
                monthly_payout_amount_cents: cents(metadata.monthly_payout_amount.as_ref()),
                lifetime_earnings_cents: cents(metadata.lifetime_earnings.as_ref()),
            },
        };
        let (approval, created) = self.workflow.create(hold).await?;
        Ok(Response::new(pb::CreateApprovalResponse {
            approval: Some(to_proto(approval)),
            created,
        }))
    }

    async fn get_approval(
        &self,
        request: Request<pb::GetApprovalRequest>,
    ) -> Result<Response<pb::GetApprovalResponse>, Status> {
        let approval_id = required_id(&request.get_ref().approval_id, "approval_id")?;
        let approval = self
            .workflow
            .approvals
            .get(&approval_id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("approval {approval_id} not found")))?;
        Ok(Response::new(pb::GetApprovalResponse {
            approval: Some(to_proto(approval)),
        }))
    }

    async fn list_approvals(
        &self,
        request: Request<pb::ListApprovalsRequest>,
    ) -> Result<Response<pb::ListApprovalsResponse>, Status> {
        let r = request.into_inner();
        let status = match pb::ApprovalStatus::try_from(r.status) {
            Ok(pb::ApprovalStatus::Unspecified) => None,
            Ok(pb::ApprovalStatus::Pending) => Some(ApprovalStatus::Pending),
            Ok(pb::ApprovalStatus::Approved) => Some(ApprovalStatus::Approved),
            Ok(pb::ApprovalStatus::Rejected) => Some(ApprovalStatus::Rejected),
            Err(_) => {
                return Err(ServiceError::invalid_argument(format!(
                    "status {} is not defined",
                    r.status
                ))
                .into());
            }
        };
        let usd_currency = Currency::usd();
        let min = optional_money(r.min_amount, "min_amount", &usd_currency)?;
        let max = optional_money(r.max_amount, "max_amount", &usd_currency)?;
        let size = page_size(r.page_size, 50, 500)?;
        let filter = Filter {
            status,
            min_amount_cents: min.map(|money| money.cents),
            max_amount_cents: max.map(|money| money.cents),
            flag: flag_name(r.flag),
            after: parse_page_token(&r.page_token)?,
            limit: size + 1,
        };
        let found = self.workflow.approvals.list(&filter).await?;
        let (page, next_page_token) = paginate(found, size, |a| (a.requested_at, a.id.clone()));
        Ok(Response::new(pb::ListApprovalsResponse {
            approvals: page.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(approval_id = %request.get_ref().approval_id))]
    async fn decide_approval(
        &self,
        request: Request<pb::DecideApprovalRequest>,
    ) -> Result<Response<pb::DecideApprovalResponse>, Status> {
        let r = request.into_inner();
        let approval_id = required_id(&r.approval_id, "approval_id")?;
        let action = match pb::ApprovalAction::try_from(r.action) {
            Ok(pb::ApprovalAction::Approve) => Action::Approve,
            Ok(pb::ApprovalAction::Reject) => Action::Reject,
            _ => {
                return Err(
                    ServiceError::invalid_argument("action must be APPROVE or REJECT").into(),
                );
            }
        };
        let notes = optional_notes(&r.notes, "notes")?;
        let decided = self
            .workflow
            .decide(&approval_id, action, &r.reviewer, notes.as_deref())
            .await?;
        Ok(Response::new(pb::DecideApprovalResponse {
            approval: Some(to_proto(decided.approval)),
            transfer_id: decided.transfer_id.unwrap_or_default(),
            message: decided.message,
        }))
    }

    #[tracing::instrument(skip_all, fields(approval_id = %request.get_ref().approval_id))]
    async fn retry_decision(
        &self,
        request: Request<pb::RetryDecisionRequest>,
    ) -> Result<Response<pb::RetryDecisionResponse>, Status> {
        let r = request.into_inner();
        let approval_id = required_id(&r.approval_id, "approval_id")?;
        let requested_by = required_id(&r.requested_by, "requested_by")?;
        let approval = self.workflow.retry(&approval_id, &requested_by).await?;
        Ok(Response::new(pb::RetryDecisionResponse {
            approval: Some(to_proto(approval)),
        }))
    }
}
