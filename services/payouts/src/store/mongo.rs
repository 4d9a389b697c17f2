use async_trait::async_trait;
use mongodb::Collection;
use mongodb::bson::{self, doc};
use payouts_runtime::ServiceError;
use payouts_runtime::store::{from_bson_time, is_duplicate_key, mongo_error, to_bson_time};
use serde::{Deserialize, Serialize};

use super::{AccountRepository, stale};
use crate::domain::{Account, CarriedPayment, StripeAccountStatus};

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
    version: i64,
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
