use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::ServiceError;

use super::{InboxRepository, Inserted, stale, storage_id};
use crate::domain::{Endpoint, EventStatus, InboxEvent, Statistics};

/// Embedded store: events by storage id.
#[derive(Debug, Default)]
pub struct MemoryInbox {
    events: Mutex<HashMap<String, InboxEvent>>,
}

impl MemoryInbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, InboxEvent>> {
        self.events
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl InboxRepository for MemoryInbox {
    async fn insert_new(&self, event: &InboxEvent) -> Result<Inserted, ServiceError> {
        let mut events = self.lock();
        let id = storage_id(event.endpoint, &event.event_id);
        if let Some(existing) = events.get(&id) {
            return Ok(Inserted::Duplicate(Box::new(existing.clone())));
        }
        events.insert(id, event.clone());
        Ok(Inserted::New)
    }

    async fn get(
        &self,
        endpoint: Endpoint,
        event_id: &str,
    ) -> Result<Option<InboxEvent>, ServiceError> {
        Ok(self.lock().get(&storage_id(endpoint, event_id)).cloned())
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<InboxEvent>, ServiceError> {
        let mut due: Vec<InboxEvent> = self
            .lock()
            .values()
            .filter(|event| event.is_due(now))
            .cloned()
            .collect();
        due.sort_by(|a, b| {
            a.next_attempt_at.cmp(&b.next_attempt_at).then_with(|| {
                storage_id(a.endpoint, &a.event_id).cmp(&storage_id(b.endpoint, &b.event_id))
            })
        });
        due.truncate(limit);
        Ok(due)
    }

    async fn replace(&self, event: &InboxEvent, expected_version: i64) -> Result<(), ServiceError> {
        let mut events = self.lock();
        match events.get_mut(&storage_id(event.endpoint, &event.event_id)) {
            Some(stored) if stored.version == expected_version => {
                *stored = event.clone();
                Ok(())
            }
            _ => Err(stale(event)),
        }
    }

    async fn statistics(&self) -> Result<Statistics, ServiceError> {
        let mut statistics = Statistics::default();
        for event in self.lock().values() {
            statistics.count(event.status);
        }
        Ok(statistics)
    }

    async fn list(
        &self,
        status: Option<EventStatus>,
        limit: usize,
    ) -> Result<Vec<InboxEvent>, ServiceError> {
        let mut found: Vec<InboxEvent> = self
            .lock()
            .values()
            .filter(|event| status.is_none_or(|status| event.status == status))
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            b.received_at.cmp(&a.received_at).then_with(|| {
                storage_id(b.endpoint, &b.event_id).cmp(&storage_id(a.endpoint, &a.event_id))
            })
        });
        found.truncate(limit);
        Ok(found)
    }
}
