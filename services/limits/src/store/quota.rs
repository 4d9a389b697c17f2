//! The per-user quota documents (`payoutQuotas`): one document per user, written only by
//! versioned compare-and-set, which is what makes admission atomic per user.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use mongodb::Collection;
use mongodb::bson::{self, doc};
use payouts_runtime::ServiceError;
use payouts_runtime::store::{from_bson_time, mongo_error, put_versioned, to_bson_time};
use serde::{Deserialize, Serialize};

use crate::checks::{Attempt, Quota, Refusal, Reservation};
use crate::domain::Flag;

/// Storage of quotas.
#[async_trait]
pub trait QuotaRepository: Send + Sync + 'static {
    /// The user's quota; an empty one (version 0) when none is stored.
    async fn get(&self, user_id: &str) -> Result<Quota, ServiceError>;

    /// Stores `quota` if the stored version is still `expected_version` (0: none stored).
    /// Conflict when another writer got there first.
    async fn put(&self, quota: &Quota, expected_version: i64) -> Result<(), ServiceError>;
}

fn stale(user_id: &str) -> ServiceError {
    ServiceError::conflict(format!("quota of {user_id} was changed concurrently"))
}

/// Embedded store.
#[derive(Debug, Default)]
pub struct MemoryQuotas {
    quotas: Mutex<BTreeMap<String, Quota>>,
}

impl MemoryQuotas {
    /// Every quota document, by user (a snapshot for invariant checks).
    pub fn all(&self) -> Vec<Quota> {
        let quotas = self
            .quotas
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut all: Vec<Quota> = quotas.values().cloned().collect();
        all.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        all
    }
}

#[async_trait]
impl QuotaRepository for MemoryQuotas {
    async fn get(&self, user_id: &str) -> Result<Quota, ServiceError> {
        let quotas = self
            .quotas
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(quotas
            .get(user_id)
            .cloned()
            .unwrap_or_else(|| Quota::empty(user_id)))
    }

    async fn put(&self, quota: &Quota, expected_version: i64) -> Result<(), ServiceError> {
        let mut quotas = self
            .quotas
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stored = quotas
            .get(&quota.user_id)
            .map_or(0, |stored| stored.version);
        if stored != expected_version {
            return Err(stale(&quota.user_id));
        }
        quotas.insert(quota.user_id.clone(), quota.clone());
        Ok(())
    }
}

/// MongoDB store: collection `payoutQuotas`, keyed by user id.
#[derive(Debug, Clone)]
pub struct MongoQuotas {
    collection: Collection<QuotaDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QuotaDocument {
    #[serde(rename = "_id")]
    user_id: String,
    reservations: Vec<ReservationDocument>,
    #[serde(default)]
    attempts: Vec<AttemptDocument>,
    committed_cents: i64,
    payouts_ever: i64,
    version: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReservationDocument {
    payout_id: String,
    amount_cents: i64,
    reserved_at: bson::DateTime,
    requires_approval: bool,
    flags: Vec<String>,
    released_cents: i64,
    #[serde(default)]
    release_sequence: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttemptDocument {
    payout_id: String,
    at: bson::DateTime,
    /// Present when the attempt was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refused_flags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refused_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    available_cents: Option<i64>,
}

fn flag_names(flags: &[Flag]) -> Vec<String> {
    flags.iter().map(|flag| flag.as_str().to_owned()).collect()
}

fn parse_flags(names: &[String]) -> Vec<Flag> {
    names.iter().filter_map(|flag| Flag::parse(flag)).collect()
}

impl From<&Quota> for QuotaDocument {
    fn from(q: &Quota) -> Self {
        Self {
            user_id: q.user_id.clone(),
            reservations: q
                .reservations
                .iter()
                .map(|r| ReservationDocument {
                    payout_id: r.payout_id.clone(),
                    amount_cents: r.amount_cents,
                    reserved_at: to_bson_time(r.reserved_at),
                    requires_approval: r.requires_approval,
                    flags: flag_names(&r.flags),
                    released_cents: r.released_cents,
                    release_sequence: r.release_sequence,
                })
                .collect(),
            attempts: q
                .attempts
                .iter()
                .map(|a| AttemptDocument {
                    payout_id: a.payout_id.clone(),
                    at: to_bson_time(a.at),
                    refused_flags: a.refusal.as_ref().map(|r| flag_names(&r.flags)),
                    refused_reason: a.refusal.as_ref().map(|r| r.reason.clone()),
                    available_cents: a.refusal.as_ref().and_then(|r| r.available_cents),
                })
                .collect(),
            committed_cents: q.committed_cents,
            payouts_ever: q.payouts_ever,
            version: q.version,
        }
    }
}

impl From<QuotaDocument> for Quota {
    fn from(d: QuotaDocument) -> Self {
        Self {
            user_id: d.user_id,
            reservations: d
                .reservations
                .into_iter()
                .map(|r| Reservation {
                    payout_id: r.payout_id,
                    amount_cents: r.amount_cents,
                    reserved_at: from_bson_time(r.reserved_at),
                    requires_approval: r.requires_approval,
                    flags: parse_flags(&r.flags),
                    released_cents: r.released_cents,
                    release_sequence: r.release_sequence,
                })
                .collect(),
            attempts: d
                .attempts
                .into_iter()
                .map(|a| Attempt {
                    payout_id: a.payout_id,
                    at: from_bson_time(a.at),
                    refusal: a.refused_flags.map(|flags| Refusal {
                        flags: parse_flags(&flags),
                        reason: a.refused_reason.unwrap_or_default(),
                        available_cents: a.available_cents,
                    }),
                })
                .collect(),
            committed_cents: d.committed_cents,
            payouts_ever: d.payouts_ever,
            version: d.version,
        }
    }
}

impl MongoQuotas {
    pub fn open(database: &mongodb::Database) -> Self {
        Self {
            collection: database.collection::<QuotaDocument>("payoutQuotas"),
        }
    }
}

#[async_trait]
impl QuotaRepository for MongoQuotas {
    async fn get(&self, user_id: &str) -> Result<Quota, ServiceError> {
        Ok(self
            .collection
            .find_one(doc! { "_id": user_id })
            .await
            .map_err(mongo_error)?
            .map(Quota::from)
            .unwrap_or_else(|| Quota::empty(user_id)))
    }

    async fn put(&self, quota: &Quota, expected_version: i64) -> Result<(), ServiceError> {
        let document = QuotaDocument::from(quota);
        if put_versioned(&self.collection, &quota.user_id, document, expected_version).await? {
            Ok(())
        } else {
            Err(stale(&quota.user_id))
        }
    }
}
