use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use payouts_runtime::ServiceError;

use super::{AccountRepository, stale};
use crate::domain::Account;

/// Embedded store: accounts by user id.
#[derive(Debug, Default)]
pub struct MemoryAccounts {
    accounts: Mutex<BTreeMap<String, Account>>,
}

#[async_trait]
impl AccountRepository for MemoryAccounts {
    async fn get(&self, user_id: &str) -> Result<Option<Account>, ServiceError> {
        let accounts = self
            .accounts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(accounts.get(user_id).cloned())
    }

    async fn find_by_stripe_account(
        &self,
        stripe_account_id: &str,
    ) -> Result<Option<Account>, ServiceError> {
        let accounts = self
            .accounts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(accounts
            .values()
            .find(|a| a.stripe_account_id == stripe_account_id)
            .cloned())
    }

    async fn put(
        &self,
        account: &Account,
        expected_version: Option<i64>,
    ) -> Result<(), ServiceError> {
        let mut accounts = self
            .accounts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stored_version = accounts.get(&account.user_id).map(|stored| stored.version);
        if stored_version != expected_version {
            return Err(stale(&account.user_id));
        }
        accounts.insert(account.user_id.clone(), account.clone());
        Ok(())
    }
}
