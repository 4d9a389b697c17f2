//! The balance check's ports over the network: the owners of what is owed (payouts, limits,
//! disputes) and the notifications service over gRPC, Stripe over HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use payouts_proto::disputes::v1::ListPayableEarningsRequest;
use payouts_proto::disputes::v1::disputes_service_client::DisputesServiceClient;
use payouts_proto::limits::v1::GetHeldAmountsRequest;
use payouts_proto::limits::v1::payout_limits_service_client::PayoutLimitsServiceClient;
use payouts_proto::notifications::v1 as notifications_pb;
use payouts_proto::notifications::v1::notifications_service_client::NotificationsServiceClient;
use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use payouts_proto::payouts::v1::{
    CountUnpayableUsersRequest, PauseCause, SetTransferPauseRequest, SummarizeObligationsRequest,
};
use payouts_runtime::config::Secret;
use payouts_runtime::convert::cents;
use payouts_runtime::grpc::{TracedChannel, service_channel};
use payouts_runtime::{ServiceError, ServiceName, Settings};

use crate::check::{Alerts, Obligations, Owed, PlatformBalance, StripeBalance, Transfers};
use crate::domain::BalanceAlert;

/// How many creators one page of the obligations walk covers.
const PAGE: i32 = 500;

/// What is owed, from its owners: payouts' admitted and held payouts, and every creator's
/// payable earnings (disputes) beyond what their payouts already hold (limits).
#[derive(Clone)]
pub struct GrpcObligations {
    payouts: PayoutsServiceClient<TracedChannel>,
    limits: PayoutLimitsServiceClient<TracedChannel>,
    disputes: DisputesServiceClient<TracedChannel>,
}

impl GrpcObligations {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            payouts: PayoutsServiceClient::new(service_channel(settings, ServiceName::Payouts)?),
            limits: PayoutLimitsServiceClient::new(service_channel(settings, ServiceName::Limits)?),
            disputes: DisputesServiceClient::new(service_channel(settings, ServiceName::Disputes)?),
        })
    }
}

#[async_trait]
impl Obligations for GrpcObligations {
    async fn owed(&self) -> Result<Owed, ServiceError> {
        let summary = self
            .payouts
            .clone()
            .summarize_obligations(SummarizeObligationsRequest {})
            .await
            .map_err(|status| ServiceError::from_remote("payouts", &status))?
            .into_inner();
        let mut owed = Owed {
            obligations_cents: cents(summary.awaiting_transfer.as_ref())
                .saturating_add(cents(summary.pending_approval.as_ref())),
            ..Owed::default()
        };
        let mut page_token = String::new();
        loop {
            let page = self
                .disputes
                .clone()
                .list_payable_earnings(ListPayableEarningsRequest {
                    currency: "usd".to_owned(),
                    page_size: PAGE,
                    page_token: page_token.clone(),
                })
                .await
                .map_err(|status| ServiceError::from_remote("disputes", &status))?
                .into_inner();
            let payable: BTreeMap<String, i64> = page
                .earnings
                .iter()
                .map(|e| (e.user_id.clone(), cents(e.payable.as_ref())))
                .filter(|(_, cents)| *cents > 0)
                .collect();
            if !payable.is_empty() {
                let held = self
                    .limits
                    .clone()
                    .get_held_amounts(GetHeldAmountsRequest {
                        user_ids: payable.keys().cloned().collect(),
                    })
                    .await
                    .map_err(|status| ServiceError::from_remote("limits", &status))?
                    .into_inner();
                let held: BTreeMap<String, i64> = held
                    .held_amounts
                    .into_iter()
                    .map(|h| (h.user_id, cents(h.held.as_ref())))
                    .collect();
                let unpaid = unrequested(&payable, &held);
                owed.obligations_cents =
                    unpaid.values().fold(owed.obligations_cents, |sum, cents| {
                        sum.saturating_add(*cents)
                    });
                owed.users_with_unpaid_earnings += i64::try_from(unpaid.len()).unwrap_or(i64::MAX);
                if !unpaid.is_empty() {
                    owed.users_without_bank_accounts += self
                        .payouts
                        .clone()
                        .count_unpayable_users(CountUnpayableUsersRequest {
                            user_ids: unpaid.keys().cloned().collect(),
                        })
                        .await
                        .map_err(|status| ServiceError::from_remote("payouts", &status))?
                        .into_inner()
                        .unpayable;
                }
            }
            if page.next_page_token.is_empty() {
                return Ok(owed);
            }
            page_token = page.next_page_token;
        }
    }
}

/// Each creator's payable earnings not yet requested: payable minus what their payouts hold,
/// never below zero per creator (one creator paid before a refund does not offset another's
/// unpaid earnings). Creators with nothing unrequested are left out.
pub fn unrequested(
    payable: &BTreeMap<String, i64>,
    held: &BTreeMap<String, i64>,
) -> BTreeMap<String, i64> {
    payable
        .iter()
        .map(|(user, payable)| {
            let held = held.get(user).copied().unwrap_or(0);
            (user.clone(), payable.saturating_sub(held))
        })
        .filter(|(_, unrequested)| *unrequested > 0)
        .collect()
}

/// The payouts service's transfer pause.
#[derive(Clone)]
pub struct GrpcTransfers {
    payouts: PayoutsServiceClient<TracedChannel>,
}

impl GrpcTransfers {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            payouts: PayoutsServiceClient::new(service_channel(settings, ServiceName::Payouts)?),
        })
    }
}

#[async_trait]
impl Transfers for GrpcTransfers {
    async fn pause(&self, paused: bool, reason: &str) -> Result<(), ServiceError> {
        self.payouts
            .clone()
            .set_transfer_pause(SetTransferPauseRequest {
                paused,
                cause: PauseCause::Automatic.into(),
                reason: reason.to_owned(),
                actor: "balance".to_owned(),
                expected_cause: PauseCause::Unspecified.into(),
            })
            .await
            .map_err(|status| ServiceError::from_remote("payouts", &status))?;
        Ok(())
    }
}

/// The escalation signal of a balance alert: its threshold level, for the balance alert
/// itself (not the depletion risk or a failing check).
fn balance_signal(alert: &BalanceAlert) -> &'static str {
    use crate::domain::{AlertKind, ThresholdStatus};
    match (alert.kind, alert.level) {
        (AlertKind::Balance, ThresholdStatus::Warning) => "balance_warning",
        (AlertKind::Balance, ThresholdStatus::Critical) => "balance_critical",
        (AlertKind::Balance, ThresholdStatus::Depleted) => "balance_depleted",
        _ => "",
    }
}

/// Balance alerts in the notifications service's `criticalAlerts`.
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
impl Alerts for GrpcAlerts {
    async fn raise(&self, alert: &BalanceAlert, dedupe_key: &str) -> Result<String, ServiceError> {
        let severity = if alert.severity == "critical" {
            notifications_pb::AlertSeverity::Critical
        } else {
            notifications_pb::AlertSeverity::Warning
        };
        let answer = self
            .client
            .clone()
            .create_critical_alert(notifications_pb::CreateCriticalAlertRequest {
                r#type: alert.kind.as_str().to_owned(),
                severity: severity.into(),
                title: alert.title.clone(),
                description: alert.message.clone(),
                data_json: format!("{{\"level\":\"{}\"}}", alert.level.as_str()),
                dedupe_key: dedupe_key.to_owned(),
                // Design §10: warning 1, critical 2, depleted 3 (halts transfers).
                signal: balance_signal(alert).to_owned(),
                ..Default::default()
            })
            .await
            .map_err(|status| ServiceError::from_remote("notifications", &status))?
            .into_inner();
        answer.alert.map(|alert| alert.id).ok_or_else(|| {
            ServiceError::internal(anyhow::anyhow!("an alert answer without its alert"))
        })
    }

    async fn resolve(&self, alert_id: &str, note: &str) -> Result<(), ServiceError> {
        self.client
            .clone()
            .update_critical_alert(notifications_pb::UpdateCriticalAlertRequest {
                alert_id: alert_id.to_owned(),
                status: notifications_pb::AlertStatus::Resolved.into(),
                actor: "balance".to_owned(),
                notes: note.to_owned(),
            })
            .await
            .map_err(|status| ServiceError::from_remote("notifications", &status))?;
        Ok(())
    }
}

/// Stripe's `GET /v1/balance` through async-stripe, against `STRIPE_API_BASE`.
pub struct StripeBalanceClient {
    client: stripe::Client,
}

impl StripeBalanceClient {
    pub fn new(secret_key: &Secret, api_base: &str) -> anyhow::Result<Self> {
        let client = stripe::ClientBuilder::new(secret_key.expose())
            .url(format!("{api_base}/"))
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|error| anyhow::anyhow!("invalid Stripe configuration: {error}"))?;
        Ok(Self { client })
    }
}

/// The USD amount of a balance list (`available` or `pending`: `[{amount, currency}]`).
fn usd_amount(value: &miniserde::json::Value, field: &str) -> Result<i64, ServiceError> {
    use miniserde::json::{Number, Value};
    let unreadable = || {
        ServiceError::unavailable(
            "unreadable answer from Stripe",
            anyhow::anyhow!("GET /v1/balance: no readable {field}"),
        )
    };
    let Value::Object(balance) = value else {
        return Err(unreadable());
    };
    let Some(Value::Array(entries)) = balance.get(field) else {
        return Err(unreadable());
    };
    let mut total = 0_i64;
    for entry in entries {
        let Value::Object(entry) = entry else {
            return Err(unreadable());
        };
        if !matches!(entry.get("currency"), Some(Value::String(currency)) if currency == "usd") {
            continue;
        }
        let amount = match entry.get("amount") {
            Some(Value::Number(Number::I64(amount))) => *amount,
            Some(Value::Number(Number::U64(amount))) => {
                i64::try_from(*amount).map_err(|_| unreadable())?
            }
            _ => return Err(unreadable()),
        };
        total = total.saturating_add(amount);
    }
    Ok(total)
}

#[async_trait]
impl StripeBalance for StripeBalanceClient {
    async fn balance(&self) -> Result<PlatformBalance, ServiceError> {
        use stripe_client_core::{RequestBuilder, StripeMethod};
        let value = RequestBuilder::new(StripeMethod::Get, "/balance")
            .customize::<miniserde::json::Value>()
            .send(&self.client)
            .await
            .map_err(|error| {
                ServiceError::unavailable(
                    "Stripe's balance could not be read",
                    anyhow::anyhow!("{error}"),
                )
            })?;
        Ok(PlatformBalance {
            available_cents: usd_amount(&value, "available")?,
            pending_cents: usd_amount(&value, "pending")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrequested_earnings_never_go_below_zero_per_creator() {
        let map = |pairs: &[(&str, i64)]| {
            pairs
                .iter()
                .map(|(user, cents)| ((*user).to_owned(), *cents))
                .collect::<BTreeMap<_, _>>()
        };
        let payable = map(&[("a", 100_00), ("b", 50_00), ("c", 30_00)]);
        // b's payouts hold more than b may now be paid (a refund came after): 0, not -20.
        let held = map(&[("a", 40_00), ("b", 70_00)]);
        assert_eq!(
            unrequested(&payable, &held),
            map(&[("a", 60_00), ("c", 30_00)])
        );
    }

    #[test]
    fn the_usd_figures_of_a_stripe_balance_are_read() {
        let value: miniserde::json::Value = miniserde::json::from_str(
            r#"{"object":"balance","available":[{"amount":2500000,"currency":"usd"},{"amount":9,"currency":"eur"}],"pending":[{"amount":-300,"currency":"usd"}],"livemode":false}"#,
        )
        .unwrap();
        assert_eq!(usd_amount(&value, "available").unwrap(), 2_500_000);
        assert_eq!(usd_amount(&value, "pending").unwrap(), -300);
        let broken: miniserde::json::Value =
            miniserde::json::from_str(r#"{"available":"x"}"#).unwrap();
        assert_eq!(
            usd_amount(&broken, "available").unwrap_err().kind(),
            payouts_runtime::ErrorKind::Unavailable
        );
    }
}
