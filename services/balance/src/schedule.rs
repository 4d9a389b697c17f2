//! The balance check on a schedule (`BALANCE_CHECK_SCHEDULE`, default daily at 06:00 UTC):
//! every replica runs this loop, and each slot is claimed by one of them under a lease
//! (`balanceCheckRuns`), so the check runs once per slot however many replicas there are.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use payouts_runtime::ServiceError;
use payouts_runtime::clock::Clock;
use payouts_runtime::shutdown::Shutdown;

use crate::check::{BalanceCheck, CheckRequest};
use crate::domain::{AlertKind, BalanceAlert, ScheduledRun};
use crate::store::RunRepository;

/// What one slot came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// This replica ran the check.
    Ran,
    /// Another replica has the slot, or it is done.
    Skipped,
    /// Every try failed; a critical alert was raised.
    Failed,
}

pub struct Scheduler {
    pub check: Arc<BalanceCheck>,
    pub runs: Arc<dyn RunRepository>,
    pub schedule: cron::Schedule,
    /// This replica's name in the run records.
    pub holder: String,
    pub clock: Arc<dyn Clock>,
    /// How long a claim on a slot holds before another replica may take it over.
    pub lease: Duration,
    /// Tries per slot, and the wait between them.
    pub tries: u32,
    pub retry_after: std::time::Duration,
}

impl Scheduler {
    /// Waits for each slot of the schedule and fires it, until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let stop = shutdown.requested();
        tokio::pin!(stop);
        loop {
            let now = self.clock.now();
            let Some(slot) = self.schedule.after(&now).next() else {
                return;
            };
            let wait = (slot - now).to_std().unwrap_or_default();
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(wait) => {}
            }
            match self.fire(slot).await {
                Ok(fired) => tracing::debug!(?fired, %slot, "scheduled balance check"),
                Err(error) => tracing::warn!(%error, %slot, "scheduled balance check not claimed"),
            }
        }
    }

    /// Claims `slot` and runs the check in it, retrying while Stripe or an owner does not
    /// answer; after the last try, a critical alert (once per slot).
    pub async fn fire(&self, slot: DateTime<Utc>) -> Result<Fired, ServiceError> {
        let existing = self.runs.get(slot).await?;
        let Some(claimed) = ScheduledRun::claim(
            existing.as_ref(),
            slot,
            &self.holder,
            self.clock.now(),
            self.lease,
        ) else {
            return Ok(Fired::Skipped);
        };
        match self
            .runs
            .put(&claimed, existing.map_or(0, |run| run.version))
            .await
        {
            Ok(()) => {}
            Err(error) if error.kind() == payouts_runtime::ErrorKind::Conflict => {
                return Ok(Fired::Skipped);
            }
            Err(error) => return Err(error),
        }
        let request = CheckRequest {
            create_snapshot: true,
            check_trend: true,
            triggered_by: "schedule".to_owned(),
        };
        let mut last_error = None;
        for attempt in 1..=self.tries {
            match self.check.run(&request).await {
                Ok(_) => {
                    self.runs.put(&claimed.finished(), claimed.version).await?;
                    return Ok(Fired::Ran);
                }
                Err(error) => {
                    tracing::warn!(%error, attempt, %slot, "scheduled balance check failed");
                    last_error = Some(error);
                    if attempt < self.tries {
                        tokio::time::sleep(self.retry_after).await;
                    }
                }
            }
        }
        let alert = BalanceAlert {
            message: format!(
                "{} Last error: {}.",
                BalanceAlert::check_failing().message,
                last_error
                    .map(|error| error.to_string())
                    .unwrap_or_default()
            ),
            ..BalanceAlert::check_failing()
        };
        let key = format!(
            "{}:{}",
            AlertKind::CheckFailing.as_str(),
            ScheduledRun::id_of(slot)
        );
        self.check.alerts.raise(&alert, &key).await?;
        self.runs.put(&claimed.finished(), claimed.version).await?;
        Ok(Fired::Failed)
    }
}
