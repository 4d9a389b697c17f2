//! The `platformBalanceSnapshots`, `platformBalanceAlerts` and `balanceCheckRuns` collections: a trait each, a
//! MongoDB and an embedded implementation, and the conformance suite both must pass.

mod alerts;
mod memory;
mod mongo;
mod runs;

#[cfg(test)]
mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::{ServiceError, Store};

use crate::domain::Snapshot;

pub use alerts::{MemoryOpenAlerts, MongoOpenAlerts, OpenAlertRepository};
pub use memory::MemorySnapshots;
pub use mongo::MongoSnapshots;
pub use runs::{MemoryRuns, MongoRuns, RunRepository};

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

/// The balance service's collections.
pub struct Repositories {
    pub snapshots: Arc<dyn SnapshotRepository>,
    pub alerts: Arc<dyn OpenAlertRepository>,
    pub runs: Arc<dyn RunRepository>,
}

/// Opens the repositories on the process's store, ensuring indexes.
pub async fn open(store: &Store) -> anyhow::Result<Repositories> {
    Ok(match store {
        Store::Embedded => Repositories {
            snapshots: Arc::new(MemorySnapshots::default()),
            alerts: Arc::new(MemoryOpenAlerts::default()),
            runs: Arc::new(MemoryRuns::default()),
        },
        Store::Mongo(database) => Repositories {
            snapshots: Arc::new(MongoSnapshots::open(database).await?),
            alerts: Arc::new(MongoOpenAlerts::open(database)),
            runs: Arc::new(MongoRuns::open(database)),
        },
    })
}
