//! Balance service (`payouts.balance.v1.BalanceService`): platform balance monitoring
//! (design §5). Owns `platformBalanceSnapshots`.
//!
//! - [`domain`]: thresholds, the reserve, the trend, snapshots and alert levels, pure.
//! - [`check`]: the balance check and the ports it reads (Stripe, the owners of what is
//!   owed) and raises alerts through.
//! - [`store`]: the repository trait, its MongoDB and embedded implementations.
//! - [`ports`]: the owners of what is owed and the notifications service over gRPC, Stripe.
//! - [`schedule`]: the check on `BALANCE_CHECK_SCHEDULE`, once per slot across replicas.
//! - [`grpc`]: the gRPC surface.

pub mod check;
pub mod domain;
pub mod grpc;
pub mod ports;
pub mod schedule;
pub mod store;

use std::sync::Arc;

use payouts_runtime::ServiceContext;
use payouts_runtime::grpc::GrpcServer;

/// Builds the service on the context's store and adds it to `server`.
pub async fn mount(context: &ServiceContext, server: &mut GrpcServer) -> anyhow::Result<()> {
    let repositories = store::open(&context.store).await?;
    let settings = &context.settings;
    let [critical_cents, warning_cents, healthy_cents] = settings.balance_thresholds_cents;
    let check = match &settings.stripe_secret_key {
        Some(key) => Some(Arc::new(check::BalanceCheck {
            thresholds: domain::Thresholds {
                critical_cents,
                warning_cents,
                healthy_cents,
                reserve_multiplier_bps: settings.reserve_multiplier_bps,
            },
            stripe: Arc::new(ports::StripeBalanceClient::new(
                key,
                &settings.stripe_api_base,
            )?),
            obligations: Arc::new(ports::GrpcObligations::new(settings)?),
            alerts: Arc::new(ports::GrpcAlerts::new(settings)?),
            snapshots: Arc::clone(&repositories.snapshots),
            open_alerts: repositories.alerts,
            clock: Arc::clone(&context.clock),
            transfers: Arc::new(ports::GrpcTransfers::new(settings)?),
            pause_at: settings
                .balance_pause_at
                .as_deref()
                .and_then(domain::ThresholdStatus::parse),
        })),
        None => None,
    };
    if check.is_some() {
        // At 0 from the start, so the first failure is an increase Prometheus sees.
        metrics::counter!("payouts_balance_checks_total", "status" => "failed").increment(0);
    }
    if let (Some(check), Some(schedule)) = (&check, &settings.balance_check_schedule) {
        let scheduler = Arc::new(schedule::Scheduler {
            check: Arc::clone(check),
            runs: Arc::clone(&repositories.runs),
            schedule: schedule.clone(),
            holder: context.ids.next("replica"),
            clock: Arc::clone(&context.clock),
            lease: chrono::Duration::minutes(10),
            tries: 5,
            retry_after: std::time::Duration::from_secs(60),
        });
        context.spawn_worker(
            payouts_runtime::ServiceName::Balance.grpc_name(),
            "balance check schedule",
            scheduler.run(context.shutdown.clone()),
        );
    }
    context.spawn_worker(
        payouts_runtime::ServiceName::Balance.grpc_name(),
        "last check gauge",
        last_check_gauge(
            Arc::clone(&repositories.snapshots),
            context.shutdown.clone(),
        ),
    );
    server.add_service(grpc::server(grpc::BalanceGrpc::new(
        repositories.snapshots,
        check,
    )));
    Ok(())
}

/// `payouts_balance_last_check_timestamp_seconds`: when the newest snapshot was taken (the
/// scheduled or cron check's), from the store every 15 seconds, so every replica agrees and
/// a restart does not lose it. Not set before the first snapshot.
async fn last_check_gauge(
    snapshots: Arc<dyn store::SnapshotRepository>,
    shutdown: payouts_runtime::shutdown::Shutdown,
) {
    let stop = shutdown.requested();
    tokio::pin!(stop);
    loop {
        match snapshots.recent(None, 1).await {
            Ok(newest) => {
                if let Some(snapshot) = newest.first() {
                    #[allow(clippy::cast_precision_loss)] // milliseconds far below 2^53
                    let at = snapshot.taken_at.timestamp_millis() as f64 / 1000.0;
                    metrics::gauge!("payouts_balance_last_check_timestamp_seconds").set(at);
                }
            }
            Err(error) => tracing::debug!(%error, "the last balance check not read"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(15)) => {}
        }
    }
}
