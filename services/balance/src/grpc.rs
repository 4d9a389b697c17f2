//! The gRPC surface: parse requests into domain values, call the repository, map back.

use std::sync::Arc;

use payouts_proto::balance::v1 as pb;
use payouts_proto::balance::v1::balance_service_server::{BalanceService, BalanceServiceServer};
use payouts_runtime::convert::{
    page_size, paginate, parse_page_token, required_id, timestamp, usd,
};
use payouts_runtime::{Money, ServiceError};
use tonic::{Request, Response, Status};

use crate::check::{BalanceCheck, CheckOutcome, CheckRequest};
use crate::domain::{BalanceStatus, Snapshot, ThresholdStatus, Trend, TrendDirection};
use crate::store::SnapshotRepository;

/// The tonic service.
pub struct BalanceGrpc {
    snapshots: Arc<dyn SnapshotRepository>,
    /// `None` when Stripe is not configured (STRIPE_SECRET_KEY unset).
    check: Option<Arc<BalanceCheck>>,
}

impl BalanceGrpc {
    pub fn new(snapshots: Arc<dyn SnapshotRepository>, check: Option<Arc<BalanceCheck>>) -> Self {
        Self { snapshots, check }
    }
}

fn status_to_proto(status: ThresholdStatus) -> pb::ThresholdStatus {
    match status {
        ThresholdStatus::Healthy => pb::ThresholdStatus::Healthy,
        ThresholdStatus::Warning => pb::ThresholdStatus::Warning,
        ThresholdStatus::Critical => pb::ThresholdStatus::Critical,
        ThresholdStatus::Depleted => pb::ThresholdStatus::Depleted,
    }
}

fn balance_status_to_proto(status: &BalanceStatus) -> pb::BalanceStatus {
    pb::BalanceStatus {
        threshold_status: status_to_proto(status.threshold_status).into(),
        available_balance: Some(usd(status.available_cents)),
        pending_obligations: Some(usd(status.obligations_cents)),
        required_reserve: Some(usd(status.required_reserve_cents)),
        available_for_payouts: Some(usd(status.available_for_payouts_cents)),
        days_of_coverage: status.days_of_coverage.unwrap_or(-1),
        pending_balance: Some(usd(status.pending_cents)),
    }
}

fn trend_to_proto(trend: &Trend) -> pb::Trend {
    pb::Trend {
        direction: match trend.direction {
            TrendDirection::Increasing => pb::TrendDirection::Increasing,
            TrendDirection::Stable => pb::TrendDirection::Stable,
            TrendDirection::Decreasing => pb::TrendDirection::Decreasing,
        }
        .into(),
        average_change: Some(usd(trend.average_change_cents)),
    }
}

fn outcome_to_proto(outcome: CheckOutcome) -> pb::RunBalanceCheckResponse {
    pb::RunBalanceCheckResponse {
        balance_status: Some(balance_status_to_proto(&outcome.status)),
        trend: Some(trend_to_proto(&outcome.trend)),
        alert_ids: outcome
            .alerts
            .iter()
            .map(|raised| raised.id.clone())
            .collect(),
        snapshot: outcome.snapshot.map(to_proto),
        alerts: outcome
            .alerts
            .into_iter()
            .map(|raised| pb::BalanceAlert {
                id: raised.id,
                r#type: raised.alert.kind.as_str().to_owned(),
                severity: raised.alert.severity.to_owned(),
                title: raised.alert.title,
                message: raised.alert.message,
            })
            .collect(),
    }
}

impl BalanceGrpc {
    /// The balance check, or FAILED_PRECONDITION when Stripe is not configured.
    fn check(&self) -> Result<&BalanceCheck, ServiceError> {
        self.check.as_deref().ok_or_else(|| {
            ServiceError::failed_precondition(
                "balance monitoring needs Stripe: STRIPE_SECRET_KEY is not set",
            )
        })
    }
}

/// The generated server around the service.
pub fn server(service: BalanceGrpc) -> BalanceServiceServer<BalanceGrpc> {
    BalanceServiceServer::new(service)
}

fn to_proto(s: Snapshot) -> pb::BalanceSnapshot {
    let status = status_to_proto(s.threshold_status);
    let money = |cents: i64| Some(Money::new(cents, s.currency.clone()).into());
    pb::BalanceSnapshot {
        total_balance: money(s.total_balance_cents()),
        available_balance: money(s.available_balance_cents),
        pending_balance: money(s.pending_balance_cents),
        pending_obligations: money(s.pending_obligations_cents),
        required_reserve: money(s.required_reserve_cents),
        id: s.id,
        timestamp: Some(timestamp(s.taken_at)),
        threshold_status: status.into(),
        users_with_unpaid_earnings: s.users_with_unpaid_earnings,
        users_without_bank_accounts: s.users_without_bank_accounts,
        days_since_last_snapshot: s.days_since_last_snapshot,
    }
}

#[tonic::async_trait]
impl BalanceService for BalanceGrpc {
    async fn run_balance_check(
        &self,
        request: Request<pb::RunBalanceCheckRequest>,
    ) -> Result<Response<pb::RunBalanceCheckResponse>, Status> {
        let r = request.into_inner();
        let check = self.check()?;
        let request = CheckRequest {
            create_snapshot: r.create_snapshot.unwrap_or(true),
            check_trend: r.check_trend.unwrap_or(true),
            triggered_by: required_id(&r.triggered_by, "triggered_by")?,
        };
        Ok(Response::new(outcome_to_proto(check.run(&request).await?)))
    }

    async fn get_balance_overview(
        &self,
        _request: Request<pb::GetBalanceOverviewRequest>,
    ) -> Result<Response<pb::GetBalanceOverviewResponse>, Status> {
        let check = self.check()?;
        let (status, trend, snapshots) = check
            .overview(30)
            .await?
            .ok_or_else(|| ServiceError::not_found("no balance check has run yet"))?;
        Ok(Response::new(pb::GetBalanceOverviewResponse {
            balance_status: Some(balance_status_to_proto(&status)),
            trend: Some(trend_to_proto(&trend)),
            snapshots: snapshots.into_iter().map(to_proto).collect(),
        }))
    }

    async fn list_snapshots(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let r = request.into_inner();
        let size = page_size(r.page_size, 30, 500)?;
        let after = parse_page_token(&r.page_token)?;
        let found = self.snapshots.recent(after, size + 1).await?;
        let (page, next_page_token) = paginate(found, size, |s| (s.taken_at, s.id.clone()));
        Ok(Response::new(pb::ListSnapshotsResponse {
            snapshots: page.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }
}
