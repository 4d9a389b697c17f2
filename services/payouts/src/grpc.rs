//! The gRPC surface: parse requests into domain values, call the repository, map back.

use std::sync::Arc;

use payouts_proto::payouts::v1 as pb;
use payouts_proto::payouts::v1::payouts_service_server::{PayoutsService, PayoutsServiceServer};
use payouts_runtime::convert::{optional_timestamp, required_id, required_time, timestamp};
use payouts_runtime::{Clock, ErrorKind, ServiceError};
use tonic::{Request, Response, Status};

use crate::domain::{Account, Registration};
use crate::store::AccountRepository;

/// How many times a registration is retried when another writer changed the account.
const MAX_WRITE_ATTEMPTS: usize = 5;

/// The tonic service.
pub struct PayoutsGrpc {
    accounts: Arc<dyn AccountRepository>,
    clock: Arc<dyn Clock>,
}

impl PayoutsGrpc {
    pub fn new(accounts: Arc<dyn AccountRepository>, clock: Arc<dyn Clock>) -> Self {
        Self { accounts, clock }
    }

    async fn register(&self, registration: Registration) -> Result<Account, ServiceError> {
        let mut last_conflict = None;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let existing = self.accounts.get(&registration.user_id).await?;
            let expected_version = existing.as_ref().map(|account| account.version);
            let account = registration.clone().apply(existing);
            match self.accounts.put(&account, expected_version).await {
                Ok(()) => return Ok(account),
                Err(error) if error.kind() == ErrorKind::Conflict => last_conflict = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_conflict.unwrap_or_else(|| ServiceError::conflict("account changed concurrently")))
    }
}

/// The generated server around the service.
pub fn server(service: PayoutsGrpc) -> PayoutsServiceServer<PayoutsGrpc> {
    PayoutsServiceServer::new(service)
}

fn to_proto(a: Account) -> pb::Account {
    pb::Account {
        user_id: a.user_id,
        stripe_account_id: a.stripe_account_id,
        account_created_at: Some(timestamp(a.account_created_at)),
        stripe_account_status: a.stripe_status.map(|s| pb::StripeAccountStatus {
            charges_enabled: s.charges_enabled,
            payouts_enabled: s.payouts_enabled,
            details_submitted: s.details_submitted,
            requirements_currently_due: s.requirements_currently_due,
            updated_at: optional_timestamp(s.updated_at),
        }),
    }
}

fn not_built<T>(what: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!("{what} is not built yet")))
}

#[tonic::async_trait]
impl PayoutsService for PayoutsGrpc {
    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn register_account(
        &self,
        request: Request<pb::RegisterAccountRequest>,
    ) -> Result<Response<pb::RegisterAccountResponse>, Status> {
        let r = request.into_inner();
        let created_at = required_time(r.account_created_at, "account_created_at")?;
        let registration = Registration::parse(
            &r.user_id,
            &r.stripe_account_id,
            created_at,
            self.clock.now(),
        )?;
        let account = self.register(registration).await?;
        tracing::info!(stripe_account_id = %account.stripe_account_id, "account registered");
        Ok(Response::new(pb::RegisterAccountResponse {
            account: Some(to_proto(account)),
        }))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let user_id = required_id(&request.get_ref().user_id, "user_id")?;
        let account = self
            .accounts
            .get(&user_id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("account {user_id} not found")))?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(to_proto(account)),
        }))
    }

    async fn request_payout(
        &self,
        _request: Request<pb::RequestPayoutRequest>,
    ) -> Result<Response<pb::RequestPayoutResponse>, Status> {
        not_built("requesting a payout")
    }

    async fn get_payout(
        &self,
        _request: Request<pb::GetPayoutRequest>,
    ) -> Result<Response<pb::GetPayoutResponse>, Status> {
        not_built("payout history")
    }

    async fn list_payouts(
        &self,
        _request: Request<pb::ListPayoutsRequest>,
    ) -> Result<Response<pb::ListPayoutsResponse>, Status> {
        not_built("payout history")
    }

    async fn resolve_approval(
        &self,
        _request: Request<pb::ResolveApprovalRequest>,
    ) -> Result<Response<pb::ResolveApprovalResponse>, Status> {
        not_built("the approval workflow")
    }

    async fn handle_stripe_event(
        &self,
        _request: Request<pb::HandleStripeEventRequest>,
    ) -> Result<Response<pb::HandleStripeEventResponse>, Status> {
        not_built("the webhook-driven payout lifecycle")
    }

    async fn list_audit_log(
        &self,
        _request: Request<pb::ListAuditLogRequest>,
    ) -> Result<Response<pb::ListAuditLogResponse>, Status> {
        not_built("the payout audit log")
    }
}
