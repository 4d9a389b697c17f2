//! The gRPC surface: parse requests into domain values, call the repository, map back.

use std::sync::Arc;

use payouts_proto::balance::v1 as pb;
use payouts_proto::balance::v1::balance_service_server::{BalanceService, BalanceServiceServer};
use payouts_runtime::Money;
use payouts_runtime::convert::{page_size, paginate, parse_page_token, timestamp};
use tonic::{Request, Response, Status};

use crate::domain::{Snapshot, ThresholdStatus};
use crate::store::SnapshotRepository;

/// The tonic service.
pub struct BalanceGrpc {
    snapshots: Arc<dyn SnapshotRepository>,
}

impl BalanceGrpc {
    pub fn new(snapshots: Arc<dyn SnapshotRepository>) -> Self {
        Self { snapshots }
    }
}

/// The generated server around the service.
pub fn server(service: BalanceGrpc) -> BalanceServiceServer<BalanceGrpc> {
    BalanceServiceServer::new(service)
}

fn to_proto(s: Snapshot) -> pb::BalanceSnapshot {
    let status = match s.threshold_status {
        ThresholdStatus::Healthy => pb::ThresholdStatus::Healthy,
        ThresholdStatus::Warning => pb::ThresholdStatus::Warning,
        ThresholdStatus::Critical => pb::ThresholdStatus::Critical,
        ThresholdStatus::Depleted => pb::ThresholdStatus::Depleted,
    };
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
    }
}

#[tonic::async_trait]
impl BalanceService for BalanceGrpc {
    async fn run_balance_check(
        &self,
        _request: Request<pb::RunBalanceCheckRequest>,
    ) -> Result<Response<pb::RunBalanceCheckResponse>, Status> {
        Err(Status::unimplemented("the balance check is not built yet"))
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
