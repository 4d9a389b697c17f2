use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::ServiceError;

use super::{AccountRepository, stale};
use crate::domain::Account;

/// Embedded store: accounts by user id, and an index by connected account (what the MongoDB
/// store's `stripeAccountId` index is), so events find their account without a scan.
#[derive(Debug, Default)]
pub struct MemoryAccounts {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    accounts: BTreeMap<String, Account>,
    /// (connected account, user id).
    by_stripe_account: BTreeSet<(String, String)>,
}

impl MemoryAccounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl AccountRepository for MemoryAccounts {
    async fn get(&self, user_id: &str) -> Result<Option<Account>, ServiceError> {
        Ok(self.lock().accounts.get(user_id).cloned())
    }

    async fn find_by_stripe_account(
        &self,
        stripe_account_id: &str,
    ) -> Result<Option<Account>, ServiceError> {
        let state = self.lock();
        Ok(state
            .by_stripe_account
            .range((stripe_account_id.to_owned(), String::new())..)
            .next()
            .filter(|(stored, _)| stored == stripe_account_id)
            .and_then(|(_, user_id)| state.accounts.get(user_id).cloned()))
    }

    async fn due_bank_looks(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Account>, ServiceError> {
        let mut due: Vec<(DateTime<Utc>, Account)> = self
            .lock()
            .accounts
            .values()
            .filter_map(|account| Some((account.bank_look_due_at()?, account.clone())))
            .filter(|(at, _)| *at <= now)
            .collect();
        due.sort_by(|a, b| (a.0, &a.1.user_id).cmp(&(b.0, &b.1.user_id)));
        Ok(due
            .into_iter()
            .take(limit)
            .map(|(_, account)| account)
            .collect())
    }

    async fn put(
        &self,
        account: &Account,
        expected_version: Option<i64>,
    ) -> Result<(), ServiceError> {
        let mut state = self.lock();
        let stored_version = state
            .accounts
            .get(&account.user_id)
            .map(|stored| stored.version);
        if stored_version != expected_version {
            return Err(stale(&account.user_id));
        }
        if let Some(old) = state
            .accounts
            .insert(account.user_id.clone(), account.clone())
        {
            state
                .by_stripe_account
                .remove(&(old.stripe_account_id, old.user_id));
        }
        state
            .by_stripe_account
            .insert((account.stripe_account_id.clone(), account.user_id.clone()));
        Ok(())
    }
}
