//! `platformBalanceAlerts`: which balance alert is open, one document per kind, written by
//! versioned compare-and-set.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use mongodb::Collection;
use mongodb::bson::doc;
use payouts_runtime::ServiceError;
use payouts_runtime::store::{mongo_error, put_versioned};
use serde::{Deserialize, Serialize};

use crate::domain::{AlertKind, OpenAlert, ThresholdStatus};

#[async_trait]
pub trait OpenAlertRepository: Send + Sync + 'static {
    /// The kind's state; none open (version 0) when nothing is stored.
    async fn get(&self, kind: AlertKind) -> Result<OpenAlert, ServiceError>;

    /// Stores `state` (whose version is `expected_version + 1`) if the stored one is still at
    /// `expected_version`; Conflict otherwise.
    async fn put(&self, state: &OpenAlert, expected_version: i64) -> Result<(), ServiceError>;
}

fn stale(kind: AlertKind) -> ServiceError {
    ServiceError::conflict(format!(
        "the {} alert was changed concurrently",
        kind.as_str()
    ))
}

/// Embedded store.
#[derive(Debug, Default)]
pub struct MemoryOpenAlerts {
    states: Mutex<BTreeMap<AlertKind, OpenAlert>>,
}

#[async_trait]
impl OpenAlertRepository for MemoryOpenAlerts {
    async fn get(&self, kind: AlertKind) -> Result<OpenAlert, ServiceError> {
        let states = self
            .states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(states
            .get(&kind)
            .cloned()
            .unwrap_or_else(|| OpenAlert::none(kind)))
    }

    async fn put(&self, state: &OpenAlert, expected_version: i64) -> Result<(), ServiceError> {
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stored = states.get(&state.kind).map_or(0, |stored| stored.version);
        if stored != expected_version {
            return Err(stale(state.kind));
        }
        states.insert(state.kind, state.clone());
        Ok(())
    }
}

/// MongoDB store: collection `platformBalanceAlerts`, `_id` the alert type.
#[derive(Debug, Clone)]
pub struct MongoOpenAlerts {
    collection: Collection<OpenAlertDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenAlertDocument {
    #[serde(rename = "_id")]
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    level: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    alert_id: Option<String>,
    version: i64,
}

impl MongoOpenAlerts {
    pub fn open(database: &mongodb::Database) -> Self {
        Self {
            collection: database.collection("platformBalanceAlerts"),
        }
    }
}

#[async_trait]
impl OpenAlertRepository for MongoOpenAlerts {
    async fn get(&self, kind: AlertKind) -> Result<OpenAlert, ServiceError> {
        let Some(document) = self
            .collection
            .find_one(doc! { "_id": kind.as_str() })
            .await
            .map_err(mongo_error)?
        else {
            return Ok(OpenAlert::none(kind));
        };
        let open = match (document.level.as_deref(), document.alert_id) {
            (Some(level), Some(alert_id)) => Some((
                ThresholdStatus::parse(level).ok_or_else(|| {
                    ServiceError::internal(anyhow::anyhow!(
                        "the {} alert has level {level:?}",
                        kind.as_str()
                    ))
                })?,
                alert_id,
            )),
            _ => None,
        };
        Ok(OpenAlert {
            kind,
            open,
            version: document.version,
        })
    }

    async fn put(&self, state: &OpenAlert, expected_version: i64) -> Result<(), ServiceError> {
        let document = OpenAlertDocument {
            kind: state.kind.as_str().to_owned(),
            level: state
                .open
                .as_ref()
                .map(|(level, _)| level.as_str().to_owned()),
            alert_id: state.open.as_ref().map(|(_, id)| id.clone()),
            version: state.version,
        };
        if put_versioned(
            &self.collection,
            state.kind.as_str(),
            document,
            expected_version,
        )
        .await?
        {
            Ok(())
        } else {
            Err(stale(state.kind))
        }
    }
}
