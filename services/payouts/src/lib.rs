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
    context.spawn_worker(
        payouts_runtime::ServiceName::Payouts.grpc_name(),
        "payout gauges",
        refresh_gauges(Arc::clone(&flow), context.shutdown.clone()),
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
        // At 0 from the start, so the first mismatch is an increase Prometheus sees.
        metrics::counter!("payouts_reconciliation_runs_total", "status" => "mismatches")
            .increment(0);
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

/// The pause causes the gauge always shows (0 when not the cause): the balance check's, an
/// admin's, and an escalation's (a level-3 alert halts payouts).
const PAUSE_CAUSES: [&str; 3] = ["automatic", "manual", "escalation"];

/// `payouts_transfer_pause_on{cause}`: 1 for the cause of the pause in force, 0 for the
/// others (all 0 while transfers run).
pub fn record_pause_gauge(pause: &pause::TransferPause) {
    let current = pause.cause.map(|cause| cause.as_str());
    for cause in PAUSE_CAUSES {
        let on = if current == Some(cause) { 1.0 } else { 0.0 };
        metrics::gauge!("payouts_transfer_pause_on", "cause" => cause).set(on);
    }
    if let Some(cause) = current.filter(|cause| !PAUSE_CAUSES.contains(cause)) {
        metrics::gauge!("payouts_transfer_pause_on", "cause" => cause).set(1.0);
    }
}

/// What the store says, as gauges every 15 seconds (every replica agrees): the transfer
/// pause (`payouts_transfer_pause_on{cause}`) and the pending payouts whose transfer's outcome
/// is unknown (`payouts_payouts_outcome_unknown`, and
/// `payouts_payouts_outcome_unknown_oldest_seconds`, 0 with none). A transfer in flight is
/// unknown for a moment too: alert on the age, not on the count.
async fn refresh_gauges(
    flow: Arc<flow::PayoutFlow>,
    shutdown: payouts_runtime::shutdown::Shutdown,
) {
    let stop = shutdown.requested();
    tokio::pin!(stop);
    loop {
        match flow.pause.get().await {
            Ok(pause) => record_pause_gauge(&pause),
            Err(error) => tracing::debug!(%error, "transfer pause not read for its gauge"),
        }
        match flow.payouts.unknown_outcomes().await {
            Ok(unknown) => {
                #[allow(clippy::cast_precision_loss)] // a count far below 2^53
                metrics::gauge!("payouts_payouts_outcome_unknown").set(unknown.count as f64);
                let age = unknown
                    .oldest_since
                    .map_or(0.0, |since| seconds(flow.clock.now() - since));
                metrics::gauge!("payouts_payouts_outcome_unknown_oldest_seconds").set(age);
            }
            Err(error) => tracing::debug!(%error, "unknown outcomes not counted"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(15)) => {}
        }
    }
}

/// A duration in seconds for a gauge (never negative).
#[allow(clippy::cast_precision_loss)] // milliseconds far below 2^53
fn seconds(duration: chrono::Duration) -> f64 {
    duration.num_milliseconds().max(0) as f64 / 1000.0
}
