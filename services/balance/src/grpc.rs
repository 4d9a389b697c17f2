//! The gRPC surface: parse requests into domain values, call the repository, map back.

use std::sync::Arc;

use payouts_proto::balance::v1 as pb;
use payouts_proto::balance::v1::balance_service_server::{BalanceService, BalanceServiceServer};
use payouts_runtime::convert::{page_size, timestamp};
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
    pb::BalanceSnapshot {
        total_balance_cents: s.total_balance_cents(),
        id: s.id,
        timestamp: Some(timestamp(s.taken_at)),
        currency: s.currency.to_string(),
        available_balance_cents: s.available_balance_cents,
        pending_balance_cents: s.pending_balance_cents,
        pending_obligations_cents: s.pending_obligations_cents,
        required_reserve_cents: s.required_reserve_cents,
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
        let limit = page_size(request.get_ref().limit, 30, 366)?;
        let snapshots = self
            .snapshots
            .recent(limit)
            .await?
            .into_iter()
            .map(to_proto)
            .collect();
        Ok(Response::new(pb::ListSnapshotsResponse { snapshots }))
    }
}
