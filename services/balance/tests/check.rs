//! The balance check against scripted sources: statuses, snapshots, the trend, and one open
//! alert per kind that escalates and resolves without duplicates.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{Duration, Utc};
use payouts_balance::check::{
    Alerts, BalanceCheck, CheckRequest, Obligations, Owed, PlatformBalance, StripeBalance,
    Transfers,
};
use payouts_balance::domain::{
    AlertKind, BalanceAlert, ThresholdStatus, Thresholds, TrendDirection,
};
use payouts_balance::store::{MemoryOpenAlerts, MemorySnapshots, SnapshotRepository};
use payouts_runtime::clock::ManualClock;
use payouts_runtime::{ErrorKind, ServiceError};

const DOLLAR: i64 = 100;

#[derive(Default)]
struct Scripted {
    /// `None`: Stripe cannot be reached.
    balance: Mutex<Option<PlatformBalance>>,
    owed: Mutex<Owed>,
    /// What the check asked of the transfer pause.
    pauses: Mutex<Vec<bool>>,
}

#[async_trait]
impl Transfers for Scripted {
    async fn pause(&self, paused: bool, _reason: &str) -> Result<(), ServiceError> {
        self.pauses.lock().unwrap().push(paused);
        Ok(())
    }
}

#[async_trait]
impl StripeBalance for Scripted {
    async fn balance(&self) -> Result<PlatformBalance, ServiceError> {
        (*self.balance.lock().unwrap()).ok_or_else(|| {
            ServiceError::unavailable("Stripe did not answer", anyhow::anyhow!("timeout"))
        })
    }
}

#[async_trait]
impl Obligations for Scripted {
    async fn owed(&self) -> Result<Owed, ServiceError> {
        Ok(*self.owed.lock().unwrap())
    }
}

/// A criticalAlerts store: one alert per dedupe key; resolutions with their notes.
#[derive(Default)]
struct Recorded {
    raised: Mutex<Vec<(String, BalanceAlert)>>,
    resolved: Mutex<Vec<(String, String)>>,
}

#[async_trait]
impl Alerts for Recorded {
    async fn raise(&self, alert: &BalanceAlert, dedupe_key: &str) -> Result<String, ServiceError> {
        let mut raised = self.raised.lock().unwrap();
        let id = format!("alert_{dedupe_key}");
        if !raised.iter().any(|(stored, _)| *stored == id) {
            raised.push((id.clone(), alert.clone()));
        }
        Ok(id)
    }

    async fn resolve(&self, alert_id: &str, note: &str) -> Result<(), ServiceError> {
        self.resolved
            .lock()
            .unwrap()
            .push((alert_id.to_owned(), note.to_owned()));
        Ok(())
    }
}

struct World {
    sources: Arc<Scripted>,
    alerts: Arc<Recorded>,
    snapshots: Arc<MemorySnapshots>,
    clock: ManualClock,
    check: BalanceCheck,
}

fn world() -> World {
    let sources = Arc::new(Scripted::default());
    let alerts = Arc::new(Recorded::default());
    let snapshots = Arc::new(MemorySnapshots::default());
    let clock = ManualClock::new(Utc::now());
    let check = BalanceCheck {
        thresholds: Thresholds::default(),
        stripe: Arc::clone(&sources) as Arc<dyn StripeBalance>,
        obligations: Arc::clone(&sources) as Arc<dyn Obligations>,
        alerts: Arc::clone(&alerts) as Arc<dyn Alerts>,
        snapshots: Arc::clone(&snapshots) as Arc<dyn SnapshotRepository>,
        open_alerts: Arc::new(MemoryOpenAlerts::default()),
        clock: Arc::new(clock.clone()),
        transfers: Arc::clone(&sources) as Arc<dyn Transfers>,
        pause_at: Some(ThresholdStatus::Depleted),
    };
    World {
        sources,
        alerts,
        snapshots,
        clock,
        check,
    }
}

fn cron() -> CheckRequest {
    CheckRequest {
        create_snapshot: true,
        check_trend: true,
        triggered_by: "cron".to_owned(),
    }
}

fn levels_only() -> CheckRequest {
    CheckRequest {
        check_trend: false,
        ..cron()
    }
}

impl World {
    fn script(&self, available_dollars: i64, obligations_dollars: i64) {
        *self.sources.balance.lock().unwrap() = Some(PlatformBalance {
            available_cents: available_dollars * DOLLAR,
            pending_cents: 5_000 * DOLLAR,
        });
        self.sources.owed.lock().unwrap().obligations_cents = obligations_dollars * DOLLAR;
    }

    fn raised(&self) -> Vec<(String, String)> {
        self.alerts
            .raised
            .lock()
            .unwrap()
            .iter()
            .map(|(id, alert)| (id.clone(), alert.title.clone()))
            .collect()
    }
}

#[tokio::test]
async fn each_level_is_classified_and_recorded() {
    let w = world();
    for (available, obligations, expected) in [
        (25_000, 15_000, ThresholdStatus::Healthy),
        (7_000, 0, ThresholdStatus::Warning),
        (999, 0, ThresholdStatus::Critical),
        (20_000, 40_000, ThresholdStatus::Critical), // under 50% of a $48,000 reserve
        (20_000, 30_000, ThresholdStatus::Warning),  // 56% of a $36,000 reserve
        (0, 0, ThresholdStatus::Depleted),
    ] {
        w.script(available, obligations);
        w.clock.advance(Duration::hours(1));
        let outcome = w.check.run(&cron()).await.unwrap();
        assert_eq!(
            outcome.status.threshold_status, expected,
            "{available} / {obligations}"
        );
        let snapshot = outcome.snapshot.unwrap();
        assert_eq!(snapshot.threshold_status, expected);
        assert_eq!(snapshot.available_balance_cents, available * DOLLAR);
        assert_eq!(snapshot.pending_obligations_cents, obligations * DOLLAR);
        assert_eq!(
            snapshot.required_reserve_cents,
            obligations * DOLLAR * 12 / 10
        );
    }
    assert_eq!(w.snapshots.recent(None, 100).await.unwrap().len(), 6);
}

#[tokio::test]
async fn alerts_open_escalate_and_resolve_once() {
    // The balance alone (the trend's own alert is the next test's).
    let w = world();
    // Healthy: nothing.
    w.script(25_000, 0);
    assert!(w.check.run(&levels_only()).await.unwrap().alerts.is_empty());
    // Warning: one alert, however often the cron runs.
    w.script(7_000, 0);
    let first = w.check.run(&levels_only()).await.unwrap();
    assert_eq!(first.alerts.len(), 1);
    assert_eq!(
        first.alerts[0].alert.title,
        "Warning: Platform Balance Below Recommended Level"
    );
    for _ in 0..10 {
        w.clock.advance(Duration::minutes(1));
        assert!(
            w.check.run(&levels_only()).await.unwrap().alerts.is_empty(),
            "no storm"
        );
    }
    // Worse: escalated to critical, the warning resolved with a note naming the new alert.
    w.script(500, 0);
    let worse = w.check.run(&levels_only()).await.unwrap();
    assert_eq!(worse.alerts.len(), 1);
    assert_eq!(
        worse.alerts[0].alert.title,
        "Critical: Platform Balance Below Minimum Threshold"
    );
    assert_eq!(worse.alerts[0].alert.severity, "critical");
    let resolved = w.alerts.resolved.lock().unwrap().clone();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].0, first.alerts[0].id);
    assert!(
        resolved[0].1.contains("escalated from warning to critical"),
        "{resolved:?}"
    );
    // Better but not healthy: the critical alert stays open, nothing new.
    w.script(7_000, 0);
    assert!(w.check.run(&levels_only()).await.unwrap().alerts.is_empty());
    // Healthy again: resolved with a note.
    w.script(50_000, 0);
    assert!(w.check.run(&levels_only()).await.unwrap().alerts.is_empty());
    let resolved = w.alerts.resolved.lock().unwrap().clone();
    assert_eq!(resolved.len(), 2);
    assert_eq!(resolved[1].0, worse.alerts[0].id);
    assert!(resolved[1].1.starts_with("recovered"), "{resolved:?}");
    // A new episode is a new alert.
    w.script(7_000, 0);
    assert_eq!(w.check.run(&levels_only()).await.unwrap().alerts.len(), 1);
    assert_eq!(w.raised().len(), 3);
}

#[tokio::test]
async fn a_falling_balance_raises_a_depletion_risk_until_it_stops() {
    let w = world();
    w.script(50_000, 0);
    w.check.run(&cron()).await.unwrap();
    // Two days later $5,000 less: $2,500 a day, 18 days left.
    w.clock.advance(Duration::days(2));
    w.script(45_000, 0);
    let falling = w.check.run(&cron()).await.unwrap();
    assert_eq!(falling.trend.direction, TrendDirection::Decreasing);
    assert_eq!(falling.trend.average_change_cents, -2_500 * DOLLAR);
    assert_eq!(falling.status.days_of_coverage, Some(18));
    let risk: Vec<_> = falling
        .alerts
        .iter()
        .filter(|raised| raised.alert.kind == AlertKind::DepletionRisk)
        .collect();
    assert_eq!(risk.len(), 1);
    assert_eq!(
        risk[0].alert.title,
        "Risk: Platform Balance May Deplete in 18 Days"
    );
    // Eight days on, the fall is out of the window and the balance is stable: resolved.
    w.clock.advance(Duration::days(8));
    w.check.run(&cron()).await.unwrap();
    w.clock.advance(Duration::days(1));
    let stable = w.check.run(&cron()).await.unwrap();
    assert_eq!(stable.trend.direction, TrendDirection::Stable);
    let resolved = w.alerts.resolved.lock().unwrap().clone();
    assert!(
        resolved.iter().any(|(id, _)| *id == risk[0].id),
        "{resolved:?}"
    );
}

#[tokio::test]
async fn transfers_pause_when_depleted_and_resume_when_healthy_enough() {
    let w = world();
    let pauses = |w: &World| w.sources.pauses.lock().unwrap().clone();
    // Critical is not enough (BALANCE_PAUSE_AT=depleted), and nothing is lifted either.
    w.script(500, 0);
    w.check.run(&levels_only()).await.unwrap();
    assert_eq!(pauses(&w), Vec::<bool>::new());
    w.script(0, 0);
    w.check.run(&levels_only()).await.unwrap();
    assert_eq!(pauses(&w), [true]);
    // Back to critical: still paused (no flapping around zero).
    w.script(500, 0);
    w.check.run(&levels_only()).await.unwrap();
    assert_eq!(pauses(&w), [true]);
    // A warning is healthy enough: the balance lifts its pause.
    w.script(7_000, 0);
    w.check.run(&levels_only()).await.unwrap();
    assert_eq!(pauses(&w), [true, false]);
    // Off: never.
    let mut w = w;
    w.check.pause_at = None;
    w.script(0, 0);
    w.check.run(&levels_only()).await.unwrap();
    assert_eq!(pauses(&w), [true, false]);
}

#[tokio::test]
async fn stripe_unreachable_is_an_error_that_changes_nothing() {
    let w = world();
    w.script(500, 0);
    *w.sources.balance.lock().unwrap() = None;
    let error = w.check.run(&cron()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert!(w.snapshots.recent(None, 10).await.unwrap().is_empty());
    assert!(w.raised().is_empty(), "no balance is not a zero balance");
    assert!(
        w.sources.pauses.lock().unwrap().is_empty(),
        "nor a reason to pause"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_that_race_open_one_alert() {
    let w = Arc::new(world());
    w.script(500, 0);
    let checks: Vec<_> = (0..8)
        .map(|_| {
            let w = Arc::clone(&w);
            tokio::spawn(async move { w.check.run(&cron()).await.unwrap() })
        })
        .collect();
    for check in checks {
        check.await.unwrap();
    }
    assert_eq!(w.raised().len(), 1, "{:?}", w.raised());
}

mod scheduled {
    use payouts_balance::schedule::{Fired, Scheduler};
    use payouts_balance::store::{MemoryRuns, RunRepository};
    use payouts_runtime::Clock as _;

    use super::*;

    fn replicas(w: World, count: usize) -> (Arc<World>, Vec<Arc<Scheduler>>) {
        let runs: Arc<dyn RunRepository> = Arc::new(MemoryRuns::default());
        let w = Arc::new(w);
        let check = Arc::new(BalanceCheck {
            thresholds: Thresholds::default(),
            stripe: Arc::clone(&w.sources) as Arc<dyn StripeBalance>,
            obligations: Arc::clone(&w.sources) as Arc<dyn Obligations>,
            alerts: Arc::clone(&w.alerts) as Arc<dyn Alerts>,
            snapshots: Arc::clone(&w.snapshots) as Arc<dyn SnapshotRepository>,
            open_alerts: Arc::new(MemoryOpenAlerts::default()),
            clock: Arc::new(w.clock.clone()),
            transfers: Arc::clone(&w.sources) as Arc<dyn Transfers>,
            pause_at: Some(ThresholdStatus::Depleted),
        });
        let schedulers = (0..count)
            .map(|n| {
                Arc::new(Scheduler {
                    check: Arc::clone(&check),
                    runs: Arc::clone(&runs),
                    schedule: "0 0 6 * * *".parse().unwrap(),
                    holder: format!("replica-{n}"),
                    clock: Arc::new(w.clock.clone()),
                    lease: Duration::minutes(10),
                    tries: 2,
                    retry_after: std::time::Duration::ZERO,
                })
            })
            .collect();
        (w, schedulers)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_run_each_slot_once() {
        let w = world();
        w.script(25_000, 0);
        let (w, schedulers) = replicas(w, 2);
        for day in 0..3 {
            w.clock.advance(Duration::days(1));
            let slot = w.clock.now();
            let fired: Vec<_> = schedulers
                .iter()
                .map(|scheduler| {
                    let scheduler = Arc::clone(scheduler);
                    tokio::spawn(async move { scheduler.fire(slot).await.unwrap() })
                })
                .collect();
            let mut outcomes = Vec::new();
            for fire in fired {
                outcomes.push(fire.await.unwrap());
            }
            outcomes.sort_by_key(|fired| format!("{fired:?}"));
            assert_eq!(outcomes, [Fired::Ran, Fired::Skipped], "day {day}");
            // Late, the slot is done for everyone.
            assert_eq!(schedulers[1].fire(slot).await.unwrap(), Fired::Skipped);
        }
        assert_eq!(w.snapshots.recent(None, 10).await.unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_slot_that_cannot_run_raises_one_critical_alert() {
        let w = world();
        let (w, schedulers) = replicas(w, 1);
        // Stripe does not answer, try after try.
        let slot = w.clock.now();
        assert_eq!(schedulers[0].fire(slot).await.unwrap(), Fired::Failed);
        assert_eq!(schedulers[0].fire(slot).await.unwrap(), Fired::Skipped);
        let raised = w.raised();
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(raised[0].1, "Platform Balance Check Failing");
        assert!(w.snapshots.recent(None, 10).await.unwrap().is_empty());
    }
}
