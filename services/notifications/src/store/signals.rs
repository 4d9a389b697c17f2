//! `escalationSignals`: the signals the escalation policy counts in its windows, one
//! document per signal id (an idempotent insert: a retried signal counts once).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use mongodb::bson::{self, doc};
use mongodb::{Collection, IndexModel};
use payouts_runtime::ServiceError;
use payouts_runtime::store::{
    find_many, from_bson_time, is_duplicate_key, mongo_error, to_bson_time,
};
use serde::{Deserialize, Serialize};

use crate::escalation::{Signal, SignalRecord};

/// How long signals are kept (the longest window is a week).
pub const SIGNAL_RETENTION: Duration = Duration::days(8);

/// The most signals one window reads (far above any sensible threshold).
const MAX_IN_WINDOW: usize = 10_000;

/// Storage of escalation signals.
#[async_trait]
pub trait SignalRepository: Send + Sync + 'static {
    /// Stores a signal; `false` when one with its id was stored already (nothing changes).
    async fn record(&self, signal: &SignalRecord) -> Result<bool, ServiceError>;

    /// The signals of a kind at or after `from`, oldest first.
    async fn since(
        &self,
        signal: Signal,
        from: DateTime<Utc>,
    ) -> Result<Vec<SignalRecord>, ServiceError>;
}

/// Embedded store.
#[derive(Debug, Default)]
pub struct MemorySignals {
    signals: Mutex<BTreeMap<String, SignalRecord>>,
}

#[async_trait]
impl SignalRepository for MemorySignals {
    async fn record(&self, signal: &SignalRecord) -> Result<bool, ServiceError> {
        let mut signals = self
            .signals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if signals.contains_key(&signal.id) {
            return Ok(false);
        }
        signals.insert(signal.id.clone(), signal.clone());
        Ok(true)
    }

    async fn since(
        &self,
        signal: Signal,
        from: DateTime<Utc>,
    ) -> Result<Vec<SignalRecord>, ServiceError> {
        let signals = self
            .signals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut found: Vec<SignalRecord> = signals
            .values()
            .filter(|s| s.signal == signal && s.at >= from)
            .cloned()
            .collect();
        found.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
        found.truncate(MAX_IN_WINDOW);
        Ok(found)
    }
}

/// MongoDB store: collection `escalationSignals`.
#[derive(Debug, Clone)]
pub struct MongoSignals {
    collection: Collection<SignalDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignalDocument {
    #[serde(rename = "_id")]
    id: String,
    signal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default)]
    amount_cents: i64,
    at: bson::DateTime,
}

impl MongoSignals {
    /// Opens the collection and ensures its indexes (idempotent): by kind and time, and a TTL.
    pub async fn open(database: &mongodb::Database) -> anyhow::Result<Self> {
        let collection = database.collection::<SignalDocument>("escalationSignals");
        collection
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "signal": 1, "at": 1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "at": 1 })
                    .options(
                        mongodb::options::IndexOptions::builder()
                            .expire_after(SIGNAL_RETENTION.to_std().ok())
                            .build(),
                    )
                    .build(),
            ])
            .await?;
        Ok(Self { collection })
    }
}

#[async_trait]
impl SignalRepository for MongoSignals {
    async fn record(&self, signal: &SignalRecord) -> Result<bool, ServiceError> {
        let document = SignalDocument {
            id: signal.id.clone(),
            signal: signal.signal.as_str().to_owned(),
            subject: signal.subject.clone(),
            amount_cents: signal.amount_cents,
            at: to_bson_time(signal.at),
        };
        match self.collection.insert_one(document).await {
            Ok(_) => Ok(true),
            Err(error) if is_duplicate_key(&error) => Ok(false),
            Err(error) => Err(mongo_error(error)),
        }
    }

    async fn since(
        &self,
        signal: Signal,
        from: DateTime<Utc>,
    ) -> Result<Vec<SignalRecord>, ServiceError> {
        let documents: Vec<SignalDocument> = find_many(
            &self.collection,
            doc! { "signal": signal.as_str(), "at": { "$gte": to_bson_time(from) } },
            doc! { "at": 1, "_id": 1 },
            MAX_IN_WINDOW,
        )
        .await?;
        documents
            .into_iter()
            .map(|d| {
                Ok(SignalRecord {
                    signal: Signal::parse(&d.signal).ok_or_else(|| {
                        ServiceError::internal(anyhow::anyhow!(
                            "stored signal {} has kind {:?}",
                            d.id,
                            d.signal
                        ))
                    })?,
                    id: d.id,
                    subject: d.subject,
                    amount_cents: d.amount_cents,
                    at: from_bson_time(d.at),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod conformance {
    use super::*;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::minutes(minute)
    }

    fn signal(id: &str, kind: Signal, minute: i64) -> SignalRecord {
        SignalRecord {
            id: format!("{id}-{}", uuid::Uuid::new_v4()),
            signal: kind,
            subject: Some("creator_1".to_owned()),
            amount_cents: 12_345,
            at: at(minute),
        }
    }

    async fn run(repository: &dyn SignalRepository) {
        let first = signal("d1", Signal::DisputeCreated, 1);
        assert!(repository.record(&first).await.unwrap());
        assert!(
            !repository.record(&first).await.unwrap(),
            "a retry counts once"
        );
        let second = signal("d2", Signal::DisputeCreated, 5);
        repository.record(&second).await.unwrap();
        repository
            .record(&signal("f1", Signal::PayoutFailed, 5))
            .await
            .unwrap();
        assert_eq!(
            repository
                .since(Signal::DisputeCreated, at(1))
                .await
                .unwrap(),
            vec![first.clone(), second.clone()],
            "inclusive, by kind, oldest first, fields round-trip"
        );
        assert_eq!(
            repository
                .since(Signal::DisputeCreated, at(2))
                .await
                .unwrap(),
            vec![second]
        );
    }

    #[tokio::test]
    async fn embedded_signals_conform() {
        run(&MemorySignals::default()).await;
    }

    #[tokio::test]
    async fn mongo_signals_conform() {
        let database = payouts_runtime::testing::mongo_database("signals").await;
        run(&MongoSignals::open(&database).await.unwrap()).await;
    }
}
