//! The approval workflow: queue a held payout (and tell every admin), decide it exactly once,
//! and have the payouts service carry the decision out, re-driving it (with a backoff) until
//! it has; a decision that cannot be carried out after a bounded number of tries is parked
//! with a critical alert, for an admin to resume.

use std::sync::Arc;

use async_trait::async_trait;
use payouts_proto::disputes::v1::GetEarningsRequest;
use payouts_proto::disputes::v1::disputes_service_client::DisputesServiceClient;
use payouts_proto::notifications::v1 as notifications_pb;
use payouts_proto::notifications::v1::notifications_service_client::NotificationsServiceClient;
use payouts_proto::payouts::v1 as payouts_pb;
use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use payouts_runtime::convert::cents;
use payouts_runtime::grpc::{TracedChannel, service_channel};
use payouts_runtime::money::dollars;
use payouts_runtime::shutdown::Shutdown;
use payouts_runtime::{Clock, ErrorKind, Money, ServiceError, ServiceName, Settings};

pub use crate::domain::REDRIVE_AFTER;
use crate::domain::{
    Action, Approval, ApprovalStatus, HoldMetadata, MAX_CARRY_OUT_ATTEMPTS, UserContext,
    approval_id, approvals_required,
};
use crate::store::ApprovalRepository;

/// Carries a decision out on the payout (idempotent).
#[async_trait]
pub trait PayoutsPort: Send + Sync + 'static {
    /// The Stripe transfer id when approved and transferred.
    async fn resolve(&self, approval: &Approval) -> Result<Option<String>, ServiceError>;
    /// What an admin should know about the requester.
    async fn user_context(&self, user_id: &str) -> Result<UserContext, ServiceError>;
}

/// Tells every admin about a new approval, and raises critical alerts.
#[async_trait]
pub trait AdminNotifier: Send + Sync + 'static {
    fn approval_required(&self, approval: &Approval);

    /// Raises a critical alert (idempotent on `key`).
    async fn critical_alert(
        &self,
        key: &str,
        kind: &str,
        title: &str,
        description: &str,
    ) -> Result<(), ServiceError>;
}

/// The payouts and disputes services over gRPC.
#[derive(Clone)]
pub struct GrpcPayouts {
    payouts: PayoutsServiceClient<TracedChannel>,
    disputes: DisputesServiceClient<TracedChannel>,
}

impl GrpcPayouts {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            payouts: PayoutsServiceClient::new(service_channel(settings, ServiceName::Payouts)?),
            disputes: DisputesServiceClient::new(service_channel(settings, ServiceName::Disputes)?),
        })
    }
}

#[async_trait]
impl PayoutsPort for GrpcPayouts {
    async fn resolve(&self, approval: &Approval) -> Result<Option<String>, ServiceError> {
        let response = self
            .payouts
            .clone()
            .resolve_approval(payouts_pb::ResolveApprovalRequest {
                payout_id: approval.payout_id.clone(),
                approved: approval.status == ApprovalStatus::Approved,
                reviewer: approval.reviewed_by.clone().unwrap_or_default(),
                notes: approval.review_notes.clone().unwrap_or_default(),
                approval_id: approval.id.clone(),
            })
            .await
            .map_err(|status| ServiceError::from_remote("payouts", &status))?
            .into_inner();
        Ok(Some(response.transfer_id).filter(|id| !id.is_empty()))
    }

    async fn user_context(&self, user_id: &str) -> Result<UserContext, ServiceError> {
        let account = self
            .payouts
            .clone()
            .get_account(payouts_pb::GetAccountRequest {
                user_id: user_id.to_owned(),
            })
            .await
            .map_err(|status| ServiceError::from_remote("payouts", &status))?
            .into_inner()
            .account;
        let account_age_days = account
            .and_then(|account| account.account_created_at)
            .map_or(0, |created| {
                (chrono::Utc::now().timestamp() - created.seconds).max(0) / 86_400
            });
        let completed = self
            .payouts
            .clone()
            .list_payouts(payouts_pb::ListPayoutsRequest {
                user_id: user_id.to_owned(),
                status: payouts_pb::PayoutStatus::Completed.into(),
                page_size: 500,
                page_token: String::new(),
            })
            .await
            .map_err(|status| ServiceError::from_remote("payouts", &status))?
            .into_inner()
            .payouts;
        let earnings = self
            .disputes
            .clone()
            .get_earnings(GetEarningsRequest {
                user_id: user_id.to_owned(),
                currency: "usd".to_owned(),
            })
            .await
            .map_err(|status| ServiceError::from_remote("disputes", &status))?
            .into_inner();
        Ok(UserContext {
            account_age_days,
            lifetime_earnings_cents: cents(earnings.lifetime.as_ref()),
            completed_payout_count: i64::try_from(completed.len()).unwrap_or(i64::MAX),
            completed_payout_cents: completed
                .iter()
                .filter_map(|p| p.amount.as_ref())
                .map(|m| m.cents)
                .sum(),
            recent_refund_count: earnings.recent_refund_count,
            recent_dispute_count: earnings.recent_dispute_count,
        })
    }
}

/// The notifications service over gRPC, in the background.
#[derive(Clone)]
pub struct GrpcAdminNotifier {
    client: NotificationsServiceClient<TracedChannel>,
}

impl GrpcAdminNotifier {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            client: NotificationsServiceClient::new(service_channel(
                settings,
                ServiceName::Notifications,
            )?),
        })
    }
}

#[async_trait]
impl AdminNotifier for GrpcAdminNotifier {
    async fn critical_alert(
        &self,
        key: &str,
        kind: &str,
        title: &str,
        description: &str,
    ) -> Result<(), ServiceError> {
        self.client
            .clone()
            .create_critical_alert(notifications_pb::CreateCriticalAlertRequest {
                r#type: kind.to_owned(),
                severity: notifications_pb::AlertSeverity::Critical.into(),
                title: title.to_owned(),
                description: description.to_owned(),
                data_json: String::new(),
                dedupe_key: key.to_owned(),
                ..Default::default()
            })
            .await
            .map_err(|status| ServiceError::from_remote("notifications", &status))?;
        Ok(())
    }

    fn approval_required(&self, approval: &Approval) {
        // Design §7 admin notification.
        let request = notifications_pb::NotifyAdminsRequest {
            r#type: "payout_approval_required".to_owned(),
            title: "Payout Approval Required".to_owned(),
            body: format!(
                "A payout of {} requires your review. Reason: {}",
                dollars(approval.amount.cents),
                approval.reason
            ),
            metadata_json: serde_json::json!({
                "approvalId": approval.id,
                "payoutId": approval.payout_id,
                "amountCents": approval.amount.cents,
                "flags": approval.flags,
            })
            .to_string(),
            criticality: notifications_pb::Criticality::High.into(),
            dedupe_key: format!("{}:created", approval.id),
        };
        let mut client = self.client.clone();
        tokio::spawn(async move {
            for attempt in 1..=3_u64 {
                match client.notify_admins(request.clone()).await {
                    Ok(_) => return,
                    Err(status) => {
                        tracing::warn!(attempt, error = %status.message(), "admin notification not delivered");
                        tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                    }
                }
            }
        });
    }
}

/// What deciding answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub approval: Approval,
    pub transfer_id: Option<String>,
    pub message: String,
}

/// A held payout to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub payout_id: String,
    pub user_id: String,
    pub amount: Money,
    pub flags: Vec<String>,
    pub reason: String,
    pub metadata: HoldMetadata,
}

/// The approvals service core.
pub struct Workflow {
    pub approvals: Arc<dyn ApprovalRepository>,
    pub payouts: Arc<dyn PayoutsPort>,
    pub notifier: Arc<dyn AdminNotifier>,
    pub clock: Arc<dyn Clock>,
    pub poll_interval: std::time::Duration,
    /// `APPROVAL_DUAL_CONTROL_CENTS`: above this amount, two different admins approve.
    pub dual_control_above_cents: Option<i64>,
}

/// Tries of a decision whose compare-and-set lost to a concurrent change (each re-reads
/// and decides against the new state; a decided approval then ends it as a conflict).
const DECIDE_TRIES: usize = 5;

impl Workflow {
    /// Queues a held payout; one approval per payout (a repeat returns the first).
    pub async fn create(&self, hold: Hold) -> Result<(Approval, bool), ServiceError> {
        let user_context = match self.payouts.user_context(&hold.user_id).await {
            Ok(context) => context,
            Err(error) => {
                tracing::warn!(user_id = %hold.user_id, error = %error, "user context unavailable; queued without it");
                UserContext::default()
            }
        };
        // At the store's precision (milliseconds, as MongoDB keeps it and as page tokens
        // carry it): the embedded store would otherwise list the last approval of a page
        // again on the next, its sub-millisecond time being after the token's.
        let now = payouts_runtime::store::store_precision(self.clock.now());
        let approval = Approval {
            approvals_required: approvals_required(&hold.amount, self.dual_control_above_cents),
            approvals: Vec::new(),
            id: approval_id(&hold.payout_id),
            payout_id: hold.payout_id,
            user_id: hold.user_id,
            amount: hold.amount,
            status: ApprovalStatus::Pending,
            reason: hold.reason,
            flags: hold.flags,
            requested_at: now,
            reviewed_at: None,
            reviewed_by: None,
            review_notes: None,
            metadata: hold.metadata,
            user_context,
            applied: false,
            next_attempt_at: None,
            attempts: 0,
            parked: false,
            version: 1,
        };
        let (stored, created) = self.approvals.create(&approval).await?;
        if created {
            tracing::info!(approval_id = %stored.id, payout_id = %stored.payout_id, "payout queued for approval");
            metrics::counter!("payouts_approvals_created_total").increment(1);
            for flag in &stored.flags {
                metrics::counter!("payouts_approvals_flags_total", "flag" => flag.clone())
                    .increment(1);
            }
            self.notifier.approval_required(&stored);
        }
        Ok((stored, created))
    }

    /// Decides a pending approval. Exactly one decision wins: a concurrent or repeated one is
    /// a conflict naming the current state. The payout carries the decision out at once (or,
    /// if the payouts service is unavailable, as soon as it answers).
    pub async fn decide(
        &self,
        approval_id: &str,
        action: Action,
        reviewer: &str,
        notes: Option<&str>,
    ) -> Result<Decided, ServiceError> {
        let mut tries = 0;
        let decided = loop {
            tries += 1;
            let approval = self.approvals.get(approval_id).await?.ok_or_else(|| {
                ServiceError::not_found(format!("approval {approval_id} not found"))
            })?;
            // Against the stored state: a decided approval, or this admin's own earlier
            // approval (dual control), is a conflict here.
            let decided = approval.decide(action, reviewer, notes, self.clock.now())?;
            match self.approvals.replace(&decided, approval.version).await {
                Ok(()) => break decided,
                Err(error) if error.kind() == ErrorKind::Conflict && tries < DECIDE_TRIES => {
                    tracing::debug!(
                        approval_id,
                        reviewer,
                        "approval changed concurrently; deciding again"
                    );
                }
                Err(error) if error.kind() == ErrorKind::Conflict => {
                    return Err(ServiceError::conflict(format!(
                        "approval {approval_id} keeps changing concurrently; try again"
                    )));
                }
                Err(error) => return Err(error),
            }
        };
        if decided.status == ApprovalStatus::Pending {
            // Dual control: one approval recorded, the next admin decides.
            tracing::info!(
                approval_id,
                reviewer,
                received = decided.approvals_received(),
                required = decided.approvals_required,
                "approval recorded; waiting for another admin"
            );
            metrics::counter!("payouts_approvals_partial_total").increment(1);
            let message = format!(
                "Approval recorded ({} of {}); another admin must approve before the payout is processed",
                decided.approvals_received(),
                decided.approvals_required
            );
            return Ok(Decided {
                approval: decided,
                transfer_id: None,
                message,
            });
        }
        tracing::info!(
            approval_id,
            reviewer,
            decision = decided.status.as_str(),
            "approval decided"
        );
        metrics::counter!("payouts_approvals_decided_total", "decision" => decided.status.as_str())
            .increment(1);
        if let Some(reviewed_at) = decided.reviewed_at {
            // Time to decision (design §10): from the request to the admin's decision.
            let waited = (reviewed_at - decided.requested_at)
                .num_milliseconds()
                .max(0);
            #[allow(clippy::cast_precision_loss)] // milliseconds: exact far beyond any wait
            metrics::histogram!("payouts_approvals_decision_seconds", "decision" => decided.status.as_str())
                .record(waited as f64 / 1_000.0);
        }
        match self.carry_out(&decided).await {
            Ok((applied, transfer_id)) => {
                let message = match (action, &transfer_id) {
                    (Action::Approve, Some(_)) => "Payout approved and processed successfully",
                    (Action::Approve, None) => "Payout approved; the transfer is being retried",
                    (Action::Reject, _) => "Payout rejected successfully",
                };
                Ok(Decided {
                    approval: applied,
                    transfer_id,
                    message: message.to_owned(),
                })
            }
            Err(error) => {
                tracing::warn!(approval_id, error = %error, "decision recorded; the payout will follow when the payouts service answers");
                let message = "Decision recorded; the payout will be updated shortly".to_owned();
                Ok(Decided {
                    approval: self.record_failure(&decided).await.unwrap_or(decided),
                    transfer_id: None,
                    message,
                })
            }
        }
    }

    async fn carry_out(
        &self,
        decided: &Approval,
    ) -> Result<(Approval, Option<String>), ServiceError> {
        let transfer_id = self.payouts.resolve(decided).await?;
        let applied = decided.applied();
        self.approvals.replace(&applied, decided.version).await?;
        Ok((applied, transfer_id))
    }

    /// Records a failed try to carry a decision out: due again after a backoff, or parked
    /// once the bound is reached and the admins have been alerted (if the alert cannot be
    /// raised, it is not parked: the next try raises it).
    async fn record_failure(&self, decided: &Approval) -> Result<Approval, ServiceError> {
        let (failed, exhausted) = decided.carry_out_failed(self.clock.now());
        let updated = if exhausted {
            let alerted = self
                .notifier
                .critical_alert(
                    &format!("{}:parked:{}", decided.id, decided.reviewed_at.map(|t| t.timestamp()).unwrap_or(0)),
                    "approval_parked",
                    &format!("Approval {} could not be carried out", decided.id),
                    &format!(
                        "The payouts service refused or did not answer {MAX_CARRY_OUT_ATTEMPTS} tries to carry out the {} decision on payout {}. \
                         Resume it with POST /api/admin/payout-approvals/{}/retry once the cause is fixed.",
                        decided.status.as_str(),
                        decided.payout_id,
                        decided.id
                    ),
                )
                .await;
            match alerted {
                Ok(()) => failed.parked(),
                Err(error) => {
                    tracing::error!(approval_id = %decided.id, error = %error, "critical alert not raised; will try again");
                    failed
                }
            }
        } else {
            failed
        };
        self.approvals.replace(&updated, decided.version).await?;
        Ok(updated)
    }

    /// An admin resumes a parked decision: due at once, with a fresh set of tries.
    pub async fn retry(
        &self,
        approval_id: &str,
        requested_by: &str,
    ) -> Result<Approval, ServiceError> {
        let approval =
            self.approvals.get(approval_id).await?.ok_or_else(|| {
                ServiceError::not_found(format!("approval {approval_id} not found"))
            })?;
        let resumed = approval.resumed(self.clock.now()).ok_or_else(|| {
            ServiceError::failed_precondition(format!(
                "approval {approval_id} is not parked; only a parked decision is retried"
            ))
        })?;
        self.approvals.replace(&resumed, approval.version).await?;
        tracing::info!(approval_id, requested_by, "parked decision resumed");
        Ok(resumed)
    }

    /// Re-drives decisions the payouts service has not carried out yet, as they come due
    /// (the first after a grace period that leaves the deciding request time to carry its
    /// decision out itself; then with a backoff).
    pub async fn run_due(&self) -> Result<usize, ServiceError> {
        let due = self.approvals.due(self.clock.now(), 32).await?;
        let count = due.len();
        for decided in due {
            match self.payouts.resolve(&decided).await {
                Ok(_) => {
                    if let Err(error) = self
                        .approvals
                        .replace(&decided.applied(), decided.version)
                        .await
                    {
                        tracing::debug!(approval_id = %decided.id, error = %error, "carried out; recorded by another worker");
                    }
                }
                Err(error) => {
                    tracing::warn!(approval_id = %decided.id, error = %error, "decision not carried out yet");
                    if let Err(error) = self.record_failure(&decided).await {
                        tracing::debug!(approval_id = %decided.id, error = %error, "failure not recorded (changed concurrently)");
                    }
                }
            }
        }
        Ok(count)
    }

    pub async fn run_worker(self: Arc<Self>, shutdown: Shutdown) {
        let stop = shutdown.requested();
        tokio::pin!(stop);
        loop {
            if let Err(error) = self.run_due().await {
                tracing::warn!(error = %error, "approvals worker pass failed");
            }
            // Design §10: pending approvals, as the store counts them (every replica agrees).
            match self.approvals.count_pending().await {
                #[allow(clippy::cast_precision_loss)] // a count far below 2^53
                Ok(pending) => metrics::gauge!("payouts_approvals_pending").set(pending as f64),
                Err(error) => tracing::debug!(%error, "pending approvals not counted"),
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }
}
