use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::Collection;
use mongodb::bson::{self, doc};
use payouts_runtime::ServiceError;
use payouts_runtime::store::{
    find_many, from_bson_time, is_duplicate_key, mongo_error, to_bson_time,
};
use serde::{Deserialize, Serialize};

use super::{AccountRepository, stale};
use crate::domain::{Account, CarriedPayment, PendingBankPayout, StripeAccountStatus};

/// MongoDB store: collection `accounts`, keyed by user id.
#[derive(Debug, Clone)]
pub struct MongoAccounts {
    collection: Collection<AccountDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountDocument {
    #[serde(rename = "_id")]
    user_id: String,
    stripe_account_id: String,
    account_created_at: bson::DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stripe_account_status: Option<StatusDocument>,
    #[serde(default)]
    bank_payments: Vec<CarriedDocument>,
    #[serde(default)]
    pending_bank_payouts: Vec<PendingDocument>,
    /// When the next pending bank payout is due to be looked at (indexed for the worker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bank_look_due_at: Option<bson::DateTime>,
    version: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PendingDocument {
    bank_payout: String,
    first_seen_at: bson::DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    due_at: Option<bson::DateTime>,
    attempts: i64,
    reason: String,
    alert_raised: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CarriedDocument {
    payment: String,
    bank_payout: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure_code: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusDocument {
    charges_enabled: bool,
    payouts_enabled: bool,
    details_submitted: bool,
    requirements_currently_due: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_at: Option<bson::DateTime>,
}

impl From<&Account> for AccountDocument {
    fn from(a: &Account) -> Self {
        Self {
            user_id: a.user_id.clone(),
            stripe_account_id: a.stripe_account_id.clone(),
            account_created_at: to_bson_time(a.account_created_at),
            stripe_account_status: a.stripe_status.as_ref().map(|s| StatusDocument {
                charges_enabled: s.charges_enabled,
                payouts_enabled: s.payouts_enabled,
                details_submitted: s.details_submitted,
                requirements_currently_due: s.requirements_currently_due.clone(),
                updated_at: s.updated_at.map(to_bson_time),
            }),
            bank_payments: a
                .bank_payments
                .iter()
                .map(|c| CarriedDocument {
                    payment: c.payment.clone(),
                    bank_payout: c.bank_payout.clone(),
                    failure_code: c.failure_code.clone(),
                })
                .collect(),
            pending_bank_payouts: a
                .pending_bank_payouts
                .iter()
                .map(|p| PendingDocument {
                    bank_payout: p.bank_payout.clone(),
                    first_seen_at: to_bson_time(p.first_seen_at),
                    due_at: p.due_at.map(to_bson_time),
                    attempts: i64::from(p.attempts),
                    reason: p.reason.clone(),
                    alert_raised: p.alert_raised,
                })
                .collect(),
            bank_look_due_at: a.bank_look_due_at().map(to_bson_time),
            version: a.version,
        }
    }
}

impl From<AccountDocument> for Account {
    fn from(d: AccountDocument) -> Self {
        Self {
            user_id: d.user_id,
            stripe_account_id: d.stripe_account_id,
            account_created_at: from_bson_time(d.account_created_at),
            stripe_status: d.stripe_account_status.map(|s| StripeAccountStatus {
                charges_enabled: s.charges_enabled,
                payouts_enabled: s.payouts_enabled,
                details_submitted: s.details_submitted,
                requirements_currently_due: s.requirements_currently_due,
                updated_at: s.updated_at.map(from_bson_time),
            }),
            bank_payments: d
                .bank_payments
                .into_iter()
                .map(|c| CarriedPayment {
                    payment: c.payment,
                    bank_payout: c.bank_payout,
                    failure_code: c.failure_code,
                })
                .collect(),
            pending_bank_payouts: d
                .pending_bank_payouts
                .into_iter()
                .map(|p| PendingBankPayout {
                    bank_payout: p.bank_payout,
                    first_seen_at: from_bson_time(p.first_seen_at),
                    due_at: p.due_at.map(from_bson_time),
                    attempts: u32::try_from(p.attempts).unwrap_or(u32::MAX),
                    reason: p.reason,
                    alert_raised: p.alert_raised,
                })
                .collect(),
            version: d.version,
        }
    }
}

impl MongoAccounts {
    /// Opens the collection and ensures its indexes (idempotent).
    pub async fn open(database: &mongodb::Database) -> anyhow::Result<Self> {
        let collection = database.collection::<AccountDocument>("accounts");
        collection
            .create_index(
                mongodb::IndexModel::builder()
                    .keys(doc! { "stripeAccountId": 1 })
                    .build(),
            )
            .await?;
        collection
            .create_index(
                mongodb::IndexModel::builder()
                    .keys(doc! { "bankLookDueAt": 1 })
                    .options(
                        mongodb::options::IndexOptions::builder()
                            .sparse(true)
                            .build(),
                    )
                    .build(),
            )
            .await?;
        Ok(Self { collection })
    }
}

#[async_trait]
impl AccountRepository for MongoAccounts {
    async fn get(&self, user_id: &str) -> Result<Option<Account>, ServiceError> {
        Ok(self
            .collection
            .find_one(doc! { "_id": user_id })
            .await
            .map_err(mongo_error)?
            .map(Account::from))
    }

    async fn find_by_stripe_account(
        &self,
        stripe_account_id: &str,
    ) -> Result<Option<Account>, ServiceError> {
        Ok(self
            .collection
            .find_one(doc! { "stripeAccountId": stripe_account_id })
            .await
            .map_err(mongo_error)?
            .map(Account::from))
    }

    async fn due_bank_looks(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Account>, ServiceError> {
        let documents: Vec<AccountDocument> = find_many(
            &self.collection,
            doc! { "bankLookDueAt": { "$lte": to_bson_time(now) } },
            doc! { "bankLookDueAt": 1, "_id": 1 },
            limit,
        )
        .await?;
        Ok(documents.into_iter().map(Account::from).collect())
    }

    async fn put(
        &self,
        account: &Account,
        expected_version: Option<i64>,
    ) -> Result<(), ServiceError> {
        let document = AccountDocument::from(account);
        match expected_version {
            None => match self.collection.insert_one(document).await {
                Ok(_) => Ok(()),
                Err(error) if is_duplicate_key(&error) => Err(stale(&account.user_id)),
                Err(error) => Err(mongo_error(error)),
            },
            Some(version) => {
                let replaced = self
                    .collection
                    .replace_one(
                        doc! { "_id": &account.user_id, "version": version },
                        document,
                    )
                    .await
                    .map_err(mongo_error)?;
                if replaced.matched_count == 1 {
                    Ok(())
                } else {
                    Err(stale(&account.user_id))
                }
            }
        }
    }
}
