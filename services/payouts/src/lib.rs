//! Payouts service (`payouts.payouts.v1.PayoutsService`): creator accounts, payout requests,
//! Stripe transfers and the payout lifecycle. Owns `accounts`, `usdPayouts` and
//! `payoutAuditLogs`.
//!
//! - [`domain`]: accounts, pure.
//! - [`payout`]: payouts and their forward-only state machine, pure.
//! - [`store`]: the repository traits, their MongoDB and embedded implementations.
//! - [`stripe`]: Stripe through async-stripe, and how Stripe's errors are classified.
//! - [`ports`]: the limits, approvals and notifications services as the flow sees them.
//! - [`flow`]: request, admission, transfer, approval decisions, owed side effects, the
//!   worker.
//! - [`events`]: the Stripe events this service owns; [`attribution`]: which of our payouts
//!   a creator's bank payout carried, only as Stripe says it.
//! - [`obligations`]: what payouts still owe, for the balance check.
//! - [`pause`]: the transfer pause (automatic from the balance check, or an admin's).
//! - [`reconcile`]: our payouts compared with Stripe's transfers, pure; [`reconciler`] runs
//!   it (on a schedule and for admins) and keeps the reports.
//! - [`grpc`]: the gRPC surface.

pub mod attribution;
pub mod domain;
pub mod events;
pub mod flow;
pub mod grpc;
pub mod obligations;
pub mod pause;
pub mod payout;
pub mod ports;
pub mod reconcile;
pub mod reconciler;
pub mod store;
pub mod stripe;

use std::sync::Arc;

use payouts_runtime::ServiceContext;
use payouts_runtime::grpc::GrpcServer;

/// Builds the service on the context's store, starts its worker, and adds it to `server`.
pub async fn mount(context: &ServiceContext, server: &mut GrpcServer) -> anyhow::Result<()> {
    let repositories = store::open(&context.store).await?;
    let settings = &context.settings;
    let stripe: Option<Arc<dyn stripe::StripeApi>> = match &settings.stripe_secret_key {
        Some(key) => Some(Arc::new(stripe::StripeClient::new(
            key,
            &settings.stripe_api_base,
        )?)),
        None => None,
    };
    let reports = Arc::clone(&repositories.reports);
    let flow = Arc::new(flow::PayoutFlow {
        accounts: repositories.accounts,
        payouts: repositories.payouts,
        pause: repositories.pause,
        limits: Arc::new(ports::GrpcLimits::new(settings)?),
        approvals: Arc::new(ports::GrpcApprovals::new(settings)?),
        notifier: Arc::new(ports::GrpcNotifier::new(settings)?),
        alerts: Arc::new(ports::GrpcAlerts::new(settings)?),
        stripe,
        clock: Arc::clone(&context.clock),
        ids: Arc::clone(&context.ids),
        poll_interval: settings.payout_poll_interval,
        retry_base: chrono::Duration::from_std(settings.payout_retry_base)
            .unwrap_or(payout::RETRY_BASE),
        unknown_alert_after: chrono::Duration::from_std(settings.payout_unknown_alert)
            .unwrap_or(chrono::Duration::hours(1)),
        bank_attribution_alert_after: chrono::Duration::from_std(
            settings.bank_payout_attribution_alert,
        )
        .unwrap_or(attribution::ALERT_AFTER),
    });
    context.spawn_worker(
        payouts_runtime::ServiceName::Payouts.grpc_name(),
        "payout worker",
        Arc::clone(&flow).run_worker(context.shutdown.clone()),
    );
    let reconciler = Arc::new(reconciler::Reconciler::new(
        Arc::clone(&flow),
        reports,
        settings,
    ));
    if let (Some(_), Some(interval)) = (
        &settings.stripe_secret_key,
        settings.reconciliation_interval,
    ) {
        payouts_runtime::jobs::Periodic::spawn(
            context,
            payouts_runtime::ServiceName::Payouts,
            "reconciliation",
            Arc::clone(&reconciler) as Arc<dyn payouts_runtime::jobs::PeriodicJob>,
            "payoutJobs",
            interval,
            chrono::Duration::minutes(30),
            // An incomplete run (Stripe down) is tried again at the next look, not at once.
            std::time::Duration::from_secs(600),
        );
    }
    server.add_service(grpc::server(grpc::PayoutsGrpc::new(flow, reconciler)));
    Ok(())
}
