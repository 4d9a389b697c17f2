use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::ServiceError;

use super::{ApprovalRepository, stale};
use crate::domain::{Approval, ApprovalStatus, Filter};

/// Embedded store: approvals by id (the id is derived from the payout id).
#[derive(Debug, Default)]
pub struct MemoryApprovals {
    approvals: Mutex<BTreeMap<String, Approval>>,
}

impl MemoryApprovals {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Approval>> {
        self.approvals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every approval, by id (a snapshot for invariant checks).
    pub fn all(&self) -> Vec<Approval> {
        let mut all: Vec<Approval> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }
}

#[async_trait]
impl ApprovalRepository for MemoryApprovals {
    async fn create(&self, approval: &Approval) -> Result<(Approval, bool), ServiceError> {
        let mut approvals = self.lock();
        if let Some(existing) = approvals
            .values()
            .find(|a| a.payout_id == approval.payout_id)
        {
            return Ok((existing.clone(), false));
        }
        approvals.insert(approval.id.clone(), approval.clone());
        Ok((approval.clone(), true))
    }

    async fn get(&self, approval_id: &str) -> Result<Option<Approval>, ServiceError> {
        Ok(self.lock().get(approval_id).cloned())
    }

    async fn replace(
        &self,
        approval: &Approval,
        expected_version: i64,
    ) -> Result<(), ServiceError> {
        let mut approvals = self.lock();
        match approvals.get_mut(&approval.id) {
            Some(stored) if stored.version == expected_version => {
                *stored = approval.clone();
                Ok(())
            }
            _ => Err(stale(&approval.id)),
        }
    }

    async fn list(&self, filter: &Filter) -> Result<Vec<Approval>, ServiceError> {
        let mut found: Vec<Approval> = self
            .lock()
            .values()
            .filter(|a| a.matches(filter))
            .filter(|a| {
                filter
                    .after
                    .as_ref()
                    .is_none_or(|(at, id)| (a.requested_at, &a.id) > (*at, id))
            })
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            a.requested_at
                .cmp(&b.requested_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        found.truncate(filter.limit);
        Ok(found)
    }

    async fn count_pending(&self) -> Result<u64, ServiceError> {
        let pending = self
            .lock()
            .values()
            .filter(|a| a.status == ApprovalStatus::Pending)
            .count();
        Ok(u64::try_from(pending).unwrap_or(u64::MAX))
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Approval>, ServiceError> {
        let mut found: Vec<Approval> = self
            .lock()
            .values()
            .filter(|a| {
                a.status != ApprovalStatus::Pending
                    && !a.applied
                    && a.next_attempt_at.is_some_and(|at| at <= now)
            })
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            a.next_attempt_at
                .cmp(&b.next_attempt_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        found.truncate(limit);
        Ok(found)
    }
}
