//! The behaviour every `SnapshotRepository` must have, run against the embedded store and
//! against MongoDB (the test server, or the one `MONGODB_URI` names).

use chrono::{Duration, Utc};
use payouts_runtime::Currency;
use payouts_runtime::store::store_precision;

use super::*;
use crate::domain::{AlertKind, OpenAlert, ThresholdStatus};

fn snapshot(id: &str, day: i64, available: i64) -> Snapshot {
    Snapshot {
        id: id.to_owned(),
        taken_at: store_precision(Utc::now()) + Duration::days(day),
        currency: Currency::usd(),
        available_balance_cents: available,
        pending_balance_cents: 500_000,
        pending_obligations_cents: 1_500_000,
        required_reserve_cents: 1_800_000,
        threshold_status: ThresholdStatus::Healthy,
        users_with_unpaid_earnings: 42,
        users_without_bank_accounts: 8,
        days_since_last_snapshot: day,
    }
}

async fn run(repository: &dyn SnapshotRepository) {
    let days: Vec<Snapshot> = (0..5)
        .map(|day| snapshot(&format!("snapshot_{day}"), day, 2_500_000 + day))
        .collect();
    for s in days.iter().rev() {
        repository.insert(s).await.unwrap();
    }
    // The same snapshot again is harmless.
    let mut changed = days[0].clone();
    changed.available_balance_cents = 1;
    repository.insert(&changed).await.unwrap();

    let recent = repository.recent(None, 3).await.unwrap();
    assert_eq!(
        recent,
        vec![days[4].clone(), days[3].clone(), days[2].clone()]
    );
    assert_eq!(repository.recent(None, 100).await.unwrap().len(), 5);
    let cursor = Some((days[2].taken_at, days[2].id.clone()));
    assert_eq!(
        repository.recent(cursor, 100).await.unwrap(),
        vec![days[1].clone(), days[0].clone()]
    );
    assert_eq!(recent[0].total_balance_cents(), 2_500_004 + 500_000);
}

/// One state per kind, moved by compare-and-set: of two writers of one version, one wins.
async fn run_alerts(repository: &dyn OpenAlertRepository) {
    let none = repository.get(AlertKind::Balance).await.unwrap();
    assert_eq!(none, OpenAlert::none(AlertKind::Balance));
    let opened = OpenAlert {
        kind: AlertKind::Balance,
        open: Some((ThresholdStatus::Critical, "alert_1".to_owned())),
        version: 1,
    };
    repository.put(&opened, 0).await.unwrap();
    let error = repository.put(&opened, 0).await.unwrap_err();
    assert_eq!(error.kind(), payouts_runtime::ErrorKind::Conflict);
    assert_eq!(repository.get(AlertKind::Balance).await.unwrap(), opened);
    assert_eq!(
        repository.get(AlertKind::DepletionRisk).await.unwrap(),
        OpenAlert::none(AlertKind::DepletionRisk),
        "kinds are separate"
    );
    let resolved = OpenAlert {
        open: None,
        version: 2,
        ..opened.clone()
    };
    repository.put(&resolved, 1).await.unwrap();
    assert_eq!(
        repository.put(&opened, 1).await.unwrap_err().kind(),
        payouts_runtime::ErrorKind::Conflict
    );
    assert_eq!(repository.get(AlertKind::Balance).await.unwrap(), resolved);
}

/// A slot is claimed by one writer of each version; what is read back is what was stored.
async fn run_runs(repository: &dyn RunRepository) {
    let slot = store_precision(Utc::now());
    assert_eq!(repository.get(slot).await.unwrap(), None);
    let claimed =
        crate::domain::ScheduledRun::claim(None, slot, "replica-a", slot, Duration::minutes(10))
            .unwrap();
    repository.put(&claimed, 0).await.unwrap();
    assert_eq!(
        repository.put(&claimed, 0).await.unwrap_err().kind(),
        payouts_runtime::ErrorKind::Conflict,
        "a second replica's claim of the same slot loses"
    );
    assert_eq!(repository.get(slot).await.unwrap(), Some(claimed.clone()));
    let done = claimed.finished();
    repository.put(&done, claimed.version).await.unwrap();
    assert_eq!(repository.get(slot).await.unwrap(), Some(done));
    assert_eq!(
        repository.get(slot + Duration::minutes(1)).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn embedded_store_conforms() {
    run(&MemorySnapshots::default()).await;
    run_alerts(&MemoryOpenAlerts::default()).await;
    run_runs(&MemoryRuns::default()).await;
}

#[tokio::test]
async fn mongo_store_conforms() {
    let database = payouts_runtime::testing::mongo_database("balance").await;
    run(&MongoSnapshots::open(&database).await.unwrap()).await;
    run_alerts(&MongoOpenAlerts::open(&database)).await;
    run_runs(&MongoRuns::open(&database)).await;
}
