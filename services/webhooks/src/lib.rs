//! Webhooks service: the durable inbox of Stripe events (`payouts.webhooks.v1.WebhooksService`).
//! Owns the `processedWebhookEvents` collection.
//!
//! - [`signature`]: Stripe signature verification, pure.
//! - [`domain`]: inbox events, their states, routing and retry policy, pure.
//! - [`store`]: the repository trait, its MongoDB and embedded implementations.
//! - [`inbox`]: ingest (verify, store, acknowledge) and the exactly-once worker.
//! - [`dispatch`]: delivery to the owning service over gRPC.
//! - [`backfill`]: events Stripe never delivered, recovered from its event list.
//! - [`grpc`]: the gRPC surface.

pub mod backfill;
pub mod dispatch;
pub mod domain;
pub mod grpc;
pub mod inbox;
pub mod signature;
pub mod store;

use std::sync::Arc;

use payouts_runtime::grpc::GrpcServer;
use payouts_runtime::{ServiceContext, Settings};

/// The inbox configuration from the process settings.
pub fn inbox_settings(settings: &Settings) -> inbox::InboxSettings {
    let seconds = |duration: std::time::Duration| {
        chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::seconds(60))
    };
    inbox::InboxSettings {
        payouts_secrets: settings.stripe_webhook_secrets_payouts.clone(),
        subscription_secrets: settings.stripe_webhook_secrets_subscription.clone(),
        transfers_secrets: settings.stripe_webhook_secrets_transfers.clone(),
        tolerance_seconds: i64::try_from(settings.stripe_webhook_tolerance.as_secs())
            .unwrap_or(300),
        livemode: settings.stripe_livemode,
        policy: domain::RetryPolicy {
            max_attempts: settings.webhook_max_attempts,
            base_delay: seconds(settings.webhook_retry_base),
            lease: seconds(settings.webhook_lease),
            ..domain::RetryPolicy::default()
        },
        poll_interval: settings.webhook_poll_interval,
    }
}

/// Builds the service on the context's store, starts its worker, and adds it to `server`.
pub async fn mount(context: &ServiceContext, server: &mut GrpcServer) -> anyhow::Result<()> {
    let repository = store::open(&context.store).await?;
    let dispatcher = Arc::new(dispatch::GrpcDispatcher::new(&context.settings)?);
    let inbox = Arc::new(inbox::Inbox::new(
        repository,
        Arc::clone(&dispatcher) as Arc<dyn inbox::Dispatcher>,
        Arc::clone(&context.clock),
        inbox_settings(&context.settings),
    ));
    context.spawn_worker(
        payouts_runtime::ServiceName::Webhooks.grpc_name(),
        "event processing",
        Arc::clone(&inbox).run_worker(context.shutdown.clone()),
    );
    context.spawn_worker(
        payouts_runtime::ServiceName::Webhooks.grpc_name(),
        "waiting events gauge",
        Arc::clone(&inbox)
            .run_waiting_gauge(context.shutdown.clone(), std::time::Duration::from_secs(15)),
    );
    let backfill = match &context.settings.stripe_secret_key {
        Some(key) => Some(Arc::new(backfill::Backfill {
            inbox: Arc::clone(&inbox),
            stripe: Arc::new(backfill::StripeEventsClient::new(
                key,
                &context.settings.stripe_api_base,
            )?),
            accounts: dispatcher,
            clock: Arc::clone(&context.clock),
        })),
        None => {
            tracing::warn!(
                "the backfill of undelivered Stripe events is off: STRIPE_SECRET_KEY is not set"
            );
            None
        }
    };
    if let (Some(backfill), Some(interval)) =
        (&backfill, context.settings.webhook_backfill_interval)
    {
        payouts_runtime::jobs::Periodic::spawn(
            context,
            payouts_runtime::ServiceName::Webhooks,
            "webhook-backfill",
            Arc::clone(backfill) as Arc<dyn payouts_runtime::jobs::PeriodicJob>,
            "webhookJobs",
            interval,
            chrono::Duration::minutes(10),
            std::time::Duration::from_secs(30),
        );
    }
    server.add_service(grpc::server(grpc::WebhooksGrpc::new(inbox, backfill)));
    // Alone, the process refuses to start without its secrets (Settings::check_role); in
    // the all-in-one process it starts, and its health says it cannot take deliveries.
    if let Some(reason) = context.settings.webhooks_unready_reason() {
        server.mark_unready(
            payouts_proto::webhooks::v1::webhooks_service_server::SERVICE_NAME,
            &reason.to_string(),
        );
    }
    Ok(())
}
