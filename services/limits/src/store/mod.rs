//! The `payoutBlockedAttempts` collection: one trait, a MongoDB and an embedded
//! implementation, and the conformance suite both must pass.

mod memory;
mod mongo;

#[cfg(test)]
mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use payouts_runtime::{ServiceError, Store};

use crate::domain::BlockedAttempt;

pub use memory::MemoryBlockedAttempts;
pub use mongo::MongoBlockedAttempts;

/// Storage of blocked payout attempts: append-only.
#[async_trait]
pub trait BlockedAttemptRepository: Send + Sync + 'static {
    /// Records an attempt; recording the same id again changes nothing.
    async fn record(&self, attempt: &BlockedAttempt) -> Result<(), ServiceError>;

    /// Newest first; one user's when `user_id` is given.
    async fn list(
        &self,
        user_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BlockedAttempt>, ServiceError>;
}

/// Opens the repository on the process's store, ensuring indexes.
pub async fn open(store: &Store) -> anyhow::Result<Arc<dyn BlockedAttemptRepository>> {
    Ok(match store {
        Store::Embedded => Arc::new(MemoryBlockedAttempts::default()),
        Store::Mongo(database) => Arc::new(MongoBlockedAttempts::open(database).await?),
    })
}
