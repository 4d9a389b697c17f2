use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::ServiceError;

use super::{
    AllocationRepository, ChargeCaseRepository, EarningsBookRepository, repeated, stale_allocation,
    stale_book, stale_case,
};
use crate::charges::ChargeCase;
use crate::domain::{Allocation, EarningsBook};

/// Embedded store: allocations by id.
#[derive(Debug, Default)]
pub struct MemoryAllocations {
    allocations: Mutex<BTreeMap<String, Allocation>>,
}

impl MemoryAllocations {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Allocation>> {
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

    async fn replace(
        &self,
        allocation: &Allocation,
        expected_version: i64,
    ) -> Result<(), ServiceError> {
        let mut allocations = self.lock();
        match allocations.get_mut(&allocation.id) {
            None => Err(ServiceError::not_found(format!(
                "allocation {} not found",
                allocation.id
            ))),
            Some(stored) if stored.version != expected_version => {
                Err(stale_allocation(&allocation.id))
            }
            Some(stored) => {
                *stored = allocation.clone();
                Ok(())
            }
        }
    }

    async fn list_by_charge(
        &self,
        charge_id: &str,
        limit: usize,
    ) -> Result<Vec<Allocation>, ServiceError> {
        Ok(self
            .lock()
            .values()
            .filter(|a| a.charge_id == charge_id)
            .take(limit)
            .cloned()
            .collect())
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

/// Embedded store: earnings books by creator.
#[derive(Debug, Default)]
pub struct MemoryEarningsBooks {
    books: Mutex<BTreeMap<String, EarningsBook>>,
}

#[async_trait]
impl EarningsBookRepository for MemoryEarningsBooks {
    async fn get(&self, user_id: &str) -> Result<EarningsBook, ServiceError> {
        Ok(self
            .books
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(user_id)
            .cloned()
            .unwrap_or_else(|| EarningsBook::empty(user_id)))
    }

    async fn put(&self, book: &EarningsBook, expected_version: i64) -> Result<(), ServiceError> {
        let mut books = self
            .books
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stored = books.get(&book.user_id).map_or(0, |stored| stored.version);
        if stored != expected_version {
            return Err(stale_book(&book.user_id));
        }
        books.insert(book.user_id.clone(), book.clone());
        Ok(())
    }

    async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EarningsBook>, ServiceError> {
        let books = self
            .books
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let start = after.map_or(Bound::Unbounded, |after| Bound::Excluded(after.to_owned()));
        Ok(books
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(_, book)| book.clone())
            .collect())
    }
}

/// Embedded store: charge cases by charge id.
#[derive(Debug, Default)]
pub struct MemoryChargeCases {
    cases: Mutex<BTreeMap<String, ChargeCase>>,
}

impl MemoryChargeCases {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ChargeCase>> {
        self.cases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl ChargeCaseRepository for MemoryChargeCases {
    async fn get(&self, charge_id: &str) -> Result<Option<ChargeCase>, ServiceError> {
        Ok(self.lock().get(charge_id).cloned())
    }

    async fn put(&self, case: &ChargeCase, expected_version: i64) -> Result<(), ServiceError> {
        let mut cases = self.lock();
        let stored = cases
            .get(&case.charge_id)
            .map_or(0, |stored| stored.version);
        if stored != expected_version {
            return Err(stale_case(&case.charge_id));
        }
        cases.insert(case.charge_id.clone(), case.clone());
        Ok(())
    }

    async fn list_disputed(
        &self,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<ChargeCase>, ServiceError> {
        let mut found: Vec<ChargeCase> = self
            .lock()
            .values()
            .filter(|case| !case.disputes.is_empty())
            .filter(|case| {
                after
                    .as_ref()
                    .is_none_or(|(at, id)| (case.created_at, &case.charge_id) < (*at, id))
            })
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.charge_id.cmp(&a.charge_id))
        });
        found.truncate(limit);
        Ok(found)
    }
}
