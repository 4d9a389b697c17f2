use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{self, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};
use payouts_runtime::ServiceError;
use payouts_runtime::store::{
    after_cursor, find_many, from_bson_time, is_duplicate_key, mongo_error, to_bson_time,
};
use serde::{Deserialize, Serialize};

use super::{Backlog, InboxRepository, Inserted, stale, storage_id};
use crate::domain::{
    Endpoint, EventSource, EventStatus, InboxEvent, OwedAlert, Owner, Statistics, Waiting,
};

/// MongoDB store: collection `processedWebhookEvents` (design §4 document, plus what the
/// inbox needs: payload, attempts, deliveries, version, expiresAt for the TTL index).
#[derive(Debug, Clone)]
pub struct MongoInbox {
    collection: Collection<EventDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventDocument {
    #[serde(rename = "_id")]
    id: String,
    event_id: String,
    event_type: String,
    webhook_endpoint: String,
    status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    account: Option<String>,
    livemode: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_version: Option<String>,
    created: i64,
    payload: String,
    attempts: i64,
    deliveries: i64,
    /// Design §4 name of the first-stored time.
    processed_at: bson::DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failed_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_parent: Option<String>,
    /// `delivery` or `backfill` (absent on events stored before sources were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// Definite refusals since the event was last made due (what parking counts).
    #[serde(default)]
    refusals: i64,
    /// The owner the event waits for ("payouts", "disputes") while it could not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    waiting_for: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    waiting_since: Option<bson::DateTime>,
    #[serde(default)]
    waits: i64,
    /// Set while the parked event's critical alert is owed: when the worker raises it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alert_due_at: Option<bson::DateTime>,
    #[serde(default)]
    alert_attempts: i64,
    /// When the worker has work with the event (`InboxEvent::work_due_at`): indexed, so one
    /// query finds due attempts and owed alerts. Absent when there is nothing to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    due_at: Option<bson::DateTime>,
    version: i64,
    /// Set once the event completed; the TTL index removes it 30 days later. Absent while
    /// processing or failed, so those are never removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<bson::DateTime>,
}

impl From<&InboxEvent> for EventDocument {
    fn from(e: &InboxEvent) -> Self {
        Self {
            id: storage_id(e.endpoint, &e.event_id),
            event_id: e.event_id.clone(),
            event_type: e.event_type.clone(),
            webhook_endpoint: e.endpoint.as_str().to_owned(),
            status: e.status.as_str().to_owned(),
            account: e.account.clone(),
            livemode: e.livemode,
            api_version: e.api_version.clone(),
            created: e.created,
            payload: e.payload.clone(),
            attempts: i64::from(e.attempts),
            deliveries: i64::from(e.deliveries),
            processed_at: to_bson_time(e.received_at),
            next_attempt_at: e.next_attempt_at.map(to_bson_time),
            completed_at: e.completed_at.map(to_bson_time),
            failed_at: e.failed_at.map(to_bson_time),
            error: e.last_error.clone(),
            outcome: e.outcome.clone(),
            trace_parent: e.trace_parent.clone(),
            source: Some(e.source.as_str().to_owned()),
            refusals: i64::from(e.refusals),
            waiting_for: e
                .waiting
                .as_ref()
                .map(|waiting| waiting.owner.as_str().to_owned()),
            waiting_since: e
                .waiting
                .as_ref()
                .map(|waiting| to_bson_time(waiting.since)),
            waits: e
                .waiting
                .as_ref()
                .map_or(0, |waiting| i64::from(waiting.waits)),
            alert_due_at: e.alert.as_ref().map(|alert| to_bson_time(alert.due_at)),
            alert_attempts: e
                .alert
                .as_ref()
                .map_or(0, |alert| i64::from(alert.attempts)),
            due_at: e.work_due_at().map(to_bson_time),
            version: e.version,
            expires_at: e.expires_at().map(to_bson_time),
        }
    }
}

impl TryFrom<EventDocument> for InboxEvent {
    type Error = ServiceError;

    fn try_from(d: EventDocument) -> Result<Self, Self::Error> {
        let corrupt = |what: &str| {
            ServiceError::internal(anyhow::anyhow!("stored webhook event {} has {what}", d.id))
        };
        let waiting = match (d.waiting_for.as_deref(), d.waiting_since) {
            (Some(owner), Some(since)) => Some(Waiting {
                owner: Owner::parse(owner).ok_or_else(|| corrupt("an unknown owner"))?,
                since: from_bson_time(since),
                waits: u32::try_from(d.waits).map_err(|_| corrupt("a bad wait count"))?,
            }),
            _ => None,
        };
        let alert = match d.alert_due_at {
            Some(due_at) => Some(OwedAlert {
                due_at: from_bson_time(due_at),
                attempts: u32::try_from(d.alert_attempts)
                    .map_err(|_| corrupt("a bad alert attempt count"))?,
            }),
            None => None,
        };
        Ok(Self {
            refusals: u32::try_from(d.refusals).map_err(|_| corrupt("a bad refusal count"))?,
            waiting,
            alert,
            endpoint: Endpoint::parse(&d.webhook_endpoint)
                .ok_or_else(|| corrupt("an unknown endpoint"))?,
            status: EventStatus::parse(&d.status).ok_or_else(|| corrupt("an unknown status"))?,
            attempts: u32::try_from(d.attempts).map_err(|_| corrupt("a bad attempt count"))?,
            deliveries: u32::try_from(d.deliveries).map_err(|_| corrupt("a bad delivery count"))?,
            event_id: d.event_id,
            event_type: d.event_type,
            account: d.account,
            livemode: d.livemode,
            api_version: d.api_version,
            created: d.created,
            payload: d.payload,
            received_at: from_bson_time(d.processed_at),
            next_attempt_at: d.next_attempt_at.map(from_bson_time),
            completed_at: d.completed_at.map(from_bson_time),
            failed_at: d.failed_at.map(from_bson_time),
            last_error: d.error,
            outcome: d.outcome,
            trace_parent: d.trace_parent,
            source: EventSource::parse(d.source.as_deref()),
            version: d.version,
        })
    }
}

impl MongoInbox {
    /// Opens the collection and ensures its indexes (idempotent), including the 30-day TTL.
    pub async fn open(database: &mongodb::Database) -> anyhow::Result<Self> {
        let collection = database.collection::<EventDocument>("processedWebhookEvents");
        let indexes = [
            IndexModel::builder()
                .keys(doc! { "expiresAt": 1 })
                .options(IndexOptions::builder().expire_after(Duration::ZERO).build())
                .build(),
            IndexModel::builder()
                .keys(doc! { "status": 1, "nextAttemptAt": 1 })
                .build(),
            // The worker's query: attempts and owed alerts that are due.
            IndexModel::builder().keys(doc! { "dueAt": 1 }).build(),
            // The waiting gauge: processing events by the owner they wait for.
            IndexModel::builder()
                .keys(doc! { "status": 1, "waitingFor": 1 })
                .build(),
            IndexModel::builder()
                .keys(doc! { "processedAt": -1 })
                .build(),
        ];
        collection.create_indexes(indexes).await?;
        Ok(Self { collection })
    }
}

#[async_trait]
impl InboxRepository for MongoInbox {
    async fn insert_new(&self, event: InboxEvent) -> Result<Inserted, ServiceError> {
        // The unique `_id` makes the insert the atomic check-and-mark.
        match self
            .collection
            .insert_one(EventDocument::from(&event))
            .await
        {
            Ok(_) => Ok(Inserted::New),
            Err(error) if is_duplicate_key(&error) => {
                let existing = self
                    .get(event.endpoint, &event.event_id)
                    .await?
                    .ok_or_else(|| {
                        ServiceError::unavailable(
                            "webhook event vanished after a duplicate insert",
                            anyhow::anyhow!("duplicate key but no document"),
                        )
                    })?;
                Ok(Inserted::Duplicate(Box::new(existing)))
            }
            Err(error) => Err(mongo_error(error)),
        }
    }

    async fn get(
        &self,
        endpoint: Endpoint,
        event_id: &str,
    ) -> Result<Option<InboxEvent>, ServiceError> {
        self.collection
            .find_one(doc! { "_id": storage_id(endpoint, event_id) })
            .await
            .map_err(mongo_error)?
            .map(InboxEvent::try_from)
            .transpose()
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<InboxEvent>, ServiceError> {
        let now = to_bson_time(now);
        // Documents written before `dueAt` existed are found by the old rule (processing and
        // its next attempt has come); they sort first (a missing field sorts lowest).
        let filter = doc! { "$or": [
            { "dueAt": { "$lte": now } },
            { "dueAt": { "$exists": false }, "status": EventStatus::Processing.as_str(), "nextAttemptAt": { "$lte": now } },
        ] };
        let documents: Vec<EventDocument> = find_many(
            &self.collection,
            filter,
            doc! { "dueAt": 1, "_id": 1 },
            limit,
        )
        .await?;
        documents.into_iter().map(InboxEvent::try_from).collect()
    }

    async fn replace(&self, event: &InboxEvent, expected_version: i64) -> Result<(), ServiceError> {
        let result = self
            .collection
            .replace_one(
                doc! { "_id": storage_id(event.endpoint, &event.event_id), "version": expected_version },
                EventDocument::from(event),
            )
            .await
            .map_err(mongo_error)?;
        if result.matched_count == 1 {
            Ok(())
        } else {
            Err(stale(event))
        }
    }

    async fn statistics(&self) -> Result<Statistics, ServiceError> {
        let mut statistics = Statistics::default();
        let mut groups = self
            .collection
            .aggregate([doc! { "$group": { "_id": "$status", "count": { "$sum": 1 } } }])
            .await
            .map_err(mongo_error)?;
        while let Some(group) = groups.try_next().await.map_err(mongo_error)? {
            let count = group_count(&group);
            match group.get_str("_id").ok().and_then(EventStatus::parse) {
                Some(EventStatus::Processing) => statistics.processing += count,
                Some(EventStatus::Completed) => statistics.completed += count,
                Some(EventStatus::Failed) => statistics.failed += count,
                None => {}
            }
            statistics.total += count;
        }
        statistics.backfilled = self
            .collection
            .count_documents(doc! { "source": EventSource::Backfill.as_str() })
            .await
            .map_err(mongo_error)?;
        statistics.waiting_for = self.waiting_by_owner().await?;
        statistics.waiting = statistics.waiting_for.values().sum();
        statistics.alerts_owed = self
            .collection
            .count_documents(doc! { "alertDueAt": { "$exists": true } })
            .await
            .map_err(mongo_error)?;
        Ok(statistics)
    }

    async fn waiting_by_owner(&self) -> Result<BTreeMap<String, u64>, ServiceError> {
        let mut waiting = BTreeMap::new();
        let mut groups = self
            .collection
            .aggregate([
                doc! { "$match": { "status": EventStatus::Processing.as_str(), "waitingFor": { "$exists": true } } },
                doc! { "$group": { "_id": "$waitingFor", "count": { "$sum": 1 } } },
            ])
            .await
            .map_err(mongo_error)?;
        while let Some(group) = groups.try_next().await.map_err(mongo_error)? {
            if let Ok(owner) = group.get_str("_id") {
                waiting.insert(owner.to_owned(), group_count(&group));
            }
        }
        Ok(waiting)
    }

    async fn backlog(&self) -> Result<Backlog, ServiceError> {
        // Both answered by the `{status, nextAttemptAt}` index's prefix; processing events
        // are few (they are being worked on), so sorting them is cheap.
        let parked = self
            .collection
            .count_documents(doc! { "status": EventStatus::Failed.as_str() })
            .await
            .map_err(mongo_error)?;
        let oldest = find_many(
            &self.collection,
            doc! { "status": EventStatus::Processing.as_str() },
            doc! { "processedAt": 1 },
            1,
        )
        .await?;
        Ok(Backlog {
            parked,
            oldest_processing: oldest
                .first()
                .map(|document| from_bson_time(document.processed_at)),
        })
    }

    async fn list(
        &self,
        status: Option<EventStatus>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<InboxEvent>, ServiceError> {
        let mut filter = match status {
            Some(status) => doc! { "status": status.as_str() },
            None => doc! {},
        };
        after_cursor(&mut filter, "processedAt", after, true);
        let documents: Vec<EventDocument> = find_many(
            &self.collection,
            filter,
            doc! { "processedAt": -1, "_id": -1 },
            limit,
        )
        .await?;
        documents.into_iter().map(InboxEvent::try_from).collect()
    }
}

fn group_count(group: &Document) -> u64 {
    match group.get("count") {
        Some(bson::Bson::Int32(count)) => u64::try_from(*count).unwrap_or(0),
        Some(bson::Bson::Int64(count)) => u64::try_from(*count).unwrap_or(0),
        // A count is a whole number; a server may still send it as a double.
        Some(bson::Bson::Double(count)) if count.is_finite() && *count >= 0.0 => {
            format!("{count:.0}").parse().unwrap_or(0)
        }
        _ => 0,
    }
}
