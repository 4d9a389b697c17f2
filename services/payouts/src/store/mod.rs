//! The `accounts` collection: one trait, a MongoDB and an embedded implementation, and the
//! conformance suite both must pass.

mod memory;
mod mongo;

#[cfg(test)]
mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use payouts_runtime::{ServiceError, Store};

use crate::domain::Account;

pub use memory::MemoryAccounts;
pub use mongo::MongoAccounts;

/// Storage of creator accounts, written by versioned compare-and-set.
#[async_trait]
pub trait AccountRepository: Send + Sync + 'static {
    async fn get(&self, user_id: &str) -> Result<Option<Account>, ServiceError>;

    /// Writes `account` if the stored version is still `expected_version` (`None`: no account
    /// stored yet). Conflict when another writer got there first.
    async fn put(
        &self,
        account: &Account,
        expected_version: Option<i64>,
    ) -> Result<(), ServiceError>;
}

pub(crate) fn stale(user_id: &str) -> ServiceError {
    ServiceError::conflict(format!("account {user_id} was changed concurrently"))
}

/// Opens the repository on the process's store, ensuring indexes.
pub async fn open(store: &Store) -> anyhow::Result<Arc<dyn AccountRepository>> {
    Ok(match store {
        Store::Embedded => Arc::new(MemoryAccounts::default()),
        Store::Mongo(database) => Arc::new(MongoAccounts::open(database).await?),
    })
}
