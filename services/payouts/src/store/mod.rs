//! The payouts service's collections (`accounts` here; `usdPayouts`, `payoutAuditLogs` and
//! `payoutTransferPause`, `reconciliationReports` in their modules): one trait each, a MongoDB and an embedded
//! implementation, and the conformance suite both must pass.

mod memory;
mod mongo;
mod pause;
mod payouts;
mod reports;

#[cfg(test)]
mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::{ServiceError, Store};

use crate::domain::Account;

pub use memory::MemoryAccounts;
pub use mongo::MongoAccounts;
pub use pause::{MemoryPause, MongoPause, PauseRepository};
pub use payouts::{Inserted, MemoryPayouts, MongoPayouts, PayoutRepository, UnknownOutcomes};
pub use reports::{MemoryReports, MongoReports, ReportRepository};

/// Storage of creator accounts, written by versioned compare-and-set.
#[async_trait]
pub trait AccountRepository: Send + Sync + 'static {
    async fn get(&self, user_id: &str) -> Result<Option<Account>, ServiceError>;

    /// The account whose connected Stripe account is `stripe_account_id`.
    async fn find_by_stripe_account(
        &self,
        stripe_account_id: &str,
    ) -> Result<Option<Account>, ServiceError>;

    /// Accounts with a pending bank payout due to be looked at by `now`
    /// ([`Account::bank_look_due_at`]), the longest due first, at most `limit`.
    async fn due_bank_looks(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Account>, ServiceError>;

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

/// The payouts service's repositories.
pub struct Repositories {
    pub accounts: Arc<dyn AccountRepository>,
    pub payouts: Arc<dyn PayoutRepository>,
    pub pause: Arc<dyn PauseRepository>,
    pub reports: Arc<dyn ReportRepository>,
}

/// Opens the repositories on the process's store, ensuring indexes.
pub async fn open(store: &Store) -> anyhow::Result<Repositories> {
    Ok(match store {
        Store::Embedded => Repositories {
            accounts: Arc::new(MemoryAccounts::default()),
            payouts: Arc::new(MemoryPayouts::default()),
            pause: Arc::new(MemoryPause::default()),
            reports: Arc::new(MemoryReports::default()),
        },
        Store::Mongo(database) => Repositories {
            accounts: Arc::new(MongoAccounts::open(database).await?),
            payouts: Arc::new(MongoPayouts::open(database).await?),
            pause: Arc::new(MongoPause::open(database)),
            reports: Arc::new(MongoReports::open(database).await?),
        },
    })
}
