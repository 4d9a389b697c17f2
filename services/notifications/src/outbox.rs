//! The alert email worker: claims the emails that are due (`criticalAlerts` entries owing
//! one), sends them over SMTP with lettre, and records each result on the alert.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use payouts_runtime::shutdown::Shutdown;
use payouts_runtime::{Clock, ErrorKind, Secret, ServiceError};

use crate::alerts::Alert;
use crate::email::{EmailPolicy, EmailStatus, compose};
use crate::store::AlertRepository;

/// One email, ready to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingEmail {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
    /// Stable per alert, so a repeated send is recognisably the same message.
    pub message_id: String,
}

/// Sends an email; an error says why it did not go.
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), String>;
}

/// SMTP through lettre, from `SMTP_URL`.
pub struct SmtpMailer {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
}

impl SmtpMailer {
    pub fn new(url: &Secret) -> anyhow::Result<Self> {
        let transport =
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url.expose())
                .map_err(|error| anyhow::anyhow!("invalid SMTP_URL: {error}"))?
                .timeout(Some(StdDuration::from_secs(20)))
                .build();
        Ok(Self { transport })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), String> {
        use lettre::AsyncTransport as _;
        use lettre::message::header::ContentType;
        let mut builder = lettre::Message::builder()
            .from(
                email
                    .from
                    .parse()
                    .map_err(|error| format!("ALERT_EMAIL_FROM: {error}"))?,
            )
            .subject(&email.subject)
            .message_id(Some(email.message_id.clone()))
            .header(ContentType::TEXT_PLAIN);
        for to in &email.to {
            builder = builder.to(to
                .parse()
                .map_err(|error| format!("ALERT_EMAIL_TO {to:?}: {error}"))?);
        }
        let message = builder
            .body(email.body.clone())
            .map_err(|error| error.to_string())?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|error| error.to_string())
    }
}

/// How many emails one pass takes.
const BATCH: usize = 16;

/// How many times a result is re-applied to an alert that changed meanwhile (an admin
/// acknowledging it, say).
const MAX_CAS_ATTEMPTS: usize = 8;

pub struct Outbox {
    pub alerts: Arc<dyn AlertRepository>,
    pub mailer: Arc<dyn Mailer>,
    pub clock: Arc<dyn Clock>,
    pub from: String,
    pub to: Vec<String>,
    /// `ESCALATION_EMAIL_TO`: level-3 alerts also go to them.
    pub escalation_to: Vec<String>,
    pub dashboard_url: Option<String>,
    pub policy: EmailPolicy,
    pub poll_interval: StdDuration,
}

impl Outbox {
    /// One pass: every due email claimed, sent and recorded. How many were tried.
    pub async fn run_due(&self) -> Result<usize, ServiceError> {
        let mut tried = 0;
        for alert in self.alerts.emails_due(self.clock.now(), BATCH).await? {
            let Some(claimed) = alert.claimed_for_email(self.clock.now(), &self.policy) else {
                continue;
            };
            match self.alerts.replace(&claimed, alert.version).await {
                Ok(()) => {}
                // Another worker has it, or it changed: the next pass sees it as it is.
                Err(error) if error.kind() == ErrorKind::Conflict => continue,
                Err(error) => return Err(error),
            }
            tried += 1;
            let (subject, body) = compose(&claimed, self.dashboard_url.as_deref());
            let mut to = self.to.clone();
            if claimed.level == crate::escalation::Level::Leads {
                to.extend(
                    self.escalation_to
                        .iter()
                        .filter(|address| !self.to.contains(address))
                        .cloned(),
                );
            }
            let email = OutgoingEmail {
                from: self.from.clone(),
                to,
                subject,
                body,
                // Stable per alert and level: an escalation is a new message.
                message_id: format!(
                    "<{}.level{}@payouts.alerts>",
                    claimed.id,
                    claimed.level.number()
                ),
            };
            let result = self.mailer.send(&email).await;
            let now = self.clock.now();
            let outcome = match &result {
                Ok(()) => "sent",
                Err(_) => "failed",
            };
            let recorded = self
                .record(&claimed, |alert| match &result {
                    Ok(()) => alert.email_sent(now),
                    Err(error) => alert.email_failed(now, error, &self.policy),
                })
                .await?;
            let status = recorded
                .email
                .as_ref()
                .map_or(EmailStatus::Pending, |email| email.status);
            let result_label = match status {
                EmailStatus::Sent => "sent",
                EmailStatus::Failed => "failed",
                EmailStatus::Pending => "retry",
            };
            metrics::counter!("payouts_alert_emails_total", "result" => result_label).increment(1);
            match status {
                EmailStatus::Failed => {
                    tracing::error!(alert_id = %claimed.id, error = ?result.err(), "alert email failed for good")
                }
                EmailStatus::Pending => {
                    tracing::warn!(alert_id = %claimed.id, error = ?result.err(), "alert email not sent; will retry")
                }
                EmailStatus::Sent => {
                    tracing::info!(alert_id = %claimed.id, outcome, "alert email sent")
                }
            }
        }
        Ok(tried)
    }

    /// Applies a result to the alert as it is now (it may have been acknowledged since the
    /// claim): the email's record is never lost to a concurrent change.
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
            "alert {} keeps changing; its email result is not recorded yet",
            claimed.id
        )))
    }

    /// The worker loop; safe with several replicas (claims are compare-and-set).
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let stop = shutdown.requested();
        tokio::pin!(stop);
        loop {
            if let Err(error) = self.run_due().await {
                tracing::warn!(%error, "alert email pass failed");
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }
}
