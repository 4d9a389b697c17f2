use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::ServiceError;

use super::SnapshotRepository;
use crate::domain::Snapshot;

/// Embedded store.
#[derive(Debug, Default)]
pub struct MemorySnapshots {
    snapshots: Mutex<Vec<Snapshot>>,
}

#[async_trait]
impl SnapshotRepository for MemorySnapshots {
    async fn insert(&self, snapshot: &Snapshot) -> Result<(), ServiceError> {
        let mut snapshots = self
            .snapshots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !snapshots.iter().any(|stored| stored.id == snapshot.id) {
            snapshots.push(snapshot.clone());
        }
        Ok(())
    }

    async fn recent(
        &self,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Snapshot>, ServiceError> {
        let snapshots = self
            .snapshots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut found: Vec<Snapshot> = snapshots
            .iter()
            .filter(|s| {
                after
                    .as_ref()
                    .is_none_or(|(at, id)| (s.taken_at, &s.id) < (*at, id))
            })
            .cloned()
            .collect();
        found.sort_by(|a, b| b.taken_at.cmp(&a.taken_at).then_with(|| b.id.cmp(&a.id)));
        found.truncate(limit);
        Ok(found)
    }
}
