//! What the disputes service asks of others: critical alerts and creators' notifications
//! (the notifications service).

use async_trait::async_trait;
use payouts_proto::notifications::v1 as notifications_pb;
use payouts_proto::notifications::v1::notifications_service_client::NotificationsServiceClient;
use payouts_runtime::ServiceError;
use payouts_runtime::config::{ServiceName, Settings};
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
