//! The gRPC surface: parse requests into domain values, call the repository, map back.

use payouts_proto::disputes::v1 as pb;
use payouts_proto::disputes::v1::disputes_service_server::{
    DisputesService, DisputesServiceServer,
};
use payouts_runtime::convert::{page_size, paginate, parse_page_token, required_id, timestamp};
use payouts_runtime::{Currency, Money, ServiceError};
use tonic::{Request, Response, Status};

use crate::domain::{Allocation, AllocationStatus};
use crate::earnings::Ledger;

/// The tonic service.
pub struct DisputesGrpc {
    ledger: Ledger,
}

impl DisputesGrpc {
    pub fn new(ledger: Ledger) -> Self {
        Self { ledger }
    }
}

/// The generated server around the service.
pub fn server(service: DisputesGrpc) -> DisputesServiceServer<DisputesGrpc> {
    DisputesServiceServer::new(service)
}

fn to_proto(a: Allocation) -> pb::Allocation {
    let status = match a.status {
        AllocationStatus::Active => pb::AllocationStatus::Active,
        AllocationStatus::AtRisk => pb::AllocationStatus::AtRisk,
        AllocationStatus::Disputed => pb::AllocationStatus::Disputed,
        AllocationStatus::Refunded => pb::AllocationStatus::Refunded,
    };
    let currency = a.amount.currency.clone();
    pb::Allocation {
        id: a.id,
        user_id: a.user_id,
        charge_id: a.charge_id,
        original_amount: Some(a.original_amount.into()),
        amount: Some(a.amount.into()),
        status: status.into(),
        refunded: Some(Money::new(a.refunded_cents, currency.clone()).into()),
        frozen: Some(Money::new(a.frozen_cents, currency).into()),
        dispute_id: a.dispute_id.unwrap_or_default(),
        created_at: Some(timestamp(a.created_at)),
        updated_at: Some(timestamp(a.updated_at)),
    }
}

#[tonic::async_trait]
impl DisputesService for DisputesGrpc {
    #[tracing::instrument(skip_all, fields(allocation_id = %request.get_ref().allocation_id))]
    async fn record_allocation(
        &self,
        request: Request<pb::RecordAllocationRequest>,
    ) -> Result<Response<pb::RecordAllocationResponse>, Status> {
        let r = request.into_inner();
        let amount = Money::try_from(
            r.amount
                .ok_or_else(|| ServiceError::invalid_argument("amount is required"))?,
        )?;
        let allocation = Allocation::credit(
            &r.allocation_id,
            &r.user_id,
            &r.charge_id,
            amount,
            self.ledger.clock.now(),
        )?;
        let (allocation, created) = self.ledger.record(&allocation).await?;
        if created {
            tracing::info!(user_id = %allocation.user_id, cents = allocation.amount.cents, "allocation credited");
        }
        Ok(Response::new(pb::RecordAllocationResponse {
            allocation: Some(to_proto(allocation)),
            created,
        }))
    }

    async fn get_earnings(
        &self,
        request: Request<pb::GetEarningsRequest>,
    ) -> Result<Response<pb::GetEarningsResponse>, Status> {
        let r = request.into_inner();
        let user_id = required_id(&r.user_id, "user_id")?;
        let currency = if r.currency.trim().is_empty() {
            Currency::usd()
        } else {
            Currency::parse(&r.currency)?
        };
        let earnings = self.ledger.earnings(&user_id, &currency).await?;
        Ok(Response::new(pb::GetEarningsResponse {
            user_id,
            lifetime: Some(earnings.lifetime.into()),
            active: Some(earnings.active.into()),
            frozen: Some(earnings.frozen.into()),
            refunded: Some(earnings.refunded.into()),
            // Allocations are only credited until refunds and disputes are built (issue 11),
            // which will count them in the earnings book as they happen.
            recent_refund_count: 0,
            recent_dispute_count: 0,
        }))
    }

    async fn list_allocations(
        &self,
        request: Request<pb::ListAllocationsRequest>,
    ) -> Result<Response<pb::ListAllocationsResponse>, Status> {
        let r = request.into_inner();
        let user_id = required_id(&r.user_id, "user_id")?;
        let size = page_size(r.page_size, 50, 500)?;
        let after = parse_page_token(&r.page_token)?;
        let found = self
            .ledger
            .allocations
            .list_by_user(&user_id, after, size + 1)
            .await?;
        let (page, next_page_token) = paginate(found, size, |a| (a.created_at, a.id.clone()));
        Ok(Response::new(pb::ListAllocationsResponse {
            allocations: page.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn list_payable_earnings(
        &self,
        request: Request<pb::ListPayableEarningsRequest>,
    ) -> Result<Response<pb::ListPayableEarningsResponse>, Status> {
        let r = request.into_inner();
        let currency = if r.currency.trim().is_empty() {
            Currency::usd()
        } else {
            Currency::parse(&r.currency)?
        };
        let size = page_size(r.page_size, 500, 1_000)?;
        // The token is the last user id of the previous page.
        let after = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        let mut books = self.ledger.books.list(after, size + 1).await?;
        let next_page_token = if books.len() > size {
            books.truncate(size);
            books
                .last()
                .map(|book| book.user_id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListPayableEarningsResponse {
            earnings: books
                .into_iter()
                .map(|book| pb::PayableEarnings {
                    payable: Some(book.earnings(&currency).active.into()),
                    user_id: book.user_id,
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn handle_stripe_event(
        &self,
        _request: Request<pb::HandleStripeEventRequest>,
    ) -> Result<Response<pb::HandleStripeEventResponse>, Status> {
        Err(Status::unimplemented(
            "refund and dispute handling is not built yet",
        ))
    }
}
