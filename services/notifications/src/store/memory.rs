use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::ServiceError;

use super::{NotificationRepository, storage_id};
use crate::domain::Notification;

/// Embedded store: notifications by storage id.
#[derive(Debug, Default)]
pub struct MemoryNotifications {
    by_id: Mutex<BTreeMap<String, Notification>>,
}

impl MemoryNotifications {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Notification>> {
        self.by_id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl NotificationRepository for MemoryNotifications {
    async fn insert(
        &self,
        mut notification: Notification,
    ) -> Result<(Notification, bool), ServiceError> {
        notification.id = storage_id(&notification);
        let mut by_id = self.lock();
        if let Some(existing) = by_id.get(&notification.id) {
            return Ok((existing.clone(), false));
        }
        by_id.insert(notification.id.clone(), notification.clone());
        Ok((notification, true))
    }

    async fn list(
        &self,
        recipient_id: &str,
        unread_only: bool,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Notification>, ServiceError> {
        let by_id = self.lock();
        let mut found: Vec<Notification> = by_id
            .values()
            .filter(|n| n.recipient_id == recipient_id && !(unread_only && n.is_read()))
            .filter(|n| {
                after
                    .as_ref()
                    .is_none_or(|(at, id)| (n.created_at, &n.id) < (*at, id))
            })
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        found.truncate(limit);
        Ok(found)
    }

    async fn mark_read(
        &self,
        recipient_id: &str,
        notification_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Notification, ServiceError> {
        let mut by_id = self.lock();
        match by_id.get_mut(notification_id) {
            Some(notification) if notification.recipient_id == recipient_id => {
                notification.read_at.get_or_insert(at);
                Ok(notification.clone())
            }
            _ => Err(ServiceError::not_found(format!(
                "notification {notification_id} not found for {recipient_id}"
            ))),
        }
    }
}
