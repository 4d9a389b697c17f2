use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::{self, doc};
use mongodb::{Collection, IndexModel};
use payouts_runtime::store::{
    find_many, from_bson_time, is_duplicate_key, mongo_error, put_versioned, to_bson_time,
};
use payouts_runtime::{Currency, Money, ServiceError};
use serde::{Deserialize, Serialize};

use super::{AllocationRepository, EarningsBookRepository, repeated, stale_book};
use crate::domain::{Allocation, AllocationStatus, EarningsBook, Totals};

/// MongoDB store: collection `usdAllocations` (spec §3 and §11 fields).
#[derive(Debug, Clone)]
pub struct MongoAllocations {
    collection: Collection<AllocationDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AllocationDocument {
    #[serde(rename = "_id")]
    id: String,
    user_id: String,
    charge_id: String,
    currency: String,
    original_usd_cents: i64,
    usd_cents: i64,
    status: String,
    refunded_amount: i64,
    frozen_amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dispute_id: Option<String>,
    created_at: bson::DateTime,
    updated_at: bson::DateTime,
    version: i64,
}

impl From<&Allocation> for AllocationDocument {
    fn from(a: &Allocation) -> Self {
        Self {
            id: a.id.clone(),
            user_id: a.user_id.clone(),
            charge_id: a.charge_id.clone(),
            currency: a.amount.currency.to_string(),
            original_usd_cents: a.original_amount.cents,
            usd_cents: a.amount.cents,
            status: a.status.as_str().to_owned(),
            refunded_amount: a.refunded_cents,
            frozen_amount: a.frozen_cents,
            dispute_id: a.dispute_id.clone(),
            created_at: to_bson_time(a.created_at),
            updated_at: to_bson_time(a.updated_at),
            version: a.version,
        }
    }
}

impl TryFrom<AllocationDocument> for Allocation {
    type Error = ServiceError;

    fn try_from(d: AllocationDocument) -> Result<Self, Self::Error> {
        let currency = Currency::parse(&d.currency)?;
        let status = AllocationStatus::parse(&d.status).ok_or_else(|| {
            ServiceError::internal(anyhow::anyhow!(
                "allocation {} has status {:?}",
                d.id,
                d.status
            ))
        })?;
        Ok(Self {
            original_amount: Money::new(d.original_usd_cents, currency.clone()),
            amount: Money::new(d.usd_cents, currency),
            id: d.id,
            user_id: d.user_id,
            charge_id: d.charge_id,
            status,
            refunded_cents: d.refunded_amount,
            frozen_cents: d.frozen_amount,
            dispute_id: d.dispute_id,
            created_at: from_bson_time(d.created_at),
            updated_at: from_bson_time(d.updated_at),
            version: d.version,
        })
    }
}

impl MongoAllocations {
    /// Opens the collection and ensures its indexes (idempotent).
    pub async fn open(database: &mongodb::Database) -> anyhow::Result<Self> {
        let collection = database.collection::<AllocationDocument>("usdAllocations");
        collection
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "userId": 1, "createdAt": -1 })
                    .build(),
                IndexModel::builder().keys(doc! { "chargeId": 1 }).build(),
            ])
            .await?;
        Ok(Self { collection })
    }
}

#[async_trait]
impl AllocationRepository for MongoAllocations {
    async fn record(&self, allocation: &Allocation) -> Result<(Allocation, bool), ServiceError> {
        match self
            .collection
            .insert_one(AllocationDocument::from(allocation))
            .await
        {
            Ok(_) => Ok((allocation.clone(), true)),
            Err(error) if is_duplicate_key(&error) => {
                let stored = self.get(&allocation.id).await?.ok_or_else(|| {
                    ServiceError::internal(anyhow::anyhow!("duplicate allocation vanished"))
                })?;
                repeated(stored, allocation)
            }
            Err(error) => Err(mongo_error(error)),
        }
    }

    async fn get(&self, allocation_id: &str) -> Result<Option<Allocation>, ServiceError> {
        self.collection
            .find_one(doc! { "_id": allocation_id })
            .await
            .map_err(mongo_error)?
            .map(Allocation::try_from)
            .transpose()
    }

    async fn list_by_user(
        &self,
        user_id: &str,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Allocation>, ServiceError> {
        let mut filter = doc! { "userId": user_id };
        if let Some((at, id)) = after {
            let at = to_bson_time(at);
            filter.insert(
                "$or",
                vec![
                    doc! { "createdAt": { "$lt": at } },
                    doc! { "createdAt": at, "_id": { "$lt": id } },
                ],
            );
        }
        let documents: Vec<AllocationDocument> = find_many(
            &self.collection,
            filter,
            doc! { "createdAt": -1, "_id": -1 },
            limit,
        )
        .await?;
        documents.into_iter().map(Allocation::try_from).collect()
    }
}

/// MongoDB store: collection `creatorEarnings`, one document per creator.
#[derive(Debug, Clone)]
pub struct MongoEarningsBooks {
    collection: Collection<BookDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BookDocument {
    /// The creator's user id.
    #[serde(rename = "_id")]
    id: String,
    totals: Vec<TotalsDocument>,
    #[serde(default)]
    pending: Vec<AllocationDocument>,
    version: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TotalsDocument {
    currency: String,
    lifetime_cents: i64,
    active_cents: i64,
    frozen_cents: i64,
    refunded_cents: i64,
    allocations: i64,
}

impl From<&EarningsBook> for BookDocument {
    fn from(book: &EarningsBook) -> Self {
        Self {
            id: book.user_id.clone(),
            totals: book
                .totals
                .iter()
                .map(|(currency, t)| TotalsDocument {
                    currency: currency.to_string(),
                    lifetime_cents: t.lifetime,
                    active_cents: t.active,
                    frozen_cents: t.frozen,
                    refunded_cents: t.refunded,
                    allocations: t.allocations,
                })
                .collect(),
            pending: book.pending.iter().map(AllocationDocument::from).collect(),
            version: book.version,
        }
    }
}

impl TryFrom<BookDocument> for EarningsBook {
    type Error = ServiceError;

    fn try_from(d: BookDocument) -> Result<Self, Self::Error> {
        let mut totals = std::collections::BTreeMap::new();
        for t in d.totals {
            totals.insert(
                Currency::parse(&t.currency)?,
                Totals {
                    lifetime: t.lifetime_cents,
                    active: t.active_cents,
                    frozen: t.frozen_cents,
                    refunded: t.refunded_cents,
                    allocations: t.allocations,
                },
            );
        }
        Ok(Self {
            user_id: d.id,
            totals,
            pending: d
                .pending
                .into_iter()
                .map(Allocation::try_from)
                .collect::<Result<_, _>>()?,
            version: d.version,
        })
    }
}

impl MongoEarningsBooks {
    pub fn open(database: &mongodb::Database) -> Self {
        Self {
            collection: database.collection::<BookDocument>("creatorEarnings"),
        }
    }
}

#[async_trait]
impl EarningsBookRepository for MongoEarningsBooks {
    async fn get(&self, user_id: &str) -> Result<EarningsBook, ServiceError> {
        match self
            .collection
            .find_one(doc! { "_id": user_id })
            .await
            .map_err(mongo_error)?
        {
            Some(document) => EarningsBook::try_from(document),
            None => Ok(EarningsBook::empty(user_id)),
        }
    }

    async fn put(&self, book: &EarningsBook, expected_version: i64) -> Result<(), ServiceError> {
        let document = BookDocument::from(book);
        if put_versioned(&self.collection, &book.user_id, document, expected_version).await? {
            Ok(())
        } else {
            Err(stale_book(&book.user_id))
        }
    }

    async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EarningsBook>, ServiceError> {
        let filter = match after {
            Some(after) => doc! { "_id": { "$gt": after } },
            None => doc! {},
        };
        find_many(&self.collection, filter, doc! { "_id": 1 }, limit)
            .await?
            .into_iter()
            .map(EarningsBook::try_from)
            .collect()
    }
}
