use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::ServiceError;

use super::BlockedAttemptRepository;
use crate::domain::BlockedAttempt;

/// Embedded store: attempts by id.
#[derive(Debug, Default)]
pub struct MemoryBlockedAttempts {
    attempts: Mutex<BTreeMap<String, BlockedAttempt>>,
}

#[async_trait]
impl BlockedAttemptRepository for MemoryBlockedAttempts {
    async fn record(&self, attempt: &BlockedAttempt) -> Result<(), ServiceError> {
        let mut attempts = self
            .attempts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        attempts
            .entry(attempt.id.clone())
            .or_insert_with(|| attempt.clone());
        Ok(())
    }

    async fn list(
        &self,
        user_id: Option<&str>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<BlockedAttempt>, ServiceError> {
        let attempts = self
            .attempts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut found: Vec<BlockedAttempt> = attempts
            .values()
            .filter(|attempt| user_id.is_none_or(|user_id| attempt.user_id == user_id))
            .filter(|attempt| {
                after
                    .as_ref()
                    .is_none_or(|(at, id)| (attempt.attempted_at, &attempt.id) < (*at, id))
            })
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            b.attempted_at
                .cmp(&a.attempted_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        found.truncate(limit);
        Ok(found)
    }
}
