//! The gRPC surface: parse requests into domain values, call the repository, map back.

use payouts_proto::disputes::v1 as pb;
use payouts_proto::disputes::v1::disputes_service_server::{
    DisputesService, DisputesServiceServer,
};
use std::sync::Arc;

use payouts_runtime::convert::{page_size, paginate, parse_page_token, required_id, timestamp};
use payouts_runtime::{Currency, Money, ServiceError};
use tonic::{Request, Response, Status};

use crate::cases::Cases;
use crate::charges::{self, ChargeCase};
use crate::domain::{Allocation, AllocationStatus, MarkKind};
use crate::earnings::Ledger;

/// Design §7: payouts of creators with refunds or disputes in this window are held.
pub const RECENT_WINDOW: chrono::Duration = chrono::Duration::days(30);

/// The tonic service.
pub struct DisputesGrpc {
    ledger: Arc<Ledger>,
    cases: Cases,
}

impl DisputesGrpc {
    pub fn new(cases: Cases) -> Self {
        Self {
            ledger: Arc::clone(&cases.ledger),
            cases,
        }
    }
}

fn status_of(status: AllocationStatus) -> pb::AllocationStatus {
    match status {
        AllocationStatus::Active => pb::AllocationStatus::Active,
        AllocationStatus::AtRisk => pb::AllocationStatus::AtRisk,
        AllocationStatus::Disputed => pb::AllocationStatus::Disputed,
        AllocationStatus::Refunded => pb::AllocationStatus::Refunded,
    }
}

/// The generated server around the service.
pub fn server(service: DisputesGrpc) -> DisputesServiceServer<DisputesGrpc> {
    DisputesServiceServer::new(service)
}

fn to_proto(a: Allocation) -> pb::Allocation {
    let status = status_of(a.status);
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
        payer_id: a.payer_id.unwrap_or_default(),
        refunded_at: a.refunded_at.map(timestamp),
        disputed_at: a.disputed_at.map(timestamp),
        dispute_outcome: a.dispute_outcome.unwrap_or_default(),
        dispute_resolved_at: a.dispute_resolved_at.map(timestamp),
        audit: a
            .audit
            .into_iter()
            .map(|entry| pb::AllocationAudit {
                at: Some(timestamp(entry.at)),
                event_id: entry.event_id,
                from_status: status_of(entry.from_status).into(),
                to_status: status_of(entry.to_status).into(),
                from_cents: entry.from_cents,
                to_cents: entry.to_cents,
                reason: entry.reason,
            })
            .collect(),
    }
}

/// The disputes of a case, with the creators they touch.
fn disputes_of(case: &ChargeCase, allocations: &[Allocation]) -> Vec<pb::DisputeCase> {
    let mut affected: std::collections::BTreeMap<&str, pb::AffectedCreator> =
        std::collections::BTreeMap::new();
    for a in allocations {
        let currency = a.amount.currency.clone();
        let entry = affected
            .entry(a.user_id.as_str())
            .or_insert_with(|| pb::AffectedCreator {
                user_id: a.user_id.clone(),
                allocations: 0,
                frozen: Some(Money::new(0, currency.clone()).into()),
                refunded: Some(Money::new(0, currency).into()),
            });
        entry.allocations += 1;
        if let Some(frozen) = entry.frozen.as_mut() {
            frozen.cents += a.frozen_cents;
        }
        if let Some(refunded) = entry.refunded.as_mut() {
            refunded.cents += a.refunded_cents;
        }
    }
    let affected: Vec<pb::AffectedCreator> = affected.into_values().collect();
    case.disputes
        .values()
        .map(|dispute| pb::DisputeCase {
            dispute_id: dispute.id.clone(),
            charge_id: case.charge_id.clone(),
            amount: Some(Money::new(dispute.amount, dispute.currency.clone()).into()),
            state: dispute.state().to_owned(),
            stripe_status: dispute.status.clone(),
            reason: dispute.reason.clone(),
            opened_at: Some(timestamp(dispute.opened_at)),
            closed_at: dispute.closed_at.map(timestamp),
            funds_withdrawn: dispute.funds_withdrawn,
            funds_reinstated: dispute.funds_reinstated,
            affected: affected.clone(),
        })
        .collect()
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
            &r.payer_id,
            amount,
            self.ledger.clock.now(),
        )?;
        // A credit recorded after its charge was refunded or disputed is written as the
        // charge's case has it, never payable for a moment.
        let (allocation, created) = self.cases.record(&allocation).await?;
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
        let (earnings, book) = self.ledger.earnings_and_book(&user_id, &currency).await?;
        let now = self.ledger.clock.now();
        Ok(Response::new(pb::GetEarningsResponse {
            user_id,
            lifetime: Some(earnings.lifetime.into()),
            active: Some(earnings.active.into()),
            frozen: Some(earnings.frozen.into()),
            refunded: Some(earnings.refunded.into()),
            recent_refund_count: book.recent_count(MarkKind::Refund, now, RECENT_WINDOW),
            recent_dispute_count: book.recent_count(MarkKind::Dispute, now, RECENT_WINDOW),
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

    #[tracing::instrument(skip_all, fields(event_id))]
    async fn handle_stripe_event(
        &self,
        request: Request<pb::HandleStripeEventRequest>,
    ) -> Result<Response<pb::HandleStripeEventResponse>, Status> {
        let event = request
            .into_inner()
            .event
            .ok_or_else(|| ServiceError::invalid_argument("event is required"))?;
        tracing::Span::current().record("event_id", event.id.as_str());
        let event_id = required_id(&event.id, "event.id")?;
        if !charges::handles(&event.r#type) {
            return Ok(Response::new(pb::HandleStripeEventResponse {
                applied: false,
                detail: format!("{} is not a refund or dispute event", event.r#type),
            }));
        }
        #[derive(serde::Deserialize)]
        struct Envelope {
            data: Data,
        }
        #[derive(serde::Deserialize)]
        struct Data {
            object: serde_json::Value,
        }
        let envelope: Envelope = serde_json::from_slice(&event.payload_json).map_err(|error| {
            ServiceError::invalid_argument(format!("event {event_id} has no data.object: {error}"))
        })?;
        let created = chrono::DateTime::from_timestamp(event.created, 0)
            .unwrap_or_else(|| self.ledger.clock.now());
        let applied = self
            .cases
            .handle(&event_id, &event.r#type, created, &envelope.data.object)
            .await?;
        tracing::info!(event_type = %event.r#type, detail = %applied.detail, "refund or dispute event applied");
        Ok(Response::new(pb::HandleStripeEventResponse {
            applied: applied.applied,
            detail: applied.detail,
        }))
    }

    async fn list_disputes(
        &self,
        request: Request<pb::ListDisputesRequest>,
    ) -> Result<Response<pb::ListDisputesResponse>, Status> {
        let r = request.into_inner();
        let wanted = match r.status.trim() {
            "" | "all" => None,
            status => Some(status.to_owned()),
        };
        let size = page_size(r.page_size, 50, 200)?;
        let mut after = parse_page_token(&r.page_token)?;
        let mut disputes = Vec::new();
        let mut next_page_token = String::new();
        // Cases in pages, newest first, until the page is full (a filtered status may be rare).
        'pages: loop {
            let cases = self.cases.cases.list_disputed(after.clone(), size).await?;
            let exhausted = cases.len() < size;
            for case in cases {
                after = Some((case.created_at, case.charge_id.clone()));
                let matching: Vec<_> = case
                    .disputes
                    .values()
                    .filter(|d| wanted.as_deref().is_none_or(|w| d.state() == w))
                    .collect();
                if matching.is_empty() {
                    continue;
                }
                if disputes.len() >= size {
                    // One more matches: the page ends before this case.
                    break 'pages;
                }
                let allocations = self
                    .ledger
                    .allocations
                    .list_by_charge(&case.charge_id, crate::store::MAX_ALLOCATIONS_PER_CHARGE)
                    .await?;
                disputes.extend(
                    disputes_of(&case, &allocations)
                        .into_iter()
                        .filter(|d| wanted.as_deref().is_none_or(|w| d.state == w)),
                );
                next_page_token =
                    payouts_runtime::convert::page_token(case.created_at, &case.charge_id);
            }
            if exhausted {
                next_page_token.clear();
                break;
            }
        }
        Ok(Response::new(pb::ListDisputesResponse {
            disputes,
            next_page_token,
        }))
    }
}
