//! `payoutTransferPause`: whether new transfers may start (one document), by versioned
//! compare-and-set.

use std::sync::Mutex;

use async_trait::async_trait;
use mongodb::Collection;
use mongodb::bson::{self, doc};
use payouts_runtime::ServiceError;
use payouts_runtime::store::{from_bson_time, mongo_error, put_versioned, to_bson_time};
use serde::{Deserialize, Serialize};

use crate::pause::{PauseCause, TransferPause};

#[async_trait]
pub trait PauseRepository: Send + Sync + 'static {
    /// The pause; transfers running (version 0) when nothing is stored.
    async fn get(&self) -> Result<TransferPause, ServiceError>;

    /// Stores `pause` (version `expected_version + 1`) if the stored one is still at
    /// `expected_version`; Conflict otherwise.
    async fn put(&self, pause: &TransferPause, expected_version: i64) -> Result<(), ServiceError>;
}

fn stale() -> ServiceError {
    ServiceError::conflict("the transfer pause was changed concurrently")
}

/// Embedded store.
#[derive(Debug, Default)]
pub struct MemoryPause {
    pause: Mutex<TransferPause>,
}

#[async_trait]
impl PauseRepository for MemoryPause {
    async fn get(&self) -> Result<TransferPause, ServiceError> {
        Ok(self
            .pause
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone())
    }

    async fn put(&self, pause: &TransferPause, expected_version: i64) -> Result<(), ServiceError> {
        let mut stored = self
            .pause
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if stored.version != expected_version {
            return Err(stale());
        }
        *stored = pause.clone();
        Ok(())
    }
}

const ID: &str = "transfers";

/// MongoDB store: collection `payoutTransferPause`, one document `_id: "transfers"`.
#[derive(Debug, Clone)]
pub struct MongoPause {
    collection: Collection<PauseDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PauseDocument {
    #[serde(rename = "_id")]
    id: String,
    paused: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cause: Option<String>,
    overridden: bool,
    reason: String,
    changed_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    changed_at: Option<bson::DateTime>,
    #[serde(default)]
    alerted_version: i64,
    /// The alerts whose escalation halts were applied (a halt is applied once per alert).
    #[serde(default)]
    escalations: Vec<String>,
    /// Under a halt: the pause it covers (`automatic` or `manual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    beneath: Option<String>,
    version: i64,
}

impl MongoPause {
    pub fn open(database: &mongodb::Database) -> Self {
        Self {
            collection: database.collection("payoutTransferPause"),
        }
    }
}

#[async_trait]
impl PauseRepository for MongoPause {
    async fn get(&self) -> Result<TransferPause, ServiceError> {
        let Some(d) = self
            .collection
            .find_one(doc! { "_id": ID })
            .await
            .map_err(mongo_error)?
        else {
            return Ok(TransferPause::default());
        };
        let parse = |cause: Option<&str>| match cause {
            None => Ok(None),
            Some(text) => PauseCause::parse(text).map(Some).ok_or_else(|| {
                ServiceError::internal(anyhow::anyhow!("the transfer pause has cause {text:?}"))
            }),
        };
        let cause = parse(d.cause.as_deref())?;
        let beneath = parse(d.beneath.as_deref())?;
        Ok(TransferPause {
            cause,
            overridden: d.overridden,
            reason: d.reason,
            changed_by: d.changed_by,
            changed_at: d.changed_at.map(from_bson_time),
            alerted_version: d.alerted_version,
            escalations: d.escalations,
            beneath,
            version: d.version,
        })
    }

    async fn put(&self, pause: &TransferPause, expected_version: i64) -> Result<(), ServiceError> {
        let document = PauseDocument {
            id: ID.to_owned(),
            paused: pause.paused(),
            cause: pause.cause.map(|cause| cause.as_str().to_owned()),
            overridden: pause.overridden,
            reason: pause.reason.clone(),
            changed_by: pause.changed_by.clone(),
            changed_at: pause.changed_at.map(to_bson_time),
            alerted_version: pause.alerted_version,
            escalations: pause.escalations.clone(),
            beneath: pause.beneath.map(|cause| cause.as_str().to_owned()),
            version: pause.version,
        };
        if put_versioned(&self.collection, ID, document, expected_version).await? {
            Ok(())
        } else {
            Err(stale())
        }
    }
}
