//! What the payout flow needs from other services, as traits (gRPC implementations here;
//! tests substitute their own).

use async_trait::async_trait;
use payouts_proto::limits::v1 as limits_pb;
use payouts_proto::limits::v1::payout_limits_service_client::PayoutLimitsServiceClient;
use payouts_proto::notifications::v1 as notifications_pb;
use payouts_proto::notifications::v1::notifications_service_client::NotificationsServiceClient;
use payouts_runtime::grpc::{TracedChannel, traced_channel};
use payouts_runtime::{ErrorKind, Money, ServiceError, ServiceName, Settings};

/// The limits' verdict on a payout.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    pub decision: limits_pb::LimitDecision,
    pub reserved: bool,
}

/// Quota reservation in the limits service.
#[async_trait]
pub trait LimitsPort: Send + Sync + 'static {
    async fn reserve(
        &self,
        user_id: &str,
        payout_id: &str,
        amount: &Money,
    ) -> Result<Admission, ServiceError>;
    async fn release(
        &self,
        user_id: &str,
        payout_id: &str,
        cents: Option<i64>,
        reason: &str,
    ) -> Result<bool, ServiceError>;
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

/// A gRPC status from another service as our error, keeping its kind and message.
pub fn remote(service: &str, status: &tonic::Status) -> ServiceError {
    let kind = ErrorKind::from_grpc_code(status.code());
    match kind {
        ErrorKind::Internal | ErrorKind::Unavailable => ServiceError::unavailable(
            format!("the {service} service is unavailable"),
            anyhow::anyhow!(
                "{service} answered {:?}: {}",
                status.code(),
                status.message()
            ),
        ),
        _ => ServiceError::new(kind, status.message()),
    }
}

/// The limits service over gRPC.
#[derive(Clone)]
pub struct GrpcLimits {
    client: PayoutLimitsServiceClient<TracedChannel>,
}

impl GrpcLimits {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            client: PayoutLimitsServiceClient::new(traced_channel(
                settings.service_url(ServiceName::Limits),
            )?),
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
    ) -> Result<Admission, ServiceError> {
        let response = self
            .client
            .clone()
            .reserve_payout(limits_pb::ReservePayoutRequest {
                user_id: user_id.to_owned(),
                payout_id: payout_id.to_owned(),
                amount: Some(amount.clone().into()),
            })
            .await
            .map_err(|status| remote("limits", &status))?
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
        cents: Option<i64>,
        reason: &str,
    ) -> Result<bool, ServiceError> {
        let response = self
            .client
            .clone()
            .release_payout(limits_pb::ReleasePayoutRequest {
                user_id: user_id.to_owned(),
                payout_id: payout_id.to_owned(),
                reason: reason.to_owned(),
                amount_cents: cents.unwrap_or(0),
            })
            .await
            .map_err(|status| remote("limits", &status))?
            .into_inner();
        Ok(response.released)
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
            client: NotificationsServiceClient::new(traced_channel(
                settings.service_url(ServiceName::Notifications),
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
