//! The `usdAllocations`, `creatorEarnings` and `chargeCases` collections: one trait each, a MongoDB and an
//! embedded implementation of each, and the conformance suite both must pass.

mod memory;
mod mongo;

#[cfg(test)]
mod conformance;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_runtime::{ServiceError, Store};

use crate::charges::ChargeCase;
use crate::domain::{Allocation, EarningsBook};

pub use memory::{MemoryAllocations, MemoryChargeCases, MemoryEarningsBooks};
pub use mongo::{MongoAllocations, MongoChargeCases, MongoEarningsBooks};

/// Storage of allocations.
#[async_trait]
pub trait AllocationRepository: Send + Sync + 'static {
    /// Stores a new allocation. The same id again with the same credit returns the stored one
    /// (`false`); with a different credit it is AlreadyExists.
    async fn record(&self, allocation: &Allocation) -> Result<(Allocation, bool), ServiceError>;

    async fn get(&self, allocation_id: &str) -> Result<Option<Allocation>, ServiceError>;

    /// Replaces a stored allocation if it is still at `expected_version`; Conflict otherwise
    /// (NotFound when there is none).
    async fn replace(
        &self,
        allocation: &Allocation,
        expected_version: i64,
    ) -> Result<(), ServiceError>;

    /// The allocations a charge funded, by id (a charge funds a handful; at most `limit`).
    async fn list_by_charge(
        &self,
        charge_id: &str,
        limit: usize,
    ) -> Result<Vec<Allocation>, ServiceError>;

    /// A creator's allocations, newest first, after the (created_at, id) cursor.
    async fn list_by_user(
        &self,
        user_id: &str,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Allocation>, ServiceError>;
}

/// Storage of earnings books (`creatorEarnings`): one document per creator.
#[async_trait]
pub trait EarningsBookRepository: Send + Sync + 'static {
    /// The creator's book; an empty one (version 0) when none is stored.
    async fn get(&self, user_id: &str) -> Result<EarningsBook, ServiceError>;

    /// Stores `book` if the stored one is still at `expected_version` (0: none stored yet);
    /// Conflict otherwise.
    async fn put(&self, book: &EarningsBook, expected_version: i64) -> Result<(), ServiceError>;

    /// Stored books by creator id, after `after` (a page of every creator's earnings).
    async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EarningsBook>, ServiceError>;
}

/// Storage of charge cases (`chargeCases`): one document per charge with refunds or disputes.
#[async_trait]
pub trait ChargeCaseRepository: Send + Sync + 'static {
    async fn get(&self, charge_id: &str) -> Result<Option<ChargeCase>, ServiceError>;

    /// Stores `case` if the stored one is still at `expected_version` (0: none stored yet);
    /// Conflict otherwise.
    async fn put(&self, case: &ChargeCase, expected_version: i64) -> Result<(), ServiceError>;

    /// Cases with at least one dispute, newest case first, after the (created_at, charge id)
    /// cursor.
    async fn list_disputed(
        &self,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<ChargeCase>, ServiceError>;
}

pub(crate) fn stale_case(charge_id: &str) -> ServiceError {
    ServiceError::conflict(format!(
        "the case of charge {charge_id} was changed concurrently"
    ))
}

pub(crate) fn stale_allocation(allocation_id: &str) -> ServiceError {
    ServiceError::conflict(format!(
        "allocation {allocation_id} was changed concurrently"
    ))
}

/// Most allocations one charge is expected to fund; more is refused when settling.
pub const MAX_ALLOCATIONS_PER_CHARGE: usize = 1_000;

pub(crate) fn stale_book(user_id: &str) -> ServiceError {
    ServiceError::conflict(format!(
        "the earnings book of {user_id} was changed concurrently"
    ))
}

/// The answer to a repeated credit: the stored allocation, or AlreadyExists if it differs.
pub(crate) fn repeated(
    stored: Allocation,
    attempted: &Allocation,
) -> Result<(Allocation, bool), ServiceError> {
    if stored.same_credit(attempted) {
        Ok((stored, false))
    } else {
        Err(ServiceError::already_exists(format!(
            "allocation {} already exists with a different credit",
            attempted.id
        )))
    }
}

/// The service's repositories.
pub struct Repositories {
    pub allocations: Arc<dyn AllocationRepository>,
    pub books: Arc<dyn EarningsBookRepository>,
    pub cases: Arc<dyn ChargeCaseRepository>,
}

/// Opens the repositories on the process's store, ensuring indexes.
pub async fn open(store: &Store) -> anyhow::Result<Repositories> {
    Ok(match store {
        Store::Embedded => Repositories {
            allocations: Arc::new(MemoryAllocations::default()),
            books: Arc::new(MemoryEarningsBooks::default()),
            cases: Arc::new(MemoryChargeCases::default()),
        },
        Store::Mongo(database) => Repositories {
            allocations: Arc::new(MongoAllocations::open(database).await?),
            books: Arc::new(MongoEarningsBooks::open(database)),
            cases: Arc::new(MongoChargeCases::open(database).await?),
        },
    })
}
