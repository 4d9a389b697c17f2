//! The `notifications` collection: one trait, a MongoDB and an embedded implementation,
//! and the conformance suite both must pass.

mod alerts;
mod memory;
mod mongo;
mod signals;

#[cfg(test)]
mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::{ServiceError, Store};

use crate::domain::Notification;

pub use alerts::{AlertRepository, MemoryAlerts, MongoAlerts};
pub use memory::MemoryNotifications;
pub use mongo::MongoNotifications;
pub use signals::{MemorySignals, MongoSignals, SignalRepository};

/// Storage of notifications.
#[async_trait]
pub trait NotificationRepository: Send + Sync + 'static {
    /// Stores a notification. With a dedupe key, a second insert for the same recipient and
    /// key stores nothing and returns the first (`false` = not created).
    async fn insert(
        &self,
        notification: Notification,
    ) -> Result<(Notification, bool), ServiceError>;

    /// A recipient's notifications, newest first, after the (created_at, id) cursor.
    async fn list(
        &self,
        recipient_id: &str,
        unread_only: bool,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Notification>, ServiceError>;

    /// Marks one of the recipient's notifications read (the first read time is kept).
    /// NotFound when the recipient has no such notification.
    async fn mark_read(
        &self,
        recipient_id: &str,
        notification_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Notification, ServiceError>;
}

/// The storage id of a notification: deduplicated ones are keyed by recipient and key.
pub(crate) fn storage_id(notification: &Notification) -> String {
    match &notification.dedupe_key {
        Some(key) => format!("dedupe:{}:{}", notification.recipient_id, key),
        None => notification.id.clone(),
    }
}

/// The notifications service's repositories.
pub struct Repositories {
    pub notifications: Arc<dyn NotificationRepository>,
    pub alerts: Arc<dyn AlertRepository>,
    pub signals: Arc<dyn SignalRepository>,
}

/// Opens the repositories on the process's store, ensuring indexes.
pub async fn open(store: &Store) -> anyhow::Result<Repositories> {
    Ok(match store {
        Store::Embedded => Repositories {
            notifications: Arc::new(MemoryNotifications::default()),
            alerts: Arc::new(MemoryAlerts::default()),
            signals: Arc::new(MemorySignals::default()),
        },
        Store::Mongo(database) => Repositories {
            notifications: Arc::new(MongoNotifications::open(database).await?),
            alerts: Arc::new(MongoAlerts::open(database).await?),
            signals: Arc::new(MongoSignals::open(database).await?),
        },
    })
}
