//! The gRPC surface: parse requests into domain values, call the repository, map back.

use std::sync::Arc;

use payouts_proto::webhooks::v1 as pb;
use payouts_proto::webhooks::v1::webhooks_service_server::{
    WebhooksService, WebhooksServiceServer,
};
use payouts_runtime::ServiceError;
use payouts_runtime::convert::{
    optional_timestamp, page_size, paginate, parse_page_token, required_id, required_time,
    timestamp,
};
use tonic::{Request, Response, Status};

use crate::backfill::Backfill;
use crate::domain::{Endpoint, EventStatus, InboxEvent};
use crate::inbox::{Inbox, Ingested};
use crate::store::InboxRepository;

/// The tonic service.
pub struct WebhooksGrpc {
    inbox: Arc<Inbox>,
    /// `None` when Stripe is not configured.
    backfill: Option<Arc<Backfill>>,
}

impl WebhooksGrpc {
    pub fn new(inbox: Arc<Inbox>, backfill: Option<Arc<Backfill>>) -> Self {
        Self { inbox, backfill }
    }

    fn repository(&self) -> &Arc<dyn InboxRepository> {
        self.inbox.repository()
    }
}

/// The generated server around the service.
pub fn server(service: WebhooksGrpc) -> WebhooksServiceServer<WebhooksGrpc> {
    WebhooksServiceServer::new(service)
}

fn endpoint(value: i32) -> Result<Endpoint, ServiceError> {
    match pb::WebhookEndpoint::try_from(value) {
        Ok(pb::WebhookEndpoint::StripePayouts) => Ok(Endpoint::StripePayouts),
        Ok(pb::WebhookEndpoint::StripeSubscription) => Ok(Endpoint::StripeSubscription),
        Ok(pb::WebhookEndpoint::StripeTransfers) => Ok(Endpoint::StripeTransfers),
        _ => Err(ServiceError::invalid_argument(
            "endpoint must be STRIPE_PAYOUTS, STRIPE_TRANSFERS or STRIPE_SUBSCRIPTION",
        )),
    }
}

fn status_filter(value: i32) -> Result<Option<EventStatus>, ServiceError> {
    match pb::EventStatus::try_from(value) {
        Ok(pb::EventStatus::Unspecified) => Ok(None),
        Ok(pb::EventStatus::Processing) => Ok(Some(EventStatus::Processing)),
        Ok(pb::EventStatus::Completed) => Ok(Some(EventStatus::Completed)),
        Ok(pb::EventStatus::Failed) => Ok(Some(EventStatus::Failed)),
        Err(_) => Err(ServiceError::invalid_argument(format!(
            "status {value} is not defined"
        ))),
    }
}

fn to_proto(e: InboxEvent) -> pb::WebhookEvent {
    let endpoint = match e.endpoint {
        Endpoint::StripePayouts => pb::WebhookEndpoint::StripePayouts,
        Endpoint::StripeSubscription => pb::WebhookEndpoint::StripeSubscription,
        Endpoint::StripeTransfers => pb::WebhookEndpoint::StripeTransfers,
    };
    let status = match e.status {
        EventStatus::Processing => pb::EventStatus::Processing,
        EventStatus::Completed => pb::EventStatus::Completed,
        EventStatus::Failed => pb::EventStatus::Failed,
    };
    pb::WebhookEvent {
        event_id: e.event_id,
        event_type: e.event_type,
        endpoint: endpoint.into(),
        status: status.into(),
        account: e.account.unwrap_or_default(),
        livemode: e.livemode,
        api_version: e.api_version.unwrap_or_default(),
        created: e.created,
        attempts: i32::try_from(e.attempts).unwrap_or(i32::MAX),
        processed_at: Some(timestamp(e.received_at)),
        completed_at: optional_timestamp(e.completed_at),
        failed_at: optional_timestamp(e.failed_at),
        next_attempt_at: optional_timestamp(e.next_attempt_at),
        error: e.last_error.unwrap_or_default(),
        deliveries: i32::try_from(e.deliveries).unwrap_or(i32::MAX),
        outcome: e.outcome.unwrap_or_default(),
        source: e.source.as_str().to_owned(),
        waiting_for: e
            .waiting
            .as_ref()
            .map(|waiting| waiting.owner.as_str().to_owned())
            .unwrap_or_default(),
        waiting_since: optional_timestamp(e.waiting.as_ref().map(|waiting| waiting.since)),
        refusals: i32::try_from(e.refusals).unwrap_or(i32::MAX),
        alert_owed: e.alert.is_some(),
    }
}

fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl WebhooksService for WebhooksGrpc {
    #[tracing::instrument(skip_all, fields(endpoint = request.get_ref().endpoint))]
    async fn ingest_event(
        &self,
        request: Request<pb::IngestEventRequest>,
    ) -> Result<Response<pb::IngestEventResponse>, Status> {
        let r = request.into_inner();
        let endpoint = endpoint(r.endpoint)?;
        let header = Some(r.signature_header.as_str()).filter(|header| !header.is_empty());
        let (outcome, event_id, event_type) =
            match self.inbox.ingest(endpoint, r.payload, header).await? {
                Ingested::Accepted {
                    event_id,
                    event_type,
                } => (pb::IngestOutcome::Accepted, event_id, event_type),
                Ingested::Duplicate {
                    event_id,
                    event_type,
                } => (pb::IngestOutcome::Duplicate, event_id, event_type),
            };
        Ok(Response::new(pb::IngestEventResponse {
            outcome: outcome.into(),
            event_id,
            event_type,
        }))
    }

    async fn get_statistics(
        &self,
        _request: Request<pb::GetStatisticsRequest>,
    ) -> Result<Response<pb::GetStatisticsResponse>, Status> {
        let statistics = self.repository().statistics().await?;
        Ok(Response::new(pb::GetStatisticsResponse {
            total: count(statistics.total),
            processing: count(statistics.processing),
            completed: count(statistics.completed),
            failed: count(statistics.failed),
            backfilled: count(statistics.backfilled),
            waiting: count(statistics.waiting),
            waiting_for: statistics
                .waiting_for
                .into_iter()
                .map(|(owner, waiting)| (owner, count(waiting)))
                .collect(),
            alerts_owed: count(statistics.alerts_owed),
        }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let r = request.into_inner();
        let status = status_filter(r.status)?;
        let size = page_size(r.page_size, 50, 500)?;
        let after = parse_page_token(&r.page_token)?;
        let found = self.repository().list(status, after, size + 1).await?;
        let (page, next_page_token) = paginate(found, size, |e| {
            (
                e.received_at,
                crate::store::storage_id(e.endpoint, &e.event_id),
            )
        });
        Ok(Response::new(pb::ListEventsResponse {
            events: page.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_event(
        &self,
        request: Request<pb::GetEventRequest>,
    ) -> Result<Response<pb::GetEventResponse>, Status> {
        let r = request.into_inner();
        let endpoint = endpoint(r.endpoint)?;
        let event_id = required_id(&r.event_id, "event_id")?;
        let event = self
            .repository()
            .get(endpoint, &event_id)
            .await?
            .ok_or_else(|| {
                ServiceError::not_found(format!("webhook event {event_id} not found"))
            })?;
        Ok(Response::new(pb::GetEventResponse {
            event: Some(to_proto(event)),
        }))
    }

    async fn retry_event(
        &self,
        request: Request<pb::RetryEventRequest>,
    ) -> Result<Response<pb::RetryEventResponse>, Status> {
        let r = request.into_inner();
        let endpoint = match pb::WebhookEndpoint::try_from(r.endpoint) {
            Ok(pb::WebhookEndpoint::Unspecified) => None,
            _ => Some(endpoint(r.endpoint)?),
        };
        let event_id = required_id(&r.event_id, "event_id")?;
        let requested_by = if r.requested_by.trim().is_empty() {
            "unknown"
        } else {
            r.requested_by.trim()
        };
        let events = self.inbox.retry(endpoint, &event_id, requested_by).await?;
        Ok(Response::new(pb::RetryEventResponse {
            events: events.into_iter().map(to_proto).collect(),
        }))
    }

    async fn backfill_events(
        &self,
        request: Request<pb::BackfillEventsRequest>,
    ) -> Result<Response<pb::BackfillEventsResponse>, Status> {
        let r = request.into_inner();
        let since = required_time(r.since, "since")?;
        // The window first: bad input is reported whatever the configuration.
        let now = self.inbox.now();
        if since < Backfill::earliest(now) {
            return Err(ServiceError::invalid_argument(format!(
                "since must be at most {} days back: Stripe keeps events no longer",
                crate::backfill::RETENTION_DAYS
            ))
            .into());
        }
        if since > now {
            return Err(ServiceError::invalid_argument("since is in the future").into());
        }
        let Some(backfill) = &self.backfill else {
            return Err(ServiceError::failed_precondition(
                "the backfill reads Stripe's events: set STRIPE_SECRET_KEY",
            )
            .into());
        };
        tracing::info!(requested_by = %r.requested_by, %since, "webhook backfill requested");
        let report = backfill.run(since).await?;
        let number = |value: u32| i32::try_from(value).unwrap_or(i32::MAX);
        Ok(Response::new(pb::BackfillEventsResponse {
            since: Some(timestamp(report.since)),
            until: Some(timestamp(report.until)),
            listed: number(report.listed),
            stored: number(report.stored),
            duplicates: number(report.duplicates),
            accounts: number(report.accounts),
        }))
    }
}
