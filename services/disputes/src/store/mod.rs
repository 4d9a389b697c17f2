//! The `usdAllocations` collection: one trait, a MongoDB and an embedded implementation,
//! and the conformance suite both must pass.

mod memory;
mod mongo;

#[cfg(test)]
mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::{ServiceError, Store};

use crate::domain::Allocation;

pub use memory::MemoryAllocations;
pub use mongo::MongoAllocations;

/// Storage of allocations.
#[async_trait]
pub trait AllocationRepository: Send + Sync + 'static {
    /// Stores a new allocation. The same id again with the same credit returns the stored one
    /// (`false`); with a different credit it is AlreadyExists.
    async fn record(&self, allocation: &Allocation) -> Result<(Allocation, bool), ServiceError>;

    async fn get(&self, allocation_id: &str) -> Result<Option<Allocation>, ServiceError>;

    /// A creator's allocations, newest first, after the (created_at, id) cursor.
    async fn list_by_user(
        &self,
        user_id: &str,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Allocation>, ServiceError>;
}

/// The answer to a repeated credit: the stored allocation, or AlreadyExists if it differs.
pub(crate) fn repeated(
    stored: Allocation,
    attempted: &Allocation,
) -> Result<(Allocation, bool), ServiceError> {
    if stored.same_credit(attempted) {
        Ok((stored, false))
    } else {
        Err(ServiceError::already_exists(format!(
            "allocation {} already exists with a different credit",
            attempted.id
        )))
    }
}

/// Opens the repository on the process's store, ensuring indexes.
pub async fn open(store: &Store) -> anyhow::Result<Arc<dyn AllocationRepository>> {
    Ok(match store {
        Store::Embedded => Arc::new(MemoryAllocations::default()),
        Store::Mongo(database) => Arc::new(MongoAllocations::open(database).await?),
    })
}
