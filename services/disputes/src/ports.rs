//! What the disputes service asks of others: critical alerts and creators' notifications
//! (the notifications service), and a charge's refunds and amount (Stripe's refund list and
//! charge).

use async_trait::async_trait;
use payouts_proto::notifications::v1 as notifications_pb;
use payouts_proto::notifications::v1::notifications_service_client::NotificationsServiceClient;
use payouts_runtime::config::{ServiceName, Settings};
use payouts_runtime::{Secret, ServiceError};
use serde_json::Value;

use crate::charges::{ChargeAmounts, RefundNews, charge_amounts, refund_news};
use payouts_runtime::grpc::{TracedChannel, service_channel};

/// An alert for admins or a notification for a creator; `key` makes a retry a no-op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub key: String,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub data_json: String,
}

/// Critical alerts (which email the admins) and creators' notifications.
#[async_trait]
pub trait NoticesPort: Send + Sync + 'static {
    async fn alert(&self, message: &Message) -> Result<(), ServiceError>;
    async fn notify_user(&self, user_id: &str, message: &Message) -> Result<(), ServiceError>;
}

/// The escalation signal (design §10) of a disputes alert: every dispute (counted once per
/// dispute, however many creators' alerts it raises) and refunds with their amount.
fn escalation_signal(message: &Message) -> notifications_pb::CreateCriticalAlertRequest {
    let data: Value = serde_json::from_str(&message.data_json).unwrap_or(Value::Null);
    let subject = data["affectedUserId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match message.kind.as_str() {
        "dispute_created" => notifications_pb::CreateCriticalAlertRequest {
            signal: "dispute_created".to_owned(),
            signal_id: data["disputeId"]
                .as_str()
                .map(|id| format!("dispute_created:{id}"))
                .unwrap_or_default(),
            subject,
            ..Default::default()
        },
        "refund_processed" => notifications_pb::CreateCriticalAlertRequest {
            signal: "refund_processed".to_owned(),
            amount_cents: data["refundedAmount"].as_i64().unwrap_or(0),
            subject,
            ..Default::default()
        },
        "creator_earnings_wiped" => notifications_pb::CreateCriticalAlertRequest {
            signal: "earnings_wiped".to_owned(),
            amount_cents: data["wipedCents"].as_i64().unwrap_or(0),
            subject,
            ..Default::default()
        },
        _ => notifications_pb::CreateCriticalAlertRequest::default(),
    }
}

/// The notifications service over gRPC.
#[derive(Clone)]
pub struct GrpcNotices {
    client: NotificationsServiceClient<TracedChannel>,
}

impl GrpcNotices {
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
impl NoticesPort for GrpcNotices {
    async fn alert(&self, message: &Message) -> Result<(), ServiceError> {
        self.client
            .clone()
            .create_critical_alert(notifications_pb::CreateCriticalAlertRequest {
                r#type: message.kind.clone(),
                severity: notifications_pb::AlertSeverity::Critical.into(),
                title: message.title.clone(),
                description: message.body.clone(),
                data_json: message.data_json.clone(),
                dedupe_key: message.key.clone(),
                ..escalation_signal(message)
            })
            .await
            .map_err(|status| ServiceError::from_remote("notifications", &status))?;
        Ok(())
    }

    async fn notify_user(&self, user_id: &str, message: &Message) -> Result<(), ServiceError> {
        self.client
            .clone()
            .notify_user(notifications_pb::NotifyUserRequest {
                user_id: user_id.to_owned(),
                r#type: message.kind.clone(),
                title: message.title.clone(),
                body: message.body.clone(),
                metadata_json: message.data_json.clone(),
                criticality: notifications_pb::Criticality::High.into(),
                dedupe_key: message.key.clone(),
            })
            .await
            .map_err(|status| ServiceError::from_remote("notifications", &status))?;
        Ok(())
    }
}

/// Stripe's refunds of a charge, when a charge event leaves what was refunded in doubt, and
/// the charge itself, when a refund of it comes before any event carrying it.
#[async_trait]
pub trait StripeRefunds: Send + Sync + 'static {
    /// Every refund of the charge as Stripe holds it now (`GET /v1/refunds?charge=`, every
    /// page). An error leaves the outcome unknown: Unavailable for a failure that can pass
    /// (the event is retried), FailedPrecondition for a definite refusal.
    async fn refunds_of(&self, charge_id: &str) -> Result<Vec<RefundNews>, ServiceError>;

    /// The charge's amounts as Stripe holds them now (`GET /v1/charges/{id}`). Errors as
    /// [`StripeRefunds::refunds_of`]: Unavailable for a failure that can pass,
    /// FailedPrecondition for a definite refusal. A port that cannot read charges answers
    /// Unavailable (the default): the refund waits for an event carrying the charge, it is
    /// never taken as done.
    async fn charge(&self, charge_id: &str) -> Result<ChargeAmounts, ServiceError> {
        Err(ServiceError::unavailable(
            format!("charge {charge_id} cannot be read through this Stripe port"),
            anyhow::anyhow!("charge lookups not supported"),
        ))
    }
}

/// Pages read at most for one charge (100 refunds a page).
const MAX_REFUND_PAGES: usize = 100;

/// async-stripe against `STRIPE_API_BASE` (https://docs.stripe.com/api/refunds/list,
/// https://docs.stripe.com/api/charges/retrieve).
pub struct StripeRefundsClient {
    client: stripe::Client,
}

impl StripeRefundsClient {
    pub fn new(secret_key: &Secret, api_base: &str) -> anyhow::Result<Self> {
        let client = stripe::ClientBuilder::new(secret_key.expose())
            .url(format!("{api_base}/"))
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .map_err(|error| anyhow::anyhow!("invalid Stripe configuration: {error}"))?;
        Ok(Self { client })
    }
}

/// How a failed call is treated: a 4xx about the request itself (400, 404: the charge is
/// not ours, a bad id) is Stripe's definite answer; anything else may pass: a 5xx, a
/// timeout, 409 and 429 (https://docs.stripe.com/error-low-level), and 401/403 (our key was
/// rotated, revoked or lacks `charges:read`/`refunds:read`, https://docs.stripe.com/api/errors):
/// an answer about our own configuration, which a fix of the key changes, is never a "no"
/// about the event, so the event waits instead of counting toward parking. `what` names what
/// was read, `meanwhile` what holds until it is.
fn lookup_failure(what: &str, meanwhile: &str, error: stripe::StripeError) -> ServiceError {
    let definite = matches!(
        &error,
        stripe::StripeError::Stripe(_, status)
            if (400..500).contains(status) && ![401, 403, 409, 429].contains(status)
    );
    let message = format!("{what} could not be read");
    if definite {
        ServiceError::failed_precondition(format!("{message}: {error}"))
    } else {
        ServiceError::unavailable(
            format!("{message}; {meanwhile}"),
            anyhow::anyhow!("{error}"),
        )
    }
}

/// An answer of Stripe's as JSON (what async-stripe's untyped requests return).
fn json_of(value: &miniserde::json::Value, what: &str) -> Result<Value, ServiceError> {
    serde_json::from_str(&miniserde::json::to_string(value)).map_err(|error| {
        ServiceError::unavailable(format!("{what} was unreadable"), anyhow::anyhow!("{error}"))
    })
}

#[async_trait]
impl StripeRefunds for StripeRefundsClient {
    async fn refunds_of(&self, charge_id: &str) -> Result<Vec<RefundNews>, ServiceError> {
        use stripe_client_core::{RequestBuilder, StripeMethod};

        #[derive(serde::Serialize)]
        struct ListRefunds<'a> {
            charge: &'a str,
            limit: u8,
            #[serde(skip_serializing_if = "Option::is_none")]
            starting_after: Option<&'a str>,
        }
        let mut refunds = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_REFUND_PAGES {
            let params = ListRefunds {
                charge: charge_id,
                limit: 100,
                starting_after: after.as_deref(),
            };
            let value = RequestBuilder::new(StripeMethod::Get, "/refunds")
                .query(&params)
                .customize::<miniserde::json::Value>()
                .send(&self.client)
                .await
                .map_err(|error| {
                    lookup_failure(
                        &format!("Stripe's refunds of charge {charge_id}"),
                        "the charge stays reduced until they are",
                        error,
                    )
                })?;
            let page = json_of(&value, &format!("Stripe's refunds of charge {charge_id}"))?;
            let data = page["data"].as_array().cloned().unwrap_or_default();
            for object in &data {
                let refund = refund_news(object, charge_id)?;
                if object["charge"]
                    .as_str()
                    .is_none_or(|charge| charge == charge_id)
                {
                    refunds.push(refund);
                }
            }
            match (page["has_more"].as_bool(), data.last()) {
                (Some(true), Some(last)) => {
                    after = last["id"].as_str().map(str::to_owned);
                }
                _ => return Ok(refunds),
            }
        }
        Err(ServiceError::unavailable(
            format!("charge {charge_id} has more than {MAX_REFUND_PAGES} pages of refunds"),
            anyhow::anyhow!("refund list cut"),
        ))
    }

    async fn charge(&self, charge_id: &str) -> Result<ChargeAmounts, ServiceError> {
        use stripe_client_core::{RequestBuilder, StripeMethod};

        let what = format!("Stripe's charge {charge_id}");
        if charge_id.is_empty() || charge_id.contains(['/', '?', '#']) {
            return Err(ServiceError::invalid_argument(format!(
                "{charge_id:?} is not a charge id"
            )));
        }
        let value = RequestBuilder::new(StripeMethod::Get, format!("/charges/{charge_id}"))
            .customize::<miniserde::json::Value>()
            .send(&self.client)
            .await
            .map_err(|error| {
                lookup_failure(
                    &what,
                    "the refunds of it wait until it is (the event is retried)",
                    error,
                )
            })?;
        let charge = charge_amounts(&json_of(&value, &what)?).map_err(|error| {
            ServiceError::unavailable(
                format!("{what} was unreadable"),
                anyhow::anyhow!("{}", error.message()),
            )
        })?;
        if charge.charge_id != charge_id {
            return Err(ServiceError::unavailable(
                format!("{what} answered as charge {}", charge.charge_id),
                anyhow::anyhow!("another charge"),
            ));
        }
        Ok(charge)
    }
}

/// Test doubles of the ports.
#[cfg(test)]
pub mod testing {
    use super::*;

    /// Stripe's refunds and charges in memory, for tests: what each charge's list holds, each
    /// charge's amounts, and failures to answer with first.
    #[derive(Default)]
    pub struct MemoryRefunds {
        refunds: std::sync::Mutex<std::collections::BTreeMap<String, Vec<RefundNews>>>,
        failures: std::sync::Mutex<Vec<ServiceError>>,
        pub calls: std::sync::atomic::AtomicUsize,
        charges: std::sync::Mutex<std::collections::BTreeMap<String, ChargeAmounts>>,
        charge_failures: std::sync::Mutex<Vec<ServiceError>>,
        pub charge_calls: std::sync::atomic::AtomicUsize,
    }

    impl MemoryRefunds {
        /// Sets a refund (by id) of its charge as Stripe now holds it.
        pub fn set(&self, id: &str, charge_id: &str, amount: i64, status: &str) {
            let mut refunds = self.refunds.lock().unwrap();
            let list = refunds.entry(charge_id.to_owned()).or_default();
            list.retain(|refund| refund.id != id);
            list.push(RefundNews {
                id: id.to_owned(),
                charge_id: charge_id.to_owned(),
                amount,
                status: status.to_owned(),
            });
        }

        /// The next lookup fails with `error`.
        pub fn fail_next(&self, error: ServiceError) {
            self.failures.lock().unwrap().push(error);
        }

        /// A charge of `amount` USD cents as Stripe holds it.
        pub fn set_charge(&self, charge_id: &str, amount: i64) {
            self.charges.lock().unwrap().insert(
                charge_id.to_owned(),
                ChargeAmounts {
                    charge_id: charge_id.to_owned(),
                    amount,
                    amount_captured: amount,
                    amount_refunded: 0,
                    currency: payouts_runtime::Currency::usd(),
                },
            );
        }

        /// The next charge read fails with `error`.
        pub fn fail_next_charge(&self, error: ServiceError) {
            self.charge_failures.lock().unwrap().push(error);
        }
    }

    #[async_trait]
    impl StripeRefunds for MemoryRefunds {
        async fn refunds_of(&self, charge_id: &str) -> Result<Vec<RefundNews>, ServiceError> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(error) = self.failures.lock().unwrap().pop() {
                return Err(error);
            }
            Ok(self
                .refunds
                .lock()
                .unwrap()
                .get(charge_id)
                .cloned()
                .unwrap_or_default())
        }

        async fn charge(&self, charge_id: &str) -> Result<ChargeAmounts, ServiceError> {
            self.charge_calls
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let Some(error) = self.charge_failures.lock().unwrap().pop() {
                return Err(error);
            }
            self.charges
                .lock()
                .unwrap()
                .get(charge_id)
                .cloned()
                .ok_or_else(|| {
                    ServiceError::failed_precondition(format!("No such charge: '{charge_id}'"))
                })
        }
    }
}
