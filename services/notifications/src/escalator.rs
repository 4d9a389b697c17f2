//! The escalation worker: delivers what level-3 alerts owe ([`crate::paging`]): pages to
//! Alertmanager (`POST <ALERTMANAGER_URL>/api/v2/alerts`) and transfer halts to payouts
//! (`SetTransferPause`, cause escalation). Safe with several replicas: every try is claimed by
//! compare-and-set first, and its result recorded on the alert as it is then.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use payouts_proto::payouts::v1 as payouts_pb;
use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use payouts_runtime::grpc::{TracedChannel, service_channel};
use payouts_runtime::shutdown::Shutdown;
use payouts_runtime::{Clock, ErrorKind, ServiceError, ServiceName, Settings};

use crate::alerts::Alert;
use crate::paging::{PageLinks, PagePolicy, PageStatus, PushResult, alertmanager_alert};
use crate::store::AlertRepository;

/// Pushes alerts to Alertmanager; an error says why they did not go.
#[async_trait]
pub trait Pager: Send + Sync + 'static {
    async fn push(&self, alerts: &serde_json::Value) -> Result<(), String>;
}

/// Alertmanager's API v2 over HTTP.
pub struct AlertmanagerPager {
    client: reqwest::Client,
    url: String,
}

impl AlertmanagerPager {
    /// `base_url` is `ALERTMANAGER_URL` (without `/api/v2/alerts`).
    pub fn new(base_url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(StdDuration::from_secs(10))
                .build()?,
            url: format!("{}/api/v2/alerts", base_url.trim_end_matches('/')),
        })
    }
}

#[async_trait]
impl Pager for AlertmanagerPager {
    async fn push(&self, alerts: &serde_json::Value) -> Result<(), String> {
        let response = self
            .client
            .post(&self.url)
            .json(alerts)
            .send()
            .await
            .map_err(|error| format!("POST {}: {error}", self.url))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body: String = response
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        Err(format!("POST {}: {status} {body}", self.url))
    }
}

/// Halts new transfers for an alert; an error leaves the halt owed.
#[async_trait]
pub trait Halter: Send + Sync + 'static {
    async fn halt(&self, alert_id: &str) -> Result<(), ServiceError>;
}

/// The payouts service's transfer pause, cause escalation.
pub struct GrpcHalter {
    payouts: PayoutsServiceClient<TracedChannel>,
}

impl GrpcHalter {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            payouts: PayoutsServiceClient::new(service_channel(settings, ServiceName::Payouts)?),
        })
    }
}

#[async_trait]
impl Halter for GrpcHalter {
    async fn halt(&self, alert_id: &str) -> Result<(), ServiceError> {
        self.payouts
            .clone()
            .set_transfer_pause(payouts_pb::SetTransferPauseRequest {
                paused: true,
                cause: payouts_pb::PauseCause::Escalation.into(),
                reason: format!("escalation: {alert_id}"),
                actor: "notifications".to_owned(),
                expected_cause: payouts_pb::PauseCause::Unspecified.into(),
            })
            .await
            .map_err(|status| ServiceError::from_remote("payouts", &status))?;
        Ok(())
    }
}

/// How many pages and halts one pass takes.
const BATCH: usize = 32;

/// How many times a result is re-applied to an alert that changed meanwhile.
const MAX_CAS_ATTEMPTS: usize = 8;

pub struct Escalator {
    pub alerts: Arc<dyn AlertRepository>,
    /// `None`: no `ALERTMANAGER_URL` (no pages are owed then).
    pub pager: Option<Arc<dyn Pager>>,
    pub halter: Arc<dyn Halter>,
    pub clock: Arc<dyn Clock>,
    pub policy: PagePolicy,
    pub links: PageLinks,
    pub poll_interval: StdDuration,
}

impl Escalator {
    /// One pass: owed halts first (money before people), then due pages. How many were tried.
    pub async fn run_due(&self) -> Result<usize, ServiceError> {
        // A store error in one does not keep the other from its turn.
        let halts = self.halt_due().await;
        let pages = match &self.pager {
            Some(pager) => self.page_due(pager.as_ref()).await,
            None => Ok(0),
        };
        let tried = halts? + pages?;
        #[allow(clippy::cast_precision_loss)] // a count far below 2^53
        metrics::gauge!("payouts_alert_pages_owed").set(self.alerts.pages_owed().await? as f64);
        Ok(tried)
    }

    async fn halt_due(&self) -> Result<usize, ServiceError> {
        let mut tried = 0;
        for alert in self.alerts.halts_due(self.clock.now(), BATCH).await? {
            let Some(claimed) = alert.claimed_for_halt(self.clock.now()) else {
                continue;
            };
            match self.alerts.replace(&claimed, alert.version).await {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::Conflict => continue,
                Err(error) => return Err(error),
            }
            tried += 1;
            let result = self.halter.halt(&claimed.id).await;
            let now = self.clock.now();
            match &result {
                Ok(()) => tracing::warn!(alert_id = %claimed.id, "transfers halted by escalation"),
                Err(error) => {
                    tracing::warn!(alert_id = %claimed.id, %error, "transfer halt not confirmed; owed")
                }
            }
            self.record(&claimed, |alert| match &result {
                Ok(()) => alert.halt_set(now),
                Err(error) => alert.halt_failed(now, &error.to_string()),
            })
            .await?;
        }
        Ok(tried)
    }

    async fn page_due(&self, pager: &dyn Pager) -> Result<usize, ServiceError> {
        let mut tried = 0;
        for alert in self.alerts.pages_due(self.clock.now(), BATCH).await? {
            let now = self.clock.now();
            let Some(claimed) = alert.claimed_for_page(now, &self.policy) else {
                continue;
            };
            match self.alerts.replace(&claimed, alert.version).await {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::Conflict => continue,
                Err(error) => return Err(error),
            }
            tried += 1;
            let ends_at = claimed.page_ends_at(now, &self.policy);
            let body =
                serde_json::Value::Array(vec![alertmanager_alert(&claimed, ends_at, &self.links)]);
            let result = pager.push(&body).await;
            let now = self.clock.now();
            let recorded = self
                .record(&claimed, |alert| match &result {
                    Ok(()) => alert.page_pushed(now, ends_at, &self.policy),
                    Err(error) => alert.page_failed(now, error, &self.policy),
                })
                .await?;
            let outcome = match (&result, recorded.page.as_ref().map(|page| page.status)) {
                (Ok(()), _) => PushResult::Sent,
                (Err(_), Some(PageStatus::Failed)) => PushResult::Failed,
                (Err(_), _) => PushResult::Retry,
            };
            metrics::counter!("payouts_alert_pages_total", "result" => outcome.as_str())
                .increment(1);
            match &result {
                Ok(()) => {
                    tracing::info!(alert_id = %claimed.id, ends_at = %ends_at, "alert page pushed")
                }
                Err(error) => {
                    tracing::warn!(alert_id = %claimed.id, %error, result = outcome.as_str(), "alert page not pushed")
                }
            }
        }
        Ok(tried)
    }

    /// Applies a result to the alert as it is now (it may have been resolved since the
    /// claim: a push's record then leaves its end owed).
    async fn record(
        &self,
        claimed: &Alert,
        apply: impl Fn(&Alert) -> Option<Alert>,
    ) -> Result<Alert, ServiceError> {
        let mut current = claimed.clone();
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some(next) = apply(&current) else {
                return Ok(current);
            };
            match self.alerts.replace(&next, current.version).await {
                Ok(()) => return Ok(next),
                Err(error) if error.kind() == ErrorKind::Conflict => {
                    current = self.alerts.get(&claimed.id).await?.ok_or_else(|| {
                        ServiceError::internal(anyhow::anyhow!("alert {} vanished", claimed.id))
                    })?;
                }
                Err(error) => return Err(error),
            }
        }
        Err(ServiceError::conflict(format!(
            "alert {} keeps changing; its escalation result is not recorded yet",
            claimed.id
        )))
    }

    /// The worker loop.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let stop = shutdown.requested();
        tokio::pin!(stop);
        loop {
            if let Err(error) = self.run_due().await {
                tracing::warn!(%error, "escalation pass failed");
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }
}
