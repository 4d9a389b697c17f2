use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::{self, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};
use payouts_runtime::store::{
    after_cursor, find_many, from_bson_time, is_duplicate_key, mongo_error, to_bson_time,
};
use payouts_runtime::{Currency, Money, ServiceError};
use serde::{Deserialize, Serialize};

use super::{ApprovalRepository, stale};
use crate::domain::{AdminApproval, Approval, ApprovalStatus, Filter, HoldMetadata, UserContext};

/// MongoDB store: collection `payoutApprovalQueue` (design §7 document).
#[derive(Debug, Clone)]
pub struct MongoApprovals {
    collection: Collection<ApprovalDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApprovalDocument {
    #[serde(rename = "_id")]
    id: String,
    payout_id: String,
    user_id: String,
    amount_cents: i64,
    currency: String,
    status: String,
    reason: String,
    flags: Vec<String>,
    requested_at: bson::DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reviewed_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reviewed_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    review_notes: Option<String>,
    created_at: bson::DateTime,
    metadata: MetadataDocument,
    user_context: UserContextDocument,
    /// Absent on documents from before dual control: one approval.
    #[serde(default = "one")]
    approvals_required: i64,
    #[serde(default)]
    approvals: Vec<AdminApprovalDocument>,
    applied: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<bson::DateTime>,
    #[serde(default)]
    attempts: i64,
    #[serde(default)]
    parked: bool,
    version: i64,
}

fn one() -> i64 {
    1
}

/// One admin's approval (`approvals`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdminApprovalDocument {
    reviewer: String,
    approved_at: bson::DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    notes: Option<String>,
}

/// Design §7 `metadata`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetadataDocument {
    is_new_account: bool,
    account_age_days: i64,
    daily_payout_count: i64,
    daily_payout_amount: i64,
    monthly_payout_amount: i64,
    lifetime_earnings: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserContextDocument {
    account_age_days: i64,
    lifetime_earnings: i64,
    completed_payout_count: i64,
    completed_payout_amount: i64,
    recent_refund_count: i64,
    recent_dispute_count: i64,
}

impl From<&Approval> for ApprovalDocument {
    fn from(a: &Approval) -> Self {
        Self {
            id: a.id.clone(),
            payout_id: a.payout_id.clone(),
            user_id: a.user_id.clone(),
            amount_cents: a.amount.cents,
            currency: a.amount.currency.to_string(),
            status: a.status.as_str().to_owned(),
            reason: a.reason.clone(),
            flags: a.flags.clone(),
            requested_at: to_bson_time(a.requested_at),
            reviewed_at: a.reviewed_at.map(to_bson_time),
            reviewed_by: a.reviewed_by.clone(),
            review_notes: a.review_notes.clone(),
            created_at: to_bson_time(a.requested_at),
            metadata: MetadataDocument {
                is_new_account: a.metadata.is_new_account,
                account_age_days: a.metadata.account_age_days,
                daily_payout_count: a.metadata.daily_payout_count,
                daily_payout_amount: a.metadata.daily_payout_amount_cents,
                monthly_payout_amount: a.metadata.monthly_payout_amount_cents,
                lifetime_earnings: a.metadata.lifetime_earnings_cents,
            },
            user_context: UserContextDocument {
                account_age_days: a.user_context.account_age_days,
                lifetime_earnings: a.user_context.lifetime_earnings_cents,
                completed_payout_count: a.user_context.completed_payout_count,
                completed_payout_amount: a.user_context.completed_payout_cents,
                recent_refund_count: a.user_context.recent_refund_count,
                recent_dispute_count: a.user_context.recent_dispute_count,
            },
            approvals_required: i64::from(a.approvals_required),
            approvals: a
                .approvals
                .iter()
                .map(|approval| AdminApprovalDocument {
                    reviewer: approval.reviewer.clone(),
                    approved_at: to_bson_time(approval.approved_at),
                    notes: approval.notes.clone(),
                })
                .collect(),
            applied: a.applied,
            next_attempt_at: a.next_attempt_at.map(to_bson_time),
            attempts: i64::from(a.attempts),
            parked: a.parked,
            version: a.version,
        }
    }
}

impl TryFrom<ApprovalDocument> for Approval {
    type Error = ServiceError;

    fn try_from(d: ApprovalDocument) -> Result<Self, Self::Error> {
        let status = ApprovalStatus::parse(&d.status).ok_or_else(|| {
            ServiceError::internal(anyhow::anyhow!(
                "approval {} has status {:?}",
                d.id,
                d.status
            ))
        })?;
        Ok(Self {
            amount: Money::new(d.amount_cents, Currency::parse(&d.currency)?),
            id: d.id,
            payout_id: d.payout_id,
            user_id: d.user_id,
            status,
            reason: d.reason,
            flags: d.flags,
            requested_at: from_bson_time(d.requested_at),
            reviewed_at: d.reviewed_at.map(from_bson_time),
            reviewed_by: d.reviewed_by,
            review_notes: d.review_notes,
            metadata: HoldMetadata {
                is_new_account: d.metadata.is_new_account,
                account_age_days: d.metadata.account_age_days,
                daily_payout_count: d.metadata.daily_payout_count,
                daily_payout_amount_cents: d.metadata.daily_payout_amount,
                monthly_payout_amount_cents: d.metadata.monthly_payout_amount,
                lifetime_earnings_cents: d.metadata.lifetime_earnings,
            },
            user_context: UserContext {
                account_age_days: d.user_context.account_age_days,
                lifetime_earnings_cents: d.user_context.lifetime_earnings,
                completed_payout_count: d.user_context.completed_payout_count,
                completed_payout_cents: d.user_context.completed_payout_amount,
                recent_refund_count: d.user_context.recent_refund_count,
                recent_dispute_count: d.user_context.recent_dispute_count,
            },
            approvals_required: u32::try_from(d.approvals_required)
                .unwrap_or(u32::MAX)
                .max(1),
            approvals: d
                .approvals
                .into_iter()
                .map(|approval| AdminApproval {
                    reviewer: approval.reviewer,
                    approved_at: from_bson_time(approval.approved_at),
                    notes: approval.notes,
                })
                .collect(),
            applied: d.applied,
            next_attempt_at: d.next_attempt_at.map(from_bson_time),
            attempts: u32::try_from(d.attempts).unwrap_or(u32::MAX),
            parked: d.parked,
            version: d.version,
        })
    }
}

impl MongoApprovals {
    /// Opens the collection and ensures its indexes (idempotent): one approval per payout.
    pub async fn open(database: &mongodb::Database) -> anyhow::Result<Self> {
        let collection = database.collection::<ApprovalDocument>("payoutApprovalQueue");
        collection
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "payoutId": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "status": 1, "requestedAt": 1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "applied": 1, "nextAttemptAt": 1 })
                    .build(),
            ])
            .await?;
        Ok(Self { collection })
    }

    async fn find_by_payout(&self, payout_id: &str) -> Result<Option<Approval>, ServiceError> {
        self.collection
            .find_one(doc! { "payoutId": payout_id })
            .await
            .map_err(mongo_error)?
            .map(Approval::try_from)
            .transpose()
    }
}

#[async_trait]
impl ApprovalRepository for MongoApprovals {
    async fn create(&self, approval: &Approval) -> Result<(Approval, bool), ServiceError> {
        match self
            .collection
            .insert_one(ApprovalDocument::from(approval))
            .await
        {
            Ok(_) => Ok((approval.clone(), true)),
            Err(error) if is_duplicate_key(&error) => {
                let existing =
                    self.find_by_payout(&approval.payout_id)
                        .await?
                        .ok_or_else(|| {
                            ServiceError::internal(anyhow::anyhow!("duplicate approval vanished"))
                        })?;
                Ok((existing, false))
            }
            Err(error) => Err(mongo_error(error)),
        }
    }

    async fn get(&self, approval_id: &str) -> Result<Option<Approval>, ServiceError> {
        self.collection
            .find_one(doc! { "_id": approval_id })
            .await
            .map_err(mongo_error)?
            .map(Approval::try_from)
            .transpose()
    }

    async fn replace(
        &self,
        approval: &Approval,
        expected_version: i64,
    ) -> Result<(), ServiceError> {
        let result = self
            .collection
            .replace_one(
                doc! { "_id": &approval.id, "version": expected_version },
                ApprovalDocument::from(approval),
            )
            .await
            .map_err(mongo_error)?;
        if result.matched_count == 1 {
            Ok(())
        } else {
            Err(stale(&approval.id))
        }
    }

    async fn list(&self, filter: &Filter) -> Result<Vec<Approval>, ServiceError> {
        let mut query = doc! {};
        if let Some(status) = filter.status {
            query.insert("status", status.as_str());
        }
        let mut amount = doc! {};
        if let Some(min) = filter.min_amount_cents {
            amount.insert("$gte", min);
        }
        if let Some(max) = filter.max_amount_cents {
            amount.insert("$lte", max);
        }
        if !amount.is_empty() {
            query.insert("amountCents", amount);
        }
        if let Some(flag) = &filter.flag {
            query.insert("flags", flag.as_str());
        }
        after_cursor(&mut query, "requestedAt", filter.after.clone(), false);
        self.find(query, doc! { "requestedAt": 1, "_id": 1 }, filter.limit)
            .await
    }

    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Approval>, ServiceError> {
        self.find(
            doc! {
                "status": { "$ne": ApprovalStatus::Pending.as_str() },
                "applied": false,
                "nextAttemptAt": { "$lte": to_bson_time(now) },
            },
            doc! { "nextAttemptAt": 1, "_id": 1 },
            limit,
        )
        .await
    }

    async fn count_pending(&self) -> Result<u64, ServiceError> {
        self.count_pending_documents().await
    }
}

impl MongoApprovals {
    async fn count_pending_documents(&self) -> Result<u64, ServiceError> {
        let pending = payouts_runtime::store::field_values(
            &self.collection,
            doc! { "status": ApprovalStatus::Pending.as_str() },
            "_id",
        )
        .await?;
        Ok(u64::try_from(pending.len()).unwrap_or(u64::MAX))
    }

    async fn find(
        &self,
        filter: bson::Document,
        sort: bson::Document,
        limit: usize,
    ) -> Result<Vec<Approval>, ServiceError> {
        let documents: Vec<ApprovalDocument> =
            find_many(&self.collection, filter, sort, limit).await?;
        documents.into_iter().map(Approval::try_from).collect()
    }
}
