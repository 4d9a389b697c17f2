//! The gRPC surface: parse requests into domain values, call the repository, map back.

use std::sync::Arc;

use payouts_proto::limits::v1 as pb;
use payouts_proto::limits::v1::payout_limits_service_server::{
    PayoutLimitsService, PayoutLimitsServiceServer,
};
use payouts_runtime::convert::{
    page_size, paginate, parse_page_token, positive_money, required_id, required_ids,
    required_money, required_time, timestamp, usd,
};
use payouts_runtime::{Currency, ServiceError};
use tonic::{Request, Response, Status};

use crate::admission::Limits;
use crate::checks::Decision;
use crate::domain::{BlockedAttempt, Flag, LimitMetadata};

/// The tonic service.
pub struct LimitsGrpc {
    limits: Arc<Limits>,
}

impl LimitsGrpc {
    pub fn new(limits: Arc<Limits>) -> Self {
        Self { limits }
    }
}

/// A requested amount: positive, in usd (the limits are in usd), at most what fits the
/// contract.
fn amount(value: Option<payouts_proto::common::v1::Money>) -> Result<i64, ServiceError> {
    positive_money(value, "amount", &Currency::usd()).map(|money| money.cents)
}

/// The contract's decision for a domain decision.
pub fn decision_to_proto(d: Decision) -> pb::LimitDecision {
    pb::LimitDecision {
        allowed: d.allowed,
        requires_approval: d.requires_approval,
        flags: d
            .flags
            .into_iter()
            .map(|flag| flag_to_proto(flag).into())
            .collect(),
        reason: d.reason,
        metadata: Some(metadata_to_proto(d.metadata)),
    }
}

/// The generated server around the service.
pub fn server(service: LimitsGrpc) -> PayoutLimitsServiceServer<LimitsGrpc> {
    PayoutLimitsServiceServer::new(service)
}

/// The contract's flag for a domain flag.
pub fn flag_to_proto(flag: Flag) -> pb::PayoutFlag {
    match flag {
        Flag::ExceedsSingleLimit => pb::PayoutFlag::ExceedsSingleLimit,
        Flag::RequiresAdminApproval => pb::PayoutFlag::RequiresAdminApproval,
        Flag::NewAccount => pb::PayoutFlag::NewAccount,
        Flag::ExceedsNewAccountLimit => pb::PayoutFlag::ExceedsNewAccountLimit,
        Flag::ExceedsDailyCountLimit => pb::PayoutFlag::ExceedsDailyCountLimit,
        Flag::ExceedsDailyAmountLimit => pb::PayoutFlag::ExceedsDailyAmountLimit,
        Flag::ExceedsMonthlyAmountLimit => pb::PayoutFlag::ExceedsMonthlyAmountLimit,
        Flag::TooSoon => pb::PayoutFlag::TooSoon,
        Flag::SuspiciousFrequency => pb::PayoutFlag::SuspiciousFrequency,
        Flag::LargePercentageOfEarnings => pb::PayoutFlag::LargePercentageOfEarnings,
        Flag::LargeFirstPayout => pb::PayoutFlag::LargeFirstPayout,
        Flag::InsufficientBalance => pb::PayoutFlag::InsufficientBalance,
        Flag::RecentRefundOrDispute => pb::PayoutFlag::RecentRefundOrDispute,
    }
}

fn metadata_to_proto(m: LimitMetadata) -> pb::LimitMetadata {
    pb::LimitMetadata {
        is_new_account: m.is_new_account,
        account_age_days: m.account_age_days,
        daily_payout_count: m.daily_payout_count,
        daily_payout_amount: Some(usd(m.daily_payout_amount_cents)),
        monthly_payout_amount: Some(usd(m.monthly_payout_amount_cents)),
        lifetime_earnings: Some(usd(m.lifetime_earnings_cents)),
        daily_attempt_count: m.daily_attempt_count,
    }
}

fn attempt_to_proto(a: BlockedAttempt) -> pb::BlockedAttempt {
    pb::BlockedAttempt {
        id: a.id,
        user_id: a.user_id,
        amount: Some(usd(a.amount_cents)),
        flags: a
            .flags
            .into_iter()
            .map(|flag| flag_to_proto(flag).into())
            .collect(),
        reason: a.reason,
        metadata: Some(metadata_to_proto(a.metadata)),
        attempted_at: Some(timestamp(a.attempted_at)),
    }
}

#[tonic::async_trait]
impl PayoutLimitsService for LimitsGrpc {
    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn validate_payout_limits(
        &self,
        request: Request<pb::ValidatePayoutLimitsRequest>,
    ) -> Result<Response<pb::ValidatePayoutLimitsResponse>, Status> {
        let r = request.into_inner();
        let user_id = required_id(&r.user_id, "user_id")?;
        let amount_cents = amount(r.amount)?;
        let decision = self.limits.validate(&user_id, amount_cents).await?;
        Ok(Response::new(pb::ValidatePayoutLimitsResponse {
            decision: Some(decision_to_proto(decision)),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id, payout_id = %request.get_ref().payout_id))]
    async fn reserve_payout(
        &self,
        request: Request<pb::ReservePayoutRequest>,
    ) -> Result<Response<pb::ReservePayoutResponse>, Status> {
        let r = request.into_inner();
        let user_id = required_id(&r.user_id, "user_id")?;
        let payout_id = required_id(&r.payout_id, "payout_id")?;
        let amount_cents = amount(r.amount)?;
        let requested_at = required_time(r.requested_at, "requested_at")?;
        let account_created_at = r
            .account_created_at
            .map(|at| required_time(Some(at), "account_created_at"))
            .transpose()?;
        let reserved = self
            .limits
            .reserve(
                &user_id,
                &payout_id,
                amount_cents,
                requested_at,
                account_created_at,
            )
            .await?;
        Ok(Response::new(pb::ReservePayoutResponse {
            decision: Some(decision_to_proto(reserved.decision)),
            reserved: reserved.reserved,
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id, payout_id = %request.get_ref().payout_id))]
    async fn release_payout(
        &self,
        request: Request<pb::ReleasePayoutRequest>,
    ) -> Result<Response<pb::ReleasePayoutResponse>, Status> {
        let r = request.into_inner();
        let user_id = required_id(&r.user_id, "user_id")?;
        let payout_id = required_id(&r.payout_id, "payout_id")?;
        let total = required_money(r.total_released, "total_released", &Currency::usd())?;
        if r.sequence <= 0 {
            return Err(ServiceError::invalid_argument(format!(
                "sequence must be positive, got {}",
                r.sequence
            ))
            .into());
        }
        let released = self
            .limits
            .release(&user_id, &payout_id, total.cents, r.sequence, &r.reason)
            .await?;
        Ok(Response::new(pb::ReleasePayoutResponse {
            applied: released.applied,
            found: released.found,
            held: Some(usd(released.held_cents)),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id, payout_id = %request.get_ref().payout_id))]
    async fn recheck_payout(
        &self,
        request: Request<pb::RecheckPayoutRequest>,
    ) -> Result<Response<pb::RecheckPayoutResponse>, Status> {
        let r = request.into_inner();
        let user_id = required_id(&r.user_id, "user_id")?;
        let payout_id = required_id(&r.payout_id, "payout_id")?;
        let rechecked = self.limits.recheck(&user_id, &payout_id).await?;
        Ok(Response::new(pb::RecheckPayoutResponse {
            payable: rechecked.payable,
            reason: rechecked.reason,
            available: Some(usd(rechecked.available_cents)),
        }))
    }

    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::GetBalanceResponse>, Status> {
        let user_id = required_id(&request.into_inner().user_id, "user_id")?;
        let (earnings, balance) = self.limits.balance(&user_id).await?;
        Ok(Response::new(pb::GetBalanceResponse {
            user_id,
            lifetime_earnings: Some(usd(earnings.lifetime_cents)),
            payable_earnings: Some(usd(earnings.payable_cents)),
            committed: Some(usd(balance.committed_cents)),
            available: Some(usd(balance.available_cents)),
            debt: Some(usd(balance.debt_cents)),
        }))
    }

    async fn get_held_amounts(
        &self,
        request: Request<pb::GetHeldAmountsRequest>,
    ) -> Result<Response<pb::GetHeldAmountsResponse>, Status> {
        let user_ids = required_ids(&request.into_inner().user_ids, "user_ids", 1_000)?;
        let held = self.limits.held(&user_ids).await?;
        Ok(Response::new(pb::GetHeldAmountsResponse {
            held_amounts: held
                .into_iter()
                .map(|(user_id, cents)| pb::HeldAmount {
                    user_id,
                    held: Some(usd(cents)),
                })
                .collect(),
        }))
    }

    async fn get_limit_config(
        &self,
        _request: Request<pb::GetLimitConfigRequest>,
    ) -> Result<Response<pb::GetLimitConfigResponse>, Status> {
        let c = self.limits.config();
        Ok(Response::new(pb::GetLimitConfigResponse {
            max_single_payout: Some(usd(c.max_single_payout_cents)),
            max_payouts_per_day: c.max_payouts_per_day,
            max_daily_amount: Some(usd(c.max_daily_amount_cents)),
            max_monthly_amount: Some(usd(c.max_monthly_amount_cents)),
            new_account_max_payout: Some(usd(c.new_account_max_payout_cents)),
            new_account_days: c.new_account_days,
            require_approval_amount: Some(usd(c.require_approval_amount_cents)),
            min_seconds_between_payouts: c.min_seconds_between_payouts,
            suspicious_pattern_threshold: c.suspicious_pattern_threshold,
            suspicious_amount_ratio_bps: c.suspicious_amount_ratio_bps,
            large_first_payout: Some(usd(c.large_first_payout_cents)),
        }))
    }

    async fn list_blocked_attempts(
        &self,
        request: Request<pb::ListBlockedAttemptsRequest>,
    ) -> Result<Response<pb::ListBlockedAttemptsResponse>, Status> {
        let r = request.into_inner();
        let user_id = if r.user_id.trim().is_empty() {
            None
        } else {
            Some(required_id(&r.user_id, "user_id")?)
        };
        let size = page_size(r.page_size, 50, 500)?;
        let after = parse_page_token(&r.page_token)?;
        let found = self
            .limits
            .blocked_attempts()
            .list(user_id.as_deref(), after, size + 1)
            .await?;
        let (page, next_page_token) = paginate(found, size, |a| (a.attempted_at, a.id.clone()));
        Ok(Response::new(pb::ListBlockedAttemptsResponse {
            attempts: page.into_iter().map(attempt_to_proto).collect(),
            next_page_token,
        }))
    }
}
