//! The `processedWebhookEvents` collection (the durable inbox): one trait, a MongoDB and an
//! embedded implementation, and the conformance suite both must pass.

mod memory;
mod mongo;

#[cfg(test)]
mod conformance;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::{ServiceError, Store};

use crate::domain::{Endpoint, EventStatus, InboxEvent, Statistics};

pub use memory::MemoryInbox;
pub use mongo::MongoInbox;

/// What storing a delivery did.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// First delivery: stored.
    New,
    /// Already stored under (endpoint, event id): nothing written; the stored event.
    Duplicate(Box<InboxEvent>),
}

/// What is left undone in the inbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Events parked as failed (each waits for an admin's retry).
    pub parked: u64,
    /// When the oldest event still processing (waiting or retrying) was received.
    pub oldest_processing: Option<DateTime<Utc>>,
}

/// Storage of inbox events.
#[async_trait]
pub trait InboxRepository: Send + Sync + 'static {
    /// Stores an event unless one with the same (endpoint, event id) exists. Atomic: of any
    /// number of concurrent inserts of one event, exactly one sees `New`.
    async fn insert_new(&self, event: InboxEvent) -> Result<Inserted, ServiceError>;

    async fn get(
        &self,
        endpoint: Endpoint,
        event_id: &str,
    ) -> Result<Option<InboxEvent>, ServiceError>;

    /// Events with work due at `now` ([`InboxEvent::work_due_at`] `<= now`: a processing
    /// event whose next attempt has come, or a parked event whose owed alert has), earliest
    /// first.
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<InboxEvent>, ServiceError>;

    /// Replaces the event if its stored version is `expected_version`; Conflict otherwise.
    async fn replace(&self, event: &InboxEvent, expected_version: i64) -> Result<(), ServiceError>;

    /// Counts by status.
    async fn statistics(&self) -> Result<Statistics, ServiceError>;

    /// Processing events waiting for an owner that could not answer, by owner (an owner with
    /// none is absent). What `statistics` counts as `waiting_for`; a store may answer it
    /// without counting every event (the metrics ask every 15 seconds).
    async fn waiting_by_owner(&self) -> Result<BTreeMap<String, u64>, ServiceError> {
        Ok(self.statistics().await?.waiting_for)
    }

    /// Parked events and when the oldest event still processing was received: what the
    /// backlog gauges show (the metrics ask every 15 seconds). By default from `statistics`
    /// and the processing events' list (they are few); the stores answer it with two queries.
    async fn backlog(&self) -> Result<Backlog, ServiceError> {
        let parked = self.statistics().await?.failed;
        let mut oldest_processing = None;
        let mut after = None;
        loop {
            let page = self.list(Some(EventStatus::Processing), after, 500).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = Some((last.received_at, storage_id(last.endpoint, &last.event_id)));
            oldest_processing = Some(last.received_at);
        }
        Ok(Backlog {
            parked,
            oldest_processing,
        })
    }

    /// Most recently received first; only `status` when given; after the
    /// (received_at, storage id) cursor.
    async fn list(
        &self,
        status: Option<EventStatus>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<InboxEvent>, ServiceError>;
}

pub(crate) fn stale(event: &InboxEvent) -> ServiceError {
    ServiceError::conflict(format!(
        "webhook event {} was changed concurrently",
        event.event_id
    ))
}

/// The storage id of an event ("<endpoint>:<event id>"), also its list cursor.
pub fn storage_id(endpoint: Endpoint, event_id: &str) -> String {
    format!("{}:{}", endpoint.as_str(), event_id)
}

/// Opens the repository on the process's store, ensuring indexes.
pub async fn open(store: &Store) -> anyhow::Result<Arc<dyn InboxRepository>> {
    Ok(match store {
        Store::Embedded => Arc::new(MemoryInbox::default()),
        Store::Mongo(database) => Arc::new(MongoInbox::open(database).await?),
    })
}
