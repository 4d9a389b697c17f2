use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::{self, doc};
use mongodb::{Collection, IndexModel};
use payouts_runtime::ServiceError;
use payouts_runtime::store::{
    after_cursor, find_many, from_bson_time, is_duplicate_key, mongo_error, to_bson_time,
};
use serde::{Deserialize, Serialize};

use super::BlockedAttemptRepository;
use crate::domain::{BlockedAttempt, Flag, LimitMetadata};

/// MongoDB store: collection `payoutBlockedAttempts`.
#[derive(Debug, Clone)]
pub struct MongoBlockedAttempts {
    collection: Collection<AttemptDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttemptDocument {
    #[serde(rename = "_id")]
    id: String,
    user_id: String,
    amount_cents: i64,
    flags: Vec<String>,
    reason: String,
    metadata: MetadataDocument,
    attempted_at: bson::DateTime,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataDocument {
    is_new_account: bool,
    account_age_days: i64,
    daily_payout_count: i64,
    daily_payout_amount: i64,
    monthly_payout_amount: i64,
    lifetime_earnings: i64,
    #[serde(default)]
    daily_attempt_count: i64,
}

impl From<&BlockedAttempt> for AttemptDocument {
    fn from(a: &BlockedAttempt) -> Self {
        Self {
            id: a.id.clone(),
            user_id: a.user_id.clone(),
            amount_cents: a.amount_cents,
            flags: a
                .flags
                .iter()
                .map(|flag| flag.as_str().to_owned())
                .collect(),
            reason: a.reason.clone(),
            metadata: MetadataDocument {
                is_new_account: a.metadata.is_new_account,
                account_age_days: a.metadata.account_age_days,
                daily_payout_count: a.metadata.daily_payout_count,
                daily_payout_amount: a.metadata.daily_payout_amount_cents,
                monthly_payout_amount: a.metadata.monthly_payout_amount_cents,
                lifetime_earnings: a.metadata.lifetime_earnings_cents,
                daily_attempt_count: a.metadata.daily_attempt_count,
            },
            attempted_at: to_bson_time(a.attempted_at),
        }
    }
}

impl From<AttemptDocument> for BlockedAttempt {
    fn from(d: AttemptDocument) -> Self {
        Self {
            id: d.id,
            user_id: d.user_id,
            amount_cents: d.amount_cents,
            flags: d
                .flags
                .iter()
                .filter_map(|flag| Flag::parse(flag))
                .collect(),
            reason: d.reason,
            metadata: LimitMetadata {
                is_new_account: d.metadata.is_new_account,
                account_age_days: d.metadata.account_age_days,
                daily_payout_count: d.metadata.daily_payout_count,
                daily_payout_amount_cents: d.metadata.daily_payout_amount,
                monthly_payout_amount_cents: d.metadata.monthly_payout_amount,
                lifetime_earnings_cents: d.metadata.lifetime_earnings,
                daily_attempt_count: d.metadata.daily_attempt_count,
            },
            attempted_at: from_bson_time(d.attempted_at),
        }
    }
}

impl MongoBlockedAttempts {
    /// Opens the collection and ensures its indexes (idempotent).
    pub async fn open(database: &mongodb::Database) -> anyhow::Result<Self> {
        let collection = database.collection::<AttemptDocument>("payoutBlockedAttempts");
        collection
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "userId": 1, "attemptedAt": -1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "attemptedAt": -1 })
                    .build(),
            ])
            .await?;
        Ok(Self { collection })
    }
}

#[async_trait]
impl BlockedAttemptRepository for MongoBlockedAttempts {
    async fn record(&self, attempt: &BlockedAttempt) -> Result<(), ServiceError> {
        match self
            .collection
            .insert_one(AttemptDocument::from(attempt))
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_duplicate_key(&error) => Ok(()),
            Err(error) => Err(mongo_error(error)),
        }
    }

    async fn list(
        &self,
        user_id: Option<&str>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<BlockedAttempt>, ServiceError> {
        let mut filter = match user_id {
            Some(user_id) => doc! { "userId": user_id },
            None => doc! {},
        };
        after_cursor(&mut filter, "attemptedAt", after, true);
        let documents: Vec<AttemptDocument> = find_many(
            &self.collection,
            filter,
            doc! { "attemptedAt": -1, "_id": -1 },
            limit,
        )
        .await?;
        Ok(documents.into_iter().map(BlockedAttempt::from).collect())
    }
}
