//! The gRPC surface: parse requests into domain values, call the repository, map back.

use std::sync::Arc;

use payouts_proto::notifications::v1 as pb;
use payouts_proto::notifications::v1::notifications_service_server::{
    NotificationsService, NotificationsServiceServer,
};
use payouts_runtime::convert::{optional_timestamp, page_size, required_id, timestamp};
use payouts_runtime::{Clock, ServiceError};
use tonic::{Request, Response, Status};

use crate::domain::{Criticality, NewNotification, Notification};
use crate::store::NotificationRepository;

/// The tonic service.
pub struct NotificationsGrpc {
    repository: Arc<dyn NotificationRepository>,
    clock: Arc<dyn Clock>,
    admin_ids: Vec<String>,
}

impl NotificationsGrpc {
    pub fn new(
        repository: Arc<dyn NotificationRepository>,
        clock: Arc<dyn Clock>,
        admin_ids: Vec<String>,
    ) -> Self {
        Self {
            repository,
            clock,
            admin_ids,
        }
    }

    async fn notify(&self, new: NewNotification) -> Result<Notification, ServiceError> {
        let notification =
            new.into_notification(uuid::Uuid::now_v7().to_string(), self.clock.now());
        let (stored, created) = self.repository.insert(notification).await?;
        if created {
            tracing::info!(
                notification_id = %stored.id,
                recipient_id = %stored.recipient_id,
                kind = %stored.kind,
                "notification stored"
            );
        }
        Ok(stored)
    }
}

/// The generated server around the service.
pub fn server(service: NotificationsGrpc) -> NotificationsServiceServer<NotificationsGrpc> {
    NotificationsServiceServer::new(service)
}

fn criticality(value: i32) -> Result<Criticality, ServiceError> {
    match pb::Criticality::try_from(value) {
        Ok(pb::Criticality::Unspecified) => Ok(Criticality::Normal),
        Ok(pb::Criticality::Low) => Ok(Criticality::Low),
        Ok(pb::Criticality::Normal) => Ok(Criticality::Normal),
        Ok(pb::Criticality::High) => Ok(Criticality::High),
        Ok(pb::Criticality::Critical) => Ok(Criticality::Critical),
        Err(_) => Err(ServiceError::invalid_argument(format!(
            "criticality {value} is not defined"
        ))),
    }
}

fn to_proto(n: Notification) -> pb::Notification {
    let criticality = match n.criticality {
        Criticality::Low => pb::Criticality::Low,
        Criticality::Normal => pb::Criticality::Normal,
        Criticality::High => pb::Criticality::High,
        Criticality::Critical => pb::Criticality::Critical,
    };
    pb::Notification {
        read: n.is_read(),
        id: n.id,
        recipient_id: n.recipient_id,
        r#type: n.kind,
        title: n.title,
        body: n.body,
        metadata_json: n.metadata_json,
        criticality: criticality.into(),
        created_at: Some(timestamp(n.created_at)),
        read_at: optional_timestamp(n.read_at),
    }
}

#[tonic::async_trait]
impl NotificationsService for NotificationsGrpc {
    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn notify_user(
        &self,
        request: Request<pb::NotifyUserRequest>,
    ) -> Result<Response<pb::NotifyUserResponse>, Status> {
        let r = request.into_inner();
        let new = NewNotification::parse(
            &r.user_id,
            &r.r#type,
            &r.title,
            &r.body,
            &r.metadata_json,
            criticality(r.criticality)?,
            &r.dedupe_key,
        )?;
        let notification = self.notify(new).await?;
        Ok(Response::new(pb::NotifyUserResponse {
            notification: Some(to_proto(notification)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn notify_admins(
        &self,
        request: Request<pb::NotifyAdminsRequest>,
    ) -> Result<Response<pb::NotifyAdminsResponse>, Status> {
        let r = request.into_inner();
        let criticality = criticality(r.criticality)?;
        if self.admin_ids.is_empty() {
            tracing::warn!(kind = %r.r#type, "admin notification dropped: ADMIN_USER_IDS is empty");
        }
        let mut notifications = Vec::with_capacity(self.admin_ids.len());
        for admin_id in &self.admin_ids {
            let new = NewNotification::parse(
                admin_id,
                &r.r#type,
                &r.title,
                &r.body,
                &r.metadata_json,
                criticality,
                &r.dedupe_key,
            )?;
            notifications.push(to_proto(self.notify(new).await?));
        }
        Ok(Response::new(pb::NotifyAdminsResponse { notifications }))
    }

    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let r = request.into_inner();
        let recipient_id = required_id(&r.recipient_id, "recipient_id")?;
        let limit = page_size(r.limit, 50, 500)?;
        let notifications = self
            .repository
            .list(&recipient_id, r.unread_only, limit)
            .await?
            .into_iter()
            .map(to_proto)
            .collect();
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications,
        }))
    }

    async fn mark_notification_read(
        &self,
        request: Request<pb::MarkNotificationReadRequest>,
    ) -> Result<Response<pb::MarkNotificationReadResponse>, Status> {
        let r = request.into_inner();
        let recipient_id = required_id(&r.recipient_id, "recipient_id")?;
        let notification_id = required_id(&r.notification_id, "notification_id")?;
        let notification = self
            .repository
            .mark_read(&recipient_id, &notification_id, self.clock.now())
            .await?;
        Ok(Response::new(pb::MarkNotificationReadResponse {
            notification: Some(to_proto(notification)),
        }))
    }

    async fn create_critical_alert(
        &self,
        _request: Request<pb::CreateCriticalAlertRequest>,
    ) -> Result<Response<pb::CreateCriticalAlertResponse>, Status> {
        Err(Status::unimplemented(
            "critical alerts arrive with balance monitoring",
        ))
    }

    async fn list_critical_alerts(
        &self,
        _request: Request<pb::ListCriticalAlertsRequest>,
    ) -> Result<Response<pb::ListCriticalAlertsResponse>, Status> {
        Err(Status::unimplemented(
            "critical alerts arrive with balance monitoring",
        ))
    }

    async fn update_critical_alert(
        &self,
        _request: Request<pb::UpdateCriticalAlertRequest>,
    ) -> Result<Response<pb::UpdateCriticalAlertResponse>, Status> {
        Err(Status::unimplemented(
            "critical alerts arrive with balance monitoring",
        ))
    }
}
