//! Notifications service: stores in-app notifications for users and admins and serves them
//! over gRPC (`payouts.notifications.v1.NotificationsService`), and the critical alerts
//! every service raises, and their emails. Owns `notifications` and `criticalAlerts` (each
//! alert carries its own email outbox entry).
//!
//! - [`domain`]: notifications as values, pure.
//! - [`alerts`]: critical alerts as values, pure.
//! - [`email`]: which alerts are emailed, their retries and their text, pure.
//! - [`escalation`]: the escalation policy (design §10): signals to levels, pure.
//! - [`paging`]: what level 3 owes (a page to Alertmanager, a transfer halt), pure.
//! - [`outbox`]: the email worker (SMTP through lettre).
//! - [`escalator`]: the page and halt worker (Alertmanager over HTTP, payouts over gRPC).
//! - [`store`]: the repository trait, its MongoDB and embedded implementations.
//! - [`grpc`]: the gRPC surface.

pub mod alerts;
pub mod domain;
pub mod email;
pub mod escalation;
pub mod escalator;
pub mod grpc;
pub mod outbox;
pub mod paging;
pub mod store;

use std::sync::Arc;

use payouts_runtime::ServiceContext;
use payouts_runtime::grpc::GrpcServer;

/// Builds the service on the context's store, starts its email worker when `SMTP_URL` is
/// set, and adds it to `server`.
pub async fn mount(context: &ServiceContext, server: &mut GrpcServer) -> anyhow::Result<()> {
    let repositories = store::open(&context.store).await?;
    let settings = &context.settings;
    let emails = match &settings.smtp_url {
        Some(url) => {
            let outbox = Arc::new(outbox::Outbox {
                alerts: Arc::clone(&repositories.alerts),
                mailer: Arc::new(outbox::SmtpMailer::new(url)?),
                clock: Arc::clone(&context.clock),
                from: settings.alert_email_from.clone(),
                to: settings.alert_email_to.clone(),
                escalation_to: settings.escalation.email_to.clone(),
                dashboard_url: settings.dashboard_url.clone(),
                policy: email::EmailPolicy::default(),
                poll_interval: std::time::Duration::from_secs(1),
            });
            context.spawn_worker(
                payouts_runtime::ServiceName::Notifications.grpc_name(),
                "alert email outbox",
                outbox.run(context.shutdown.clone()),
            );
            // At 0 from the start, so the first failure is an increase Prometheus sees.
            metrics::counter!("payouts_alert_emails_total", "result" => "failed").increment(0);
            true
        }
        None => false,
    };
    let escalation = &settings.escalation;
    let pager: Option<Arc<dyn escalator::Pager>> = match &escalation.alertmanager_url {
        Some(url) => Some(Arc::new(escalator::AlertmanagerPager::new(url)?)),
        None => {
            tracing::warn!(
                "ALERTMANAGER_URL is not set: level-3 alerts are emailed and halt transfers, but nobody is paged"
            );
            None
        }
    };
    let paging = pager.is_some();
    let escalator = Arc::new(escalator::Escalator {
        alerts: Arc::clone(&repositories.alerts),
        pager,
        halter: Arc::new(escalator::GrpcHalter::new(settings)?),
        clock: Arc::clone(&context.clock),
        policy: paging::PagePolicy::new(
            chrono::Duration::from_std(escalation.page_interval)
                .unwrap_or(chrono::Duration::seconds(60)),
        ),
        links: paging::PageLinks {
            runbook_base_url: escalation.runbook_base_url.clone(),
            dashboard_url: settings.dashboard_url.clone(),
        },
        poll_interval: std::time::Duration::from_secs(1),
    });
    context.spawn_worker(
        payouts_runtime::ServiceName::Notifications.grpc_name(),
        "escalation pages and halts",
        escalator.run(context.shutdown.clone()),
    );
    context.spawn_worker(
        payouts_runtime::ServiceName::Notifications.grpc_name(),
        "open alerts gauge",
        open_alerts_gauge(Arc::clone(&repositories.alerts), context.shutdown.clone()),
    );
    let service = grpc::NotificationsGrpc::new(
        repositories,
        Arc::clone(&context.clock),
        Arc::clone(&context.ids),
        settings.admin_user_ids.clone(),
    )
    .with_emails(emails)
    .with_escalation(
        escalation::EscalationPolicy::from_settings(&settings.escalation),
        paging,
    );
    server.add_service(grpc::server(service));
    Ok(())
}

/// Design §10's open alerts by type and escalation level, as the store counts them (every
/// replica agrees), every 15 seconds: `payouts_alerts_open{type,level}` (a pair with none
/// left reads 0).
async fn open_alerts_gauge(
    alerts: Arc<dyn store::AlertRepository>,
    shutdown: payouts_runtime::shutdown::Shutdown,
) {
    let stop = shutdown.requested();
    tokio::pin!(stop);
    let mut seen = std::collections::BTreeSet::new();
    loop {
        match alerts.open_by_type().await {
            Ok(open) => {
                seen.extend(open.keys().cloned());
                for key @ (kind, level) in &seen {
                    #[allow(clippy::cast_precision_loss)] // a count far below 2^53
                    let count = open.get(key).copied().unwrap_or(0) as f64;
                    metrics::gauge!(
                        "payouts_alerts_open",
                        "type" => kind.clone(),
                        "level" => level.number().to_string()
                    )
                    .set(count);
                }
            }
            Err(error) => tracing::debug!(%error, "open alerts not counted"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(std::time::Duration::from_secs(15)) => {}
        }
    }
}
