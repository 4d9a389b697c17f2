//! `balanceCheckRuns`: which replica runs a scheduled check's slot, by versioned
//! compare-and-set.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use mongodb::Collection;
use mongodb::bson::{self, doc};
use payouts_runtime::ServiceError;
use payouts_runtime::store::{from_bson_time, mongo_error, put_versioned, to_bson_time};
use serde::{Deserialize, Serialize};

use crate::domain::ScheduledRun;

#[async_trait]
pub trait RunRepository: Send + Sync + 'static {
    async fn get(
        &self,
        slot: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<ScheduledRun>, ServiceError>;

    /// Stores `run` if the stored one is still at `expected_version` (0: none stored);
    /// Conflict otherwise.
    async fn put(&self, run: &ScheduledRun, expected_version: i64) -> Result<(), ServiceError>;
}

fn stale(run: &ScheduledRun) -> ServiceError {
    ServiceError::conflict(format!(
        "{} was claimed concurrently",
        ScheduledRun::id_of(run.slot)
    ))
}

/// Embedded store.
#[derive(Debug, Default)]
pub struct MemoryRuns {
    runs: Mutex<BTreeMap<String, ScheduledRun>>,
}

#[async_trait]
impl RunRepository for MemoryRuns {
    async fn get(
        &self,
        slot: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<ScheduledRun>, ServiceError> {
        let runs = self
            .runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(runs.get(&ScheduledRun::id_of(slot)).cloned())
    }

    async fn put(&self, run: &ScheduledRun, expected_version: i64) -> Result<(), ServiceError> {
        let mut runs = self
            .runs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let id = ScheduledRun::id_of(run.slot);
        if runs.get(&id).map_or(0, |stored| stored.version) != expected_version {
            return Err(stale(run));
        }
        runs.insert(id, run.clone());
        Ok(())
    }
}

/// MongoDB store: collection `balanceCheckRuns`.
#[derive(Debug, Clone)]
pub struct MongoRuns {
    collection: Collection<RunDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunDocument {
    #[serde(rename = "_id")]
    id: String,
    slot: bson::DateTime,
    holder: String,
    lease_until: bson::DateTime,
    done: bool,
    version: i64,
}

impl MongoRuns {
    pub fn open(database: &mongodb::Database) -> Self {
        Self {
            collection: database.collection("balanceCheckRuns"),
        }
    }
}

#[async_trait]
impl RunRepository for MongoRuns {
    async fn get(
        &self,
        slot: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<ScheduledRun>, ServiceError> {
        Ok(self
            .collection
            .find_one(doc! { "_id": ScheduledRun::id_of(slot) })
            .await
            .map_err(mongo_error)?
            .map(|d| ScheduledRun {
                slot: from_bson_time(d.slot),
                holder: d.holder,
                lease_until: from_bson_time(d.lease_until),
                done: d.done,
                version: d.version,
            }))
    }

    async fn put(&self, run: &ScheduledRun, expected_version: i64) -> Result<(), ServiceError> {
        let id = ScheduledRun::id_of(run.slot);
        let document = RunDocument {
            id: id.clone(),
            slot: to_bson_time(run.slot),
            holder: run.holder.clone(),
            lease_until: to_bson_time(run.lease_until),
            done: run.done,
            version: run.version,
        };
        if put_versioned(&self.collection, &id, document, expected_version).await? {
            Ok(())
        } else {
            Err(stale(run))
        }
    }
}
