use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::{self, doc};
use mongodb::{Collection, IndexModel};
use payouts_runtime::store::{
    after_cursor, find_many, from_bson_time, is_duplicate_key, mongo_error, to_bson_time,
};
use payouts_runtime::{Currency, ServiceError};
use serde::{Deserialize, Serialize};

use super::SnapshotRepository;
use crate::domain::{Snapshot, ThresholdStatus};

/// MongoDB store: collection `platformBalanceSnapshots` (design §5 document).
#[derive(Debug, Clone)]
pub struct MongoSnapshots {
    collection: Collection<SnapshotDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotDocument {
    #[serde(rename = "_id")]
    id: String,
    timestamp: bson::DateTime,
    currency: String,
    available_balance: i64,
    pending_balance: i64,
    total_balance: i64,
    pending_obligations: i64,
    required_reserve: i64,
    threshold_status: String,
    metadata: SnapshotMetadata,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotMetadata {
    users_with_unpaid_earnings: i64,
    users_without_bank_accounts: i64,
    #[serde(default)]
    days_since_last_snapshot: i64,
}

impl From<&Snapshot> for SnapshotDocument {
    fn from(s: &Snapshot) -> Self {
        Self {
            id: s.id.clone(),
            timestamp: to_bson_time(s.taken_at),
            currency: s.currency.to_string(),
            available_balance: s.available_balance_cents,
            pending_balance: s.pending_balance_cents,
            total_balance: s.total_balance_cents(),
            pending_obligations: s.pending_obligations_cents,
            required_reserve: s.required_reserve_cents,
            threshold_status: s.threshold_status.as_str().to_owned(),
            metadata: SnapshotMetadata {
                users_with_unpaid_earnings: s.users_with_unpaid_earnings,
                users_without_bank_accounts: s.users_without_bank_accounts,
                days_since_last_snapshot: s.days_since_last_snapshot,
            },
        }
    }
}

impl TryFrom<SnapshotDocument> for Snapshot {
    type Error = ServiceError;

    fn try_from(d: SnapshotDocument) -> Result<Self, Self::Error> {
        let threshold_status = ThresholdStatus::parse(&d.threshold_status).ok_or_else(|| {
            ServiceError::internal(anyhow::anyhow!(
                "snapshot {} has status {:?}",
                d.id,
                d.threshold_status
            ))
        })?;
        Ok(Self {
            id: d.id,
            taken_at: from_bson_time(d.timestamp),
            currency: Currency::parse(&d.currency)?,
            available_balance_cents: d.available_balance,
            pending_balance_cents: d.pending_balance,
            pending_obligations_cents: d.pending_obligations,
            required_reserve_cents: d.required_reserve,
            threshold_status,
            users_with_unpaid_earnings: d.metadata.users_with_unpaid_earnings,
            users_without_bank_accounts: d.metadata.users_without_bank_accounts,
            days_since_last_snapshot: d.metadata.days_since_last_snapshot,
        })
    }
}

impl MongoSnapshots {
    /// Opens the collection and ensures its indexes (idempotent).
    pub async fn open(database: &mongodb::Database) -> anyhow::Result<Self> {
        let collection = database.collection::<SnapshotDocument>("platformBalanceSnapshots");
        collection
            .create_index(IndexModel::builder().keys(doc! { "timestamp": -1 }).build())
            .await?;
        Ok(Self { collection })
    }
}

#[async_trait]
impl SnapshotRepository for MongoSnapshots {
    async fn insert(&self, snapshot: &Snapshot) -> Result<(), ServiceError> {
        match self
            .collection
            .insert_one(SnapshotDocument::from(snapshot))
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_duplicate_key(&error) => Ok(()),
            Err(error) => Err(mongo_error(error)),
        }
    }

    async fn recent(
        &self,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Snapshot>, ServiceError> {
        let mut filter = doc! {};
        after_cursor(&mut filter, "timestamp", after, true);
        let documents: Vec<SnapshotDocument> = find_many(
            &self.collection,
            filter,
            doc! { "timestamp": -1, "_id": -1 },
            limit,
        )
        .await?;
        documents.into_iter().map(Snapshot::try_from).collect()
    }
}
