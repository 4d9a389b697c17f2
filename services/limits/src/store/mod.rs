//! The limits service's collections, `payoutBlockedAttempts` and `payoutQuotas`: a trait
//! each, a MongoDB and an embedded implementation, and the conformance suite both must pass.

mod memory;
mod mongo;
mod quota;

#[cfg(test)]
mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::{ServiceError, Store};

use crate::domain::BlockedAttempt;

pub use memory::MemoryBlockedAttempts;
pub use mongo::MongoBlockedAttempts;
pub use quota::{MemoryQuotas, MongoQuotas, QuotaRepository};

/// Storage of blocked payout attempts: append-only.
#[async_trait]
pub trait BlockedAttemptRepository: Send + Sync + 'static {
    /// Records an attempt; recording the same id again changes nothing.
    async fn record(&self, attempt: &BlockedAttempt) -> Result<(), ServiceError>;

    /// Newest first; one user's when `user_id` is given; after the (attempted_at, id) cursor.
    async fn list(
        &self,
        user_id: Option<&str>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<BlockedAttempt>, ServiceError>;
}

/// The limits service's repositories.
pub struct Repositories {
    pub blocked_attempts: Arc<dyn BlockedAttemptRepository>,
    pub quotas: Arc<dyn QuotaRepository>,
}

/// Opens the repositories on the process's store, ensuring indexes.
pub async fn open(store: &Store) -> anyhow::Result<Repositories> {
    Ok(match store {
        Store::Embedded => Repositories {
            blocked_attempts: Arc::new(MemoryBlockedAttempts::default()),
            quotas: Arc::new(MemoryQuotas::default()),
        },
        Store::Mongo(database) => Repositories {
            blocked_attempts: Arc::new(MongoBlockedAttempts::open(database).await?),
            quotas: Arc::new(MongoQuotas::open(database)),
        },
    })
}
