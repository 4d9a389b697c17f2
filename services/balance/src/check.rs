//! The balance check (design §5): read Stripe's platform balance and what the platform owes,
//! classify, record a snapshot, follow the trend, and keep one open alert per kind.

use std::sync::Arc;

use async_trait::async_trait;
use payouts_runtime::clock::Clock;
use payouts_runtime::money::dollars;
use payouts_runtime::{Currency, ErrorKind, ServiceError};

use crate::domain::{
    AlertKind, AlertStep, BalanceAlert, BalanceStatus, OpenAlert, Snapshot, ThresholdStatus,
    Thresholds, Trend, TrendDirection, alert_step,
};
use crate::store::{OpenAlertRepository, SnapshotRepository};

/// Stripe's platform balance in USD cents (`GET /v1/balance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformBalance {
    pub available_cents: i64,
    pub pending_cents: i64,
}

/// Reads the platform balance from Stripe.
#[async_trait]
pub trait StripeBalance: Send + Sync + 'static {
    async fn balance(&self) -> Result<PlatformBalance, ServiceError>;
}

/// What the platform owes its creators, in USD cents (see docs/balance.md for what counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owed {
    pub obligations_cents: i64,
    pub users_with_unpaid_earnings: i64,
    pub users_without_bank_accounts: i64,
}

/// Asks the owners (payouts, limits, disputes) what is owed.
#[async_trait]
pub trait Obligations: Send + Sync + 'static {
    async fn owed(&self) -> Result<Owed, ServiceError>;
}

/// Critical alerts (the notifications service's `criticalAlerts`).
#[async_trait]
pub trait Alerts: Send + Sync + 'static {
    /// Raises `alert` under `dedupe_key` (raising the same key again stores nothing new);
    /// its id.
    async fn raise(&self, alert: &BalanceAlert, dedupe_key: &str) -> Result<String, ServiceError>;

    /// Resolves an alert with a note; an alert already resolved stays as it is.
    async fn resolve(&self, alert_id: &str, note: &str) -> Result<(), ServiceError>;
}

/// New transfers (the payouts service's transfer pause).
#[async_trait]
pub trait Transfers: Send + Sync + 'static {
    /// Pauses (or lifts the balance's own pause on) new transfers; an admin's pause or
    /// resume is never overridden (the payouts service keeps those rules).
    async fn pause(&self, paused: bool, reason: &str) -> Result<(), ServiceError>;
}

/// What the caller asks of a check (`createSnapshot`, `checkTrend`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRequest {
    pub create_snapshot: bool,
    pub check_trend: bool,
    pub triggered_by: String,
}

/// An alert a check opened (or escalated to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaisedAlert {
    pub id: String,
    pub alert: BalanceAlert,
}

/// What a check found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    pub status: BalanceStatus,
    pub trend: Trend,
    pub snapshot: Option<Snapshot>,
    /// Alerts opened by this check (none when the open ones already say it).
    pub alerts: Vec<RaisedAlert>,
}

/// How many times a check re-reads an alert state another check changed under it.
const ALERT_ROUNDS: usize = 5;

/// How many recent snapshots the trend reads (7 days of a check every 15 minutes).
const TREND_SNAPSHOTS: usize = 700;

pub struct BalanceCheck {
    pub thresholds: Thresholds,
    pub stripe: Arc<dyn StripeBalance>,
    pub obligations: Arc<dyn Obligations>,
    pub alerts: Arc<dyn Alerts>,
    pub snapshots: Arc<dyn SnapshotRepository>,
    pub open_alerts: Arc<dyn OpenAlertRepository>,
    pub clock: Arc<dyn Clock>,
    pub transfers: Arc<dyn Transfers>,
    /// The status at which new transfers pause (`BALANCE_PAUSE_AT`); `None` never.
    pub pause_at: Option<ThresholdStatus>,
}

impl BalanceCheck {
    /// Runs one check. Stripe or an owner that cannot be asked fails the check (Unavailable)
    /// and changes nothing: an answer we did not get is not a balance of zero. A failed check
    /// counts as `payouts_balance_checks_total{status="failed"}`.
    pub async fn run(&self, request: &CheckRequest) -> Result<CheckOutcome, ServiceError> {
        let outcome = self.run_once(request).await;
        if outcome.is_err() {
            metrics::counter!("payouts_balance_checks_total", "status" => "failed").increment(1);
        }
        outcome
    }

    async fn run_once(&self, request: &CheckRequest) -> Result<CheckOutcome, ServiceError> {
        let balance = self.stripe.balance().await?;
        let owed = self.obligations.owed().await?;
        let now = self.clock.now();
        let recent = self.snapshots.recent(None, TREND_SNAPSHOTS).await?;
        let trend = if request.check_trend {
            Trend::over(now, balance.available_cents, &readings(&recent))
        } else {
            Trend {
                direction: TrendDirection::Stable,
                average_change_cents: 0,
            }
        };
        let status = BalanceStatus::assess(
            &self.thresholds,
            balance.available_cents,
            balance.pending_cents,
            owed.obligations_cents,
            &trend,
        );
        let snapshot = if request.create_snapshot {
            let snapshot = Snapshot {
                id: format!("snapshot_{}", now.timestamp_millis()),
                taken_at: now,
                currency: Currency::usd(),
                available_balance_cents: balance.available_cents,
                pending_balance_cents: balance.pending_cents,
                pending_obligations_cents: owed.obligations_cents,
                required_reserve_cents: status.required_reserve_cents,
                threshold_status: status.threshold_status,
                users_with_unpaid_earnings: owed.users_with_unpaid_earnings,
                users_without_bank_accounts: owed.users_without_bank_accounts,
                days_since_last_snapshot: recent
                    .first()
                    .map_or(0, |last| (now - last.taken_at).num_days().max(0)),
            };
            self.snapshots.insert(&snapshot).await?;
            Some(snapshot)
        } else {
            None
        };
        let mut alerts = Vec::new();
        for kind in AlertKind::ALL {
            if kind == AlertKind::DepletionRisk && !request.check_trend {
                continue;
            }
            if let Some(raised) = self.follow(kind, &status, &trend).await? {
                alerts.push(raised);
            }
        }
        self.follow_pause(&status).await?;
        record_metrics(&status);
        tracing::info!(
            status = status.threshold_status.as_str(),
            available_cents = status.available_cents,
            obligations_cents = status.obligations_cents,
            trend = trend.direction.as_str(),
            alerts = alerts.len(),
            triggered_by = %request.triggered_by,
            "balance checked"
        );
        Ok(CheckOutcome {
            status,
            trend,
            snapshot,
            alerts,
        })
    }

    /// Pauses new transfers at `pause_at` or worse, and lifts its own pause once the balance
    /// is healthy enough (warning or better); in between, nothing changes (no flapping
    /// around the threshold).
    async fn follow_pause(&self, status: &BalanceStatus) -> Result<(), ServiceError> {
        let Some(pause_at) = self.pause_at else {
            return Ok(());
        };
        let level = status.threshold_status;
        let figures = format!(
            "{} available against {} owed",
            dollars(status.available_cents),
            dollars(status.obligations_cents)
        );
        if level >= pause_at {
            let reason = format!("platform balance {}: {figures}", level.as_str());
            self.transfers.pause(true, &reason).await
        } else if level <= ThresholdStatus::Warning {
            let reason = format!("platform balance {} again: {figures}", level.as_str());
            self.transfers.pause(false, &reason).await
        } else {
            Ok(())
        }
    }

    /// The latest recorded status: the newest snapshot assessed as a check would have, with
    /// the trend as it stood then, and the newest `count` snapshots. `None` before any check.
    pub async fn overview(
        &self,
        count: usize,
    ) -> Result<Option<(BalanceStatus, Trend, Vec<Snapshot>)>, ServiceError> {
        let recent = self
            .snapshots
            .recent(None, TREND_SNAPSHOTS.max(count))
            .await?;
        let Some(latest) = recent.first() else {
            return Ok(None);
        };
        let trend = Trend::over(
            latest.taken_at,
            latest.available_balance_cents,
            &readings(&recent),
        );
        let status = BalanceStatus::assess(
            &self.thresholds,
            latest.available_balance_cents,
            latest.pending_balance_cents,
            latest.pending_obligations_cents,
            &trend,
        );
        Ok(Some((
            status,
            trend,
            recent.into_iter().take(count).collect(),
        )))
    }

    /// Brings one kind's alert in line with the level now: opens, escalates or resolves it,
    /// then records what is open. The alert is raised before the state is written, under a
    /// key derived from the state's version, so a crash between the two, or a second check
    /// racing this one, raises the same alert again, not a second one.
    async fn follow(
        &self,
        kind: AlertKind,
        status: &BalanceStatus,
        trend: &Trend,
    ) -> Result<Option<RaisedAlert>, ServiceError> {
        let level = kind.level(status, trend);
        for _ in 0..ALERT_ROUNDS {
            let state = self.open_alerts.get(kind).await?;
            let step = alert_step(state.open.as_ref().map(|(level, _)| *level), level);
            let (open, raised) = match step {
                AlertStep::Keep => return Ok(None),
                AlertStep::Open(level) | AlertStep::Escalate { to: level, .. } => {
                    let alert = BalanceAlert::new(kind, level, status, trend);
                    let id = self.alerts.raise(&alert, &state.dedupe_key(level)).await?;
                    if let (AlertStep::Escalate { from, .. }, Some((_, old))) = (step, &state.open)
                    {
                        let note = format!(
                            "escalated from {} to {}: see {id}",
                            from.as_str(),
                            level.as_str()
                        );
                        self.alerts.resolve(old, &note).await?;
                    }
                    (Some((level, id.clone())), Some(RaisedAlert { id, alert }))
                }
                AlertStep::Resolve(_) => {
                    if let Some((_, id)) = &state.open {
                        let note = match kind {
                            AlertKind::Balance => format!(
                                "recovered: the balance is healthy ({} available)",
                                status.available_cents
                            ),
                            AlertKind::DepletionRisk | AlertKind::CheckFailing => format!(
                                "recovered: the balance is {} ({} cents a day)",
                                trend.direction.as_str(),
                                trend.average_change_cents
                            ),
                        };
                        self.alerts.resolve(id, &note).await?;
                    }
                    (None, None)
                }
            };
            let next = OpenAlert {
                kind,
                open,
                version: state.version + 1,
            };
            match self.open_alerts.put(&next, state.version).await {
                Ok(()) => return Ok(raised),
                Err(error) if error.kind() == ErrorKind::Conflict => continue,
                Err(error) => return Err(error),
            }
        }
        Err(ServiceError::unavailable(
            "balance alerts are being changed concurrently; try again",
            anyhow::anyhow!("{ALERT_ROUNDS} compare-and-set rounds lost"),
        ))
    }
}

/// The available balance of each snapshot, for [`Trend::over`] (which keeps those of the
/// 7 days before the moment it looks from).
fn readings(snapshots: &[Snapshot]) -> Vec<(chrono::DateTime<chrono::Utc>, i64)> {
    snapshots
        .iter()
        .map(|s| (s.taken_at, s.available_balance_cents))
        .collect()
}

/// Design §10's balance figures as gauges (the replica that ran the check holds the latest):
/// available balance, pending obligations, required reserve, days of coverage (-1 when not
/// falling) and the threshold status (0 healthy, 1 warning, 2 critical, 3 depleted).
#[allow(clippy::cast_precision_loss)] // cents as a gauge: f64 is exact to 2^53 cents
fn record_metrics(status: &BalanceStatus) {
    metrics::gauge!("payouts_balance_available_cents").set(status.available_cents as f64);
    metrics::gauge!("payouts_balance_pending_obligations_cents")
        .set(status.obligations_cents as f64);
    metrics::gauge!("payouts_balance_required_reserve_cents")
        .set(status.required_reserve_cents as f64);
    metrics::gauge!("payouts_balance_days_of_coverage")
        .set(status.days_of_coverage.map_or(-1.0, |days| days as f64));
    let level = match status.threshold_status {
        ThresholdStatus::Healthy => 0.0,
        ThresholdStatus::Warning => 1.0,
        ThresholdStatus::Critical => 2.0,
        ThresholdStatus::Depleted => 3.0,
    };
    metrics::gauge!("payouts_balance_threshold_status").set(level);
    metrics::counter!("payouts_balance_checks_total", "status" => status.threshold_status.as_str())
        .increment(1);
}
