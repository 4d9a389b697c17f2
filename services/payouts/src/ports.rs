//! What the payout flow needs from other services, as traits (gRPC implementations here;
//! tests and the simulation substitute their own). Every gRPC call has the configured
//! deadline; an answer that does not come is `Unavailable`, which the flow treats as
//! "unknown", never as "no".

use async_trait::async_trait;
use payouts_proto::limits::v1 as limits_pb;
use payouts_proto::limits::v1::payout_limits_service_client::PayoutLimitsServiceClient;
use payouts_proto::notifications::v1 as notifications_pb;
use payouts_proto::notifications::v1::notifications_service_client::NotificationsServiceClient;
use payouts_runtime::convert::cents;
use payouts_runtime::grpc::{TracedChannel, service_channel};
use payouts_runtime::{Money, ServiceError, ServiceName, Settings};

use crate::payout::OwedAlert;

/// The limits' verdict on a payout.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub decision: limits_pb::LimitDecision,
    pub reserved: bool,
}

/// What the limits service did with a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseAnswer {
    /// The reservation gives back what was asked (now, or already).
    pub applied: bool,
    /// A reservation exists for the payout.
    pub found: bool,
    /// What the reservation still holds.
    pub held_cents: i64,
}

/// The re-check of an admitted payout just before its money moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recheck {
    Payable,
    NotPayable { reason: String },
}

/// Quota reservation in the limits service.
#[async_trait]
pub trait LimitsPort: Send + Sync + 'static {
    /// Admits the payout and reserves its quota. `account_created_at`: the account's
    /// creation time when the caller has the account at hand (the limits need not ask).
    async fn reserve(
        &self,
        user_id: &str,
        payout_id: &str,
        amount: &Money,
        requested_at: chrono::DateTime<chrono::Utc>,
        account_created_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Admission, ServiceError>;

    /// Sets how much of the payout's reservation is given back, in total, under the
    /// payout's release sequence (idempotent, and an older sequence never wins).
    async fn release(
        &self,
        user_id: &str,
        payout_id: &str,
        total_released: &Money,
        sequence: i64,
        reason: &str,
    ) -> Result<ReleaseAnswer, ServiceError>;

    async fn recheck(&self, user_id: &str, payout_id: &str) -> Result<Recheck, ServiceError>;
}

/// Critical alerts for admins (the notifications service's `criticalAlerts`).
#[async_trait]
pub trait AlertsPort: Send + Sync + 'static {
    /// Raises the alert; raising the same key again stores nothing new.
    async fn raise(&self, alert: &OwedAlert, data_json: String) -> Result<(), ServiceError>;
}

/// A message for a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNotice {
    pub user_id: String,
    pub kind: &'static str,
    pub title: String,
    pub body: String,
    pub metadata_json: String,
    /// Same key, one notification, however often it is sent.
    pub dedupe_key: String,
}

/// Sends notifications; never blocks or fails the caller.
pub trait Notifier: Send + Sync + 'static {
    fn notify(&self, notice: UserNotice);
}

/// The limits service over gRPC.
#[derive(Clone)]
pub struct GrpcLimits {
    client: PayoutLimitsServiceClient<TracedChannel>,
}

impl GrpcLimits {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            client: PayoutLimitsServiceClient::new(service_channel(settings, ServiceName::Limits)?),
        })
    }
}

#[async_trait]
impl LimitsPort for GrpcLimits {
    async fn reserve(
        &self,
        user_id: &str,
        payout_id: &str,
        amount: &Money,
        requested_at: chrono::DateTime<chrono::Utc>,
        account_created_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Admission, ServiceError> {
        let response = self
            .client
            .clone()
            .reserve_payout(limits_pb::ReservePayoutRequest {
                user_id: user_id.to_owned(),
                payout_id: payout_id.to_owned(),
                amount: Some(amount.clone().into()),
                requested_at: Some(payouts_runtime::convert::timestamp(requested_at)),
                account_created_at: account_created_at.map(payouts_runtime::convert::timestamp),
            })
            .await
            .map_err(|status| ServiceError::from_remote("limits", &status))?
            .into_inner();
        Ok(Admission {
            decision: response.decision.unwrap_or_default(),
            reserved: response.reserved,
        })
    }

    async fn release(
        &self,
        user_id: &str,
        payout_id: &str,
        total_released: &Money,
        sequence: i64,
        reason: &str,
    ) -> Result<ReleaseAnswer, ServiceError> {
        let response = self
            .client
            .clone()
            .release_payout(limits_pb::ReleasePayoutRequest {
                user_id: user_id.to_owned(),
                payout_id: payout_id.to_owned(),
                reason: reason.to_owned(),
                total_released: Some(total_released.clone().into()),
                sequence,
            })
            .await
            .map_err(|status| ServiceError::from_remote("limits", &status))?
            .into_inner();
        Ok(ReleaseAnswer {
            applied: response.applied,
            found: response.found,
            held_cents: cents(response.held.as_ref()),
        })
    }

    async fn recheck(&self, user_id: &str, payout_id: &str) -> Result<Recheck, ServiceError> {
        let response = self
            .client
            .clone()
            .recheck_payout(limits_pb::RecheckPayoutRequest {
                user_id: user_id.to_owned(),
                payout_id: payout_id.to_owned(),
            })
            .await
            .map_err(|status| ServiceError::from_remote("limits", &status))?
            .into_inner();
        Ok(if response.payable {
            Recheck::Payable
        } else {
            Recheck::NotPayable {
                reason: response.reason,
            }
        })
    }
}

/// The escalation signal (design §10) an alert of payouts reports, by its type; empty for
/// none (its level follows its severity).
fn escalation_signal(kind: &str) -> &'static str {
    match kind {
        "payout_failed" => "payout_failed",
        "payout_outcome_unknown" => "outcome_unknown",
        "payout_fraud_flag" => "fraud_flag",
        "payout_limits_flag" => "limits_flag",
        // The platform unable to pay: Stripe refusing the platform's balance on every
        // attempt (a run across ESCALATION_STRIPE_UNAVAILABLE_MINUTES is level 3). Stripe
        // unreachable shows as unknown outcomes, which have their own rule. Our credentials
        // refused stay a level-2 alert of their own (emailed at once: one per waiting payout,
        // not a run of signals).
        "payout_stripe_refusing" => "stripe_unavailable",
        _ => "",
    }
}

/// The notifications service's critical alerts over gRPC.
#[derive(Clone)]
pub struct GrpcAlerts {
    client: NotificationsServiceClient<TracedChannel>,
}

impl GrpcAlerts {
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
impl AlertsPort for GrpcAlerts {
    async fn raise(&self, alert: &OwedAlert, data_json: String) -> Result<(), ServiceError> {
        self.client
            .clone()
            .create_critical_alert(notifications_pb::CreateCriticalAlertRequest {
                r#type: alert.kind.clone(),
                severity: notifications_pb::AlertSeverity::Critical.into(),
                title: alert.title.clone(),
                description: alert.description.clone(),
                signal: escalation_signal(&alert.kind).to_owned(),
                subject: serde_json::from_str::<serde_json::Value>(&data_json)
                    .ok()
                    .and_then(|data| data["userId"].as_str().map(str::to_owned))
                    .unwrap_or_default(),
                data_json,
                dedupe_key: alert.key.clone(),
                ..Default::default()
            })
            .await
            .map_err(|status| ServiceError::from_remote("notifications", &status))?;
        Ok(())
    }
}

/// The notifications service over gRPC, called in the background.
#[derive(Clone)]
pub struct GrpcNotifier {
    client: NotificationsServiceClient<TracedChannel>,
}

impl GrpcNotifier {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            client: NotificationsServiceClient::new(service_channel(
                settings,
                ServiceName::Notifications,
            )?),
        })
    }
}

impl Notifier for GrpcNotifier {
    fn notify(&self, notice: UserNotice) {
        let mut client = self.client.clone();
        tokio::spawn(async move {
            let request = notifications_pb::NotifyUserRequest {
                user_id: notice.user_id.clone(),
                r#type: notice.kind.to_owned(),
                title: notice.title,
                body: notice.body,
                metadata_json: notice.metadata_json,
                criticality: notifications_pb::Criticality::Normal.into(),
                dedupe_key: notice.dedupe_key,
            };
            // A few tries; a notification must never hold up or fail a payout.
            for attempt in 1..=3_u64 {
                match client.notify_user(request.clone()).await {
                    Ok(_) => return,
                    Err(status) => {
                        tracing::warn!(user_id = %notice.user_id, kind = notice.kind, attempt, error = %status.message(), "notification not delivered");
                        tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
                    }
                }
            }
        });
    }
}

/// The approval queue in the approvals service.
#[async_trait]
pub trait ApprovalsPort: Send + Sync + 'static {
    /// Queues a held payout (idempotent: one approval per payout).
    async fn queue(&self, payout: &crate::payout::Payout) -> Result<(), ServiceError>;
}

/// The approvals service over gRPC.
#[derive(Clone)]
pub struct GrpcApprovals {
    client: payouts_proto::approvals::v1::approvals_service_client::ApprovalsServiceClient<
        TracedChannel,
    >,
}

impl GrpcApprovals {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            client:
                payouts_proto::approvals::v1::approvals_service_client::ApprovalsServiceClient::new(
                    service_channel(settings, ServiceName::Approvals)?,
                ),
        })
    }
}

#[async_trait]
impl ApprovalsPort for GrpcApprovals {
    async fn queue(&self, payout: &crate::payout::Payout) -> Result<(), ServiceError> {
        let metadata: serde_json::Value = payout
            .hold_metadata_json
            .as_deref()
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default();
        let figure = |name: &str| {
            metadata
                .get(name)
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(0)
        };
        let money = |name: &str| Some(payouts_runtime::convert::usd(figure(name)));
        let request = payouts_proto::approvals::v1::CreateApprovalRequest {
            payout_id: payout.id.clone(),
            user_id: payout.user_id.clone(),
            amount: Some(payout.amount.clone().into()),
            flags: payout
                .flags
                .iter()
                .filter_map(|flag| {
                    limits_pb::PayoutFlag::from_str_name(&format!("PAYOUT_FLAG_{flag}"))
                })
                .map(i32::from)
                .collect(),
            reason: payout.hold_reason.clone().unwrap_or_default(),
            metadata: Some(limits_pb::LimitMetadata {
                is_new_account: metadata
                    .get("isNewAccount")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false),
                account_age_days: figure("accountAgeDays"),
                daily_payout_count: figure("dailyPayoutCount"),
                daily_payout_amount: money("dailyPayoutAmount"),
                monthly_payout_amount: money("monthlyPayoutAmount"),
                lifetime_earnings: money("lifetimeEarnings"),
                daily_attempt_count: figure("dailyAttemptCount"),
            }),
        };
        self.client
            .clone()
            .create_approval(request)
            .await
            .map_err(|status| ServiceError::from_remote("approvals", &status))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::escalation_signal;

    #[test]
    fn payouts_alerts_carry_their_escalation_signal() {
        for (kind, signal) in [
            ("payout_failed", "payout_failed"),
            ("payout_outcome_unknown", "outcome_unknown"),
            ("payout_fraud_flag", "fraud_flag"),
            ("payout_limits_flag", "limits_flag"),
            ("payout_stripe_refusing", "stripe_unavailable"),
            ("stripe_credentials_refused", ""),
            ("payout_transfers_paused", ""),
        ] {
            assert_eq!(escalation_signal(kind), signal, "{kind}");
        }
    }
}
