//! The `platformBalanceSnapshots` collection: one trait, a MongoDB and an embedded
//! implementation, and the conformance suite both must pass.

mod memory;
mod mongo;

#[cfg(test)]
mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::{ServiceError, Store};

use crate::domain::Snapshot;

pub use memory::MemorySnapshots;
pub use mongo::MongoSnapshots;

/// Storage of balance snapshots: append-only.
#[async_trait]
pub trait SnapshotRepository: Send + Sync + 'static {
    /// Records a snapshot; recording the same id again changes nothing.
    async fn insert(&self, snapshot: &Snapshot) -> Result<(), ServiceError>;

    /// Newest first, after the (taken_at, id) cursor.
    async fn recent(
        &self,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Snapshot>, ServiceError>;
}

/// Opens the repository on the process's store, ensuring indexes.
pub async fn open(store: &Store) -> anyhow::Result<Arc<dyn SnapshotRepository>> {
    Ok(match store {
        Store::Embedded => Arc::new(MemorySnapshots::default()),
        Store::Mongo(database) => Arc::new(MongoSnapshots::open(database).await?),
    })
}
