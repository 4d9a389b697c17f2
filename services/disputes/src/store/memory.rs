use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::ServiceError;

use super::{AllocationRepository, repeated};
use crate::domain::Allocation;

/// Embedded store: allocations by id.
#[derive(Debug, Default)]
pub struct MemoryAllocations {
    allocations: Mutex<HashMap<String, Allocation>>,
}

impl MemoryAllocations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Allocation>> {
        self.allocations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl AllocationRepository for MemoryAllocations {
    async fn record(&self, allocation: &Allocation) -> Result<(Allocation, bool), ServiceError> {
        let mut allocations = self.lock();
        if let Some(stored) = allocations.get(&allocation.id) {
            return repeated(stored.clone(), allocation);
        }
        allocations.insert(allocation.id.clone(), allocation.clone());
        Ok((allocation.clone(), true))
    }

    async fn get(&self, allocation_id: &str) -> Result<Option<Allocation>, ServiceError> {
        Ok(self.lock().get(allocation_id).cloned())
    }

    async fn list_by_user(
        &self,
        user_id: &str,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Allocation>, ServiceError> {
        let mut found: Vec<Allocation> = self
            .lock()
            .values()
            .filter(|a| a.user_id == user_id)
            .filter(|a| {
                after
                    .as_ref()
                    .is_none_or(|(at, id)| (a.created_at, &a.id) < (*at, id))
            })
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        found.truncate(limit);
        Ok(found)
    }
}
