use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::{self, doc};
use mongodb::options::{FindOneAndReplaceOptions, ReturnDocument};
use mongodb::{Collection, IndexModel};
use payouts_runtime::ServiceError;
use payouts_runtime::store::{
    after_cursor, find_many, from_bson_time, is_duplicate_key, mongo_error, to_bson_time,
};
use serde::{Deserialize, Serialize};

use super::{NotificationRepository, storage_id};
use crate::domain::{Criticality, Notification};

/// MongoDB store: collection `notifications`.
#[derive(Debug, Clone)]
pub struct MongoNotifications {
    collection: Collection<NotificationDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NotificationDocument {
    #[serde(rename = "_id")]
    id: String,
    recipient_id: String,
    #[serde(rename = "type")]
    kind: String,
    title: String,
    body: String,
    metadata_json: String,
    criticality: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dedupe_key: Option<String>,
    read: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    read_at: Option<bson::DateTime>,
    created_at: bson::DateTime,
}

impl From<&Notification> for NotificationDocument {
    fn from(n: &Notification) -> Self {
        Self {
            id: n.id.clone(),
            recipient_id: n.recipient_id.clone(),
            kind: n.kind.clone(),
            title: n.title.clone(),
            body: n.body.clone(),
            metadata_json: n.metadata_json.clone(),
            criticality: n.criticality.as_str().to_owned(),
            dedupe_key: n.dedupe_key.clone(),
            read: n.read_at.is_some(),
            read_at: n.read_at.map(to_bson_time),
            created_at: to_bson_time(n.created_at),
        }
    }
}

impl From<NotificationDocument> for Notification {
    fn from(d: NotificationDocument) -> Self {
        Self {
            id: d.id,
            recipient_id: d.recipient_id,
            kind: d.kind,
            title: d.title,
            body: d.body,
            metadata_json: d.metadata_json,
            criticality: Criticality::parse(&d.criticality).unwrap_or(Criticality::Normal),
            dedupe_key: d.dedupe_key,
            read_at: d.read_at.map(from_bson_time),
            created_at: from_bson_time(d.created_at),
        }
    }
}

impl MongoNotifications {
    /// Opens the collection and ensures its indexes (idempotent).
    pub async fn open(database: &mongodb::Database) -> anyhow::Result<Self> {
        let collection = database.collection::<NotificationDocument>("notifications");
        collection
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "recipientId": 1, "createdAt": -1 })
                    .build(),
            )
            .await?;
        Ok(Self { collection })
    }

    async fn get(&self, id: &str) -> Result<Option<Notification>, ServiceError> {
        Ok(self
            .collection
            .find_one(doc! { "_id": id })
            .await
            .map_err(mongo_error)?
            .map(Notification::from))
    }
}

#[async_trait]
impl NotificationRepository for MongoNotifications {
    async fn insert(
        &self,
        mut notification: Notification,
    ) -> Result<(Notification, bool), ServiceError> {
        notification.id = storage_id(&notification);
        match self
            .collection
            .insert_one(NotificationDocument::from(&notification))
            .await
        {
            Ok(_) => Ok((notification, true)),
            Err(error) if is_duplicate_key(&error) => {
                let existing = self.get(&notification.id).await?.ok_or_else(|| {
                    ServiceError::internal(anyhow::anyhow!("duplicate notification vanished"))
                })?;
                Ok((existing, false))
            }
            Err(error) => Err(mongo_error(error)),
        }
    }

    async fn list(
        &self,
        recipient_id: &str,
        unread_only: bool,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Notification>, ServiceError> {
        let mut filter = doc! { "recipientId": recipient_id };
        if unread_only {
            filter.insert("read", false);
        }
        after_cursor(&mut filter, "createdAt", after, true);
        let documents: Vec<NotificationDocument> = find_many(
            &self.collection,
            filter,
            doc! { "createdAt": -1, "_id": -1 },
            limit,
        )
        .await?;
        Ok(documents.into_iter().map(Notification::from).collect())
    }

    async fn mark_read(
        &self,
        recipient_id: &str,
        notification_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Notification, ServiceError> {
        // Versioned by its own state: only an unread notification is replaced, so the first
        // read time is kept. (Whole-document replacement, not `$set`: see README "Storage".)
        if let Some(mut notification) = self.get(notification_id).await?
            && notification.recipient_id == recipient_id
            && notification.read_at.is_none()
        {
            notification.read_at = Some(at);
            let replaced = self
                .collection
                .find_one_and_replace(
                    doc! { "_id": notification_id, "recipientId": recipient_id, "read": false },
                    NotificationDocument::from(&notification),
                )
                .with_options(
                    FindOneAndReplaceOptions::builder()
                        .return_document(ReturnDocument::After)
                        .build(),
                )
                .await
                .map_err(mongo_error)?;
            if let Some(document) = replaced {
                return Ok(document.into());
            }
        }
        match self.get(notification_id).await? {
            Some(existing) if existing.recipient_id == recipient_id => Ok(existing),
            _ => Err(ServiceError::not_found(format!(
                "notification {notification_id} not found for {recipient_id}"
            ))),
        }
    }
}
