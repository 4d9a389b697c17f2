use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::ServiceError;

use super::{Backlog, InboxRepository, Inserted, stale, storage_id};
use crate::domain::{Endpoint, EventStatus, InboxEvent, Statistics};

/// Embedded store: events by storage id, with an index of events with work due by due time
/// (what the MongoDB store's `{dueAt}` index is), so a worker's pass does
/// not scan every stored event. Ordered maps, not hash maps: a hash map that grows rehashes
/// every stored event at once, under the lock, and every delivery waits for it (tens of
/// milliseconds at 100,000 events); a B-tree grows a node at a time.
#[derive(Debug, Default)]
pub struct MemoryInbox {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    events: BTreeMap<String, InboxEvent>,
    due_index: BTreeSet<(DateTime<Utc>, String)>,
}

impl State {
    fn index_key(event: &InboxEvent) -> Option<(DateTime<Utc>, String)> {
        event
            .work_due_at()
            .map(|due| (due, storage_id(event.endpoint, &event.event_id)))
    }

    fn put(&mut self, id: String, event: InboxEvent) {
        if let Some(key) = self.events.get(&id).and_then(Self::index_key) {
            self.due_index.remove(&key);
        }
        if let Some(key) = Self::index_key(&event) {
            self.due_index.insert(key);
        }
        self.events.insert(id, event);
    }
}

impl MemoryInbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every stored event, by storage id (a snapshot for invariant checks).
    pub fn all(&self) -> Vec<InboxEvent> {
        self.lock().events.values().cloned().collect()
    }
}

#[async_trait]
impl InboxRepository for MemoryInbox {
    async fn insert_new(&self, event: InboxEvent) -> Result<Inserted, ServiceError> {
        let mut state = self.lock();
        let id = storage_id(event.endpoint, &event.event_id);
        if let Some(existing) = state.events.get(&id) {
            return Ok(Inserted::Duplicate(Box::new(existing.clone())));
        }
        state.put(id, event);
        Ok(Inserted::New)
    }

    async fn get(
        &self,
        endpoint: Endpoint,
        event_id: &str,
    ) -> Result<Option<InboxEvent>, ServiceError> {
        Ok(self
            .lock()
            .events
            .get(&storage_id(endpoint, event_id))
            .cloned())
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<InboxEvent>, ServiceError> {
        let state = self.lock();
        Ok(state
            .due_index
            .iter()
            .take_while(|(due, _)| *due <= now)
            .take(limit)
            .filter_map(|(_, id)| state.events.get(id).cloned())
            .collect())
    }

    async fn replace(&self, event: &InboxEvent, expected_version: i64) -> Result<(), ServiceError> {
        let mut state = self.lock();
        let id = storage_id(event.endpoint, &event.event_id);
        match state.events.get(&id) {
            Some(stored) if stored.version == expected_version => {
                state.put(id, event.clone());
                Ok(())
            }
            _ => Err(stale(event)),
        }
    }

    async fn statistics(&self) -> Result<Statistics, ServiceError> {
        let mut statistics = Statistics::default();
        for event in self.lock().events.values() {
            statistics.count(event);
        }
        Ok(statistics)
    }

    async fn backlog(&self) -> Result<Backlog, ServiceError> {
        let mut backlog = Backlog::default();
        for event in self.lock().events.values() {
            match event.status {
                EventStatus::Failed => backlog.parked += 1,
                EventStatus::Processing => {
                    backlog.oldest_processing = Some(
                        backlog
                            .oldest_processing
                            .map_or(event.received_at, |oldest| oldest.min(event.received_at)),
                    );
                }
                EventStatus::Completed => {}
            }
        }
        Ok(backlog)
    }

    async fn list(
        &self,
        status: Option<EventStatus>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<InboxEvent>, ServiceError> {
        let mut found: Vec<InboxEvent> = self
            .lock()
            .events
            .values()
            .filter(|event| status.is_none_or(|status| event.status == status))
            .filter(|event| {
                after.as_ref().is_none_or(|(at, id)| {
                    (
                        event.received_at,
                        storage_id(event.endpoint, &event.event_id),
                    ) < (*at, id.clone())
                })
            })
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
