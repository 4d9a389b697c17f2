//! Escalation through the gRPC surface: an episode an admin resolved is over. A retried old
//! signal (its answer was lost) or one new signal inside a window that still holds the old
//! ones does not open the rule's alert (and its halt) again; a new burst after the
//! resolution does.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

use std::sync::Arc;

use chrono::{Duration, Utc};
use payouts_notifications::grpc::NotificationsGrpc;
use payouts_notifications::store::{
    MemoryAlerts, MemoryNotifications, MemorySignals, Repositories,
};
use payouts_proto::notifications::v1 as pb;
use payouts_proto::notifications::v1::notifications_service_server::NotificationsService;
use payouts_runtime::clock::ManualClock;
use payouts_runtime::ids::SequentialIds;
use tonic::Request;

fn service(clock: &ManualClock) -> NotificationsGrpc {
    NotificationsGrpc::new(
        Repositories {
            notifications: Arc::new(MemoryNotifications::default()),
            alerts: Arc::new(MemoryAlerts::default()),
            signals: Arc::new(MemorySignals::default()),
        },
        Arc::new(clock.clone()),
        Arc::new(SequentialIds::default()),
        Vec::new(),
    )
}

async fn dispute(service: &NotificationsGrpc, id: &str) {
    service
        .create_critical_alert(Request::new(pb::CreateCriticalAlertRequest {
            r#type: "dispute_created".to_owned(),
            severity: pb::AlertSeverity::Critical.into(),
            title: "Payment Dispute Created".to_owned(),
            description: format!("dispute {id}"),
            dedupe_key: format!("dispute_created:{id}"),
            signal: "dispute_created".to_owned(),
            signal_id: format!("dispute_created:{id}"),
            subject: "creator_1".to_owned(),
            ..Default::default()
        }))
        .await
        .unwrap();
}

async fn bursts(service: &NotificationsGrpc) -> Vec<pb::CriticalAlert> {
    service
        .list_critical_alerts(Request::new(pb::ListCriticalAlertsRequest {
            status: pb::AlertStatus::Unspecified.into(),
            r#type: "escalation_dispute_burst".to_owned(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .alerts
}

#[tokio::test]
async fn a_resolved_episode_is_not_reopened_by_old_or_lone_signals() {
    let clock = ManualClock::new(Utc::now());
    let service = service(&clock);
    // Three disputes within the hour (the default 3/60): the burst opens at level 3.
    for id in ["dp_1", "dp_2", "dp_3"] {
        dispute(&service, id).await;
        clock.advance(Duration::minutes(1));
    }
    let opened = bursts(&service).await;
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0].level, 3);
    // An admin resolves it.
    service
        .update_critical_alert(Request::new(pb::UpdateCriticalAlertRequest {
            alert_id: opened[0].id.clone(),
            status: pb::AlertStatus::Resolved.into(),
            actor: "admin:lead".to_owned(),
            notes: "reviewed the three disputes".to_owned(),
        }))
        .await
        .unwrap();
    clock.advance(Duration::minutes(1));
    // The third dispute's alert retried (its answer was lost), and one new dispute: the old
    // ones are still inside the window, but the episode is over.
    dispute(&service, "dp_3").await;
    dispute(&service, "dp_4").await;
    clock.advance(Duration::minutes(1));
    dispute(&service, "dp_5").await;
    assert_eq!(bursts(&service).await.len(), 1, "not reopened");
    // A third dispute after the resolution is a new burst: a new alert.
    clock.advance(Duration::minutes(1));
    dispute(&service, "dp_6").await;
    let after = bursts(&service).await;
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0].level, 3);
}
