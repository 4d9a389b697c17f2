//! Dispatch over gRPC to the service that owns an event's effect.

use async_trait::async_trait;
use payouts_proto::common::v1::StripeEvent;
use payouts_proto::disputes::v1::HandleStripeEventRequest as DisputesRequest;
use payouts_proto::disputes::v1::disputes_service_client::DisputesServiceClient;
use payouts_proto::notifications::v1 as notifications_pb;
use payouts_proto::notifications::v1::notifications_service_client::NotificationsServiceClient;
use payouts_proto::payouts::v1::HandleStripeEventRequest as PayoutsRequest;
use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use payouts_runtime::grpc::{TracedChannel, service_channel};
use payouts_runtime::{ServiceName, Settings};

use crate::domain::{DispatchFailure, InboxEvent, Owner};
use crate::inbox::Dispatcher;
use crate::store::storage_id;

/// Calls `HandleStripeEvent` on payouts or disputes.
#[derive(Clone)]
pub struct GrpcDispatcher {
    payouts: PayoutsServiceClient<TracedChannel>,
    disputes: DisputesServiceClient<TracedChannel>,
    notifications: NotificationsServiceClient<TracedChannel>,
}

impl GrpcDispatcher {
    /// Clients to the owners at their configured URLs (connected lazily).
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            payouts: PayoutsServiceClient::new(service_channel(settings, ServiceName::Payouts)?),
            disputes: DisputesServiceClient::new(service_channel(settings, ServiceName::Disputes)?),
            notifications: NotificationsServiceClient::new(service_channel(
                settings,
                ServiceName::Notifications,
            )?),
        })
    }
}

fn stripe_event(event: &InboxEvent) -> StripeEvent {
    StripeEvent {
        id: event.event_id.clone(),
        r#type: event.event_type.clone(),
        account: event.account.clone().unwrap_or_default(),
        livemode: event.livemode,
        created: event.created,
        api_version: event.api_version.clone().unwrap_or_default(),
        payload_json: event.payload.clone().into_bytes(),
    }
}

#[async_trait]
impl Dispatcher for GrpcDispatcher {
    async fn alert_parked(&self, event: &InboxEvent) -> Result<(), String> {
        let id = storage_id(event.endpoint, &event.event_id);
        let data = serde_json::json!({
            "eventId": event.event_id,
            "eventType": event.event_type,
            "endpoint": event.endpoint.as_str(),
            "attempts": event.attempts,
            "lastError": event.last_error,
        });
        self.notifications
            .clone()
            .create_critical_alert(notifications_pb::CreateCriticalAlertRequest {
                r#type: "webhook_event_parked".to_owned(),
                severity: notifications_pb::AlertSeverity::Critical.into(),
                title: "Stripe Webhook Event Failed".to_owned(),
                description: format!(
                    "{} {} failed {} times and is parked: {}. Fix the cause, then retry it \
                     (POST /api/admin/webhooks/events/{}/retry).",
                    event.event_type,
                    event.event_id,
                    event.attempts,
                    event.last_error.as_deref().unwrap_or("no error recorded"),
                    event.event_id
                ),
                data_json: data.to_string(),
                // One alert per parking: raising it again (it is owed until confirmed) is
                // not a second alert; a retried event that parks again alerts again.
                dedupe_key: format!(
                    "webhook_parked:{id}:{}",
                    event.failed_at.map_or(0, |at| at.timestamp_millis())
                ),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|status| {
                format!(
                    "notifications answered {:?}: {}",
                    status.code(),
                    status.message()
                )
            })
    }

    #[tracing::instrument(skip_all, fields(event_id = %event.event_id, event_type = %event.event_type))]
    async fn dispatch(&self, owner: Owner, event: &InboxEvent) -> Result<String, DispatchFailure> {
        let answer = match owner {
            Owner::Payouts => self
                .payouts
                .clone()
                .handle_stripe_event(PayoutsRequest {
                    event: Some(stripe_event(event)),
                })
                .await
                .map(|response| {
                    let response = response.into_inner();
                    (response.applied, response.detail)
                }),
            Owner::Disputes => self
                .disputes
                .clone()
                .handle_stripe_event(DisputesRequest {
                    event: Some(stripe_event(event)),
                })
                .await
                .map(|response| {
                    let response = response.into_inner();
                    (response.applied, response.detail)
                }),
        };
        let name = owner.as_str();
        match answer {
            Ok((true, detail)) => Ok(format!("applied by {name}: {detail}")),
            Ok((false, detail)) => Ok(format!("no change by {name}: {detail}")),
            // A connection refused or reset arrives as UNAVAILABLE (or UNKNOWN/INTERNAL for
            // a broken HTTP/2 stream): the code is what decides, never the message.
            Err(status) => Err(DispatchFailure::new(
                status.code(),
                format!("{name} answered {:?}: {}", status.code(), status.message()),
            )),
        }
    }
}

/// The payouts service's answer to which connected accounts have payouts in flight.
#[async_trait]
impl crate::backfill::AccountsInFlight for GrpcDispatcher {
    async fn accounts_in_flight(&self) -> Result<Vec<String>, payouts_runtime::ServiceError> {
        let response = self
            .payouts
            .clone()
            .list_accounts_in_flight(payouts_proto::payouts::v1::ListAccountsInFlightRequest {})
            .await
            .map_err(|status| {
                payouts_runtime::ServiceError::unavailable(
                    "the payouts service did not name the accounts with payouts in flight",
                    anyhow::anyhow!("{status}"),
                )
            })?;
        Ok(response.into_inner().stripe_account_ids)
    }
}
