//! The `payoutApprovalQueue` collection: one trait, a MongoDB and an embedded
//! implementation, and the conformance suite both must pass.

mod memory;
mod mongo;

#[cfg(test)]
mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::{ServiceError, Store};

use crate::domain::{Approval, Filter};

pub use memory::MemoryApprovals;
pub use mongo::MongoApprovals;

/// Storage of approvals. One approval per payout; decisions by versioned compare-and-set.
#[async_trait]
pub trait ApprovalRepository: Send + Sync + 'static {
    /// Stores a new approval unless its payout has one: then returns that (`false`).
    async fn create(&self, approval: &Approval) -> Result<(Approval, bool), ServiceError>;

    async fn get(&self, approval_id: &str) -> Result<Option<Approval>, ServiceError>;

    /// Replaces the approval if its stored version is `expected_version`; Conflict otherwise.
    async fn replace(&self, approval: &Approval, expected_version: i64)
    -> Result<(), ServiceError>;

    /// The queue, oldest request first, filtered and paged.
    async fn list(&self, filter: &Filter) -> Result<Vec<Approval>, ServiceError>;

    /// Decided approvals whose decision is due to be carried out (`next_attempt_at` has
    /// come), earliest first: a decision that keeps failing backs off and never starves
    /// the others.
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Approval>, ServiceError>;

    /// How many approvals wait for an admin's decision (the pending-approvals gauge).
    async fn count_pending(&self) -> Result<u64, ServiceError>;
}

pub(crate) fn stale(approval_id: &str) -> ServiceError {
    ServiceError::conflict(format!("approval {approval_id} was changed concurrently"))
}

/// Opens the repository on the process's store, ensuring indexes.
pub async fn open(store: &Store) -> anyhow::Result<Arc<dyn ApprovalRepository>> {
    Ok(match store {
        Store::Embedded => Arc::new(MemoryApprovals::default()),
        Store::Mongo(database) => Arc::new(MongoApprovals::open(database).await?),
    })
}
